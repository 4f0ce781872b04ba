//! `fuse_se`: a squeeze-excite chain into one [`SqueezeExcite`] op.
//!
//! Found at the gating `Mul(x, gate)` (either operand order), where
//! `gate = sigmoid(expand(act(reduce(pool(x)))))`:
//! - `pool` is `GlobalAvgPool(x)` or `ReduceMean(x)` over H, W keeping dims (ONNX), reading
//!   the same `x` the `Mul` scales;
//! - `reduce` and `expand` are plain 1×1 convs (stride 1, no padding, no groups, no residual),
//!   with or without bias;
//! - `act` and the sigmoid may be separate activation nodes or already in the convs'
//!   epilogues, so the pass works before or after `fuse_activation`;
//! - every link of the chain is read only by the next one.
//!
//! The `Mul` becomes the `SqueezeExcite` (keeping its name) and the chain goes. The convs'
//! `[r, c, 1, 1]` weights are the op's `[r, c]` matrices: a weight only this conv reads is
//! reshaped in place (same name, role and data, so parameter counts do not move), a shared one
//! gets a reshaped copy `<name>.matrix`. A missing bias becomes a zero `Folded` bias.

use crate::ir::{Activation, Conv2d, Graph, NodeId, Op, ParamId, ReduceKind, SqueezeExcite};

use super::rewrite::{add_param, only_feeds, param_users, remove_if_dead, set_inputs};
use super::PassError;

pub fn run(g: &mut Graph) -> Result<usize, PassError> {
    let mut rewrites = 0;
    for mul in g.topo_order() {
        if !g.graph.contains_node(mul) || g.node(mul).op != Op::Binary(crate::ir::BinaryOp::Mul) {
            continue;
        }
        let inputs = g.inputs_of(mul);
        let [a, b] = inputs[..] else { continue };
        let Some((x, chain)) = matched(g, mul, a, b).or_else(|| matched(g, mul, b, a)) else {
            continue;
        };
        let (reduce_weight, reduce_bias) = matrix(g, &chain.reduce);
        let (expand_weight, expand_bias) = matrix(g, &chain.expand);
        g.graph[mul].op = Op::SqueezeExcite(SqueezeExcite {
            reduce_weight,
            reduce_bias,
            expand_weight,
            expand_bias,
            act: chain.act,
        });
        set_inputs(g, mul, &[x]);
        remove_if_dead(g, chain.gate);
        rewrites += 1;
    }
    Ok(rewrites)
}

struct Chain {
    /// The `Mul`'s gate operand: the first node to remove.
    gate: NodeId,
    reduce: Conv2d,
    expand: Conv2d,
    act: Activation,
}

/// Whether `Mul(x, gate)` at `mul` is a squeeze-excite of `x`.
fn matched(g: &Graph, mul: NodeId, x: NodeId, gate: NodeId) -> Option<(NodeId, Chain)> {
    let [_, c, _, _] = g.node(x).shape[..] else {
        return None;
    };
    if g.node(mul).shape != g.node(x).shape || !only_feeds(g, gate, mul) {
        return None;
    }
    // sigmoid: a separate node or the expand conv's epilogue.
    let (expand_id, sigmoid_fused) = match g.node(gate).op {
        Op::Activation(Activation::Sigmoid) => (single_input(g, gate)?, false),
        _ => (gate, true),
    };
    if !sigmoid_fused && !only_feeds(g, expand_id, gate) {
        return None;
    }
    let expand = pointwise(g, expand_id)?;
    let want = sigmoid_fused.then_some(Activation::Sigmoid);
    if expand.act != want || expand.out_channels != c {
        return None;
    }
    // act: a separate node or the reduce conv's epilogue.
    let hidden = single_input(g, expand_id)?;
    if !only_feeds(g, hidden, expand_id) {
        return None;
    }
    let (reduce_id, act) = match g.node(hidden).op {
        Op::Activation(a) => {
            let r = single_input(g, hidden)?;
            (only_feeds(g, r, hidden).then_some(r)?, a)
        }
        _ => (hidden, pointwise(g, hidden)?.act?),
    };
    let reduce = pointwise(g, reduce_id)?;
    if reduce_id != hidden && reduce.act.is_some() {
        return None;
    }
    let pool = single_input(g, reduce_id)?;
    if !only_feeds(g, pool, reduce_id) || single_input(g, pool)? != x {
        return None;
    }
    let is_pool = match &g.node(pool).op {
        Op::GlobalAvgPool => true,
        Op::Reduce {
            kind: ReduceKind::Mean,
            axes,
            keepdims: true,
        } => axes == &[2, 3],
        _ => false,
    };
    is_pool.then_some((
        x,
        Chain {
            gate,
            reduce,
            expand,
            act,
        },
    ))
}

fn single_input(g: &Graph, id: NodeId) -> Option<NodeId> {
    match g.inputs_of(id)[..] {
        [x] => Some(x),
        _ => None,
    }
}

/// The node as a plain 1×1 conv: what squeeze-excite's two matrices are.
fn pointwise(g: &Graph, id: NodeId) -> Option<Conv2d> {
    match &g.node(id).op {
        Op::Conv2d(c)
            if c.kernel == [1, 1]
                && c.stride == [1, 1]
                && c.pads == [0; 4]
                && c.groups == 1
                && g.inputs_of(id).len() == 1 =>
        {
            Some(c.clone())
        }
        _ => None,
    }
}

/// The conv's weight as an `[out, in]` matrix and its bias (zeros if it has none).
fn matrix(g: &mut Graph, c: &Conv2d) -> (ParamId, ParamId) {
    let shape = g.param(c.weight).shape.clone();
    let mat = vec![shape[0], shape[1]];
    let weight = if param_users(g, c.weight) == 1 {
        g.params[c.weight.0].shape = mat;
        c.weight
    } else {
        let p = g.param(c.weight).clone();
        let id = add_param(g, format!("{}.matrix", p.name), &mat, None);
        g.params[id.0].data = p.data;
        id
    };
    let bias = match c.bias {
        Some(b) => b,
        None => {
            let name = format!("{}.zero_bias", g.param(c.weight).name);
            add_param(g, name, &[shape[0]], Some(vec![0.0; shape[0]]))
        }
    };
    (weight, bias)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::ir::BinaryOp;

    /// `x` → [relu conv] → SE, in the spec's form or (`onnx`) with ReduceMean, an exported
    /// swish, epilogue sigmoid, no reduce bias, and the Mul's operands swapped.
    fn se_graph(onnx: bool) -> (Graph, Vec<crate::interp::Tensor>) {
        let mut g = Graph::new("t");
        let x = g.add_input("x", &[1, 6, 4, 3]);
        let f = conv(&mut g, "f", x, 8, 3, 1, true);
        let pool = if onnx {
            let op = Op::Reduce {
                kind: ReduceKind::Mean,
                axes: vec![2, 3],
                keepdims: true,
            };
            g.add("pool", op, &[f]).unwrap()
        } else {
            g.add("pool", Op::GlobalAvgPool, &[f]).unwrap()
        };
        let r = conv(&mut g, "reduce", pool, 2, 1, 1, !onnx);
        let h = if onnx {
            let s = act(&mut g, "s", r, Activation::Sigmoid);
            g.add("swish", Op::Binary(BinaryOp::Mul), &[r, s]).unwrap()
        } else {
            act(&mut g, "act", r, Activation::Swish)
        };
        let e = conv(&mut g, "expand", h, 8, 1, 1, true);
        let gate = if onnx {
            let Op::Conv2d(mut c) = g.node(e).op.clone() else {
                panic!()
            };
            c.act = Some(Activation::Sigmoid);
            g.graph[e].op = Op::Conv2d(c);
            e
        } else {
            act(&mut g, "gate", e, Activation::Sigmoid)
        };
        let operands = if onnx { [gate, f] } else { [f, gate] };
        let m = g
            .add("scale", Op::Binary(BinaryOp::Mul), &operands)
            .unwrap();
        g.mark_output("y", m);
        bind_random(&mut g, 41);
        (g, vec![Rng::new(42).tensor(&[1, 6, 4, 3])])
    }

    #[test]
    fn spec_form_fuses() {
        let (mut g, input) = se_graph(false);
        check_pass(&mut g, &input, run, 1);
        assert_eq!(kinds(&g), [("conv", 1), ("squeeze_excite", 1)]);
        // Parameters keep their names and count.
        let Op::SqueezeExcite(se) = &g.node(g.outputs[0].1).op else {
            panic!()
        };
        assert_eq!(g.param(se.reduce_weight).name, "reduce.weight");
        assert_eq!(g.param(se.reduce_weight).shape, [2, 8]);
        assert_eq!(se.act, Activation::Swish);
    }

    #[test]
    fn onnx_form_fuses_after_the_activation_pass() {
        let (mut g, input) = se_graph(true);
        // The exported swish is not an activation yet.
        assert_eq!(run(&mut g).unwrap(), 0);
        let before = eval(&g, &input);
        super::super::fuse_activation::run(&mut g).unwrap();
        check_pass(&mut g, &input, run, 1);
        assert_close(&eval(&g, &input), &before, 1e-5);
        assert_eq!(kinds(&g), [("conv", 1), ("squeeze_excite", 1)]);
    }

    #[test]
    fn a_gate_read_elsewhere_or_another_pooled_tensor_stays() {
        let (mut g, _) = se_graph(false);
        let gate = g.inputs_of(g.outputs[0].1)[1];
        g.mark_output("gate", gate);
        assert_eq!(run(&mut g).unwrap(), 0);

        // The pool reads a different tensor than the one scaled.
        let (mut g, _) = se_graph(false);
        let m = g.outputs[0].1;
        let other = g.add_input("other", &[1, 8, 4, 3]);
        let gate = g.inputs_of(m)[1];
        set_inputs(&mut g, m, &[other, gate]);
        assert_eq!(run(&mut g).unwrap(), 0);
    }
}
