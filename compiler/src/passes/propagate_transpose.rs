//! `propagate_transpose`: layout propagation. Moves `Transpose`s (and `Reshape`s) towards the
//! outputs through ops that do not care about layout, and cancels them where they meet their
//! inverse, so that convolutions read and write the NCHW their kernels want.
//!
//! Why: a TensorFlow graph converted to ONNX (tf2onnx) keeps TensorFlow's NHWC wherever an op
//! is not a conv: a BiFPN node's weighted sum is stacked, transposed to NHWC, summed, scaled
//! and activated there, then transposed back to NCHW for the next conv. Each such pair costs
//! two full copies and hides the sum from `fuse_bifpn`; moved past the sum, the scale and the
//! activation, the two transposes meet and vanish.
//!
//! Rewrites, each anchored at the `Transpose` (or `Reshape`), which keeps its id and name:
//! - a `Transpose` whose permutation is the identity is removed;
//! - a `Transpose` of a `Transpose` becomes one `Transpose` of the inner one's input (their
//!   permutations composed; the inner one stays if something else reads it);
//! - a `Transpose` or `Reshape` whose only reader is elementwise — an activation, or a binary
//!   op whose other operand holds one value — swaps places with it: `f(T(x)) = T(f(x))`;
//! - a `Transpose` whose only reader is a `Reduce` swaps places with it, the reduced axes
//!   mapped through the permutation: `reduce_A(T_p(x)) = T_p'(reduce_{p(A)}(x))`.
//!
//! A moved op is never duplicated (only single-reader ones move), so no rewrite adds work;
//! moving below a reduction shrinks the tensor the transpose copies. A graph output stays
//! where it is: the op computing it may change, its value does not.

use crate::ir::{Graph, NodeId, Op};

use super::rewrite::{absorb, is_output, refresh_shape, set_inputs, single_consumer};
use super::PassError;

/// Sweeps until nothing moves: a layout op that moved down can free the one above it.
pub fn run(g: &mut Graph) -> Result<usize, PassError> {
    let mut rewrites = 0;
    loop {
        let n = sweep(g);
        if n == 0 {
            return Ok(rewrites);
        }
        rewrites += n;
    }
}

fn sweep(g: &mut Graph) -> usize {
    let mut rewrites = 0;
    for id in g.topo_order() {
        if !g.graph.contains_node(id) {
            continue;
        }
        match &g.node(id).op {
            Op::Transpose { .. } => {
                rewrites += compose(g, id);
                if remove_identity(g, id) {
                    rewrites += 1;
                    continue;
                }
            }
            Op::Reshape { .. } => {}
            _ => continue,
        }
        while sink(g, id) {
            rewrites += 1;
        }
    }
    rewrites
}

/// `T_q(T_p(x))` → `T_{p∘q}(x)` at the outer transpose.
fn compose(g: &mut Graph, id: NodeId) -> usize {
    let Op::Transpose { perm: outer } = &g.node(id).op else {
        return 0;
    };
    let inner_id = g.inputs_of(id)[0];
    let Op::Transpose { perm: inner } = &g.node(inner_id).op else {
        return 0;
    };
    // Output dim i is the outer input's dim outer[i], which is x's dim inner[outer[i]].
    let perm: Vec<usize> = outer.iter().map(|&i| inner[i]).collect();
    let x = g.inputs_of(inner_id)[0];
    g.graph[id].op = Op::Transpose { perm };
    set_inputs(g, id, &[x]);
    super::rewrite::remove_if_dead(g, inner_id);
    1
}

/// Removes a transpose that permutes nothing (not a graph output: that keeps its node).
fn remove_identity(g: &mut Graph, id: NodeId) -> bool {
    let Op::Transpose { perm } = &g.node(id).op else {
        return false;
    };
    if perm.iter().enumerate().any(|(i, &p)| i != p) || is_output(g, id) {
        return false;
    }
    let x = g.inputs_of(id)[0];
    absorb(g, id, x);
    true
}

/// Swaps the layout op `id` with its only reader when that reader does not care about
/// layout; true when it did.
fn sink(g: &mut Graph, id: NodeId) -> bool {
    let Some(reader) = single_consumer(g, id) else {
        return false;
    };
    let layout = g.node(id).op.clone();
    let new_reader_op = match (&layout, &g.node(reader).op) {
        (_, Op::Activation(_)) => g.node(reader).op.clone(),
        (_, Op::Binary(_)) => {
            let inputs = g.inputs_of(reader);
            let others_scalar = inputs
                .iter()
                .filter(|&&i| i != id)
                .all(|&i| g.node(i).shape.iter().product::<usize>() == 1);
            // `x ∘ x` reads the layout op twice: it has two edges, so it is not a single
            // consumer and never gets here; a scalar operand broadcasts in any layout as long
            // as its rank does not exceed either layout's.
            let x = g.inputs_of(id)[0];
            let rank = g.node(id).shape.len().min(g.node(x).shape.len());
            if !others_scalar
                || inputs
                    .iter()
                    .any(|&i| i != id && g.node(i).shape.len() > rank)
            {
                return false;
            }
            g.node(reader).op.clone()
        }
        (
            Op::Transpose { perm },
            Op::Reduce {
                kind,
                axes,
                keepdims,
            },
        ) => {
            let mut mapped: Vec<usize> = axes.iter().map(|&a| perm[a]).collect();
            mapped.sort_unstable();
            let new_perm = if *keepdims {
                perm.clone()
            } else {
                // The dims that remain, in T's output order, renumbered among x's remaining.
                let remaining = |d: usize| d - mapped.iter().filter(|&&a| a < d).count();
                (0..perm.len())
                    .filter(|i| !axes.contains(i))
                    .map(|i| remaining(perm[i]))
                    .collect()
            };
            let op = Op::Reduce {
                kind: *kind,
                axes: mapped,
                keepdims: *keepdims,
            };
            swap(g, id, reader, op, Op::Transpose { perm: new_perm });
            return true;
        }
        _ => return false,
    };
    swap(g, id, reader, new_reader_op, layout);
    true
}

/// `reader(layout(x), ...)` → `layout'(reader'(x, ...))`: the reader reads `x` where it read
/// the layout op, the layout op reads the reader and takes over its readers (and its output
/// name, if it is one).
fn swap(g: &mut Graph, layout: NodeId, reader: NodeId, reader_op: Op, layout_op: Op) {
    let x = g.inputs_of(layout)[0];
    let reader_inputs: Vec<NodeId> = g
        .inputs_of(reader)
        .into_iter()
        .map(|i| if i == layout { x } else { i })
        .collect();
    super::rewrite::replace_uses(g, reader, layout);
    set_inputs(g, reader, &reader_inputs);
    set_inputs(g, layout, &[reader]);
    g.graph[reader].op = reader_op;
    g.graph[layout].op = layout_op;
    refresh_shape(g, reader);
    refresh_shape(g, layout);
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::ir::{Activation, BinaryOp, ReduceKind};

    fn transpose(g: &mut Graph, name: &str, x: NodeId, perm: &[usize]) -> NodeId {
        g.add(
            name,
            Op::Transpose {
                perm: perm.to_vec(),
            },
            &[x],
        )
        .unwrap()
    }

    /// tf2onnx's BiFPN sum: stack → NHWC → sum → scale → swish → NCHW → conv. The two
    /// transposes meet and cancel; the sum reduces the stack's axis 0 in NCHW.
    #[test]
    fn cancels_the_nhwc_round_trip_of_a_stacked_sum() {
        let mut g = Graph::new("t");
        let a = g.add_input("a", &[1, 4, 3, 5]);
        let b = g.add_input("b", &[1, 4, 3, 5]);
        let ua = g
            .add(
                "ua",
                Op::Reshape {
                    shape: vec![1, 1, 4, 3, 5],
                },
                &[a],
            )
            .unwrap();
        let ub = g
            .add(
                "ub",
                Op::Reshape {
                    shape: vec![1, 1, 4, 3, 5],
                },
                &[b],
            )
            .unwrap();
        let cat = g.add("cat", Op::Concat { axis: 0 }, &[ua, ub]).unwrap();
        let nhwc = transpose(&mut g, "nhwc", cat, &[0, 1, 3, 4, 2]);
        let sum = g
            .add(
                "sum",
                Op::Reduce {
                    kind: ReduceKind::Sum,
                    axes: vec![0],
                    keepdims: false,
                },
                &[nhwc],
            )
            .unwrap();
        let s = bound(&mut g, "s", &[], vec![0.25]);
        let s = g.add("s", Op::Constant(s), &[]).unwrap();
        let scaled = g
            .add("scaled", Op::Binary(BinaryOp::Mul), &[sum, s])
            .unwrap();
        let act = act(&mut g, "act", scaled, Activation::Swish);
        let nchw = transpose(&mut g, "nchw", act, &[0, 3, 1, 2]);
        let y = conv(&mut g, "conv", nchw, 2, 1, 1, true);
        g.mark_output("y", y);
        bind_random(&mut g, 7);
        let mut rng = Rng::new(8);
        let inputs = vec![rng.tensor(&[1, 4, 3, 5]), rng.tensor(&[1, 4, 3, 5])];
        // Three swaps (sum, scale, swish), one composition, one identity removed.
        check_pass(&mut g, &inputs, run, 5);
        assert_eq!(g.op_counts().get("transpose"), None);
        assert_eq!(g.node(sum).shape, [1, 4, 3, 5]);
        assert_eq!(
            g.node(sum).op,
            Op::Reduce {
                kind: ReduceKind::Sum,
                axes: vec![0],
                keepdims: false
            }
        );
    }

    #[test]
    fn reduce_axes_follow_the_permutation_with_and_without_kept_dims() {
        for keepdims in [false, true] {
            let mut g = Graph::new("t");
            let x = g.add_input("x", &[2, 3, 4, 5]);
            let t = transpose(&mut g, "t", x, &[2, 0, 3, 1]);
            let r = g
                .add(
                    "r",
                    Op::Reduce {
                        kind: ReduceKind::Mean,
                        axes: vec![1, 2],
                        keepdims,
                    },
                    &[t],
                )
                .unwrap();
            g.mark_output("y", r);
            let inputs = vec![Rng::new(1).tensor(&[2, 3, 4, 5])];
            check_pass(&mut g, &inputs, run, 1);
            // The reduce now reads x and sums x's dims 0 and 3.
            assert_eq!(g.inputs_of(r), [x]);
            assert!(matches!(&g.node(r).op, Op::Reduce { axes, .. } if axes == &[0, 3]));
            assert_eq!(g.outputs[0].1, t);
        }
    }

    /// A head's `sigmoid(reshape(transpose(conv)))` becomes `reshape(transpose(sigmoid(conv)))`
    /// so the sigmoid can fuse into the conv.
    #[test]
    fn activations_move_above_reshapes_and_transposes() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", &[1, 6, 2, 3]);
        let c = conv(&mut g, "c", x, 6, 1, 1, true);
        let t = transpose(&mut g, "t", c, &[0, 2, 3, 1]);
        let r = g
            .add(
                "r",
                Op::Reshape {
                    shape: vec![1, 12, 3],
                },
                &[t],
            )
            .unwrap();
        let s = act(&mut g, "s", r, Activation::Sigmoid);
        g.mark_output("y", s);
        bind_random(&mut g, 2);
        let inputs = vec![Rng::new(3).tensor(&[1, 6, 2, 3])];
        check_pass(&mut g, &inputs, run, 2);
        assert_eq!(g.inputs_of(s), [c]);
        assert_eq!(g.outputs[0].1, r);
    }

    #[test]
    fn leaves_transposes_read_twice_or_by_layout_sensitive_ops() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", &[1, 4, 4, 2]);
        let t = transpose(&mut g, "t", x, &[0, 3, 1, 2]);
        let a = act(&mut g, "a", t, Activation::Relu);
        let c = conv(&mut g, "c", t, 2, 1, 1, true);
        g.mark_output("a", a);
        g.mark_output("c", c);
        // A non-scalar operand: broadcasting would change meaning after the swap.
        let y = g.add_input("y", &[1, 4, 4, 2]);
        let u = transpose(&mut g, "u", y, &[0, 3, 1, 2]);
        let w = g.add_input("w", &[1, 2, 1, 1]);
        let m = g.add("m", Op::Binary(BinaryOp::Mul), &[u, w]).unwrap();
        g.mark_output("m", m);
        bind_random(&mut g, 4);
        assert_eq!(run(&mut g).unwrap(), 0);
    }

    #[test]
    fn composes_transposes_and_removes_the_identity() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", &[2, 3, 4]);
        let t1 = transpose(&mut g, "t1", x, &[1, 2, 0]);
        let t2 = transpose(&mut g, "t2", t1, &[0, 2, 1]);
        g.mark_output("y", t2);
        let inputs = vec![Rng::new(5).tensor(&[2, 3, 4])];
        check_pass(&mut g, &inputs, run, 1);
        assert!(matches!(&g.node(t2).op, Op::Transpose { perm } if perm == &[1, 0, 2]));
        assert_eq!(g.inputs_of(t2), [x]);
    }
}
