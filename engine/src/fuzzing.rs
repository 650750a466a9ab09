//! The properties every parser of hostile input must keep, one check per input surface, shared by
//! the property tests in `cargo test` (`tests/fuzz`), the coverage-guided fuzz targets (`fuzz/`, for
//! `cargo fuzz`) and the replay of saved failing inputs (`tests/fixtures/fuzz/<surface>/`).
//!
//! A check takes raw bytes, drives the parser the way blockyard reads that input, and panics when a
//! property fails: the parser panicked, took longer than [`TIME_BOUND`], or returned something other
//! than success or its documented error (a round trip is checked where one exists). A check never
//! asserts what a parser *should* accept; that is each module's own tests' job.
//!
//! The HTTP API's request bodies need a running server, so their harness lives in `tests/fuzz` only.

use std::io::Cursor;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};

use crate::compile::{compile_source, rule_engine, Collection};
use crate::http::paginate::{is_below, link_next, next_page, NextPage};
use crate::http::VendorError;
use crate::preset::{ErrorStyle, Pagination, PresetRegistry};
use crate::records::import::{import, Format, ImportError, ImportOptions};
use crate::records::{KeyRule, RecordStore, WriteMode};
use crate::schedule::Schedule;
use crate::spec::Source;
use crate::store::Store;
use crate::template::{Template, TemplateEngine};
use crate::trigger::Triggers;

pub use crate::sandbox::scim_fuzz::{check_filter, check_patch, check_path};

/// The longest one input may take through one check: generous, for a debug build on two busy
/// shared cores (the slowest legitimate input, a cron expression no date satisfies, takes 0.5 s
/// alone there); a hang takes forever.
pub const TIME_BOUND: Duration = Duration::from_secs(5);

/// The input surfaces, by the name their fuzz target and fixture folder use.
pub const SURFACES: &[&str] = &[
    "workflow",
    "template",
    "rule",
    "scim_filter",
    "scim_patch",
    "cron",
    "import",
    "vendor",
];

/// Runs the check of `surface` on `data`. Panics on an unknown surface.
pub fn check(surface: &str, data: &[u8]) {
    let started = Instant::now();
    match surface {
        "workflow" => check_workflow(data),
        "template" => check_template(&String::from_utf8_lossy(data)),
        "rule" => check_rule(&String::from_utf8_lossy(data)),
        "scim_filter" => {
            let text = String::from_utf8_lossy(data);
            check_filter(&text);
            check_path(&text);
        }
        "scim_patch" => check_patch(data),
        "cron" => check_cron(&String::from_utf8_lossy(data)),
        "import" => check_import(data),
        "vendor" => check_vendor(data),
        other => panic!("no fuzz surface `{other}`; the surfaces are {SURFACES:?}"),
    }
    let took = started.elapsed();
    assert!(
        took <= TIME_BOUND,
        "{surface}: one input took {took:?}, over the {TIME_BOUND:?} bound"
    );
}

fn presets() -> &'static PresetRegistry {
    static PRESETS: OnceLock<PresetRegistry> = OnceLock::new();
    PRESETS.get_or_init(PresetRegistry::builtin)
}

/// A workflow file compiles, or fails with at least one error, each with a message.
pub fn check_workflow(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Err(errors) = compile_source(Source::new("fuzz.yaml", text.as_ref()), presets()) {
        assert!(!errors.is_empty(), "a failed compile reported no error");
        for error in &errors {
            assert!(
                !error.to_string().trim().is_empty(),
                "an empty error: {error:?}"
            );
        }
    }
}

/// A template compiles or fails with a message; one that compiles renders (or fails to) in each
/// of the three ways a request renders it; text without `{{`, `}}` or `<<` renders as itself.
pub fn check_template(text: &str) {
    static ENGINE: OnceLock<TemplateEngine> = OnceLock::new();
    let engine = ENGINE.get_or_init(TemplateEngine::new);
    let template = match Template::compile(text) {
        Ok(template) => template,
        Err(err) => {
            assert!(
                !err.message.is_empty(),
                "an empty template error for {text:?}"
            );
            return;
        }
    };
    let context = handlebars::Context::wraps(json!({
        "record": {"email": "ada@example.com", "name": "Ada", "tags": ["a", "b"], "n": 3,
                   "active": true, "nested": {"deep": [{"x": null}]}},
        "vars": {"base": "https://example.com/v1/"},
    }))
    .expect("a JSON object is a context");
    let rendered = engine.render(&template, &context);
    let _ = engine.render_path(&template, &context);
    let _ = engine.render_value(&template, &context);
    let literal = !text.contains("{{") && !text.contains("}}") && !text.contains("<<");
    if literal {
        assert_eq!(
            rendered.as_deref(),
            Ok(text),
            "a literal template renders as itself"
        );
    }
}

/// A rule compiles or fails with a message; one that compiles evaluates to a value or a
/// [`crate::rules::RuleError`] within the engine's time limit (plus scheduling slack).
pub fn check_rule(text: &str) {
    let engine = rule_engine();
    let Ok(condition) = engine.compile(text) else {
        return;
    };
    let record = crate::rules::to_dynamic(&json!({
        "email": "ada@example.com", "status": "terminated", "name": "Ada", "n": 3,
        "tags": ["a", "b"], "last_activity": "2020-01-01T00:00:00Z",
    }));
    let mut scope = rhai::Scope::new();
    scope.push("record", record.clone());
    scope.push("subject", record);
    let started = Instant::now();
    let _ = engine.run::<rhai::Dynamic>(&mut scope, condition.ast());
    let took = started.elapsed();
    assert!(
        took <= engine.time_limit() + Duration::from_millis(500),
        "a rule ran {took:?}, past its {:?} time limit: {text:?}",
        engine.time_limit()
    );
}

/// A schedule is `expr` on the first line and an optional time zone on the second. It parses or
/// reports at least one error; one that parses fires strictly after the instant asked, in order.
pub fn check_cron(text: &str) {
    let (expr, zone) = match text.split_once('\n') {
        Some((expr, zone)) => (expr, Some(zone.trim_end_matches('\n'))),
        None => (text, None),
    };
    let schedule = match Schedule::parse(expr, zone) {
        Ok(schedule) => schedule,
        Err(errors) => {
            assert!(!errors.is_empty(), "a failed parse reported no error");
            return;
        }
    };
    let instants = [
        Utc.with_ymd_and_hms(2026, 3, 29, 0, 30, 0).unwrap(),
        Utc.with_ymd_and_hms(2026, 10, 25, 0, 59, 59).unwrap(),
        Utc.with_ymd_and_hms(2099, 12, 31, 23, 59, 59).unwrap(),
    ];
    for after in instants {
        let upcoming = schedule.upcoming(after, 4);
        let mut previous: DateTime<Utc> = after;
        for at in &upcoming {
            assert!(
                *at > previous,
                "`{expr}` in {zone:?}: {at} does not follow {previous} (after {after})"
            );
            previous = *at;
        }
        if let Some(last) = schedule.last_at_or_before(after) {
            assert!(
                last <= after,
                "`{expr}` in {zone:?}: last fire {last} is after {after}"
            );
        }
    }
}

/// The record store imports write to: one per process, in a temp dir that lives as long.
fn import_store() -> &'static RecordStore {
    static STORE: OnceLock<(tempfile::TempDir, RecordStore)> = OnceLock::new();
    &STORE
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("a temp dir");
            let store = Store::open(&dir.path().join("data")).expect("a store opens");
            let records = RecordStore::open(&store).expect("the record store opens");
            (dir, records)
        })
        .1
}

/// The first byte picks the format (CSV, JSON, JSONL) and whether to write (a dry run otherwise),
/// the rest is the file. An import succeeds (rows it cannot use are rejected, with a reason) or
/// stops with [`ImportError::Read`]; the counts add up to the rows it saw.
pub fn check_import(data: &[u8]) {
    let Some((&first, file)) = data.split_first() else {
        return;
    };
    let format = match first % 3 {
        0 => Format::Csv,
        1 => Format::Json,
        _ => Format::Jsonl,
    };
    let options = ImportOptions {
        collection: Collection::People,
        key: KeyRule::new(Collection::People),
        mode: WriteMode::CreateUpdate,
        format,
        dry_run: first & 0x80 == 0,
    };
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let result = import(
        Cursor::new(file),
        &options,
        import_store(),
        &Triggers::none(),
        now,
        &mut |_| {},
    );
    match result {
        Ok(summary) => {
            assert!(summary.rejections.len() as u64 <= summary.rejected);
            for rejection in &summary.rejections {
                assert!(!rejection.reason.to_string().is_empty(), "{rejection:?}");
            }
        }
        Err(ImportError::Read { reason }) => assert!(!reason.is_empty()),
        Err(err @ ImportError::Store(_)) => panic!("a hostile file broke the store: {err}"),
        // Only an import through a service's sink fails this way; this one writes the store.
        Err(err @ ImportError::Sink { .. }) => panic!("a store import failed as a sink: {err}"),
    }
}

/// Vendor responses. The first byte picks what reads the rest:
/// 0: a `Retry-After` value; 1: a `Link` header; 2..=4: a response body (JSON, else text) and a
/// `Link` header (its first line) paginated in each style; 5..: an error body in each style.
/// A wait is never negative and never panics; a next page is always below the base URL (or
/// [`NextPage::Foreign`]) and a SCIM page always moves forward.
pub fn check_vendor(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let base = "https://api.example.com/v1";
    match first % 6 {
        0 => {
            let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
            let _ = crate::http::parse_wait(&text, now);
        }
        1 => {
            if let Some(url) = link_next(&text) {
                assert!(text.contains(&url), "`{url}` is not in `{text}`");
            }
        }
        style @ 2..=4 => {
            let (link, body) = text.split_once('\n').unwrap_or((&text, ""));
            let mut headers = reqwest::header::HeaderMap::new();
            if let Ok(value) = reqwest::header::HeaderValue::from_str(link) {
                headers.insert(reqwest::header::LINK, value);
            }
            let body: Value =
                serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()));
            let style = [
                Pagination::CalendlyCursor,
                Pagination::LinkHeader,
                Pagination::ScimIndex,
            ][usize::from(style - 2)];
            for (start, received) in [(1, 0), (1, 3), (7, 100), (u64::MAX - 1, 5)] {
                match next_page(style, base, &headers, &body, start, received) {
                    NextPage::Url(url) => {
                        assert!(is_below(&url, base), "{url} is not below {base}")
                    }
                    NextPage::Param {
                        name: "startIndex",
                        value,
                    } => {
                        // The page's own startIndex, when it says one, else the one asked for.
                        let at = body
                            .get("startIndex")
                            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.trim().parse().ok()))
                            .unwrap_or(start)
                            .max(1);
                        let next: u64 = value.parse().expect("a number");
                        assert!(next > at, "SCIM paging went from {at} to {next}");
                    }
                    NextPage::Param { .. } | NextPage::Done | NextPage::Foreign(_) => {}
                }
            }
        }
        _ => {
            let body: Value = serde_json::from_str(&text)
                .unwrap_or_else(|_| Value::String(text.clone().into_owned()));
            for style in [ErrorStyle::Calendly, ErrorStyle::Webex, ErrorStyle::Scim] {
                let error = VendorError::parse("vendor", style, 400, &body, None);
                let _ = error.to_string();
            }
        }
    }
}
