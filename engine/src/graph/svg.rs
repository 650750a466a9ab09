//! Drawing a compiled workflow as an inline SVG for the web console, optionally coloured by a run.
//!
//! The picture is self-contained (presentation attributes, no stylesheet, no ids, so several graphs
//! can share a page) and carries classes and data attributes a page's CSS and script use:
//! - the root: `<svg class="workflow-graph" data-workflow="NAME">`;
//! - a block: `<g class="block kind-KIND [gate] [status-STATUS]" data-block="ID"
//!   [data-status="STATUS"]>`, KIND one of `begin`, `api`, `role_retrieval`, `end`; `gate` on a
//!   block with `approval: required` (also drawn as an `approval` badge); STATUS one of the
//!   [`Mark`] names, present only when drawn with [`Marks`];
//! - an edge: `<g class="edge next|failure [conditional] [taken]" data-from="ID" data-to="ID">`,
//!   its label (`when …`, `on_failure`) in `<text class="edge-label">`, cut into `<tspan>` lines
//!   (the whole label also in a `<title>` when it takes more than one line or was shortened).
//!
//! Drawn with [`Marks`] (a run's page), each block is coloured by its last step's status and the
//! edges the run took are highlighted; which edges were taken is derived from the steps by the
//! executor's rules, as [`Marks`] documents (history does not record edges nor the values of
//! conditions, so a conditional edge beside a certain one into the same block is not drawn taken).
//!
//! Shapes match [`super::mermaid`] and [`super::dot`]: begin a stadium, an API call a box, a role
//! retrieval a hexagon, end a double circle; failure edges are dashed. The layout is
//! [`super::layout`]'s, computed here from the petgraph workflow, so every page draws the same
//! picture. Every text from the workflow (ids, preset names, conditions) is escaped.

use std::fmt::Write;

use petgraph::graph::{EdgeIndex, NodeIndex};
use petgraph::visit::EdgeRef;

use super::layout::{self, Input, Placed};
use crate::compile::{BlockKind, EdgeKind, Workflow};
use crate::store::history::{StepRecord, StepStatus};

/// Vertical gap between layers (room for an edge label).
const LAYER_GAP: f64 = 76.0;
/// Characters of an edge label's line, and lines shown; the rest is in the edge's `<title>`.
const LABEL_CHARS: usize = 36;
const LABEL_LINES: usize = 3;
/// Line height of an edge label.
const LINE: f64 = 13.0;
const FONT: f64 = 13.0;
const SMALL_FONT: f64 = 11.0;

/// What a run did with one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// The block's last step had this status.
    Step(StepStatus),
    /// The run has no step for the block (it stopped or is waiting before it).
    NotReached,
}

impl Mark {
    /// The mark's name, as in `status-NAME`: a step status's name, or `not_reached`.
    pub fn name(self) -> &'static str {
        match self {
            Mark::Step(status) => status.name(),
            Mark::NotReached => "not_reached",
        }
    }
}

/// A run drawn over its workflow: each block's [`Mark`] and the edges the run took.
///
/// History records steps, not edges nor the values of `when:` conditions, so the taken edges are
/// derived from the executor's rules ([`crate::exec`]): a block is entered once every predecessor
/// has settled and at least one edge into it was taken (its source's outcome follows it, `next`
/// after `succeeded` or `planned`, `on_failure` after `failed`, and its `when:` held); otherwise
/// it is skipped. Several edges out of one block can be taken (a fan-out) and several into one
/// (a join). An edge is a *candidate* when its source's last step follows it and its target was
/// entered (it has a step that is not `skipped`); a candidate is drawn taken when
/// - it has no `when:` (it was taken for sure), or
/// - it is its target's only candidate (the target was entered, so it was taken), or
/// - none of its target's candidates is certain by the two rules above: at least one of these
///   conditional edges held and the record does not say which, so all of them are drawn.
///
/// A conditional candidate beside a certain one is not drawn: the target's entry is explained
/// without it, and its condition usually excludes the path that ran (scim-provision's
/// `find → end` when the person was not found, beside `delete → end`). Its condition's value is
/// not recorded, so when it did hold too, the picture leaves it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marks {
    blocks: Vec<Mark>,
    taken: Vec<bool>,
}

impl Marks {
    /// The marks of a run's `steps` over `workflow` (steps of blocks the workflow no longer has
    /// are ignored; a block with several steps, such as a retried one, shows its last).
    pub fn from_steps(workflow: &Workflow, steps: &[StepRecord]) -> Marks {
        let graph = &workflow.graph;
        let mut last: Vec<Option<&StepRecord>> = vec![None; graph.node_count()];
        for step in steps {
            let Some(node) = workflow.block(&step.block) else {
                continue;
            };
            let slot = &mut last[node.index()];
            if slot.is_none_or(|s| s.seq <= step.seq) {
                *slot = Some(step);
            }
        }
        let blocks: Vec<Mark> = last
            .iter()
            .map(|step| step.map_or(Mark::NotReached, |s| Mark::Step(s.status)))
            .collect();
        // Candidates: edges whose source's outcome follows them into an entered target.
        let candidate: Vec<bool> = graph
            .edge_references()
            .map(|edge| {
                let source = blocks[edge.source().index()];
                let target = blocks[edge.target().index()];
                let follows = match edge.weight().kind {
                    EdgeKind::Next => matches!(
                        source,
                        Mark::Step(StepStatus::Succeeded | StepStatus::Planned)
                    ),
                    EdgeKind::Failure => source == Mark::Step(StepStatus::Failed),
                };
                let entered = !matches!(target, Mark::NotReached | Mark::Step(StepStatus::Skipped));
                follows && entered
            })
            .collect();
        // Per target: its candidates, and those that were surely taken (no condition).
        let mut candidates = vec![0usize; graph.node_count()];
        let mut certain = vec![false; graph.node_count()];
        for edge in graph.edge_references() {
            if candidate[edge.id().index()] {
                candidates[edge.target().index()] += 1;
                if edge.weight().when.is_none() {
                    certain[edge.target().index()] = true;
                }
            }
        }
        let taken = graph
            .edge_references()
            .map(|edge| {
                let target = edge.target().index();
                candidate[edge.id().index()]
                    && (edge.weight().when.is_none() || candidates[target] == 1 || !certain[target])
            })
            .collect();
        Marks { blocks, taken }
    }

    /// The mark of `node`.
    pub fn block(&self, node: NodeIndex) -> Mark {
        self.blocks
            .get(node.index())
            .copied()
            .unwrap_or(Mark::NotReached)
    }

    /// Whether the run took `edge`.
    pub fn taken(&self, edge: EdgeIndex) -> bool {
        self.taken.get(edge.index()).copied().unwrap_or(false)
    }
}

/// Escapes `text` for XML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    escape_into(&mut out, text);
    out
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters other than tab and newline are not XML.
            c if c.is_control() && c != '\t' && c != '\n' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
}

/// Rough text width at `size` px (the picture is sized without a font engine).
fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * 0.6
}

/// The lines drawn in a block: its id and, for calls, the preset.
fn block_text(workflow: &Workflow, node: NodeIndex) -> (&str, Option<String>) {
    let block = &workflow.graph[node];
    let detail = match &block.kind {
        BlockKind::Api(call) => Some(call.preset.to_string()),
        BlockKind::RoleRetrieval(role) => Some(role.call.preset.to_string()),
        BlockKind::Wait(wait) => Some(super::wait_detail(wait)),
        BlockKind::Begin | BlockKind::End => None,
    };
    (block.id.as_str(), detail)
}

fn size(workflow: &Workflow, node: NodeIndex) -> (f64, f64) {
    let (id, detail) = block_text(workflow, node);
    let text = text_width(id, FONT)
        .max(detail.as_deref().map_or(0.0, |d| text_width(d, SMALL_FONT)))
        .round();
    match workflow.graph[node].kind {
        BlockKind::Begin => ((text + 36.0).max(90.0), 36.0),
        BlockKind::Api(_) => ((text + 24.0).max(110.0), 46.0),
        BlockKind::RoleRetrieval(_) => ((text + 44.0).max(120.0), 46.0),
        BlockKind::Wait(_) => ((text + 44.0).max(120.0), 46.0),
        BlockKind::End => {
            let d = (text + 22.0).max(46.0);
            (d, d)
        }
    }
}

/// (fill, stroke, text colour) of a block drawn with `mark`, or of an unmarked block.
fn colours(mark: Option<Mark>) -> (&'static str, &'static str, &'static str) {
    match mark {
        None => ("#f5f7fa", "#4a5568", "#1a202c"),
        Some(Mark::NotReached) => ("#ffffff", "#b8bec7", "#8a929c"),
        Some(Mark::Step(status)) => match status {
            StepStatus::Succeeded => ("#e3f4e8", "#2e7d32", "#1b4d20"),
            StepStatus::Failed => ("#fde2e1", "#c62828", "#7f1d1d"),
            StepStatus::Skipped => ("#eeeeee", "#9e9e9e", "#6b6b6b"),
            StepStatus::WaitingApproval => ("#fff4d6", "#b7791f", "#6b4a12"),
            StepStatus::Waiting => ("#fdf6e3", "#a1887f", "#5d4037"),
            StepStatus::Retrying => ("#ffe9d6", "#d9822b", "#7a4310"),
            StepStatus::Held => ("#efe4fb", "#7b3fb5", "#45206b"),
            StepStatus::Planned => ("#e3eefc", "#2f6fb5", "#173a63"),
            StepStatus::Sending => ("#e0f4f8", "#1d8aa0", "#0f4f5c"),
        },
    }
}

/// The SVG of `workflow`, coloured by `marks` when given (a run's page), plain otherwise.
pub fn svg(workflow: &Workflow, marks: Option<&Marks>) -> String {
    let graph = &workflow.graph;
    let nodes: Vec<NodeIndex> = graph.node_indices().collect();
    let mut input = Input {
        sizes: nodes.iter().map(|&n| size(workflow, n)).collect(),
        edges: graph
            .edge_references()
            .map(|e| (e.source().index(), e.target().index()))
            .collect(),
        labels: Vec::new(),
        layer_gap: LAYER_GAP,
    };
    let labels: Vec<Option<(String, Vec<String>)>> = graph
        .edge_references()
        .map(|e| {
            let weight = e.weight();
            let label = super::edge_label(weight.kind, weight.when.as_ref().map(|c| c.source()))?;
            let lines = label_lines(&label);
            Some((label, lines))
        })
        .collect();
    input.labels = labels
        .iter()
        .map(|label| {
            label.as_ref().map_or(0.0, |(_, lines)| {
                lines
                    .iter()
                    .map(|l| text_width(l, SMALL_FONT))
                    .fold(0.0, f64::max)
                    .round()
                    + 12.0
            })
        })
        .collect();
    let placed = layout::layout(&input);

    // An approval badge sticks out past its block's right edge.
    let gate_room = if nodes.iter().any(|&n| super::gated(workflow, n)) {
        28.0
    } else {
        0.0
    };
    let width = placed.width + gate_room;
    let mut out = String::with_capacity(1024 + 600 * nodes.len());
    let name = escape(&workflow.name);
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="workflow-graph" data-workflow="{name}" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif" font-size="{FONT}" role="img" aria-label="workflow {name}"><title>{name}</title>"#,
        w = width,
        h = placed.height,
    );

    // Edges first, so blocks sit on top. Parallel edges (same ends) are spread apart.
    out.push_str(r#"<g class="edges">"#);
    let mut parallel: std::collections::HashMap<(usize, usize), (usize, usize)> =
        std::collections::HashMap::new();
    for &pair in &input.edges {
        parallel.entry(pair).or_insert((0, 0)).1 += 1;
    }
    for (edge, points) in graph.edge_references().zip(&placed.edges) {
        let weight = edge.weight();
        let slot = parallel
            .get_mut(&(edge.source().index(), edge.target().index()))
            .expect("counted above");
        let offset = (slot.0 as f64 - (slot.1 - 1) as f64 / 2.0) * 14.0;
        slot.0 += 1;
        let mut points = points.clone();
        let last = points.len() - 1;
        points[0].0 += offset;
        points[last].0 += offset;
        let taken = marks.map(|m| m.taken(edge.id()));
        let failure = weight.kind == EdgeKind::Failure;
        let mut class = String::from(if failure { "edge failure" } else { "edge next" });
        if weight.when.is_some() {
            class.push_str(" conditional");
        }
        if taken == Some(true) {
            class.push_str(" taken");
        }
        let stroke = match (failure, taken) {
            (true, Some(false)) => "#e6b0aa",
            (true, _) => "#c0392b",
            (false, Some(true)) => "#2e7d32",
            (false, Some(false)) => "#c8ced6",
            (false, None) => "#7a8594",
        };
        let stroke_width = if taken == Some(true) { "3" } else { "1.5" };
        let _ = write!(
            out,
            r#"<g class="{class}" data-from="{}" data-to="{}">"#,
            escape(graph[edge.source()].id.as_str()),
            escape(graph[edge.target()].id.as_str()),
        );
        let mut d = format!("M{} {}", points[0].0, points[0].1);
        for pair in points.windows(2) {
            let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
            let mid = (y0 + y1) / 2.0;
            let _ = write!(d, " C{x0} {mid} {x1} {mid} {x1} {}", y1 - 7.0);
        }
        let dash = if failure {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = write!(
            out,
            r#"<path d="{d}" fill="none" stroke="{stroke}" stroke-width="{stroke_width}"{dash}/>"#
        );
        let (tx, ty) = points[last];
        let _ = write!(
            out,
            r#"<path d="M{} {} L{} {} L{tx} {ty} Z" fill="{stroke}"/>"#,
            tx - 5.0,
            ty - 9.0,
            tx + 5.0,
            ty - 9.0,
        );
        if let Some((label, lines)) = &labels[edge.id().index()] {
            // Above the lower end of the first segment, where the branches have spread (the layout
            // kept that end as wide as the label).
            let ((_, y0), (lx, y1)) = (points[0], points[1]);
            let ly = y0 + (y1 - y0) * 0.58;
            let top = ly - (lines.len() as f64 - 1.0) * LINE / 2.0 + 4.0;
            let _ = write!(
                out,
                r##"<text class="edge-label" x="{lx:.1}" y="{top:.1}" text-anchor="middle" font-size="{SMALL_FONT}" fill="{}" stroke="#ffffff" stroke-width="4" paint-order="stroke" stroke-linejoin="round">"##,
                if failure { "#a93226" } else { "#4a5568" },
            );
            for (i, line) in lines.iter().enumerate() {
                if i == 0 {
                    let _ = write!(out, r#"<tspan x="{lx:.1}">"#);
                } else {
                    let _ = write!(out, r#"<tspan x="{lx:.1}" dy="{LINE}">"#);
                }
                escape_into(&mut out, line);
                out.push_str("</tspan>");
            }
            out.push_str("</text>");
            if lines.len() > 1 || lines[0] != *label {
                out.push_str("<title>");
                escape_into(&mut out, label);
                out.push_str("</title>");
            }
        }
        out.push_str("</g>");
    }
    out.push_str("</g>");

    out.push_str(r#"<g class="blocks">"#);
    for ((&node, at), &(width, height)) in nodes.iter().zip(&placed.nodes).zip(&input.sizes) {
        // Drawn at its own size: the layout may have kept it wider for a label above it.
        let at = Placed {
            width,
            height,
            ..*at
        };
        block(&mut out, workflow, node, at, marks.map(|m| m.block(node)));
    }
    out.push_str("</g></svg>");
    out
}

/// `label` cut into lines of at most [`LABEL_CHARS`] (plus a trailing operator): after `&&` and
/// `||` first, then at spaces, then anywhere; past [`LABEL_LINES`] lines the last ends with `…`.
fn label_lines(label: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    let mut words = label.split(' ').peekable();
    while let Some(word) = words.next() {
        let operator = matches!(word, "&&" | "||");
        // An operator stays at the end of its line, even a little past the limit.
        // A word too long for any line is cut anyway, so it starts on this one.
        let long = word.chars().count() > LABEL_CHARS;
        let fits = line.is_empty()
            || operator
            || long
            || line.chars().count() + 1 + word.chars().count() <= LABEL_CHARS;
        if !fits {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
        while !operator && line.chars().count() > LABEL_CHARS {
            // After the last `.` or space that fits (a path breaks between its parts), else anywhere.
            let cut = line
                .char_indices()
                .take(LABEL_CHARS)
                .filter(|&(i, c)| i > 0 && (c == '.' || c == ' '))
                .map(|(i, c)| if c == '.' { i + 1 } else { i })
                .last()
                .filter(|&i| i >= LABEL_CHARS / 3)
                .unwrap_or_else(|| {
                    line.char_indices()
                        .nth(LABEL_CHARS)
                        .map_or(line.len(), |(i, _)| i)
                });
            let tail = line[cut..].trim_start().to_owned();
            line.truncate(cut);
            lines.push(std::mem::take(&mut line));
            line = tail;
        }
        // Break after a boolean operator when the rest does not fit on this line.
        if operator {
            let rest: usize = words.clone().map(|w| w.chars().count() + 1).sum();
            if line.chars().count() + rest > LABEL_CHARS {
                lines.push(std::mem::take(&mut line));
            }
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    if lines.len() > LABEL_LINES {
        lines.truncate(LABEL_LINES);
        let last = &mut lines[LABEL_LINES - 1];
        if last.chars().count() >= LABEL_CHARS {
            *last = last.chars().take(LABEL_CHARS - 1).collect();
        }
        last.push('…');
    }
    if lines.is_empty() {
        lines.push(String::new());
    }
    lines
}

fn block(out: &mut String, workflow: &Workflow, node: NodeIndex, at: Placed, mark: Option<Mark>) {
    let data = &workflow.graph[node];
    let kind = data.kind.name();
    let gate = super::gated(workflow, node);
    let (id, detail) = block_text(workflow, node);
    let id = escape(id);
    let _ = write!(out, r#"<g class="block kind-{kind}"#);
    if gate {
        out.push_str(" gate");
    }
    if let Some(mark) = mark {
        let _ = write!(out, " status-{}", mark.name());
    }
    let _ = write!(out, r#"" data-block="{id}""#);
    if let Some(mark) = mark {
        let _ = write!(out, r#" data-status="{}""#, mark.name());
    }
    out.push('>');
    // Tooltip: id, kind and preset, approval, status.
    let _ = write!(out, "<title>{id} ({kind}");
    if let Some(detail) = &detail {
        out.push_str(", ");
        escape_into(out, detail);
    }
    out.push(')');
    if gate {
        out.push_str(", approval required");
    }
    if let Some(mark) = mark {
        let _ = write!(out, ": {}", mark.name().replace('_', " "));
    }
    out.push_str("</title>");

    let (fill, stroke, text) = colours(mark);
    let dash = if mark == Some(Mark::NotReached) {
        r#" stroke-dasharray="4 3""#
    } else {
        ""
    };
    let width = if gate { "2.5" } else { "1.5" };
    let paint = format!(r#"fill="{fill}" stroke="{stroke}" stroke-width="{width}"{dash}"#);
    let (x, y, w, h) = (at.x, at.y, at.width, at.height);
    let (left, top) = (x - w / 2.0, y - h / 2.0);
    match data.kind {
        BlockKind::Begin => {
            let _ = write!(
                out,
                r#"<rect class="shape" x="{left}" y="{top}" width="{w}" height="{h}" rx="{}" {paint}/>"#,
                h / 2.0
            );
        }
        BlockKind::Api(_) => {
            let _ = write!(
                out,
                r#"<rect class="shape" x="{left}" y="{top}" width="{w}" height="{h}" rx="4" {paint}/>"#
            );
        }
        BlockKind::RoleRetrieval(_) => {
            let inset = h / 2.0 * 0.7;
            let (right, bottom) = (x + w / 2.0, y + h / 2.0);
            let _ = write!(
                out,
                r#"<polygon class="shape" points="{left},{y} {},{top} {},{top} {right},{y} {},{bottom} {},{bottom}" {paint}/>"#,
                left + inset,
                right - inset,
                right - inset,
                left + inset,
            );
        }
        BlockKind::Wait(_) => {
            // A parallelogram, as graph's mermaid and dot draw a wait.
            let skew = h * 0.4;
            let (right, bottom) = (x + w / 2.0, y + h / 2.0);
            let _ = write!(
                out,
                r#"<polygon class="shape" points="{},{top} {right},{top} {},{bottom} {left},{bottom}" {paint}/>"#,
                left + skew,
                right - skew,
            );
        }
        BlockKind::End => {
            let _ = write!(
                out,
                r#"<circle class="shape" cx="{x}" cy="{y}" r="{}" {paint}/><circle cx="{x}" cy="{y}" r="{}" fill="none" stroke="{stroke}" stroke-width="1.5"{dash}/>"#,
                w / 2.0,
                w / 2.0 - 4.0,
            );
        }
    }
    match detail {
        Some(detail) => {
            let _ = write!(
                out,
                r#"<text x="{x}" y="{:.1}" text-anchor="middle" font-weight="600" fill="{text}">{id}</text><text class="preset" x="{x}" y="{:.1}" text-anchor="middle" font-size="{SMALL_FONT}" fill="{text}" opacity="0.8">"#,
                y - 3.0,
                y + 12.0,
            );
            escape_into(out, &detail);
            out.push_str("</text>");
        }
        None => {
            let _ = write!(
                out,
                r#"<text x="{x}" y="{:.1}" text-anchor="middle" font-weight="600" fill="{text}">{id}</text>"#,
                y + 4.5,
            );
        }
    }
    if gate {
        // A badge on the top edge: the block waits for an administrator before it sends.
        let (bw, bh) = (62.0, 16.0);
        // Over the top-right corner, clear of the arrows that land on the top's middle.
        let (bx, by) = (x + w / 2.0 - bw / 2.0 - 4.0, top - bh / 2.0);
        let _ = write!(
            out,
            r##"<g class="gate-mark"><rect x="{bx}" y="{by}" width="{bw}" height="{bh}" rx="8" fill="#b7791f"/><text x="{}" y="{}" text-anchor="middle" font-size="10" font-weight="600" fill="#ffffff">approval</text></g>"##,
            bx + bw / 2.0,
            by + 11.5,
        );
    }
    out.push_str("</g>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{compile_file, compile_source};
    use crate::preset::PresetRegistry;
    use crate::spec::Source;
    use crate::store::history::RunId;

    fn compile(text: &str) -> Workflow {
        compile_source(Source::new("test.yaml", text), &PresetRegistry::builtin())
            .unwrap_or_else(|errors| panic!("{errors:?}"))
    }

    fn shipped(name: &str) -> Workflow {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("workflows")
            .join(name);
        compile_file(path, &PresetRegistry::builtin()).unwrap_or_else(|e| panic!("{e:?}"))
    }

    /// begin → notify, which on failure goes to `alert`; both reach end.
    const FAILURE_PATH: &str = r#"name: failure-path
blocks:
  begin: {type: begin, next: notify}
  notify:
    type: api
    preset: webhook.post
    credential: hook
    with: {payload: {text: hello}}
    next: end
    on_failure: alert
  alert:
    type: api
    preset: webhook.post
    credential: hook
    with: {payload: {text: "notify failed"}}
    next: end
  end: {type: end}
"#;

    fn step(run: RunId, seq: u32, block: &str, status: StepStatus) -> StepRecord {
        StepRecord::new(run, seq, block, "api", status, chrono::Utc::now())
    }

    fn edge(workflow: &Workflow, from: &str, to: &str, kind: EdgeKind) -> EdgeIndex {
        workflow
            .graph
            .edge_references()
            .find(|e| {
                workflow.graph[e.source()].id.as_str() == from
                    && workflow.graph[e.target()].id.as_str() == to
                    && e.weight().kind == kind
            })
            .map(|e| e.id())
            .unwrap_or_else(|| panic!("no edge {from} → {to}"))
    }

    #[test]
    fn marks_of_a_run_that_failed_through_its_failure_path() {
        let workflow = compile(FAILURE_PATH);
        let run = RunId::new();
        let steps = [
            step(run, 0, "begin", StepStatus::Succeeded),
            step(run, 1, "notify", StepStatus::Failed),
            step(run, 2, "alert", StepStatus::Succeeded),
            step(run, 3, "end", StepStatus::Succeeded),
        ];
        let marks = Marks::from_steps(&workflow, &steps);
        let mark = |id: &str| marks.block(workflow.block(id).unwrap());
        assert_eq!(mark("notify"), Mark::Step(StepStatus::Failed));
        assert_eq!(mark("alert"), Mark::Step(StepStatus::Succeeded));
        assert_eq!(mark("end"), Mark::Step(StepStatus::Succeeded));
        let taken = |from, to, kind| marks.taken(edge(&workflow, from, to, kind));
        assert!(taken("begin", "notify", EdgeKind::Next));
        assert!(taken("notify", "alert", EdgeKind::Failure));
        assert!(taken("alert", "end", EdgeKind::Next));
        assert!(!taken("notify", "end", EdgeKind::Next), "notify failed");

        let svg = svg(&workflow, Some(&marks));
        assert!(
            svg.contains(r#"<g class="block kind-api status-failed" data-block="notify" data-status="failed">"#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"<g class="edge failure taken" data-from="notify" data-to="alert">"#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"<g class="edge next" data-from="notify" data-to="end">"#),
            "{svg}"
        );
        roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{e}: {svg}"));
    }

    #[test]
    fn marks_of_a_run_stopped_at_a_failure_leave_the_rest_not_reached() {
        let workflow = compile(FAILURE_PATH);
        let run = RunId::new();
        // A retried block shows its last step; blocks without a step are not reached.
        let steps = [
            step(run, 0, "begin", StepStatus::Succeeded),
            step(run, 1, "notify", StepStatus::Retrying),
            step(run, 2, "notify", StepStatus::WaitingApproval),
            step(run, 3, "gone", StepStatus::Succeeded),
        ];
        let marks = Marks::from_steps(&workflow, &steps);
        let mark = |id: &str| marks.block(workflow.block(id).unwrap());
        assert_eq!(mark("notify"), Mark::Step(StepStatus::WaitingApproval));
        assert_eq!(mark("alert"), Mark::NotReached);
        assert_eq!(mark("end").name(), "not_reached");
        assert!(marks.taken(edge(&workflow, "begin", "notify", EdgeKind::Next)));
        assert!(!marks.taken(edge(&workflow, "notify", "alert", EdgeKind::Failure)));
        let svg = svg(&workflow, Some(&marks));
        assert!(
            svg.contains(r#"data-block="alert" data-status="not_reached""#),
            "{svg}"
        );
    }

    /// The edges `marks` draws taken, as `from -> to` (`-on_failure->` for a failure edge), in
    /// the workflow's edge order.
    fn taken_edges(workflow: &Workflow, marks: &Marks) -> Vec<String> {
        workflow
            .graph
            .edge_references()
            .filter(|e| marks.taken(e.id()))
            .map(|e| {
                let arrow = match e.weight().kind {
                    EdgeKind::Next => "->",
                    EdgeKind::Failure => "-on_failure->",
                };
                let graph = &workflow.graph;
                format!("{} {arrow} {}", graph[e.source()].id, graph[e.target()].id)
            })
            .collect()
    }

    #[test]
    fn an_approved_scim_delete_takes_only_the_path_it_ran() {
        let workflow = shipped("scim-provision.yaml");
        let run = RunId::new();
        // find → delete (approved) → end: the conditional `find → end` (not found and not
        // active) did not hold, though `find` succeeded and `end` ran.
        let steps = [
            step(run, 0, "begin", StepStatus::Succeeded),
            step(run, 1, "find", StepStatus::Succeeded),
            step(run, 2, "update", StepStatus::Skipped),
            step(run, 3, "deactivate", StepStatus::Skipped),
            step(run, 4, "create", StepStatus::Skipped),
            step(run, 5, "delete", StepStatus::WaitingApproval),
            step(run, 6, "delete", StepStatus::Succeeded),
            step(run, 7, "end", StepStatus::Succeeded),
        ];
        let marks = Marks::from_steps(&workflow, &steps);
        assert_eq!(
            taken_edges(&workflow, &marks),
            ["begin -> find", "find -> delete", "delete -> end"]
        );
        let svg = svg(&workflow, Some(&marks));
        assert!(
            svg.contains(r#"<g class="edge next conditional" data-from="find" data-to="end">"#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"<g class="edge next taken" data-from="delete" data-to="end">"#),
            "{svg}"
        );

        // A person the service does not have, inactive: find → end, every branch skipped.
        let steps = [
            step(run, 0, "begin", StepStatus::Succeeded),
            step(run, 1, "find", StepStatus::Succeeded),
            step(run, 2, "update", StepStatus::Skipped),
            step(run, 3, "deactivate", StepStatus::Skipped),
            step(run, 4, "delete", StepStatus::Skipped),
            step(run, 5, "create", StepStatus::Skipped),
            step(run, 6, "end", StepStatus::Succeeded),
        ];
        let marks = Marks::from_steps(&workflow, &steps);
        assert_eq!(
            taken_edges(&workflow, &marks),
            ["begin -> find", "find -> end"]
        );
    }

    #[test]
    fn a_failure_path_takes_the_on_failure_edge_only() {
        let workflow = compile(FAILURE_PATH);
        let run = RunId::new();
        let steps = [
            step(run, 0, "begin", StepStatus::Succeeded),
            step(run, 1, "notify", StepStatus::Failed),
            step(run, 2, "alert", StepStatus::Succeeded),
            step(run, 3, "end", StepStatus::Succeeded),
        ];
        let marks = Marks::from_steps(&workflow, &steps);
        assert_eq!(
            taken_edges(&workflow, &marks),
            [
                "begin -> notify",
                "notify -on_failure-> alert",
                "alert -> end"
            ]
        );
    }

    /// begin fans out to `a` and `b` (unconditionally) and to `c` when a condition holds; `a` and
    /// `b` join at `d`, which `c` also reaches when its condition holds.
    const FAN_OUT: &str = r#"name: fan-out
blocks:
  begin:
    type: begin
    next:
      - a
      - b
      - { to: c, when: 'vars.x == 1' }
  a: {type: api, preset: webhook.post, credential: hook, with: {payload: {text: a}}, next: d}
  b: {type: api, preset: webhook.post, credential: hook, with: {payload: {text: b}}, next: d}
  c:
    type: api
    preset: webhook.post
    credential: hook
    with: {payload: {text: c}}
    next: [{ to: d, when: 'vars.y == 1' }]
  d: {type: api, preset: webhook.post, credential: hook, with: {payload: {text: d}}, next: end}
  end: {type: end}
"#;

    #[test]
    fn a_fan_out_takes_every_branch_and_a_join_every_unconditional_edge_in() {
        let workflow = compile(FAN_OUT);
        let run = RunId::new();
        // `c` skipped: both unconditional edges into the join were taken.
        let steps = [
            step(run, 0, "begin", StepStatus::Succeeded),
            step(run, 1, "c", StepStatus::Skipped),
            step(run, 2, "a", StepStatus::Succeeded),
            step(run, 3, "b", StepStatus::Succeeded),
            step(run, 4, "d", StepStatus::Succeeded),
            step(run, 5, "end", StepStatus::Succeeded),
        ];
        let marks = Marks::from_steps(&workflow, &steps);
        assert_eq!(
            taken_edges(&workflow, &marks),
            ["begin -> a", "begin -> b", "a -> d", "b -> d", "d -> end"]
        );

        // `c` ran (its in-edge is its only one, so its condition held); whether `c → d` held too
        // is not recorded, and `d` was entered through `a` and `b` anyway.
        let steps = [
            step(run, 0, "begin", StepStatus::Succeeded),
            step(run, 1, "a", StepStatus::Succeeded),
            step(run, 2, "c", StepStatus::Succeeded),
            step(run, 3, "b", StepStatus::Succeeded),
            step(run, 4, "d", StepStatus::Succeeded),
            step(run, 5, "end", StepStatus::Succeeded),
        ];
        let marks = Marks::from_steps(&workflow, &steps);
        assert_eq!(
            taken_edges(&workflow, &marks),
            [
                "begin -> a",
                "begin -> b",
                "begin -> c",
                "a -> d",
                "b -> d",
                "d -> end"
            ]
        );

        // `a` and `b` failed: `d` was entered, so `c → d`, its only edge that could be taken, was.
        let steps = [
            step(run, 0, "begin", StepStatus::Succeeded),
            step(run, 1, "a", StepStatus::Failed),
            step(run, 2, "b", StepStatus::Failed),
            step(run, 3, "c", StepStatus::Succeeded),
            step(run, 4, "d", StepStatus::Succeeded),
        ];
        let marks = Marks::from_steps(&workflow, &steps);
        assert_eq!(
            taken_edges(&workflow, &marks),
            ["begin -> a", "begin -> b", "begin -> c", "c -> d"]
        );
    }

    #[test]
    fn skipped_targets_are_not_taken() {
        let workflow = shipped("calendly-offboard.yaml");
        let run = RunId::new();
        let steps = [
            step(run, 0, "begin", StepStatus::Succeeded),
            step(run, 1, "find", StepStatus::Succeeded),
            step(run, 2, "remove", StepStatus::Skipped),
            step(run, 3, "end", StepStatus::Succeeded),
        ];
        let marks = Marks::from_steps(&workflow, &steps);
        assert!(!marks.taken(edge(&workflow, "find", "remove", EdgeKind::Next)));
        assert!(!marks.taken(edge(&workflow, "remove", "end", EdgeKind::Next)));
        assert!(marks.taken(edge(&workflow, "find", "end", EdgeKind::Next)));
    }

    #[test]
    fn labels_break_after_operators_then_words_and_end_in_an_ellipsis() {
        assert_eq!(label_lines("on_failure"), ["on_failure"]);
        assert_eq!(
            label_lines(r#"when !blocks.find.outputs.found && record.status != "active""#),
            [
                "when !blocks.find.outputs.found &&",
                r#"record.status != "active""#
            ]
        );
        assert_eq!(
            label_lines("when a && b"),
            ["when a && b"],
            "short enough for one line"
        );
        assert_eq!(
            label_lines("when blocks.calendly_activity.outputs.found && blocks.calendly_activity.outputs.idle_days >= vars.idle_days"),
            [
                "when blocks.calendly_activity.",
                "outputs.found &&",
                "blocks.calendly_activity.outputs.…"
            ]
        );
        assert_eq!(
            label_lines(&format!("when {}", "x".repeat(120))),
            [
                format!("when {}", "x".repeat(31)).as_str(),
                "x".repeat(36).as_str(),
                format!("{}…", "x".repeat(35)).as_str()
            ]
        );
    }

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">Tom & 'Jerry'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("bell\u{7}"), "bell\u{fffd}");
    }

    #[test]
    fn user_text_is_escaped_in_the_picture() {
        let text = FAILURE_PATH
            .replace("name: failure-path", r#"name: "<b>&'quoted'\"""#)
            .replace("alert", r#""a<l>&'e\"rt""#);
        let workflow = compile(&text);
        let svg = svg(&workflow, None);
        let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{e}: {svg}"));
        assert_eq!(
            doc.root_element().attribute("data-workflow"),
            Some(r#"<b>&'quoted'""#)
        );
        let ids: Vec<&str> = doc
            .descendants()
            .filter_map(|n| n.attribute("data-block"))
            .collect();
        assert_eq!(ids, ["begin", "notify", r#"a<l>&'e"rt"#, "end"]);
        assert!(svg.contains("a&lt;l&gt;&amp;&#39;e&quot;rt"), "{svg}");
        assert!(!svg.contains("<b>"), "{svg}");
    }

    #[test]
    fn scim_provision_marks_its_gate_and_labels_its_branches() {
        let workflow = shipped("scim-provision.yaml");
        let svg = svg(&workflow, None);
        assert!(
            svg.starts_with(r#"<svg xmlns="http://www.w3.org/2000/svg" class="workflow-graph" data-workflow="scim-provision" "#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"<g class="block kind-api gate" data-block="delete"><title>delete (api, scim.delete_user), approval required</title>"#),
            "{svg}"
        );
        assert!(svg.contains(r#"<g class="gate-mark">"#), "{svg}");
        assert_eq!(svg.matches(r#"class="gate-mark""#).count(), 1, "{svg}");
        assert!(
            svg.contains(r#"<g class="block kind-begin" data-block="begin"><title>begin (begin)</title><rect class="shape" "#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"<g class="block kind-end" data-block="end"><title>end (end)</title><circle class="shape" "#),
            "{svg}"
        );
        // A long condition is shortened on the edge and whole in its title.
        assert!(
            svg.contains(r#"<g class="edge next conditional" data-from="find" data-to="delete">"#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"<tspan x="923.0">when blocks.find.outputs.found &amp;&amp;</tspan><tspan x="923.0" dy="13">record.status == &quot;terminated&quot;</tspan></text><title>when blocks.find.outputs.found &amp;&amp; record.status == &quot;terminated&quot;</title>"#),
            "{svg}"
        );
        // Unmarked: no status classes.
        assert!(!svg.contains("status-"), "{svg}");
    }

    #[test]
    fn role_retrieval_is_a_hexagon_and_failure_edges_are_dashed() {
        let workflow = compile(
            r#"name: branch
blocks:
  begin:
    type: begin
    records: saas_users
    schedule: {cron: "@daily"}
    next: role
  role: {type: role_retrieval, preset: calendly.user_role, credential: calendly, next: end, on_failure: end}
  end: {type: end}
"#,
        );
        let svg = svg(&workflow, None);
        assert!(
            svg.contains(r#"<g class="block kind-role_retrieval" data-block="role"><title>role (role_retrieval, calendly.user_role)</title><polygon class="shape" "#),
            "{svg}"
        );
        let failure = svg
            .split(r#"<g class="edge failure" data-from="role" data-to="end">"#)
            .nth(1)
            .expect("failure edge drawn");
        assert!(
            failure
                .split("</g>")
                .next()
                .unwrap()
                .contains(r#"stroke-dasharray="6 4""#),
            "{svg}"
        );
        assert!(failure.contains(">on_failure</tspan></text>"), "{svg}");
        roxmltree::Document::parse(&svg).unwrap();
    }

    #[test]
    fn every_shipped_workflow_draws_as_well_formed_svg() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        assert!(files.len() >= 10, "{files:?}");
        for file in files {
            let workflow = compile_file(&file, &PresetRegistry::builtin())
                .unwrap_or_else(|e| panic!("{}: {e:?}", file.display()));
            let run = RunId::new();
            let steps: Vec<StepRecord> = workflow
                .graph
                .node_indices()
                .enumerate()
                .map(|(i, n)| {
                    step(
                        run,
                        i as u32,
                        workflow.graph[n].id.as_str(),
                        StepStatus::Succeeded,
                    )
                })
                .collect();
            let marks = Marks::from_steps(&workflow, &steps);
            for marks in [None, Some(&marks)] {
                let svg = svg(&workflow, marks);
                let doc = roxmltree::Document::parse(&svg)
                    .unwrap_or_else(|e| panic!("{}: {e}\n{svg}", file.display()));
                let root = doc.root_element();
                assert_eq!(root.tag_name().name(), "svg");
                assert_eq!(
                    root.tag_name().namespace(),
                    Some("http://www.w3.org/2000/svg")
                );
                let count = |class: &str| {
                    doc.descendants()
                        .filter(|n| {
                            n.attribute("class")
                                .is_some_and(|c| c.split(' ').next() == Some(class))
                        })
                        .count()
                };
                assert_eq!(
                    count("block"),
                    workflow.graph.node_count(),
                    "{}",
                    file.display()
                );
                assert_eq!(
                    count("edge"),
                    workflow.graph.edge_count(),
                    "{}",
                    file.display()
                );
                // Same picture every time.
                assert_eq!(svg, super::svg(&workflow, marks), "{}", file.display());
            }
        }
    }
}
