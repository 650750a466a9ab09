//! Records and rules benchmark: importing 100,000 people, and rule evaluations per second.
//!
//! Run with `cargo bench --bench records`. It prints:
//! - `import`: a generated 100,000-row CSV (5 columns) streamed into a fresh store in a temp dir,
//!   batched transactions and one flush at the end, without triggers and with one `on: [created]`
//!   workflow (so every row also enqueues a run request and writes a trace);
//! - `structured rules`: record × rule evaluations per second on one core (3 rules, 4 records);
//! - `rhai`: `when:` evaluations per second, including turning the record into a rhai map.
//!
//! BENCHMARKS.md records the figures.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use blockyard::compile::{compile_source, rule_engine};
use blockyard::preset::PresetRegistry;
use blockyard::records::import::{import, Format, ImportOptions};
use blockyard::records::{Collection, Fields, KeyRule, RecordStore, WriteMode};
use blockyard::rules::{map_to_dynamic, to_dynamic, Rule, RuleOp};
use blockyard::spec::Source;
use blockyard::store::Store;
use blockyard::trigger::Triggers;
use serde_json::json;

const ROWS: usize = 100_000;

fn csv() -> Vec<u8> {
    let mut text = String::from("email,name,department,status,last_activity\n");
    for i in 0..ROWS {
        text.push_str(&format!(
            "user{i}@acme.com,User {i},{},active,2026-01-{:02}\n",
            if i % 3 == 0 { "Sales" } else { "IT" },
            i % 28 + 1
        ));
    }
    text.into_bytes()
}

fn bench_import(label: &str, data: &[u8], triggers: &Triggers) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let records = RecordStore::open(&store).unwrap();
    let options = ImportOptions {
        collection: Collection::People,
        key: KeyRule::new(Collection::People),
        mode: WriteMode::CreateUpdate,
        format: Format::Csv,
        dry_run: false,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let started = Instant::now();
    let summary = import(
        data,
        &options,
        &records,
        triggers,
        chrono::Utc::now(),
        &mut |_| {},
    )
    .unwrap();
    runtime.block_on(store.flush()).unwrap();
    let elapsed = started.elapsed();
    assert_eq!(summary.created, ROWS as u64);
    println!(
        "import {label:<24} {ROWS} rows in {:6.0} ms  {:>9.0} rows/s  ({} run requests)",
        elapsed.as_secs_f64() * 1e3,
        ROWS as f64 / elapsed.as_secs_f64(),
        summary.queued
    );
}

fn main() {
    let data = csv();
    bench_import("without triggers", &data, &Triggers::none());
    let workflow = compile_source(
        Source::new(
            "bench.yaml",
            include_str!("../tests/fixtures/on-create.yaml"),
        ),
        &PresetRegistry::builtin(),
    )
    .unwrap();
    bench_import(
        "with a created trigger",
        &data,
        &Triggers::new([Arc::new(workflow)], &Fields::new()),
    );

    let records: Vec<Fields> = [
        json!({"email": "Jane@Acme.com", "app": "calendly", "status": "active", "last_activity": "2025-11-01T10:00:00Z"}),
        json!({"email": "bob@acme.com", "app": "Calendly", "status": "deactivated", "last_activity": "2026-02-20"}),
        json!({"email": "carol@acme.com", "app": "webex", "status": "active", "last_activity": "2025-12-24"}),
        json!({"email": "dan@acme.com", "app": "calendly", "status": "ACTIVE"}),
    ]
    .into_iter()
    .map(|v| v.as_object().unwrap().clone())
    .collect();
    let rules = [
        Rule::new("app", RuleOp::Equals, Some(&json!("calendly"))).unwrap(),
        Rule::new("status", RuleOp::NotEquals, Some(&json!("deactivated"))).unwrap(),
        Rule::new("last_activity", RuleOp::BeforeDays, Some(&json!(60))).unwrap(),
    ];
    let now: chrono::DateTime<chrono::Utc> = "2026-03-01T00:00:00Z".parse().unwrap();
    let n = 2_000_000;
    let started = Instant::now();
    let mut held = 0u64;
    for i in 0..n {
        let record = &records[i % records.len()];
        for rule in &rules {
            held += black_box(rule).holds(black_box(record), now) as u64;
        }
    }
    let elapsed = started.elapsed();
    println!(
        "structured rules  {:>10.0} record x rule evaluations/s  ({} held)",
        (n * rules.len()) as f64 / elapsed.as_secs_f64(),
        held
    );

    let engine = rule_engine();
    let condition = engine
        .compile(r#"record.app == "calendly" && record.status != "deactivated" && days_since(record.last_activity) > 60"#)
        .unwrap();
    let vars = to_dynamic(&json!({"calendly_departments": ["Sales"]}));
    let n = 300_000;
    let started = Instant::now();
    let mut matched = 0u64;
    for i in 0..n {
        let record = map_to_dynamic(&records[i % records.len()]);
        matched += engine.eval(&condition, &record, &vars).matched() as u64;
    }
    let elapsed = started.elapsed();
    println!(
        "rhai when:        {:>10.0} evaluations/s, record conversion included  ({} matched)",
        n as f64 / elapsed.as_secs_f64(),
        matched
    );
}
