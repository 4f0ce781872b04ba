//! `fold_constants`: ops whose inputs are all constants become constants, and ops that do
//! nothing disappear.
//!
//! - An op (other than a graph input or a constant) whose inputs are all `Constant` nodes is
//!   evaluated once, by the interpreter itself on a one-op graph, so folding cannot disagree
//!   with execution; the node becomes a `Constant` of a new parameter named after it (role
//!   `Folded`). On unbound data it becomes a constant all the same, with an unbound
//!   parameter of the right shape: structure does not depend on data.
//! - No-ops are bypassed (their readers read their input): a reshape to the same shape, the
//!   identity transpose, an all-zero pad, a one-input concat, a resize to the same size, a
//!   1×1 stride-1 unpadded pool. These are what shape-arithmetic leftovers of exporters look
//!   like once the front end has resolved the shapes.

use std::collections::HashMap;

use crate::interp;
use crate::ir::{Graph, NodeId, Op, ParamId};

use super::rewrite::{absorb, add_param, map_params, remove_if_dead, set_inputs};
use super::PassError;

pub fn run(g: &mut Graph) -> Result<usize, PassError> {
    let mut rewrites = 0;
    for id in g.topo_order() {
        if !g.graph.contains_node(id) || matches!(g.node(id).op, Op::Input | Op::Constant(_)) {
            continue;
        }
        let inputs = g.inputs_of(id);
        if let Some(x) = no_op(g, id, &inputs) {
            absorb(g, id, x);
            rewrites += 1;
            continue;
        }
        let all_constant = inputs
            .iter()
            .all(|&i| matches!(g.node(i).op, Op::Constant(_)));
        if inputs.is_empty() || !all_constant {
            continue;
        }
        let value = evaluate(g, id, &inputs);
        let (name, shape) = (g.node(id).name.clone(), g.node(id).shape.clone());
        let p = add_param(g, name, &shape, value);
        g.graph[id].op = Op::Constant(p);
        set_inputs(g, id, &[]);
        for i in inputs {
            remove_if_dead(g, i);
        }
        rewrites += 1;
    }
    Ok(rewrites)
}

/// The input an op passes through unchanged, if it is a no-op.
fn no_op(g: &Graph, id: NodeId, inputs: &[NodeId]) -> Option<NodeId> {
    let &[x] = inputs else { return None };
    let (node, input) = (g.node(id), g.node(x));
    if node.shape != input.shape {
        return None;
    }
    let identity = match &node.op {
        Op::Reshape { .. } | Op::Concat { .. } | Op::ResizeNearest { .. } => true,
        Op::Transpose { perm } => perm.iter().enumerate().all(|(i, &p)| i == p),
        Op::Pad { pads, .. } => *pads == [0; 4],
        Op::Pool2d(p) => p.kernel == [1, 1] && p.stride == [1, 1] && p.pads == [0; 4],
        _ => false,
    };
    identity.then_some(x)
}

/// The op's value on its constant inputs, by the interpreter; `None` if some data is unbound.
fn evaluate(g: &Graph, id: NodeId, inputs: &[NodeId]) -> Option<Vec<f32>> {
    let mut op = g.node(id).op.clone();
    let mut used = op.params();
    for &i in inputs {
        if let Op::Constant(p) = g.node(i).op {
            used.push(p);
        }
    }
    if used.iter().any(|&p| g.param(p).data.is_none()) {
        return None;
    }
    let mut mini = Graph::new("fold");
    let mut remap: HashMap<ParamId, ParamId> = HashMap::new();
    for p in used {
        remap.entry(p).or_insert_with(|| {
            mini.params.push(g.param(p).clone());
            ParamId(mini.params.len() - 1)
        });
    }
    map_params(&mut op, |p| remap[&p]);
    let mut args = Vec::new();
    for &i in inputs {
        let Op::Constant(p) = g.node(i).op else {
            return None;
        };
        args.push(mini.add("c", Op::Constant(remap[&p]), &[]).ok()?);
    }
    let y = mini.add("y", op, &args).ok()?;
    mini.mark_output("y", y);
    interp::run(&mini, &[]).ok()?.pop().map(|(_, t)| t.data)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::ir::{Activation, BinaryOp, ParamRole};

    #[test]
    fn constant_subgraphs_fold_and_no_ops_go() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", &[1, 2, 3, 3]);
        let a = bound(&mut g, "a", &[1, 2, 1, 1], vec![1.0, -2.0]);
        let b = bound(&mut g, "b", &[1], vec![3.0]);
        let a = g.add("a", Op::Constant(a), &[]).unwrap();
        let b = g.add("b", Op::Constant(b), &[]).unwrap();
        let ab = g.add("ab", Op::Binary(BinaryOp::Mul), &[a, b]).unwrap();
        let r = g.add("r", Op::Activation(Activation::Relu), &[ab]).unwrap();
        let y = g.add("y", Op::Binary(BinaryOp::Add), &[x, r]).unwrap();
        let same = g
            .add(
                "same",
                Op::Reshape {
                    shape: vec![1, 2, 3, 3],
                },
                &[y],
            )
            .unwrap();
        let t = g
            .add(
                "t",
                Op::Transpose {
                    perm: vec![0, 1, 2, 3],
                },
                &[same],
            )
            .unwrap();
        g.mark_output("y", t);
        let input = vec![Rng::new(61).tensor(&[1, 2, 3, 3])];
        // ab and r fold (one rewrite each), reshape and transpose go.
        check_pass(&mut g, &input, run, 4);
        assert_eq!(kinds(&g), [("add", 1), ("constant", 1)]);
        assert_eq!(g.outputs[0].1, y);
        let c = g.inputs_of(y)[1];
        let Op::Constant(p) = g.node(c).op else {
            panic!()
        };
        assert_eq!(g.param(p).data.as_deref().unwrap(), [3.0, 0.0]);
        assert_eq!(g.param(p).shape, [1, 2, 1, 1]);
    }

    #[test]
    fn unbound_constants_fold_structurally() {
        let mut g = Graph::new("t");
        let p = g.add_param("k", &[4], ParamRole::Constant);
        let k = g.add("k", Op::Constant(p), &[]).unwrap();
        let r = g.add("r", Op::Reshape { shape: vec![2, 2] }, &[k]).unwrap();
        g.mark_output("y", r);
        assert_eq!(run(&mut g).unwrap(), 1);
        let Op::Constant(q) = g.node(r).op else {
            panic!()
        };
        assert_eq!(
            (g.param(q).shape.as_slice(), g.param(q).data.is_none()),
            (&[2, 2][..], true)
        );
    }
}
