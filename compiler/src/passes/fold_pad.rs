//! `fold_pad`: explicit `Pad` nodes (how exporters write TF 'same' padding) into the window
//! op that reads them, whose own padding then does the same job without a padded copy.
//!
//! Found at the `Pad`; applies only when the pad is read once (else the padded tensor is
//! needed anyway):
//! - value 0 into a conv that reads it as its input (not as residual): zero padding is what a
//!   conv's padding means;
//! - value −∞, or below [`NEG_INFINITY_LIKE`] (exporters write the lowest f32), into a max
//!   pool, when every window still overlaps the input (padding below the kernel size on each
//!   side). A max pool's padding never wins the max; a pad value this low would only win over
//!   inputs at least as low, and a window of only padding cannot happen;
//! - a pad into a pad of the same value: one pad.

use crate::ir::{Graph, Op, PoolKind};

use super::rewrite::{absorb, single_consumer};
use super::PassError;

/// Pad values at or below this count as −∞ in front of a max pool.
pub const NEG_INFINITY_LIKE: f32 = -1e38;

pub fn run(g: &mut Graph) -> Result<usize, PassError> {
    let mut rewrites = 0;
    for pad in g.topo_order() {
        if !g.graph.contains_node(pad) {
            continue;
        }
        let Op::Pad { pads, value } = g.node(pad).op else {
            continue;
        };
        let Some(reader) = single_consumer(g, pad) else {
            continue;
        };
        let reads_as_input = g.inputs_of(reader)[0] == pad;
        let sum = |p: [usize; 4]| -> [usize; 4] { std::array::from_fn(|i| p[i] + pads[i]) };
        let folded = match &mut g.graph[reader].op {
            Op::Conv2d(c) if value == 0.0 && reads_as_input => {
                c.pads = sum(c.pads);
                true
            }
            Op::Pool2d(p) if p.kind == PoolKind::Max && value <= NEG_INFINITY_LIKE => {
                let total = sum(p.pads);
                let fits = (0..4).all(|i| total[i] < p.kernel[i % 2]);
                if fits {
                    p.pads = total;
                }
                fits
            }
            Op::Pad {
                pads: outer,
                value: v,
            } if *v == value || (v.is_nan() && value.is_nan()) => {
                *outer = sum(*outer);
                true
            }
            _ => false,
        };
        if folded {
            let x = g.inputs_of(pad)[0];
            // The reader now reads the unpadded tensor in the pad's slot.
            absorb(g, pad, x);
            rewrites += 1;
        }
    }
    Ok(rewrites)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::ir::{NodeId, Pool2d};

    fn pad(g: &mut Graph, name: &str, x: NodeId, pads: [usize; 4], value: f32) -> NodeId {
        g.add(name, Op::Pad { pads, value }, &[x]).unwrap()
    }

    fn max_pool(g: &mut Graph, name: &str, x: NodeId, pads: [usize; 4]) -> NodeId {
        let p = Pool2d {
            kind: PoolKind::Max,
            kernel: [3, 3],
            stride: [2, 2],
            pads,
        };
        g.add(name, Op::Pool2d(p), &[x]).unwrap()
    }

    #[test]
    fn same_padding_folds_into_convs_and_max_pools() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", &[1, 3, 7, 6]);
        // TF 'same' stride 2: (0, 1) explicit, the conv itself unpadded.
        let p = pad(&mut g, "p", x, [0, 0, 1, 1], 0.0);
        let p = pad(&mut g, "pp", p, [1, 0, 0, 0], 0.0);
        let c = conv(&mut g, "c", p, 4, 3, 1, true);
        let Op::Conv2d(mut op) = g.node(c).op.clone() else {
            panic!()
        };
        op.pads = [0; 4];
        op.stride = [2, 2];
        g.graph[c].op = Op::Conv2d(op);
        g.graph[c].shape = vec![1, 4, 4, 3];
        let q = pad(&mut g, "q", c, [0, 0, 1, 1], f32::NEG_INFINITY);
        let m = max_pool(&mut g, "m", q, [0; 4]);
        let q2 = pad(&mut g, "q2", m, [1, 1, 1, 1], f32::MIN);
        let m2 = max_pool(&mut g, "m2", q2, [0, 0, 1, 1]);
        g.mark_output("y", m2);
        bind_random(&mut g, 31);
        let input = vec![Rng::new(32).tensor(&[1, 3, 7, 6])];
        // pad→pad, then three folds into their readers.
        check_pass(&mut g, &input, run, 4);
        assert_eq!(kinds(&g), [("conv", 1), ("max_pool", 2)]);
        assert!(matches!(&g.node(c).op, Op::Conv2d(c) if c.pads == [1, 0, 1, 1]));
        assert!(matches!(&g.node(m2).op, Op::Pool2d(p) if p.pads == [1, 1, 2, 2]));
    }

    #[test]
    fn pads_that_change_the_result_stay() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", &[1, 2, 5, 5]);
        // Non-zero value before a conv.
        let p = pad(&mut g, "p", x, [1; 4], 1.0);
        let c = conv(&mut g, "c", p, 2, 3, 1, false);
        // Zero before a max pool (it would win over negative inputs).
        let q = pad(&mut g, "q", c, [1; 4], 0.0);
        let m = max_pool(&mut g, "m", q, [0; 4]);
        // −∞ as wide as the window: a window of only padding.
        let r = pad(&mut g, "r", m, [3, 0, 0, 0], f32::NEG_INFINITY);
        let m2 = max_pool(&mut g, "m2", r, [0; 4]);
        // Read twice.
        let s = pad(&mut g, "s", m2, [1; 4], 0.0);
        let c2 = conv(&mut g, "c2", s, 2, 3, 1, false);
        g.mark_output("y", c2);
        g.mark_output("s", s);
        assert_eq!(run(&mut g).unwrap(), 0);
    }
}
