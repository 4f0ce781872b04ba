//! `fold_bn`: an inference-mode BatchNorm folded into the convolution it follows.
//!
//! `bn(conv(x)) = conv(x)·s + (β − μ·s)` with `s = γ / √(σ² + ε)` per output channel, which is
//! a conv with weights `w·s` and bias `(b − μ)·s + β`. Found at the BN; applies when its input
//! is a conv with no epilogue yet (an activation or residual would sit between the two) and
//! the BN is that conv's only reader (otherwise the unnormalized value is still needed).
//!
//! The folded weight and bias are new parameters (role `Folded`) named after the BN node,
//! `<bn>.folded.weight` and `<bn>.folded.bias`: a conv whose weights several nodes share
//! (effdet's heads share conv weights across levels, with a BN per level) gets one folded
//! copy per node, and the shared original stays for the nodes that still read it. Values are
//! computed in f64 when every source is bound, else the new parameters are left unbound.
//!
//! A BatchNorm not after a conv stays as it is: turning it into a 1×1 depthwise conv would
//! not remove any work and every executor runs BN anyway.

use crate::ir::{Graph, Op};

use super::rewrite::{absorb, add_param, data, only_feeds};
use super::PassError;

pub fn run(g: &mut Graph) -> Result<usize, PassError> {
    let mut rewrites = 0;
    for bn_id in g.topo_order() {
        let Op::BatchNorm(bn) = &g.node(bn_id).op else {
            continue;
        };
        let bn = bn.clone();
        let conv_id = g.inputs_of(bn_id)[0];
        let Op::Conv2d(conv) = &g.node(conv_id).op else {
            continue;
        };
        if conv.act.is_some() || g.inputs_of(conv_id).len() > 1 || !only_feeds(g, conv_id, bn_id) {
            continue;
        }
        let mut conv = conv.clone();
        let cout = conv.out_channels;
        let w_shape = g.param(conv.weight).shape.clone();
        let folded = (|| {
            let (gamma, beta) = (data(g, bn.gamma)?, data(g, bn.beta)?);
            let (mean, var) = (data(g, bn.mean)?, data(g, bn.var)?);
            let w = data(g, conv.weight)?;
            let b = match conv.bias {
                Some(b) => Some(data(g, b)?),
                None => None,
            };
            let scale: Vec<f64> = (0..cout)
                .map(|c| gamma[c] as f64 / (var[c] as f64 + bn.eps as f64).sqrt())
                .collect();
            let per_out = w.len() / cout;
            let weight: Vec<f32> = w
                .iter()
                .enumerate()
                .map(|(i, &v)| (v as f64 * scale[i / per_out]) as f32)
                .collect();
            let bias: Vec<f32> = (0..cout)
                .map(|c| {
                    let b0 = b.map_or(0.0, |b| b[c] as f64);
                    ((b0 - mean[c] as f64) * scale[c] + beta[c] as f64) as f32
                })
                .collect();
            Some((weight, bias))
        })();
        let (weight, bias) = folded.unzip();
        let name = g.node(bn_id).name.clone();
        conv.weight = add_param(g, format!("{name}.folded.weight"), &w_shape, weight);
        conv.bias = Some(add_param(g, format!("{name}.folded.bias"), &[cout], bias));
        g.graph[conv_id].op = Op::Conv2d(conv);
        absorb(g, bn_id, conv_id);
        rewrites += 1;
    }
    Ok(rewrites)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::ir::{Activation, BinaryOp, ParamRole};

    #[test]
    fn folds_into_dense_and_depthwise_convs_with_and_without_bias() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", &[1, 3, 5, 4]);
        let c = conv(&mut g, "c", x, 6, 3, 1, false);
        let b = bn(&mut g, "bn1", c);
        let d = conv(&mut g, "dw", b, 6, 3, 6, true);
        let b2 = bn(&mut g, "bn2", d);
        g.mark_output("y", b2);
        bind_random(&mut g, 3);
        let input = vec![Rng::new(4).tensor(&[1, 3, 5, 4])];
        check_pass(&mut g, &input, run, 2);
        assert_eq!(kinds(&g), [("conv", 1), ("depthwise_conv", 1)]);
        // The output moved to the conv that now computes it.
        assert_eq!(g.outputs[0].1, d);
        let Op::Conv2d(folded) = &g.node(d).op else {
            panic!()
        };
        assert_eq!(g.param(folded.weight).name, "bn2.folded.weight");
        assert_eq!(g.param(folded.weight).role, ParamRole::Folded);
    }

    #[test]
    fn shared_conv_weights_get_one_folded_copy_per_node() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", &[1, 4, 3, 3]);
        let y = g.add_input("y", &[1, 4, 2, 2]);
        let cx = conv(&mut g, "c@0", x, 4, 1, 1, true);
        let Op::Conv2d(shared) = g.node(cx).op.clone() else {
            panic!()
        };
        let cy = g.add("c@1", Op::Conv2d(shared.clone()), &[y]).unwrap();
        let bx = bn(&mut g, "bn.0", cx);
        let by = bn(&mut g, "bn.1", cy);
        g.mark_output("a", bx);
        g.mark_output("b", by);
        bind_random(&mut g, 5);
        let mut rng = Rng::new(6);
        let input = vec![rng.tensor(&[1, 4, 3, 3]), rng.tensor(&[1, 4, 2, 2])];
        check_pass(&mut g, &input, run, 2);
        let weights: Vec<_> = [cx, cy]
            .iter()
            .map(|&n| match &g.node(n).op {
                Op::Conv2d(c) => c.weight,
                _ => panic!(),
            })
            .collect();
        assert_ne!(weights[0], weights[1]);
        assert_ne!(weights[0], shared.weight);
    }

    #[test]
    fn leaves_bns_it_cannot_fold() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", &[1, 2, 3, 3]);
        // The conv's raw output is read twice.
        let c = conv(&mut g, "c", x, 2, 1, 1, false);
        let b = bn(&mut g, "bn1", c);
        let s = g.add("s", Op::Binary(BinaryOp::Add), &[b, c]).unwrap();
        // An activation sits in the conv's epilogue.
        let c2 = conv(&mut g, "c2", s, 2, 1, 1, false);
        let Op::Conv2d(mut with_act) = g.node(c2).op.clone() else {
            panic!()
        };
        with_act.act = Some(Activation::Relu);
        g.graph[c2].op = Op::Conv2d(with_act);
        let b2 = bn(&mut g, "bn2", c2);
        // Not after a conv at all.
        let b3 = bn(&mut g, "bn3", x);
        let t = g.add("t", Op::Binary(BinaryOp::Add), &[b2, b3]).unwrap();
        g.mark_output("y", t);
        assert_eq!(run(&mut g).unwrap(), 0);
        assert_eq!(g.op_counts()["batch_norm"], 3);
    }

    #[test]
    fn unbound_graphs_are_rewritten_with_unbound_folded_params() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", &[1, 3, 4, 4]);
        let c = conv(&mut g, "c", x, 5, 3, 1, false);
        let b = bn(&mut g, "bn", c);
        g.mark_output("y", b);
        assert_eq!(run(&mut g).unwrap(), 1);
        let Op::Conv2d(folded) = &g.node(c).op else {
            panic!()
        };
        let (w, bias) = (g.param(folded.weight), g.param(folded.bias.unwrap()));
        assert_eq!(
            (w.shape.as_slice(), bias.shape.as_slice()),
            (&[5, 3, 3, 3][..], &[5][..])
        );
        assert!(w.data.is_none() && bias.data.is_none());
    }
}
