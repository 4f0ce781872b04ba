//! `fuse_residual`: `Add(conv(x), r)` becomes the conv's residual input, so the conv's
//! epilogue adds `r` while its output is still in registers (`act(conv + bias) + r`).
//!
//! Found at the `Add`. Applies when one operand is a conv without a residual whose only reader
//! is this `Add` (so its un-added value is not needed elsewhere), and both operands have the
//! `Add`'s shape: a broadcasting add is not a residual. When both operands qualify, the first
//! one takes the other as residual. The conv keeps its name and takes the `Add`'s readers.
//! No cycle can appear: the other operand cannot depend on the conv, whose only reader is the
//! `Add`.

use crate::ir::{BinaryOp, Graph, Op};

use super::rewrite::{absorb, only_feeds, set_inputs};
use super::PassError;

pub fn run(g: &mut Graph) -> Result<usize, PassError> {
    let mut rewrites = 0;
    for add in g.topo_order() {
        if g.node(add).op != Op::Binary(BinaryOp::Add) {
            continue;
        }
        let inputs = g.inputs_of(add);
        let [a, b] = inputs[..] else { continue };
        let shape = &g.node(add).shape;
        if g.node(a).shape != *shape || g.node(b).shape != *shape {
            continue;
        }
        let fusable = |conv| {
            matches!(g.node(conv).op, Op::Conv2d(_))
                && g.inputs_of(conv).len() == 1
                && only_feeds(g, conv, add)
        };
        let (conv, residual) = if fusable(a) {
            (a, b)
        } else if fusable(b) {
            (b, a)
        } else {
            continue;
        };
        let x = g.inputs_of(conv)[0];
        set_inputs(g, conv, &[x, residual]);
        absorb(g, add, conv);
        rewrites += 1;
    }
    Ok(rewrites)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::ir::Activation;

    #[test]
    fn project_conv_takes_the_block_input_as_residual() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", &[1, 4, 5, 5]);
        let e = conv(&mut g, "expand", x, 8, 1, 1, false);
        let e = act(&mut g, "expand.act", e, Activation::Swish);
        let p = conv(&mut g, "project", e, 4, 1, 1, true);
        let add = g.add("add", Op::Binary(BinaryOp::Add), &[x, p]).unwrap();
        // A second block whose conv carries an activation: the residual goes after it.
        let q = conv(&mut g, "q", add, 4, 3, 4, false);
        let Op::Conv2d(mut c) = g.node(q).op.clone() else {
            panic!()
        };
        c.act = Some(Activation::Relu);
        g.graph[q].op = Op::Conv2d(c);
        let add2 = g.add("add2", Op::Binary(BinaryOp::Add), &[q, add]).unwrap();
        g.mark_output("y", add2);
        bind_random(&mut g, 21);
        let input = vec![Rng::new(22).tensor(&[1, 4, 5, 5])];
        check_pass(&mut g, &input, run, 2);
        assert_eq!(g.inputs_of(p), [e, x]);
        assert_eq!(g.inputs_of(q), [p, p]);
        assert!(!g.op_counts().contains_key("add"));
    }

    #[test]
    fn broadcasts_shared_outputs_and_existing_residuals_stay_adds() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", &[1, 2, 3, 3]);
        let bias = g.add_input("bias", &[1, 2, 1, 1]);
        // Broadcasting add.
        let c = conv(&mut g, "c", x, 2, 1, 1, false);
        let a1 = g.add("a1", Op::Binary(BinaryOp::Add), &[c, bias]).unwrap();
        // The conv output is also an output.
        let c2 = conv(&mut g, "c2", a1, 2, 1, 1, false);
        let a2 = g.add("a2", Op::Binary(BinaryOp::Add), &[c2, x]).unwrap();
        g.mark_output("c2", c2);
        // Already has a residual.
        let Op::Conv2d(op) = g.node(c2).op.clone() else {
            panic!()
        };
        let c3 = g.add("c3", Op::Conv2d(op), &[a2, x]).unwrap();
        let a3 = g.add("a3", Op::Binary(BinaryOp::Add), &[c3, a2]).unwrap();
        g.mark_output("y", a3);
        assert_eq!(run(&mut g).unwrap(), 0);
    }
}
