//! `fuse_bifpn`: a BiFPN node's input fusion — resampling, weighting, summing — into one
//! [`Fuse`] op, `act(Σ c_i · sample_i(x_i))`, with the coefficients computed at compile time.
//!
//! Anchors, each rewritten in place (the anchor keeps its name):
//! - a `WeightedSum` over NCHW inputs: the coefficients are its normalized weights —
//!   `relu(w_i) / (Σ relu(w_j) + eps)` for fast attention, `softmax(w)` for softmax, ones for
//!   a plain sum (what the ONNX importer makes of the exported stack-and-sum);
//! - a `ReduceSum` over the new axis of a `Concat` of unsqueezed same-shape NCHW tensors (the
//!   exported `torch.stack(xs, -1).sum(-1)`, should the front end not have made it a
//!   `WeightedSum` already);
//! - a tree of same-shape `Add`s at least one of whose terms is scaled by a scalar constant
//!   (`x·w_0 + y·w_1`, the fusion written without a stack);
//! - a `Mul` or `Div` of a `Fuse` (without activation, read only there) by a scalar constant:
//!   the fast-normalized sum written as `(Σ w_i·x_i) / (Σ w_j + eps)`, normalized where it is
//!   divided.
//!
//! Then every `Fuse` input that is not resampled yet absorbs, from the sum outwards, scalar
//! constant factors (`Mul` by or `Div` by a one-element constant: how an exporter writes
//! `x_i · w_i / (Σ w + eps)`) and then at most one resampling: a nearest resize or a max pool.
//! Each absorbed node must be read only by the next. Factors are taken only above the
//! resampling, where `c · sample(x)` is exactly what they computed, so a max pool never sees
//! a negative factor.
//!
//! The coefficients are a new `Folded` parameter `<node>.coefficients` (`[n]`), so
//! generated code reads them like any weight and does not depend on their values; they are
//! unbound when a source is (a spec inspected without weights). The raw fusion weights stay in
//! the table until `eliminate_dead`. Standalone resizes and pools read by several nodes (the
//! extra pyramid levels) stay as they are.

use std::sync::Arc;

use crate::interp::fusion_coefficients;
use crate::ir::{BinaryOp, Fuse, Graph, NodeId, Op, PoolKind, ReduceKind, Sampling};

use super::rewrite::{
    absorb, add_param, data, only_feeds, param_users, remove_if_dead, scalar_constant, set_inputs,
    single_consumer, DERIVED,
};
use super::PassError;

pub fn run(g: &mut Graph) -> Result<usize, PassError> {
    let mut rewrites = 0;
    for id in g.topo_order() {
        if !g.graph.contains_node(id) {
            continue;
        }
        rewrites += match g.node(id).op {
            Op::WeightedSum { .. } => weighted_sum(g, id),
            Op::Binary(BinaryOp::Add) => add_tree(g, id),
            Op::Binary(BinaryOp::Mul | BinaryOp::Div) => normalization(g, id),
            Op::Reduce {
                kind: ReduceKind::Sum,
                ..
            } => stack_sum(g, id),
            _ => 0,
        };
        // (A normalization removes the anchor itself.)
        if g.graph.contains_node(id) && matches!(g.node(id).op, Op::Fuse(_)) {
            rewrites += absorb_inputs(g, id);
        }
    }
    Ok(rewrites)
}

/// Rewrites node `id` as a `Fuse` of `inputs` (not resampled) with these coefficients.
fn make_fuse(g: &mut Graph, id: NodeId, inputs: &[NodeId], coefficients: Option<Vec<f32>>) {
    let name = format!("{}.coefficients", g.node(id).name);
    let coefficients = add_param(g, name, &[inputs.len()], coefficients);
    let old = g.inputs_of(id);
    g.graph[id].op = Op::Fuse(Fuse {
        coefficients,
        inputs: vec![Sampling::Identity; inputs.len()],
        act: None,
    });
    set_inputs(g, id, inputs);
    for o in old {
        remove_if_dead(g, o);
    }
}

fn weighted_sum(g: &mut Graph, id: NodeId) -> usize {
    let Op::WeightedSum { method, weights } = g.node(id).op else {
        return 0;
    };
    if g.node(id).shape.len() != 4 {
        return 0;
    }
    let inputs = g.inputs_of(id);
    let n = inputs.len();
    let coefficients = match weights {
        None => Some(fusion_coefficients(method, None, n)),
        Some(w) => data(g, w).map(|w| fusion_coefficients(method, Some(w), n)),
    };
    make_fuse(g, id, &inputs, coefficients);
    1
}

/// `id` is `x` times or divided by a one-element constant, `x` of `id`'s shape (no
/// broadcasting): `(x, factor)`, the factor `None` when the constant is unbound.
fn factor_of(g: &Graph, id: NodeId) -> Option<(NodeId, Option<f32>)> {
    let shape = &g.node(id).shape;
    let ins = g.inputs_of(id);
    let [a, b] = ins[..] else { return None };
    let same = |x: NodeId| g.node(x).shape == *shape;
    match g.node(id).op {
        Op::Binary(BinaryOp::Mul) => match (scalar_constant(g, a), scalar_constant(g, b)) {
            (_, Some(c)) if same(a) => Some((a, c)),
            (Some(c), _) if same(b) => Some((b, c)),
            _ => None,
        },
        Op::Binary(BinaryOp::Div) => match scalar_constant(g, b) {
            Some(c) if same(a) => Some((a, c.map(|c| 1.0 / c))),
            _ => None,
        },
        _ => None,
    }
}

/// [`factor_of`] for a node read only by `reader`, which may absorb it.
fn scaled(g: &Graph, id: NodeId, reader: NodeId) -> Option<(NodeId, Option<f32>)> {
    only_feeds(g, id, reader)
        .then(|| factor_of(g, id))
        .flatten()
}

/// The same-shape `Add`s under `id` (each read only by the one above) and their terms.
fn add_terms(g: &Graph, id: NodeId, terms: &mut Vec<NodeId>) {
    let shape = &g.node(id).shape;
    for x in g.inputs_of(id) {
        let flattens = g.node(x).op == Op::Binary(BinaryOp::Add)
            && only_feeds(g, x, id)
            && g.inputs_of(x).iter().all(|&i| g.node(i).shape == *shape);
        if flattens {
            add_terms(g, x, terms);
        } else {
            terms.push(x);
        }
    }
}

fn add_tree(g: &mut Graph, id: NodeId) -> usize {
    let shape = g.node(id).shape.clone();
    if shape.len() != 4 || g.inputs_of(id).iter().any(|&i| g.node(i).shape != shape) {
        return 0;
    }
    // Only at the root: an Add that its reader would flatten is left to that reader.
    if let Some(reader) = single_consumer(g, id) {
        let reader_flattens = g.node(reader).op == Op::Binary(BinaryOp::Add)
            && g.inputs_of(reader)
                .iter()
                .all(|&i| g.node(i).shape == shape);
        if reader_flattens {
            return 0;
        }
    }
    let mut terms = Vec::new();
    add_terms(g, id, &mut terms);
    // A term read once (by the Add holding it) that is a scaled tensor: a weighted sum, not
    // a residual or any other plain add.
    let has_factor = terms
        .iter()
        .any(|&t| single_consumer(g, t).is_some() && factor_of(g, t).is_some());
    if !has_factor {
        return 0;
    }
    let n = terms.len();
    make_fuse(g, id, &terms, Some(vec![1.0; n]));
    1
}

/// `ReduceSum(Concat(Unsqueeze(x_i, a)…, a), a)` over rank-4 `x_i` of one shape: how
/// `torch.stack(xs, a).sum(a)` exports, when the front end has not already made it a
/// `WeightedSum`. The unsqueezes are reshapes that insert a 1 at `a`; each link is read only
/// by the next.
fn stack_sum(g: &mut Graph, id: NodeId) -> usize {
    let Op::Reduce {
        axes,
        keepdims: false,
        ..
    } = &g.node(id).op
    else {
        return 0;
    };
    let inputs = g.inputs_of(id);
    let ([a], [cat]) = (axes.as_slice(), inputs.as_slice()) else {
        return 0;
    };
    let (a, cat) = (*a, *cat);
    let shape = g.node(id).shape.clone();
    if shape.len() != 4 || g.node(cat).op != (Op::Concat { axis: a }) || !only_feeds(g, cat, id) {
        return 0;
    }
    let mut parts = Vec::new();
    for u in g.inputs_of(cat) {
        let src = g.inputs_of(u);
        let unsqueezes = matches!(g.node(u).op, Op::Reshape { .. })
            && only_feeds(g, u, cat)
            && src.len() == 1
            && g.node(src[0]).shape == shape
            && {
                let mut want = shape.clone();
                want.insert(a, 1);
                g.node(u).shape == want
            };
        if !unsqueezes {
            return 0;
        }
        parts.push(src[0]);
    }
    let n = parts.len();
    make_fuse(g, id, &parts, Some(vec![1.0; n]));
    1
}

/// `Fuse · c`, `c · Fuse` or `Fuse / c` at the `Mul`/`Div`: the factor goes into the
/// coefficients.
fn normalization(g: &mut Graph, id: NodeId) -> usize {
    let inputs = g.inputs_of(id);
    let Some(fuse) = inputs
        .iter()
        .copied()
        .find(|&i| matches!(&g.node(i).op, Op::Fuse(f) if f.act.is_none()) && only_feeds(g, i, id))
    else {
        return 0;
    };
    let Some((x, factor)) = factor_of(g, id) else {
        return 0;
    };
    if x != fuse {
        return 0;
    }
    let Op::Fuse(f) = g.node(fuse).op.clone() else {
        return 0;
    };
    let coefficients = match (data(g, f.coefficients), factor) {
        (Some(c), Some(k)) => Some(c.iter().map(|v| v * k).collect()),
        _ => None,
    };
    set_coefficients(g, fuse, coefficients);
    absorb(g, id, fuse);
    1
}

/// Stores new coefficient values for a `Fuse`: in place when only it reads its coefficient
/// parameter (the usual case: this pass made it), else in a new parameter.
fn set_coefficients(g: &mut Graph, fuse: NodeId, values: Option<Vec<f32>>) {
    let Op::Fuse(mut f) = g.node(fuse).op.clone() else {
        return;
    };
    if param_users(g, f.coefficients) == 1 && g.param(f.coefficients).role == DERIVED {
        g.params[f.coefficients.0].data = values.map(Arc::from);
    } else {
        let name = format!("{}.coefficients", g.node(fuse).name);
        f.coefficients = add_param(g, name, &[f.inputs.len()], values);
        g.graph[fuse].op = Op::Fuse(f);
    }
}

/// Pulls scalar factors and one resampling into each not-yet-resampled input of the `Fuse`.
fn absorb_inputs(g: &mut Graph, id: NodeId) -> usize {
    let Op::Fuse(mut f) = g.node(id).op.clone() else {
        return 0;
    };
    let old_inputs = g.inputs_of(id);
    let mut inputs = old_inputs.clone();
    let mut coefficients = data(g, f.coefficients).map(<[f32]>::to_vec);
    let mut changed = false;
    for i in 0..inputs.len() {
        if f.inputs[i] != Sampling::Identity {
            continue;
        }
        let mut reader = id;
        while let Some((x, factor)) = scaled(g, inputs[i], reader) {
            coefficients = match (coefficients, factor) {
                (Some(mut c), Some(k)) => {
                    c[i] *= k;
                    Some(c)
                }
                _ => None,
            };
            reader = inputs[i];
            inputs[i] = x;
            changed = true;
        }
        let x = inputs[i];
        if !only_feeds(g, x, reader) {
            continue;
        }
        let sampling = match &g.node(x).op {
            Op::ResizeNearest { size } => Sampling::Nearest { size: *size },
            Op::Pool2d(p) if p.kind == PoolKind::Max => Sampling::MaxPool {
                kernel: p.kernel,
                stride: p.stride,
                pads: p.pads,
            },
            _ => continue,
        };
        f.inputs[i] = sampling;
        inputs[i] = g.inputs_of(x)[0];
        changed = true;
    }
    if !changed {
        return 0;
    }
    g.graph[id].op = Op::Fuse(f);
    set_coefficients(g, id, coefficients);
    set_inputs(g, id, &inputs);
    for o in old_inputs {
        remove_if_dead(g, o);
    }
    1
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::interp::Tensor;
    use crate::ir::{Activation, FusionMethod, ParamRole, Pool2d};

    fn max_pool(g: &mut Graph, x: NodeId) -> NodeId {
        let p = Pool2d {
            kind: PoolKind::Max,
            kernel: [3, 3],
            stride: [2, 2],
            pads: [0, 0, 1, 1],
        };
        g.add("pool", Op::Pool2d(p), &[x]).unwrap()
    }

    fn constant(g: &mut Graph, name: &str, v: f32) -> NodeId {
        let p = bound(g, name, &[], vec![v]);
        g.add(name, Op::Constant(p), &[]).unwrap()
    }

    fn binary(g: &mut Graph, name: &str, op: BinaryOp, a: NodeId, b: NodeId) -> NodeId {
        g.add(name, Op::Binary(op), &[a, b]).unwrap()
    }

    /// Three levels: P4 (4×4, resampled to 4×4 — identity), P3 (8×8, max-pooled), P5 (2×2,
    /// upsampled).
    fn levels(g: &mut Graph) -> ([NodeId; 3], Vec<Tensor>) {
        let p3 = g.add_input("p3", &[1, 2, 8, 8]);
        let p4 = g.add_input("p4", &[1, 2, 4, 4]);
        let p5 = g.add_input("p5", &[1, 2, 2, 2]);
        let mut rng = Rng::new(51);
        let t = [8, 4, 2].map(|s| rng.tensor(&[1, 2, s, s]));
        ([p3, p4, p5], t.to_vec())
    }

    fn fuse_of(g: &Graph, id: NodeId) -> Fuse {
        match &g.node(id).op {
            Op::Fuse(f) => f.clone(),
            op => panic!("{op:?}"),
        }
    }

    #[test]
    fn spec_weighted_sum_with_resampling_becomes_one_fuse() {
        let mut g = Graph::new("t");
        let ([p3, p4, p5], input) = levels(&mut g);
        let down = max_pool(&mut g, p3);
        let up = g
            .add("up", Op::ResizeNearest { size: [4, 4] }, &[p5])
            .unwrap();
        let w = param(&mut g, "edge_weights", &[3]);
        let op = Op::WeightedSum {
            method: FusionMethod::FastAttention { eps: 1e-4 },
            weights: Some(w),
        };
        let s = g.add("combine", op, &[p4, down, up]).unwrap();
        let a = act(&mut g, "act", s, Activation::Swish);
        g.mark_output("y", a);
        bind_random(&mut g, 52);
        // Conversion, then the two resamplings.
        check_pass(&mut g, &input, run, 2);
        assert_eq!(kinds(&g), [("fused_sum", 1), ("swish", 1)]);
        let f = fuse_of(&g, s);
        assert_eq!(g.inputs_of(s), [p4, p3, p5]);
        assert_eq!(f.inputs[0], Sampling::Identity);
        assert!(matches!(f.inputs[1], Sampling::MaxPool { .. }));
        assert_eq!(f.inputs[2], Sampling::Nearest { size: [4, 4] });
        let k = g.param(f.coefficients);
        assert_eq!(
            (k.name.as_str(), k.role),
            ("combine.coefficients", ParamRole::Folded)
        );
        // The weights are normalized at compile time.
        let w = data(&g, w).unwrap().to_vec();
        let want = fusion_coefficients(FusionMethod::FastAttention { eps: 1e-4 }, Some(&w), 3);
        assert_eq!(k.data.as_deref().unwrap(), want.as_slice());
    }

    #[test]
    fn exported_stack_of_scaled_inputs_becomes_one_fuse() {
        // ONNX: x_i → resample → Mul(w_i) → Div(Σw + eps) → WeightedSum(Sum).
        let mut g = Graph::new("t");
        let ([p3, p4, p5], input) = levels(&mut g);
        let down = max_pool(&mut g, p3);
        let up = g
            .add("up", Op::ResizeNearest { size: [4, 4] }, &[p5])
            .unwrap();
        let d = constant(&mut g, "den", 2.5);
        let mut terms = Vec::new();
        for (i, (x, w)) in [(p4, 0.5), (down, 1.5), (up, 0.25)].into_iter().enumerate() {
            let c = constant(&mut g, &format!("w{i}"), w);
            let m = binary(&mut g, &format!("m{i}"), BinaryOp::Mul, x, c);
            terms.push(binary(&mut g, &format!("d{i}"), BinaryOp::Div, m, d));
        }
        let sum = Op::WeightedSum {
            method: FusionMethod::Sum,
            weights: None,
        };
        let s = g.add("combine", sum, &terms).unwrap();
        g.mark_output("y", s);
        // The upsampled map is read elsewhere too: its factors fuse, the resize stays.
        g.mark_output("up", up);
        check_pass(&mut g, &input, run, 2);
        assert_eq!(kinds(&g), [("fused_sum", 1), ("resize_nearest", 1)]);
        let f = fuse_of(&g, s);
        assert_eq!(f.inputs[2], Sampling::Identity);
        let k = data(&g, f.coefficients).unwrap();
        for (k, want) in k.iter().zip([0.2, 0.6, 0.1]) {
            assert!((k - want).abs() < 1e-7, "{k}");
        }
    }

    #[test]
    fn stack_and_sum_of_scaled_inputs_becomes_one_fuse() {
        // Mul(x_i, w_i) → Unsqueeze(-1) → Concat(-1) → ReduceSum(-1), as exported.
        let mut g = Graph::new("t");
        let ([_, p4, p5], input) = levels(&mut g);
        let up = g
            .add("up", Op::ResizeNearest { size: [4, 4] }, &[p5])
            .unwrap();
        let mut parts = Vec::new();
        for (i, (x, w)) in [(p4, 0.75), (up, 0.5)].into_iter().enumerate() {
            let c = constant(&mut g, &format!("w{i}"), w);
            let m = binary(&mut g, &format!("m{i}"), BinaryOp::Mul, x, c);
            let u = Op::Reshape {
                shape: vec![1, 2, 4, 4, 1],
            };
            parts.push(g.add(format!("u{i}"), u, &[m]).unwrap());
        }
        let cat = g.add("cat", Op::Concat { axis: 4 }, &parts).unwrap();
        let sum = Op::Reduce {
            kind: ReduceKind::Sum,
            axes: vec![4],
            keepdims: false,
        };
        let s = g.add("sum", sum, &[cat]).unwrap();
        g.mark_output("y", s);
        check_pass(&mut g, &input, run, 2);
        assert_eq!(kinds(&g), [("fused_sum", 1)]);
        assert_eq!(data(&g, fuse_of(&g, s).coefficients).unwrap(), [0.75, 0.5]);
    }

    #[test]
    fn add_chains_and_a_normalizing_div_fuse() {
        // (p4·w0 + w1·up) + p4b, divided by a constant.
        let mut g = Graph::new("t");
        let ([_, p4, p5], input) = levels(&mut g);
        let up = g
            .add("up", Op::ResizeNearest { size: [4, 4] }, &[p5])
            .unwrap();
        let (w0, w1, d) = (
            constant(&mut g, "w0", 0.5),
            constant(&mut g, "w1", 2.0),
            constant(&mut g, "d", 4.0),
        );
        let a = binary(&mut g, "a", BinaryOp::Mul, p4, w0);
        let b = binary(&mut g, "b", BinaryOp::Mul, w1, up);
        let ab = binary(&mut g, "ab", BinaryOp::Add, a, b);
        let other = act(&mut g, "other", p4, Activation::Relu);
        let sum = binary(&mut g, "sum", BinaryOp::Add, ab, other);
        let norm = binary(&mut g, "norm", BinaryOp::Div, sum, d);
        g.mark_output("y", norm);
        // The root add, its inputs' factors and resize, the division.
        check_pass(&mut g, &input, run, 3);
        assert_eq!(kinds(&g), [("fused_sum", 1), ("relu", 1)]);
        assert_eq!(g.outputs[0].1, sum);
        let f = fuse_of(&g, sum);
        assert_eq!(data(&g, f.coefficients).unwrap(), [0.125, 0.5, 0.25]);
    }

    #[test]
    fn factors_below_a_max_pool_and_plain_adds_stay() {
        let mut g = Graph::new("t");
        let ([p3, p4, _], input) = levels(&mut g);
        let c = constant(&mut g, "neg", -2.0);
        let scaled = binary(&mut g, "scaled", BinaryOp::Mul, p3, c);
        let down = max_pool(&mut g, scaled);
        let sum = Op::WeightedSum {
            method: FusionMethod::Sum,
            weights: None,
        };
        let s = g.add("combine", sum, &[down, p4]).unwrap();
        let plain = binary(&mut g, "plain", BinaryOp::Add, s, p4);
        g.mark_output("y", plain);
        check_pass(&mut g, &input, run, 2);
        assert_eq!(
            kinds(&g),
            [("add", 1), ("constant", 1), ("fused_sum", 1), ("mul", 1)]
        );
    }

    #[test]
    fn unbound_weights_give_unbound_coefficients() {
        let mut g = Graph::new("t");
        let ([_, p4, _], _) = levels(&mut g);
        let w = param(&mut g, "edge_weights", &[2]);
        let op = Op::WeightedSum {
            method: FusionMethod::Softmax,
            weights: Some(w),
        };
        let s = g.add("combine", op, &[p4, p4]).unwrap();
        g.mark_output("y", s);
        assert_eq!(run(&mut g).unwrap(), 1);
        let k = g.param(fuse_of(&g, s).coefficients);
        assert_eq!((k.shape.as_slice(), k.data.is_none()), (&[2][..], true));
    }
}
