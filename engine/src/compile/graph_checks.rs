//! The graph checks: edges resolve, one `begin` and one `end`, no cycles, every block reachable
//! from `begin` and able to reach `end`. Blocks whose contents failed to load still take part (with
//! the edges that could be read), so one bad block does not cascade into more errors.

use std::collections::HashMap;

use indexmap::IndexMap;
use petgraph::algo::kosaraju_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use super::{
    declared_edges, suggest, Block, BlockKind, CompileErrorKind, Compiler, Edge, EdgeKind, Trigger,
    Workflow,
};
use crate::rules::Condition;
use crate::spec::{BlockId, Targets, YamlPath};

struct Node<'a> {
    id: &'a BlockId,
    type_name: Option<&'a str>,
    next: &'a Targets,
    on_failure: &'a Targets,
}

pub(super) fn check(
    compiler: &mut Compiler<'_>,
    mut kinds: IndexMap<BlockId, Option<BlockKind>>,
    mut conditions: IndexMap<(BlockId, EdgeKind, usize), Condition>,
    trigger: Trigger,
) -> Option<Workflow> {
    let loaded = compiler.loaded;
    let block_path = |id: &BlockId| YamlPath::root().key("blocks").key(id.as_str());

    // Every block, loaded or broken, in file order.
    let mut nodes: Vec<Node<'_>> = loaded
        .spec
        .blocks
        .iter()
        .map(|(id, block)| Node {
            id,
            type_name: Some(block.type_name()),
            next: block.next(),
            on_failure: block.on_failure(),
        })
        .chain(loaded.broken.iter().map(|(id, broken)| Node {
            id,
            type_name: broken.type_name.as_deref(),
            next: &broken.next,
            on_failure: &broken.on_failure,
        }))
        .collect();
    if !loaded.broken.is_empty() {
        // Broken blocks were listed apart; put every block back in file order.
        nodes.sort_by_cached_key(|n| loaded.map().key_location(&block_path(n.id)));
    }

    let mut graph: DiGraph<usize, EdgeKind> = DiGraph::new();
    let index: HashMap<&str, NodeIndex> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), graph.add_node(i)))
        .collect();

    // begin and end. A second one is reported once, not again as unreachable or a dead end.
    let mut reported = vec![false; nodes.len()];
    let mut begin: Option<NodeIndex> = None;
    let mut end: Option<NodeIndex> = None;
    for node in &nodes {
        let (slot, duplicate): (&mut Option<NodeIndex>, fn(BlockId) -> CompileErrorKind) =
            match node.type_name {
                Some("begin") => (&mut begin, |first| CompileErrorKind::DuplicateBegin {
                    first,
                }),
                Some("end") => (&mut end, |first| CompileErrorKind::DuplicateEnd { first }),
                _ => continue,
            };
        match slot {
            None => *slot = Some(index[node.id.as_str()]),
            Some(first) => {
                reported[graph[index[node.id.as_str()]]] = true;
                let first = nodes[graph[*first]].id.clone();
                compiler.key_error(&block_path(node.id), Some(node.id), duplicate(first));
            }
        }
    }
    if begin.is_none() {
        compiler.key_error(
            &YamlPath::root().key("blocks"),
            None,
            CompileErrorKind::MissingBegin,
        );
    }
    if end.is_none() {
        compiler.key_error(
            &YamlPath::root().key("blocks"),
            None,
            CompileErrorKind::MissingEnd,
        );
    }

    // Edges. An edge to nowhere makes reachability meaningless (the intended path is unknown), so
    // the reachability checks wait until the edges resolve.
    let errors_before_edges = compiler.errors.len();
    let ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    for node in &nodes {
        let from = index[node.id.as_str()];
        for (kind, key, targets) in declared_edges(node.next, node.on_failure) {
            for (i, target) in targets.iter().enumerate() {
                let at = block_path(node.id).key(key).index(i).key("to");
                match index.get(target.to.as_str()) {
                    None => compiler.value_error(
                        &at,
                        Some(node.id),
                        CompileErrorKind::UnknownTarget {
                            edge: key,
                            target: target.to.clone(),
                            suggestion: suggest(
                                &target.to,
                                ids.iter().copied().filter(|id| *id != node.id.as_str()),
                            ),
                        },
                    ),
                    Some(&to) if Some(to) == begin => compiler.value_error(
                        &at,
                        Some(node.id),
                        CompileErrorKind::EdgeIntoBegin { edge: key },
                    ),
                    Some(&to) => {
                        graph.add_edge(from, to, kind);
                    }
                }
            }
        }
    }

    // Cycles, each named in order starting from its first block in the file.
    let mut on_cycle = vec![false; nodes.len()];
    let mut cycles: Vec<Vec<NodeIndex>> = kosaraju_scc(&graph)
        .into_iter()
        .filter(|scc| scc.len() > 1 || graph.contains_edge(scc[0], scc[0]))
        .map(|scc| order_cycle(&graph, &scc))
        .collect();
    cycles.sort_by_key(|c| c[0]);
    for cycle in &cycles {
        for &n in cycle {
            on_cycle[n.index()] = true;
        }
        let blocks: Vec<BlockId> = cycle.iter().map(|&n| nodes[graph[n]].id.clone()).collect();
        let first = &blocks[0];
        compiler.key_error(
            &block_path(first),
            Some(first),
            CompileErrorKind::Cycle {
                blocks: blocks.clone(),
            },
        );
    }

    // Reachability, both ways.
    let edges_resolve = compiler.errors.len() == errors_before_edges + cycles.len();
    let reachable = |start: NodeIndex, dir: petgraph::Direction| {
        let mut seen = vec![false; nodes.len()];
        let mut stack = vec![start];
        while let Some(n) = stack.pop() {
            if std::mem::replace(&mut seen[n.index()], true) {
                continue;
            }
            stack.extend(graph.neighbors_directed(n, dir));
        }
        seen
    };
    let from_begin = begin
        .filter(|_| edges_resolve)
        .map(|b| reachable(b, petgraph::Direction::Outgoing));
    let to_end = end
        .filter(|_| edges_resolve)
        .map(|e| reachable(e, petgraph::Direction::Incoming));
    for (i, node) in nodes.iter().enumerate() {
        if reported[i] {
            continue;
        }
        if let Some(from_begin) = &from_begin {
            if !from_begin[i] {
                compiler.key_error(
                    &block_path(node.id),
                    Some(node.id),
                    CompileErrorKind::Unreachable,
                );
                continue;
            }
        }
        if let (Some(to_end), Some(end)) = (&to_end, end) {
            if !to_end[i] && !on_cycle[i] {
                let end = nodes[graph[end]].id.clone();
                compiler.key_error(
                    &block_path(node.id),
                    Some(node.id),
                    CompileErrorKind::DeadEnd { end },
                );
            }
        }
    }

    if edges_resolve && cycles.is_empty() {
        check_block_refs(compiler, &nodes, &index, &kinds, |n| {
            reachable(n, petgraph::Direction::Incoming)
        });
    }

    if !compiler.errors.is_empty() {
        return None;
    }
    let (begin, end) = (begin?, end?);

    // The checked graph, with the same node indices.
    let mut checked: DiGraph<Block, Edge> = DiGraph::with_capacity(nodes.len(), graph.edge_count());
    for node in &nodes {
        let kind = kinds.get_mut(node.id).and_then(Option::take)?;
        checked.add_node(Block {
            id: node.id.clone(),
            kind,
        });
    }
    for node in &nodes {
        let from = index[node.id.as_str()];
        for (kind, _, targets) in declared_edges(node.next, node.on_failure) {
            for (i, target) in targets.iter().enumerate() {
                let when = if conditions.is_empty() {
                    None
                } else {
                    conditions.swap_remove(&(node.id.clone(), kind, i))
                };
                checked.add_edge(from, index[target.to.as_str()], Edge { kind, when });
            }
        }
    }
    let spec = &loaded.spec;
    Some(Workflow {
        name: spec.name.clone(),
        description: spec.description.clone(),
        vars: spec.vars.clone(),
        file: loaded.source.path.clone(),
        graph: checked,
        begin,
        end,
        trigger,
        notify: None,
        guard: None,
        timezone: chrono_tz::UTC,
    })
}

/// The fields of `blocks.ID` (see `exec/context.rs`).
const BLOCK_FIELDS: [&str; 4] = ["response", "outputs", "status", "outcome"];

/// Every `blocks.ID…` a template reads names a block that has settled when the reading block
/// starts (an ancestor: before it on every way there, since a block starts only when all its
/// predecessors have settled), one of its fields, and, for `outputs.NAME`, an output it declares.
/// `ancestors(n)` marks the blocks from which `n` can be reached (`n` included).
fn check_block_refs(
    compiler: &mut Compiler<'_>,
    nodes: &[Node<'_>],
    index: &HashMap<&str, NodeIndex>,
    kinds: &IndexMap<BlockId, Option<BlockKind>>,
    ancestors: impl Fn(NodeIndex) -> Vec<bool>,
) {
    let refs = std::mem::take(&mut compiler.block_refs);
    let mut cache: HashMap<NodeIndex, Vec<bool>> = HashMap::new();
    let ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    for r in refs {
        let mut segments = r.path.split(['.', '/']).skip(1);
        let Some(target) = segments.next().filter(|t| !t.contains('[')) else {
            continue;
        };
        let field = segments.next();
        let error =
            |compiler: &mut Compiler<'_>, kind| compiler.value_error(&r.yaml, Some(&r.block), kind);
        let Some(&target_node) = index.get(target) else {
            error(
                compiler,
                CompileErrorKind::UnknownBlockRef {
                    key: r.key.clone(),
                    block: target.to_owned(),
                    suggestion: suggest(target, ids.iter().copied()),
                },
            );
            continue;
        };
        let reader = index[r.block.as_str()];
        let before = cache
            .entry(reader)
            .or_insert_with(|| ancestors(reader))
            .get(target_node.index())
            .copied()
            .unwrap_or(false);
        if reader == target_node || !before {
            error(
                compiler,
                CompileErrorKind::BlockNotBefore {
                    key: r.key.clone(),
                    block: target.to_owned(),
                    itself: reader == target_node,
                },
            );
            continue;
        }
        let Some(field) = field.filter(|f| !f.contains('[')) else {
            continue;
        };
        if !BLOCK_FIELDS.contains(&field) {
            error(
                compiler,
                CompileErrorKind::UnknownBlockField {
                    key: r.key.clone(),
                    block: target.to_owned(),
                    field: field.to_owned(),
                    suggestion: suggest(field, BLOCK_FIELDS),
                },
            );
            continue;
        }
        let Some(output) = segments
            .next()
            .filter(|o| field == "outputs" && !o.contains('['))
        else {
            continue;
        };
        let Some(Some(kind)) = kinds.get(target) else {
            continue; // the block did not compile: its own errors say why
        };
        let declared = declared_outputs(compiler, kind);
        if !declared.iter().any(|d| d == output) {
            error(
                compiler,
                CompileErrorKind::UnknownOutput {
                    key: r.key.clone(),
                    block: target.to_owned(),
                    output: output.to_owned(),
                    suggestion: suggest(output, declared.iter().map(String::as_str)),
                    declared,
                },
            );
        }
    }
}

/// The outputs a block has once it succeeded: its `outputs:` (or its preset's default outputs),
/// role retrieval's `found`, `role`, `active` and `last_activity`, `found` when `answers` lists
/// not found, an ingest's counts, a wait's `outcome` and `until`.
fn declared_outputs(compiler: &Compiler<'_>, kind: &BlockKind) -> Vec<String> {
    let (call, role) = match kind {
        BlockKind::Api(call) => (call, false),
        BlockKind::RoleRetrieval(role) => (&role.call, true),
        BlockKind::Wait(_) => return crate::compile::WAIT_OUTPUTS.map(str::to_owned).to_vec(),
        BlockKind::Begin | BlockKind::End => return Vec::new(),
    };
    let mut declared: Vec<String> = if call.outputs.is_empty() {
        compiler
            .presets
            .action(&call.preset)
            .map(|a| a.spec.outputs.keys().cloned().collect())
            .unwrap_or_default()
    } else {
        call.outputs.keys().cloned().collect()
    };
    if role {
        declared.extend(["found", "role", "active", "last_activity"].map(str::to_owned));
    } else if call.reports_found() {
        declared.push("found".to_owned());
    }
    if call.collect.is_some() {
        declared.extend(
            [
                "new",
                "updated",
                "activated",
                "deactivated",
                "lists",
                "errors",
            ]
            .map(str::to_owned),
        );
    }
    declared
}

/// The blocks of a strongly connected component as one cycle, in edge order, starting from the
/// block that comes first in the file. Iterative, so a cycle of thousands of blocks cannot exhaust
/// the stack.
fn order_cycle(graph: &DiGraph<usize, EdgeKind>, scc: &[NodeIndex]) -> Vec<NodeIndex> {
    let start = *scc.iter().min().expect("an scc is never empty");
    let members: std::collections::HashSet<NodeIndex> = scc.iter().copied().collect();
    // Breadth-first from `start` inside the component, then follow parents back from the node
    // that closes the loop: the shortest cycle through `start`.
    let mut parent: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    let mut closing = None;
    'search: while let Some(current) = queue.pop_front() {
        let mut successors: Vec<NodeIndex> = graph
            .neighbors(current)
            .filter(|n| members.contains(n))
            .collect();
        successors.sort();
        successors.dedup();
        for next in successors {
            if next == start {
                closing = Some(current);
                break 'search;
            }
            if next != start && !parent.contains_key(&next) {
                parent.insert(next, current);
                queue.push_back(next);
            }
        }
    }
    let mut path = Vec::new();
    let mut at = closing.unwrap_or(start);
    while at != start {
        path.push(at);
        at = parent[&at];
    }
    path.push(start);
    path.reverse();
    path
}
