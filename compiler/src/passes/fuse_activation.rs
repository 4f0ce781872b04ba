//! `fuse_activation`: activations into their producer's epilogue, after recognizing the ones
//! exporters spell out.
//!
//! In this order, within one run:
//! 1. **Canonical names**: `Clip[0, 6]` is `Relu6` and `Clip[0, ∞)` is `Relu`, as standalone
//!    ops and in epilogues, so kernels and op counts see the functions they know.
//! 2. **Swish at the `Mul`**: `Mul(x, Sigmoid(x))` (either operand order) becomes
//!    `Swish(x)`; the sigmoid goes away unless something else reads it. This is how PyTorch
//!    exports `SiLU`.
//! 3. **Epilogues**: an activation whose input is a conv without activation and without
//!    residual (the activation would then apply after the residual, which the conv's
//!    `act(conv + bias) + residual` cannot express), or a `Fuse` without activation, moves
//!    into that op — if the activation is the producer's only reader (else the raw value is
//!    still needed). The producer keeps its name; the activation node goes.

use crate::ir::{Activation, BinaryOp, Graph, Op};

use super::rewrite::{absorb, canonical, only_feeds, remove_if_dead, set_inputs};
use super::PassError;

pub fn run(g: &mut Graph) -> Result<usize, PassError> {
    Ok(canonicalize(g) + swish(g) + epilogues(g))
}

fn canonicalize(g: &mut Graph) -> usize {
    let mut rewrites = 0;
    let mut fix = |a: &mut Activation| {
        let c = canonical(*a);
        if c != *a {
            *a = c;
            rewrites += 1;
        }
    };
    for node in g.graph.node_weights_mut() {
        match &mut node.op {
            Op::Activation(a) => fix(a),
            Op::SqueezeExcite(se) => fix(&mut se.act),
            Op::Conv2d(c) => c.act.iter_mut().for_each(&mut fix),
            Op::Fuse(f) => f.act.iter_mut().for_each(&mut fix),
            _ => {}
        }
    }
    rewrites
}

fn swish(g: &mut Graph) -> usize {
    let mut rewrites = 0;
    for id in g.topo_order() {
        if g.node(id).op != Op::Binary(BinaryOp::Mul) {
            continue;
        }
        let inputs = g.inputs_of(id);
        let [a, b] = inputs[..] else { continue };
        let sigmoid_of = |s: crate::ir::NodeId, x| {
            g.node(s).op == Op::Activation(Activation::Sigmoid) && g.inputs_of(s) == [x]
        };
        let (x, sig) = if sigmoid_of(b, a) {
            (a, b)
        } else if sigmoid_of(a, b) {
            (b, a)
        } else {
            continue;
        };
        g.graph[id].op = Op::Activation(Activation::Swish);
        set_inputs(g, id, &[x]);
        remove_if_dead(g, sig);
        rewrites += 1;
    }
    rewrites
}

fn epilogues(g: &mut Graph) -> usize {
    let mut rewrites = 0;
    for id in g.topo_order() {
        let Op::Activation(a) = g.node(id).op else {
            continue;
        };
        let producer = g.inputs_of(id)[0];
        if !only_feeds(g, producer, id) {
            continue;
        }
        let has_residual = g.inputs_of(producer).len() > 1;
        match &mut g.graph[producer].op {
            Op::Conv2d(c) if c.act.is_none() && !has_residual => c.act = Some(a),
            Op::Fuse(f) if f.act.is_none() => f.act = Some(a),
            _ => continue,
        }
        absorb(g, id, producer);
        rewrites += 1;
    }
    rewrites
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::ir::{Fuse, NodeId, Sampling};

    fn mul(g: &mut Graph, name: &str, a: NodeId, b: NodeId) -> NodeId {
        g.add(name, Op::Binary(BinaryOp::Mul), &[a, b]).unwrap()
    }

    #[test]
    fn exported_swish_fuses_into_the_conv() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", &[1, 3, 4, 4]);
        let c = conv(&mut g, "c", x, 4, 3, 1, true);
        let s = act(&mut g, "sig", c, Activation::Sigmoid);
        let m = mul(&mut g, "m", c, s);
        // Operands the other way round, on a depthwise conv.
        let d = conv(&mut g, "dw", m, 4, 3, 4, false);
        let s2 = act(&mut g, "sig2", d, Activation::Sigmoid);
        let m2 = mul(&mut g, "m2", s2, d);
        g.mark_output("y", m2);
        bind_random(&mut g, 7);
        let input = vec![Rng::new(8).tensor(&[1, 3, 4, 4])];
        // Two swishes recognized, two epilogues.
        check_pass(&mut g, &input, run, 4);
        assert_eq!(kinds(&g), [("conv", 1), ("depthwise_conv", 1)]);
        assert!(matches!(&g.node(d).op, Op::Conv2d(c) if c.act == Some(Activation::Swish)));
    }

    #[test]
    fn a_sigmoid_read_elsewhere_stays() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", &[1, 2, 3, 3]);
        let c = conv(&mut g, "c", x, 2, 1, 1, false);
        let s = act(&mut g, "sig", c, Activation::Sigmoid);
        let m = mul(&mut g, "m", c, s);
        g.mark_output("y", m);
        g.mark_output("gate", s);
        bind_random(&mut g, 9);
        let input = vec![Rng::new(10).tensor(&[1, 2, 3, 3])];
        // The swish is recognized, but the conv output is still read by the sigmoid.
        check_pass(&mut g, &input, run, 1);
        assert_eq!(kinds(&g), [("conv", 1), ("sigmoid", 1), ("swish", 1)]);
    }

    #[test]
    fn clips_become_relus_and_fuse() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", &[1, 2, 3, 3]);
        let c = conv(&mut g, "c", x, 2, 3, 1, true);
        let r6 = act(&mut g, "r6", c, Activation::Clip { min: 0.0, max: 6.0 });
        let r = act(
            &mut g,
            "r",
            r6,
            Activation::Clip {
                min: 0.0,
                max: f32::INFINITY,
            },
        );
        let other = act(
            &mut g,
            "o",
            r,
            Activation::Clip {
                min: -1.0,
                max: 1.0,
            },
        );
        g.mark_output("y", other);
        bind_random(&mut g, 11);
        let input = vec![Rng::new(12).tensor(&[1, 2, 3, 3])];
        // Two renames and one epilogue (the later activations read an activation).
        check_pass(&mut g, &input, run, 3);
        assert_eq!(kinds(&g), [("clip", 1), ("conv", 1), ("relu", 1)]);
    }

    #[test]
    fn no_fusion_past_a_residual_a_second_reader_or_an_output() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", &[1, 2, 3, 3]);
        let c = conv(&mut g, "c", x, 2, 1, 1, false);
        let Op::Conv2d(res) = g.node(c).op.clone() else {
            panic!()
        };
        let with_residual = g.add("res", Op::Conv2d(res), &[c, x]).unwrap();
        let a = act(&mut g, "a", with_residual, Activation::Relu);
        let c2 = conv(&mut g, "c2", a, 2, 1, 1, false);
        let a2 = act(&mut g, "a2", c2, Activation::Relu);
        let c3 = conv(&mut g, "c3", a2, 2, 1, 1, false);
        let a3 = act(&mut g, "a3", c3, Activation::Relu);
        g.mark_output("y", a3);
        g.mark_output("raw", c3);
        g.mark_output("both", c2);
        assert_eq!(run(&mut g).unwrap(), 0);
    }

    #[test]
    fn fuse_takes_the_activation() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", &[1, 2, 3, 3]);
        let y = g.add_input("y", &[1, 2, 3, 3]);
        let k = bound(&mut g, "k", &[2], vec![0.25, 0.5]);
        let f = Fuse {
            coefficients: k,
            inputs: vec![Sampling::Identity, Sampling::Identity],
            act: None,
        };
        let f = g.add("f", Op::Fuse(f), &[x, y]).unwrap();
        let a = act(&mut g, "a", f, Activation::Swish);
        g.mark_output("z", a);
        let mut rng = Rng::new(13);
        let input = vec![rng.tensor(&[1, 2, 3, 3]), rng.tensor(&[1, 2, 3, 3])];
        check_pass(&mut g, &input, run, 1);
        assert_eq!(kinds(&g), [("fused_sum", 1)]);
    }
}
