//! Generated workflows for scale tests and benchmarks (shared with `benches/` through `#[path]`).

use std::fmt::Write;

/// A begin → api × n → end chain, each api block also failing over to `end`.
pub fn chain(n: usize) -> String {
    let mut yaml = String::from("name: chain\nblocks:\n  begin: {type: begin, next: b0}\n");
    for i in 0..n {
        let next = if i + 1 == n {
            "end".to_owned()
        } else {
            format!("b{}", i + 1)
        };
        let _ = writeln!(
            yaml,
            "  b{i}: {{type: api, preset: webex.get_user_details, with: {{webex_user_id: \"u{i}\"}}, next: {next}, on_failure: end}}"
        );
    }
    yaml.push_str("  end: {type: end}\n");
    yaml
}

/// begin → n parallel api blocks → end.
pub fn fan_out(n: usize) -> String {
    let mut yaml = String::from("name: fan\nblocks:\n  begin:\n    type: begin\n    next: [");
    yaml.push_str(
        &(0..n)
            .map(|i| format!("b{i}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    yaml.push_str("]\n");
    for i in 0..n {
        let _ = writeln!(
            yaml,
            "  b{i}: {{type: api, preset: webex.get_user_details, with: {{webex_user_id: \"u{i}\"}}, next: end}}"
        );
    }
    yaml.push_str("  end: {type: end}\n");
    yaml
}
