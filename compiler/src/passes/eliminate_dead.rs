//! `eliminate_dead`: nodes no output depends on, and parameters no node reads.
//!
//! Graph inputs always stay (they are the model's interface, even if unused). Nodes keep
//! their ids (the graph is a `StableGraph`). **Parameter ids do not stay**: the table is
//! compacted, surviving parameters keep their relative order, and every op is remapped in the
//! same step, so the graph stays consistent; only ids held outside the graph across this pass
//! go stale (look parameters up by name, or from the ops, after passes). Compacting matters
//! because the code generator packs every parameter in the table: BN statistics, raw fusion
//! weights and conv weights replaced by folded ones would otherwise ship unused.

use std::collections::HashSet;

use crate::ir::{Graph, ParamId};

use super::rewrite::map_params;
use super::PassError;

pub fn run(g: &mut Graph) -> Result<usize, PassError> {
    let mut live = HashSet::new();
    let mut stack: Vec<_> = g.outputs.iter().map(|(_, id)| *id).collect();
    stack.extend(g.inputs.iter().copied());
    while let Some(n) = stack.pop() {
        if live.insert(n) {
            stack.extend(g.inputs_of(n));
        }
    }
    let dead: Vec<_> = g
        .graph
        .node_indices()
        .filter(|n| !live.contains(n))
        .collect();
    for &n in &dead {
        g.graph.remove_node(n);
    }

    let mut used = vec![false; g.params.len()];
    for node in g.graph.node_weights() {
        for p in node.op.params() {
            used[p.0] = true;
        }
    }
    let unused = used.iter().filter(|u| !**u).count();
    if unused > 0 {
        let mut remap = vec![usize::MAX; g.params.len()];
        let old = std::mem::take(&mut g.params);
        for (i, p) in old.into_iter().enumerate() {
            if used[i] {
                remap[i] = g.params.len();
                g.params.push(p);
            }
        }
        for node in g.graph.node_weights_mut() {
            map_params(&mut node.op, |p| ParamId(remap[p.0]));
        }
    }
    Ok(dead.len() + unused)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::ir::{Activation, Op};

    #[test]
    fn removes_unreachable_nodes_and_unused_params_and_remaps() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", &[1, 2, 3, 3]);
        let _unused_input = g.add_input("z", &[1]);
        let orphan = g.add_param("orphan", &[7], crate::ir::ParamRole::Learned);
        let dead = conv(&mut g, "dead", x, 2, 1, 1, true);
        let _dead_too = act(&mut g, "dead.act", dead, Activation::Relu);
        let live = conv(&mut g, "live", x, 2, 3, 1, true);
        g.mark_output("y", live);
        bind_random(&mut g, 71);
        let mut rng = Rng::new(72);
        let input = vec![rng.tensor(&[1, 2, 3, 3]), rng.tensor(&[1])];
        // Two nodes, the orphan and the dead conv's two parameters.
        check_pass(&mut g, &input, run, 5);
        assert_eq!(g.graph.node_count(), 3);
        assert_eq!(g.params.len(), 2);
        let Op::Conv2d(c) = &g.node(live).op else {
            panic!()
        };
        assert_eq!(g.param(c.weight).name, "live.weight");
        assert_eq!(g.param(c.bias.unwrap()).name, "live.bias");
        // The table was compacted: the orphan's slot went to the live weight.
        assert_eq!((orphan, c.weight), (ParamId(0), ParamId(0)));
    }
}
