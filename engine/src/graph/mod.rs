//! Drawing a compiled workflow: a mermaid flowchart or a Graphviz dot graph (`blockyard graph`),
//! and an inline SVG for the web console ([`svg`], laid out by [`layout`]).
//!
//! Shapes tell block kinds apart: begin is a stadium (dot: oval), an API call a box, a role
//! retrieval a hexagon and end a double circle. Failure edges are dashed and labelled `on_failure`;
//! an edge with a condition is labelled with its `when:`. A block with `approval: required` is
//! marked: an `approval required` line in mermaid and dot (dot also draws it bold), a badge in the
//! SVG. Node names are generated (`n0`, `n1`, …) because block ids such as `end` are keywords in
//! mermaid; labels carry the ids.

use std::fmt::Write;

use crate::compile::{BlockKind, EdgeKind, WaitFor, Workflow};

pub mod layout;
pub mod svg;

pub use svg::{svg, Mark, Marks};

/// The line that marks an approval gate in mermaid and dot labels.
const APPROVAL_LINE: &str = "approval required";

/// Whether `node` waits for an administrator's approval before it sends (`approval: required`).
fn gated(workflow: &Workflow, node: petgraph::graph::NodeIndex) -> bool {
    matches!(&workflow.graph[node].kind, BlockKind::Api(call) if call.approval_required)
}

/// Output formats of `blockyard graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Mermaid,
    Dot,
}

/// Draws `workflow` in `format`.
pub fn render(workflow: &Workflow, format: Format) -> String {
    match format {
        Format::Mermaid => mermaid(workflow),
        Format::Dot => dot(workflow),
    }
}

fn label_lines(workflow: &Workflow, node: petgraph::graph::NodeIndex) -> (String, Option<String>) {
    let block = &workflow.graph[node];
    let detail = match &block.kind {
        BlockKind::Api(call) => Some(call.preset.to_string()),
        BlockKind::RoleRetrieval(role) => Some(role.call.preset.to_string()),
        BlockKind::Wait(wait) => Some(wait_detail(wait)),
        BlockKind::Begin | BlockKind::End => None,
    };
    (block.id.to_string(), detail)
}

/// `wait 7d`, `wait until {{record.last_day}}`, with `or wake_when` when it has one.
pub(crate) fn wait_detail(wait: &crate::compile::Wait) -> String {
    let how = match &wait.how {
        WaitFor::For(d) => format!("wait {}", crate::http::error::Exact(*d)),
        WaitFor::Until(t) => format!("wait until {}", t.source()),
    };
    match wait.wake_when {
        Some(_) => format!("{how} or wake_when"),
        None => how,
    }
}

fn edge_label(kind: EdgeKind, when: Option<&str>) -> Option<String> {
    match (kind, when) {
        (EdgeKind::Next, None) => None,
        (EdgeKind::Next, Some(when)) => Some(format!("when {when}")),
        (EdgeKind::Failure, None) => Some("on_failure".to_owned()),
        (EdgeKind::Failure, Some(when)) => Some(format!("on_failure when {when}")),
    }
}

/// A mermaid `flowchart TD`.
pub fn mermaid(workflow: &Workflow) -> String {
    let escape = |s: &str| {
        s.replace('"', "#quot;")
            .replace('<', "#lt;")
            .replace('>', "#gt;")
    };
    let mut out = String::from("flowchart TD\n");
    for node in workflow.graph.node_indices() {
        let (id, detail) = label_lines(workflow, node);
        let mut label = match detail {
            Some(detail) => format!("{}<br/>{}", escape(&id), escape(&detail)),
            None => escape(&id),
        };
        if gated(workflow, node) {
            label.push_str("<br/>");
            label.push_str(APPROVAL_LINE);
        }
        let (open, close) = match workflow.graph[node].kind {
            BlockKind::Begin => ("([", "])"),
            BlockKind::Api(_) => ("[", "]"),
            BlockKind::RoleRetrieval(_) => ("{{", "}}"),
            BlockKind::Wait(_) => ("[/", "/]"),
            BlockKind::End => ("(((", ")))"),
        };
        let _ = writeln!(out, "    n{}{open}\"{label}\"{close}", node.index());
    }
    for edge in workflow.graph.edge_indices() {
        let (from, to) = workflow.graph.edge_endpoints(edge).expect("edge exists");
        let weight = &workflow.graph[edge];
        let arrow = match weight.kind {
            EdgeKind::Next => "-->",
            EdgeKind::Failure => "-.->",
        };
        match edge_label(weight.kind, weight.when.as_ref().map(|c| c.source())) {
            Some(label) => {
                let _ = writeln!(
                    out,
                    "    n{} {arrow}|\"{}\"| n{}",
                    from.index(),
                    escape(&label),
                    to.index()
                );
            }
            None => {
                let _ = writeln!(out, "    n{} {arrow} n{}", from.index(), to.index());
            }
        }
    }
    out
}

/// A Graphviz `digraph`.
pub fn dot(workflow: &Workflow) -> String {
    let quote = |s: &str| {
        let mut q = String::with_capacity(s.len() + 2);
        q.push('"');
        for c in s.chars() {
            match c {
                '"' => q.push_str("\\\""),
                '\\' => q.push_str("\\\\"),
                '\n' => q.push_str("\\n"),
                c => q.push(c),
            }
        }
        q.push('"');
        q
    };
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", quote(&workflow.name));
    out.push_str("    rankdir=TB;\n    node [fontname=\"Helvetica\"];\n    edge [fontname=\"Helvetica\", fontsize=10];\n");
    for node in workflow.graph.node_indices() {
        let (id, detail) = label_lines(workflow, node);
        let mut label = match detail {
            Some(detail) => format!("{id}\n{detail}"),
            None => id,
        };
        let gate = gated(workflow, node);
        if gate {
            label.push('\n');
            label.push_str(APPROVAL_LINE);
        }
        let shape = match workflow.graph[node].kind {
            BlockKind::Begin => "oval",
            BlockKind::Api(_) => "box",
            BlockKind::RoleRetrieval(_) => "hexagon",
            BlockKind::Wait(_) => "parallelogram",
            BlockKind::End => "doublecircle",
        };
        let style = if gate { ", style=bold" } else { "" };
        let _ = writeln!(
            out,
            "    n{} [shape={shape}{style}, label={}];",
            node.index(),
            quote(&label)
        );
    }
    for edge in workflow.graph.edge_indices() {
        let (from, to) = workflow.graph.edge_endpoints(edge).expect("edge exists");
        let weight = &workflow.graph[edge];
        let mut attrs = Vec::new();
        if weight.kind == EdgeKind::Failure {
            attrs.push("style=dashed".to_owned());
            attrs.push("color=\"#c0392b\"".to_owned());
        }
        if let Some(label) = edge_label(weight.kind, weight.when.as_ref().map(|c| c.source())) {
            attrs.push(format!("label={}", quote(&label)));
        }
        if attrs.is_empty() {
            let _ = writeln!(out, "    n{} -> n{};", from.index(), to.index());
        } else {
            let _ = writeln!(
                out,
                "    n{} -> n{} [{}];",
                from.index(),
                to.index(),
                attrs.join(", ")
            );
        }
    }
    out.push_str("}\n");
    out
}
