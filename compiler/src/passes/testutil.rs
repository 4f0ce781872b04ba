//! Builders and checks for the passes' unit tests: small graphs with deterministic random
//! weights, run on the interpreter before and after a pass.

use std::sync::Arc;

use crate::interp::{self, Tensor};
use crate::ir::{Activation, BatchNorm, Conv2d, Graph, NodeId, Op, ParamId, ParamRole};

use super::{verify, PassFn};

/// xorshift64: deterministic values without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + (hi - lo) * ((self.0 >> 40) as f32 / (1u64 << 24) as f32)
    }

    pub fn tensor(&mut self, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        Tensor::new(
            shape.to_vec(),
            (0..n).map(|_| self.uniform(-1.0, 1.0)).collect(),
        )
    }
}

/// Binds every unbound parameter: variances (`*var*`) in `[0.5, 1.5)`, everything else in
/// `[-1, 1)`.
pub fn bind_random(g: &mut Graph, seed: u64) {
    let mut rng = Rng::new(seed);
    for p in &mut g.params {
        if p.data.is_none() {
            let (lo, hi) = if p.name.contains("var") {
                (0.5, 1.5)
            } else {
                (-1.0, 1.0)
            };
            let v: Vec<f32> = (0..p.len()).map(|_| rng.uniform(lo, hi)).collect();
            p.data = Some(Arc::from(v));
        }
    }
}

pub fn param(g: &mut Graph, name: &str, shape: &[usize]) -> ParamId {
    g.add_param(name, shape, ParamRole::Learned)
}

pub fn bound(g: &mut Graph, name: &str, shape: &[usize], data: Vec<f32>) -> ParamId {
    let p = g.add_param(name, shape, ParamRole::Constant);
    g.params[p.0].data = Some(Arc::from(data));
    p
}

/// A conv with 'same'-style symmetric padding `k/2` and fresh weights.
pub fn conv(
    g: &mut Graph,
    name: &str,
    x: NodeId,
    cout: usize,
    k: usize,
    groups: usize,
    bias: bool,
) -> NodeId {
    let cin = g.node(x).shape[1];
    let weight = param(g, &format!("{name}.weight"), &[cout, cin / groups, k, k]);
    let bias = bias.then(|| param(g, &format!("{name}.bias"), &[cout]));
    let op = Op::Conv2d(Conv2d {
        out_channels: cout,
        kernel: [k, k],
        stride: [1, 1],
        dilation: [1, 1],
        pads: [k / 2; 4],
        groups,
        weight,
        bias,
        act: None,
    });
    g.add(name, op, &[x]).unwrap()
}

pub fn bn(g: &mut Graph, name: &str, x: NodeId) -> NodeId {
    let c = g.node(x).shape[1];
    let op = Op::BatchNorm(BatchNorm {
        gamma: param(g, &format!("{name}.weight"), &[c]),
        beta: param(g, &format!("{name}.bias"), &[c]),
        mean: param(g, &format!("{name}.running_mean"), &[c]),
        var: param(g, &format!("{name}.running_var"), &[c]),
        eps: 1e-3,
    });
    g.add(name, op, &[x]).unwrap()
}

pub fn act(g: &mut Graph, name: &str, x: NodeId, a: Activation) -> NodeId {
    g.add(name, Op::Activation(a), &[x]).unwrap()
}

/// input → conv 3×3 → BN → swish, bound, with its input.
pub fn conv_bn_act_graph() -> (Graph, Vec<Tensor>) {
    let mut g = Graph::new("t");
    let x = g.add_input("x", &[1, 3, 6, 5]);
    let c = conv(&mut g, "c", x, 4, 3, 1, false);
    let b = bn(&mut g, "bn", c);
    let a = act(&mut g, "act", b, Activation::Swish);
    g.mark_output("y", a);
    bind_random(&mut g, 1);
    (g, vec![Rng::new(2).tensor(&[1, 3, 6, 5])])
}

pub fn eval(g: &Graph, inputs: &[Tensor]) -> Vec<(String, Tensor)> {
    interp::run(g, inputs).expect("the graph runs")
}

/// Every output agrees in shape and within `tol · max(1, |reference|)` per element.
pub fn assert_close(a: &[(String, Tensor)], b: &[(String, Tensor)], tol: f32) {
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        assert_eq!(ta.shape, tb.shape, "{na}");
        for (i, (x, y)) in ta.data.iter().zip(&tb.data).enumerate() {
            assert!(
                (x - y).abs() <= tol * y.abs().max(1.0),
                "{na}[{i}]: {x} vs {y}"
            );
        }
    }
}

/// Runs `pass` on a bound graph: the rewrite count must be `rewrites`, the graph must stay
/// consistent and compute the same outputs; then the pass must find nothing more to do.
pub fn check_pass(g: &mut Graph, inputs: &[Tensor], pass: PassFn, rewrites: usize) {
    let before = eval(g, inputs);
    assert_eq!(pass(g).unwrap(), rewrites, "rewrites");
    verify(g).unwrap();
    assert_close(&eval(g, inputs), &before, 1e-5);
    assert_eq!(pass(g).unwrap(), 0, "a second run rewrites nothing");
}

/// The op kinds of the graph, sorted, inputs excluded.
pub fn kinds(g: &Graph) -> Vec<(&'static str, usize)> {
    g.op_counts()
        .into_iter()
        .filter(|(k, _)| *k != "input")
        .collect()
}
