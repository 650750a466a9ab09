//! Compile-time benchmark: a generated 10,000-block chain and a 1,000-wide fan-out.
//!
//! Run with `cargo bench --bench compile`. For each workflow it times, over 30 runs after 3
//! warm-ups, the three stages separately and together:
//! - `load`: YAML text → `WorkflowSpec` (serde_yaml; positions are only built when there are errors);
//! - `compile`: `WorkflowSpec` + presets → `Workflow` (the checks, templates, graph);
//! - `validate`: both, what `blockyard validate` does per file.
//!
//! It prints the median, p90 and fastest run of each; BENCHMARKS.md records them.

use std::hint::black_box;
use std::time::{Duration, Instant};

use blockyard::compile::compile;
use blockyard::preset::PresetRegistry;
use blockyard::spec::{load, Source};

#[path = "../tests/generate.rs"]
mod generate;

const RUNS: usize = 30;

fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "median {:6.1} ms  p90 {:6.1} ms  min {:6.1} ms",
        ms(times[times.len() / 2]),
        ms(times[times.len() * 9 / 10]),
        ms(times[0])
    )
}

fn main() {
    let presets = PresetRegistry::builtin();
    for (name, yaml) in [
        ("chain of 10,000 blocks", generate::chain(10_000)),
        ("fan-out of 1,000 blocks", generate::fan_out(1_000)),
    ] {
        let (mut loads, mut compiles, mut totals) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..RUNS + 3 {
            let text = yaml.clone();
            let start = Instant::now();
            let loaded =
                load(Source::new("bench.yaml", text)).expect("the generated workflow loads");
            let loaded_at = start.elapsed();
            let workflow = compile(&loaded, &presets).expect("the generated workflow compiles");
            let total = start.elapsed();
            black_box(workflow.graph.node_count());
            if run >= 3 {
                loads.push(loaded_at);
                compiles.push(total - loaded_at);
                totals.push(total);
            }
        }
        println!("{name} ({} KiB of YAML, {RUNS} runs)", yaml.len() / 1024);
        println!("  load     {}", summary(loads));
        println!("  compile  {}", summary(compiles));
        println!("  validate {}", summary(totals));
    }
}
