//! A layered (Sugiyama-style) layout of a small directed acyclic graph, for [`super::svg`].
//!
//! Four steps, each deterministic so a workflow is the same picture on every page:
//! 1. **Layering**: longest path from the sources (Kahn's topological order, lowest index first):
//!    a vertex sits one layer below its lowest predecessor, so every edge points down.
//! 2. **Dummy vertices**: an edge spanning more than one layer is cut into one segment per layer
//!    with a dummy vertex at each layer crossed, so it bends around the blocks in between.
//! 3. **Ordering**: barycenter sweeps, down then up, [`SWEEPS`] times: each layer is sorted by the
//!    mean position of its neighbours in the layer just fixed (stable, so ties keep their order).
//!    The order with the fewest crossings seen is kept (the first one on a tie).
//! 4. **Coordinates**: layers are stacked top to bottom; a vertex under an edge label is given the
//!    label's width (the SVG writes labels there); in a layer vertices are pulled towards the
//!    mean x of their neighbours, then pushed apart to their minimum separation in order (the mean
//!    of a left-to-right and a right-to-left packing, which keeps both the order and the gaps).
//!
//! Workflows have tens of blocks, so the quadratic crossing count is no concern.

/// Horizontal gap between two blocks of a layer.
const GAP: f64 = 32.0;
/// Horizontal gap next to a dummy vertex (an edge passing through a layer).
const DUMMY_GAP: f64 = 14.0;
/// Width a dummy vertex takes.
const DUMMY_WIDTH: f64 = 8.0;
/// Margin around the picture.
pub const MARGIN: f64 = 16.0;
/// Down-and-up barycenter sweeps.
const SWEEPS: usize = 8;
/// Coordinate relaxation passes.
const PASSES: usize = 8;

/// What to lay out: vertex sizes (width, height) and edges as (source, target) vertex indices.
#[derive(Debug, Clone, Default)]
pub struct Input {
    pub sizes: Vec<(f64, f64)>,
    pub edges: Vec<(usize, usize)>,
    /// Per edge, the width its label needs (0 without one). The label sits on the edge's first
    /// segment near its lower end, so that end (the target, or the first dummy) is kept at least
    /// this wide; empty means no labels.
    pub labels: Vec<f64>,
    /// Vertical gap between two layers.
    pub layer_gap: f64,
}

/// A placed vertex: its centre and the size it was given room for (at least its own; wider when
/// an edge label sits above it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placed {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

/// The layout: the input's vertices placed, each edge as the points it passes (source's bottom,
/// dummy centres, target's top), and the picture's size.
#[derive(Debug, Clone)]
pub struct Layout {
    pub nodes: Vec<Placed>,
    /// Each input vertex's layer (0 for the sources).
    pub layers: Vec<usize>,
    /// Each input vertex's position in its layer after ordering.
    pub order: Vec<usize>,
    pub edges: Vec<Vec<(f64, f64)>>,
    /// Edge crossings between adjacent layers in the kept order.
    pub crossings: usize,
    pub width: f64,
    pub height: f64,
}

/// Lays out `input`, which must be acyclic (a compiled workflow is).
pub fn layout(input: &Input) -> Layout {
    let n = input.sizes.len();
    let layer = layering(n, &input.edges);

    // Vertices: the input's, then one dummy per layer an edge crosses.
    let mut vlayer = layer.clone();
    let mut width: Vec<f64> = input.sizes.iter().map(|s| s.0).collect();
    let mut chains: Vec<Vec<usize>> = Vec::with_capacity(input.edges.len());
    for (e, &(from, to)) in input.edges.iter().enumerate() {
        let mut chain = vec![from];
        for l in layer[from] + 1..layer[to] {
            chain.push(vlayer.len());
            vlayer.push(l);
            width.push(DUMMY_WIDTH);
        }
        chain.push(to);
        if let Some(&label) = input.labels.get(e) {
            width[chain[1]] = width[chain[1]].max(label);
        }
        chains.push(chain);
    }
    let count = vlayer.len();
    let depth = layer.iter().copied().max().map_or(0, |m| m + 1);

    // Segments between adjacent layers, and each vertex's neighbours above and below.
    let mut up: Vec<Vec<usize>> = vec![Vec::new(); count];
    let mut down: Vec<Vec<usize>> = vec![Vec::new(); count];
    for chain in &chains {
        for pair in chain.windows(2) {
            down[pair[0]].push(pair[1]);
            up[pair[1]].push(pair[0]);
        }
    }

    // Initial order: topological rank for real vertices, creation order for dummies.
    let mut layers: Vec<Vec<usize>> = vec![Vec::new(); depth];
    for v in topological(n, &input.edges).into_iter().chain(n..count) {
        layers[vlayer[v]].push(v);
    }
    let mut pos = vec![0usize; count];
    let index = |layers: &Vec<Vec<usize>>, pos: &mut Vec<usize>| {
        for row in layers {
            for (i, &v) in row.iter().enumerate() {
                pos[v] = i;
            }
        }
    };
    index(&layers, &mut pos);

    let mut best = layers.clone();
    let mut best_crossings = crossings(&layers, &down, &pos);
    for sweep in 0..SWEEPS * 2 {
        let downward = sweep % 2 == 0;
        let rows: Vec<usize> = if downward {
            (1..depth).collect()
        } else {
            (0..depth.saturating_sub(1)).rev().collect()
        };
        for l in rows {
            let neighbours = if downward { &up } else { &down };
            let mut keyed: Vec<(f64, usize)> = layers[l]
                .iter()
                .map(|&v| {
                    let near = &neighbours[v];
                    let key = if near.is_empty() {
                        pos[v] as f64
                    } else {
                        near.iter().map(|&u| pos[u] as f64).sum::<f64>() / near.len() as f64
                    };
                    (key, v)
                })
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
            layers[l] = keyed.into_iter().map(|(_, v)| v).collect();
            for (i, &v) in layers[l].iter().enumerate() {
                pos[v] = i;
            }
        }
        let now = crossings(&layers, &down, &pos);
        if now < best_crossings {
            best_crossings = now;
            best = layers.clone();
        }
    }
    let layers = best;
    index(&layers, &mut pos);

    // y: layers stacked, each as tall as its tallest vertex.
    let mut height = vec![0.0f64; count];
    for (v, h) in height.iter_mut().enumerate().take(n) {
        *h = input.sizes[v].1;
    }
    let mut row_y = Vec::with_capacity(depth);
    let mut top = MARGIN;
    for row in &layers {
        let tallest = row.iter().map(|&v| height[v]).fold(0.0, f64::max);
        row_y.push(top + tallest / 2.0);
        top += tallest + input.layer_gap;
    }

    // x: packed and centred, then relaxed towards the neighbours' mean.
    let sep = |a: usize, b: usize| {
        let gap = if a >= n || b >= n { DUMMY_GAP } else { GAP };
        (width[a] + width[b]) / 2.0 + gap
    };
    let mut x = vec![0.0f64; count];
    for row in &layers {
        let mut at = 0.0;
        for (i, &v) in row.iter().enumerate() {
            if i > 0 {
                at += sep(row[i - 1], v);
            }
            x[v] = at;
        }
        for &v in row {
            x[v] -= at / 2.0;
        }
    }
    for pass in 0..PASSES {
        let neighbours = if pass % 2 == 0 { &up } else { &down };
        for row in &layers {
            let want: Vec<f64> = row
                .iter()
                .map(|&v| {
                    let near = &neighbours[v];
                    if near.is_empty() {
                        x[v]
                    } else {
                        near.iter().map(|&u| x[u]).sum::<f64>() / near.len() as f64
                    }
                })
                .collect();
            let mut left = want.clone();
            for i in 1..row.len() {
                left[i] = left[i].max(left[i - 1] + sep(row[i - 1], row[i]));
            }
            let mut right = want;
            for i in (0..row.len().saturating_sub(1)).rev() {
                right[i] = right[i].min(right[i + 1] - sep(row[i], row[i + 1]));
            }
            for (i, &v) in row.iter().enumerate() {
                x[v] = (left[i] + right[i]) / 2.0;
            }
        }
    }
    let min_x = (0..count)
        .map(|v| x[v] - width[v] / 2.0)
        .fold(f64::INFINITY, f64::min);
    let shift = if min_x.is_finite() {
        MARGIN - min_x
    } else {
        0.0
    };
    for value in &mut x {
        // Whole pixels: the same picture on every platform, and short SVG numbers.
        *value = (*value + shift).round();
    }
    let max_x = (0..count)
        .map(|v| x[v] + width[v] / 2.0)
        .fold(0.0, f64::max);

    let nodes: Vec<Placed> = (0..n)
        .map(|v| Placed {
            x: x[v],
            y: row_y[vlayer[v]],
            width: width[v],
            height: height[v],
        })
        .collect();
    let edges = chains
        .iter()
        .map(|chain| {
            let last = chain.len() - 1;
            chain
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let y = row_y[vlayer[v]];
                    match i {
                        0 => (x[v], y + height[v] / 2.0),
                        i if i == last => (x[v], y - height[v] / 2.0),
                        _ => (x[v], y),
                    }
                })
                .collect()
        })
        .collect();
    Layout {
        nodes,
        layers: layer,
        order: pos[..n].to_vec(),
        edges,
        crossings: best_crossings,
        width: max_x + MARGIN,
        height: (top - input.layer_gap + MARGIN).max(2.0 * MARGIN),
    }
}

/// Kahn's topological order, the lowest-numbered ready vertex first.
fn topological(n: usize, edges: &[(usize, usize)]) -> Vec<usize> {
    let mut indegree = vec![0usize; n];
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(from, to) in edges {
        indegree[to] += 1;
        out[from].push(to);
    }
    let mut ready: std::collections::BTreeSet<usize> =
        (0..n).filter(|&v| indegree[v] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(v) = ready.pop_first() {
        order.push(v);
        for &w in &out[v] {
            indegree[w] -= 1;
            if indegree[w] == 0 {
                ready.insert(w);
            }
        }
    }
    debug_assert_eq!(order.len(), n, "layout input has a cycle");
    order
}

/// Longest-path layering: sources on layer 0, every other vertex one below its lowest predecessor.
pub fn layering(n: usize, edges: &[(usize, usize)]) -> Vec<usize> {
    let mut incoming: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(from, to) in edges {
        incoming[to].push(from);
    }
    let mut layer = vec![0usize; n];
    for v in topological(n, edges) {
        layer[v] = incoming[v].iter().map(|&u| layer[u] + 1).max().unwrap_or(0);
    }
    layer
}

/// Crossings between adjacent layers: two segments cross when their ends are in opposite orders.
fn crossings(layers: &[Vec<usize>], down: &[Vec<usize>], pos: &[usize]) -> usize {
    let mut total = 0;
    for row in layers {
        let segments: Vec<(usize, usize)> = row
            .iter()
            .flat_map(|&v| down[v].iter().map(move |&w| (pos[v], pos[w])))
            .collect();
        for (i, a) in segments.iter().enumerate() {
            for b in &segments[i + 1..] {
                if (a.0 < b.0 && a.1 > b.1) || (a.0 > b.0 && a.1 < b.1) {
                    total += 1;
                }
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(n: usize, edges: &[(usize, usize)]) -> Input {
        Input {
            sizes: vec![(100.0, 40.0); n],
            edges: edges.to_vec(),
            labels: Vec::new(),
            layer_gap: 50.0,
        }
    }

    fn assert_no_overlap(layout: &Layout) {
        for (i, a) in layout.nodes.iter().enumerate() {
            for (j, b) in layout.nodes.iter().enumerate().skip(i + 1) {
                let apart_x = (a.x - b.x).abs() >= (a.width + b.width) / 2.0;
                let apart_y = (a.y - b.y).abs() >= (a.height + b.height) / 2.0;
                assert!(
                    apart_x || apart_y,
                    "vertices {i} and {j} overlap: {a:?} {b:?}"
                );
            }
            assert!(
                a.x - a.width / 2.0 >= MARGIN - 0.5,
                "{a:?} left of the margin"
            );
            assert!(a.x + a.width / 2.0 <= layout.width, "{a:?} past the width");
            assert!(
                a.y + a.height / 2.0 <= layout.height,
                "{a:?} past the height"
            );
        }
    }

    #[test]
    fn layers_are_longest_paths_from_the_source() {
        // 0 → 1 → 2 → 4, and a shortcut 0 → 3 → 4, and 0 → 4 directly.
        let edges = [(0, 1), (1, 2), (2, 4), (0, 3), (3, 4), (0, 4)];
        assert_eq!(layering(5, &edges), vec![0, 1, 2, 1, 3]);
        let layout = layout(&input(5, &edges));
        assert_eq!(layout.layers, vec![0, 1, 2, 1, 3]);
        // Every edge points down.
        for path in &layout.edges {
            for pair in path.windows(2) {
                assert!(pair[1].1 > pair[0].1, "{path:?}");
            }
        }
        // 0 → 4 spans three layers: two dummies, so four points.
        assert_eq!(layout.edges[5].len(), 4);
        assert_no_overlap(&layout);
    }

    #[test]
    fn a_wide_diamond_does_not_overlap() {
        // begin → five branches → end, and begin → end.
        let mut edges: Vec<(usize, usize)> = (1..=5).map(|b| (0, b)).collect();
        edges.extend((1..=5).map(|b| (b, 6)));
        edges.push((0, 6));
        let mut input = input(7, &edges);
        input.sizes[3] = (240.0, 60.0);
        let layout = layout(&input);
        assert_eq!(layout.layers, vec![0, 1, 1, 1, 1, 1, 2]);
        assert_eq!(layout.crossings, 0);
        assert_no_overlap(&layout);
        // Same picture every time.
        let again = super::layout(&input);
        assert_eq!(layout.nodes, again.nodes);
        assert_eq!(layout.edges, again.edges);
    }

    #[test]
    fn sweeps_remove_the_crossing_of_a_known_case() {
        // Layer 1 starts as [1, 2] (topological order), layer 2 as [3, 4]; 1 → 4 and 2 → 3 cross
        // in that order. Barycenter ordering of layer 2 uncrosses them.
        let edges = [(0, 1), (0, 2), (1, 4), (2, 3)];
        assert_eq!(
            crossings(
                &[vec![0], vec![1, 2], vec![3, 4]],
                &[vec![1, 2], vec![4], vec![3], vec![], vec![]],
                &[0, 0, 1, 0, 1]
            ),
            1
        );
        let layout = layout(&input(5, &edges));
        assert_eq!(layout.crossings, 0);
        assert!(layout.order[4] < layout.order[3], "{:?}", layout.order);
        assert_no_overlap(&layout);
    }

    #[test]
    fn the_complete_bipartite_k33_keeps_its_unavoidable_crossings() {
        // K(3,3) between two layers has C(3,2)·C(3,2) = 9 crossings in any order.
        let mut edges = vec![(0, 1), (0, 2), (0, 3)];
        for a in 1..=3 {
            for b in 4..=6 {
                edges.push((a, b));
            }
        }
        let layout = layout(&input(7, &edges));
        assert_eq!(layout.crossings, 9);
        assert_no_overlap(&layout);
    }

    #[test]
    fn an_edge_around_a_block_is_routed_beside_it() {
        // 0 → 1 → 2 and 0 → 2: the long edge's dummy does not sit on block 1.
        let layout = layout(&input(3, &[(0, 1), (1, 2), (0, 2)]));
        let dummy = layout.edges[2][1];
        let block = layout.nodes[1];
        assert!(
            (dummy.0 - block.x).abs() >= block.width / 2.0 + DUMMY_WIDTH / 2.0,
            "{dummy:?} inside {block:?}"
        );
    }
}
