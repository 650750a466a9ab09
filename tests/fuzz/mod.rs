//! The short pass of fuzzing in `cargo test`: a property harness per input surface, with
//! generators of structured near-valid input (a workflow built from the spec's shape with one
//! mutation, templates with nested helpers, filters with every operator, ...) mixed with random
//! text, each input run through the shared check of `blockyard::fuzzing` (never panics, stays under
//! a time bound, succeeds or fails with the documented error, round trips where there is one).
//! The HTTP API's harness sends such bodies to a real `serve` on loopback: never a 5xx.
//!
//! Every file saved under `tests/fixtures/fuzz/<surface>/` (what a long `scripts/fuzz` pass found)
//! is replayed by [`saved_inputs_still_pass`]. The long passes are `scripts/fuzz`; see TESTING.md.

use std::path::Path;

use blockyard::fuzzing::{self, SURFACES};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

mod gen;
mod server;

/// Cases per surface: a few seconds each in a debug build on two shared cores.
fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Runs `surface`'s check on every input `strategy` generates.
fn run(surface: &str, cases: u32, strategy: impl Strategy<Value = Vec<u8>>) {
    let mut runner = TestRunner::new(config(cases));
    runner
        .run(&strategy, |data| {
            fuzzing::check(surface, &data);
            Ok(())
        })
        .unwrap_or_else(|err| panic!("{surface}: {err}"));
}

/// Random bytes and random text, for every surface.
fn noise() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        any::<String>().prop_map(String::into_bytes),
    ]
}

fn text(strategy: impl Strategy<Value = String>) -> impl Strategy<Value = Vec<u8>> {
    strategy.prop_map(String::into_bytes)
}

#[test]
fn workflows() {
    run(
        "workflow",
        192,
        prop_oneof![
            4 => gen::workflow().prop_map(|yaml| yaml.into_bytes()),
            1 => noise()
        ],
    );
}

/// The mutations start from a workflow that compiles, so each input is one change from valid.
#[test]
fn the_workflow_mutated_compiles_unmutated() {
    let presets = blockyard::preset::PresetRegistry::builtin();
    for flags in 0..8 {
        let workflow = gen::base_workflow(flags & 1 != 0, flags & 2 != 0, flags & 4 != 0);
        let yaml = serde_yaml::to_string(&workflow).unwrap();
        let compiled = blockyard::compile::compile_source(
            blockyard::spec::Source::new("w.yaml", yaml),
            &presets,
        );
        assert!(compiled.is_ok(), "{:?}", compiled.err());
    }
}

#[test]
fn templates() {
    run(
        "template",
        384,
        prop_oneof![4 => text(gen::template()), 1 => noise()],
    );
}

#[test]
fn literal_templates_render_as_themselves() {
    // `check_template` asserts the round trip for text without `{{`, `}}` or `<<`.
    run(
        "template",
        128,
        text("[^{}<]{0,40}".prop_map(|s: String| s)),
    );
}

#[test]
fn rules() {
    run(
        "rule",
        256,
        prop_oneof![4 => text(gen::rule()), 1 => noise()],
    );
}

#[test]
fn scim_filters() {
    run(
        "scim_filter",
        512,
        prop_oneof![4 => text(gen::filter()), 1 => noise()],
    );
}

#[test]
fn scim_patch_bodies() {
    run(
        "scim_patch",
        384,
        prop_oneof![
            4 => gen::patch().prop_map(|body| body.to_string().into_bytes()),
            1 => noise()
        ],
    );
}

#[test]
fn cron_expressions_and_zones() {
    run(
        "cron",
        256,
        prop_oneof![4 => text(gen::cron()), 1 => noise()],
    );
}

#[test]
fn record_imports() {
    run("import", 192, prop_oneof![4 => gen::import(), 1 => noise()]);
}

#[test]
fn vendor_responses() {
    run("vendor", 512, prop_oneof![4 => gen::vendor(), 1 => noise()]);
}

/// Every input a long pass saved still passes its surface's check.
#[test]
fn saved_inputs_still_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
    let (mut replayed, mut failing) = (0, Vec::new());
    for surface in SURFACES.iter().chain(&["server"]) {
        let Ok(entries) = std::fs::read_dir(root.join(surface)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "md") {
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            let result = std::panic::catch_unwind(|| match *surface {
                "server" => server::replay(&data),
                _ => fuzzing::check(surface, &data),
            });
            if result.is_err() {
                failing.push(path.strip_prefix(&root).unwrap().display().to_string());
            }
            replayed += 1;
        }
    }
    failing.sort();
    assert_eq!(
        failing,
        Vec::<String>::new(),
        "saved inputs that fail again"
    );
    assert!(replayed > 0, "no saved input under {}", root.display());
}

/// A check that fails reports the input's surface (the harness itself works).
#[test]
fn an_unknown_surface_is_a_panic_naming_the_surfaces() {
    let err = std::panic::catch_unwind(|| fuzzing::check("nope", b"")).unwrap_err();
    assert_eq!(
        err.downcast_ref::<String>().map(String::as_str),
        Some(
            "no fuzz surface `nope`; the surfaces are [\"workflow\", \"template\", \"rule\", \
             \"scim_filter\", \"scim_patch\", \"cron\", \"import\", \"vendor\"]"
        )
    );
}

/// A JSON value of any shape, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        "[a-zA-Z0-9 @._:/-]{0,12}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec(("[a-zA-Z]{1,8}", inner), 0..4)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}
