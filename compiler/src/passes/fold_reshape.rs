//! `fold_reshape`: chains of `Reshape`s (ONNX Reshape, Squeeze, Unsqueeze, Flatten) collapse
//! into one, and a `Reshape` to the shape its input already has disappears.
//!
//! Why: exporters write a squeeze-excite's pooled vector as `GlobalAveragePool → Squeeze →
//! Reshape [1, C, 1, 1]`, a round trip through `[1, C]` that hides the pooled value from
//! `fuse_se`; and every reshape the plan keeps is a copy or an alias to track.
//!
//! Anchored at the outer `Reshape`, which keeps its id and name: it reads the inner one's
//! input (the inner one stays if something else reads it), and is removed when its shape
//! equals that input's (its readers then read the input; a graph output keeps its node).

use crate::ir::{Graph, NodeId, Op};

use super::rewrite::{absorb, is_output, remove_if_dead, set_inputs};
use super::PassError;

pub fn run(g: &mut Graph) -> Result<usize, PassError> {
    let mut rewrites = 0;
    for id in g.topo_order() {
        if !g.graph.contains_node(id) || !matches!(g.node(id).op, Op::Reshape { .. }) {
            continue;
        }
        let inner = g.inputs_of(id)[0];
        if matches!(g.node(inner).op, Op::Reshape { .. }) {
            let x = g.inputs_of(inner)[0];
            set_inputs(g, id, &[x]);
            remove_if_dead(g, inner);
            rewrites += 1;
        }
        rewrites += usize::from(remove_identity(g, id));
    }
    Ok(rewrites)
}

fn remove_identity(g: &mut Graph, id: NodeId) -> bool {
    let x = g.inputs_of(id)[0];
    if g.node(x).shape != g.node(id).shape || is_output(g, id) {
        return false;
    }
    absorb(g, id, x);
    true
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn reshape(g: &mut Graph, name: &str, x: NodeId, shape: &[usize]) -> NodeId {
        g.add(
            name,
            Op::Reshape {
                shape: shape.to_vec(),
            },
            &[x],
        )
        .unwrap()
    }

    #[test]
    fn a_squeeze_unsqueeze_round_trip_disappears() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", &[1, 4, 3, 3]);
        let p = g.add("pool", Op::GlobalAvgPool, &[x]).unwrap();
        let sq = reshape(&mut g, "squeeze", p, &[1, 4]);
        let un = reshape(&mut g, "unsqueeze", sq, &[1, 4, 1, 1]);
        let c = conv(&mut g, "c", un, 2, 1, 1, true);
        g.mark_output("y", c);
        bind_random(&mut g, 1);
        let inputs = vec![Rng::new(2).tensor(&[1, 4, 3, 3])];
        // The chain collapses (1), then the identity goes (1).
        check_pass(&mut g, &inputs, run, 2);
        assert_eq!(g.inputs_of(c), [p]);
        assert_eq!(g.op_counts().get("reshape"), None);
    }

    #[test]
    fn a_chain_read_twice_keeps_its_inner_reshape_and_outputs_stay() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", &[2, 6]);
        let a = reshape(&mut g, "a", x, &[3, 4]);
        let b = reshape(&mut g, "b", a, &[12]);
        let c = reshape(&mut g, "c", x, &[2, 6]);
        g.mark_output("a", a);
        g.mark_output("b", b);
        g.mark_output("c", c);
        let inputs = vec![Rng::new(3).tensor(&[2, 6])];
        check_pass(&mut g, &inputs, run, 1);
        assert_eq!(g.inputs_of(b), [x]);
        assert_eq!(g.inputs_of(a), [x]);
        assert!(g.graph.contains_node(c));
    }
}
