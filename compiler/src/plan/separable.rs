//! A depthwise conv whose only reader is the 1×1 conv after it (a separable conv: the
//! heads' towers, the BiFPN nodes' convs) runs with that conv band by band (the kernels'
//! `separable::depthwise_pointwise_fixed`). The depthwise output is then never
//! written to the arena: its slot is emptied, and the fused step takes the 1×1 conv's
//! place, output and residual. The outputs are bit for bit the separate kernels'.
//!
//! The 1×1 conv must be the next step (see [`fuse`]).
//!
//! A BiFPN node's sum fused into the depthwise conv (`plan/fuse_depthwise.rs`) comes along:
//! the fused step then computes the node's sum, depthwise and 1×1 convs band by band.
//!
//! Only where the kernels' fixed rule says it pays (`separable::worth_fusing`: a band of 8
//! rows fits in 256 KB: the heads' and BiFPN's 64-channel convs, not Lite0's wide MBConvs),
//! for the depthwise kernel's fast shapes, without an expand conv fused in front, nor
//! channel means taken; batch 1 (the fused kernel takes one image); a plain
//! 1×1 conv (no squeeze-excite gates, channels-last output or `--tune` blocking).

use crate::kernels::depthwise::{fast, out_len};
use crate::kernels::separable::worth_fusing;

use super::{Kernel, Project, Slot, Step};

/// Fuses every such pair in `steps` (removing the depthwise conv's step).
pub(super) fn fuse(steps: &mut Vec<Step>, slots: &mut [Slot], outputs: &[(String, usize)]) {
    let read_once = super::read_once(steps, slots.len(), outputs);
    let mut i = 0;
    while i < steps.len() {
        // The 1×1 conv right after the depthwise conv only: the schedule stays as it is.
        // Fusing a later one (Keras D0's tf2onnx order runs one tower conv at every level
        // before the next) made Keras D0 6–8% slower at two threads, whether the pair ran
        // where the depthwise conv or where the 1×1 conv had run; Lite0 and the
        // PyTorch-native D0 were no faster (interleaved runs, Zen 5).
        let (Some(a), Some(b)) = (steps.get(i), steps.get(i + 1)) else {
            break;
        };
        let fits = match (&a.kernel, &b.kernel) {
            (
                &Kernel::Depthwise {
                    c,
                    h,
                    w,
                    k,
                    stride,
                    pads,
                    expand: None,
                    project: None,
                    ..
                },
                &Kernel::Conv1x1 {
                    n: 1,
                    cin,
                    cout,
                    hw,
                    act,
                    nhwc: false,
                    gated: false,
                    tuning: None,
                },
            ) if b.inputs[0] == a.output
                && a.images <= 1
                && read_once[a.output]
                && cin == c
                && fast(k, stride)
                && {
                    let oh = out_len(h, pads[0], pads[2], k, stride);
                    let ow = out_len(w, pads[1], pads[3], k, stride);
                    hw == oh * ow && worth_fusing(c, oh, ow)
                } =>
            {
                Some(Project {
                    cout,
                    act,
                    residual: b.inputs.len() == 2,
                })
            }
            _ => None,
        };
        let Some(p) = fits else {
            i += 1;
            continue;
        };
        let dw = steps.remove(i);
        slots[dw.output].len = 0;
        let pw = &mut steps[i];
        // The depthwise conv's input (or its fused sum's inputs), then any residual.
        pw.inputs.splice(0..1, dw.inputs);
        pw.weights.splice(0..0, dw.weights);
        pw.images = dw.images;
        pw.kernel = dw.kernel;
        if let Kernel::Depthwise { project, .. } = &mut pw.kernel {
            *project = Some(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Plan;
    use super::*;
    use crate::ir::{BinaryOp, Graph, Op};
    use crate::passes::testutil::conv;

    /// x → 3×3 depthwise conv (8 channels, 6×6) → (another conv of x, when `between`) →
    /// 1×1 conv (+ x as a residual, when `residual`); the depthwise output also a graph
    /// output when `shared`.
    fn separable(between: bool, residual: bool, shared: bool) -> Plan {
        let mut g = Graph::new("t");
        let x = g.add_input("x", &[1, 8, 6, 6]);
        let d = conv(&mut g, "dw", x, 8, 3, 8, true);
        if between {
            let other = conv(&mut g, "other", x, 4, 1, 1, true);
            g.mark_output("other", other);
        }
        let mut p = conv(&mut g, "pw", d, 8, 1, 1, true);
        if residual {
            p = g.add("add", Op::Binary(BinaryOp::Add), &[p, x]).unwrap();
        }
        g.mark_output("y", p);
        if shared {
            g.mark_output("d", d);
        }
        crate::passes::run(&mut g, &crate::passes::PassSet::all()).unwrap();
        Plan::build(&g).unwrap()
    }

    #[test]
    fn a_depthwise_conv_runs_with_its_pointwise_conv() {
        for residual in [false, true] {
            let plan = separable(false, residual, false);
            let what = format!("residual {residual}: {:?}", plan.steps);
            let last = plan.steps.last().unwrap();
            let Kernel::Depthwise {
                project: Some(p), ..
            } = &last.kernel
            else {
                panic!("{what}");
            };
            assert_eq!(p.cout, 8, "{what}");
            assert_eq!(p.residual, residual, "{what}");
            assert_eq!(plan.steps.len(), 1, "{what}");
            // x (and x again as the residual); the depthwise weights, then the 1×1 conv's.
            assert_eq!(last.inputs.len(), 1 + residual as usize, "{what}");
            assert_eq!(last.weights.len(), 4, "{what}");
            assert_eq!(
                last.output,
                plan.outputs.iter().find(|o| o.0 == "y").unwrap().1
            );
        }
    }

    /// A BiFPN node: x → two 1×1 convs → their weighted sum → 3×3 depthwise conv → 1×1
    /// conv: one step computes the sum, the depthwise and the 1×1 conv.
    #[test]
    fn a_bifpn_node_runs_in_one_step() {
        use crate::ir::{Fuse, Sampling};
        use crate::passes::testutil::param;
        let mut g = Graph::new("t");
        let x = g.add_input("x", &[1, 4, 6, 6]);
        let a = conv(&mut g, "a", x, 8, 1, 1, true);
        let b = conv(&mut g, "b", x, 8, 1, 1, true);
        let fuse = Op::Fuse(Fuse {
            coefficients: param(&mut g, "w", &[2]),
            inputs: vec![Sampling::Identity, Sampling::Identity],
            act: None,
        });
        let s = g.add("sum", fuse, &[a, b]).unwrap();
        let d = conv(&mut g, "dw", s, 8, 3, 8, true);
        let p = conv(&mut g, "pw", d, 8, 1, 1, true);
        g.mark_output("y", p);
        let plan = Plan::build(&g).unwrap();
        let [a, b, node] = &plan.steps[..] else {
            panic!("{:?}", plan.steps);
        };
        assert!(
            matches!(
                &node.kernel,
                Kernel::Depthwise {
                    sum: Some(_),
                    project: Some(Project {
                        cout: 8,
                        residual: false,
                        ..
                    }),
                    ..
                }
            ),
            "{:?}",
            node.kernel
        );
        assert_eq!(node.inputs, [a.output, b.output]);
        // The coefficients, the depthwise conv's weight and bias, the 1×1 conv's.
        assert_eq!(node.weights.len(), 5);
    }

    #[test]
    fn only_the_next_step_is_fused() {
        let plan = separable(true, false, false);
        let names: Vec<&str> = plan.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["dw", "other", "pw"]);
        assert!(matches!(
            plan.steps[0].kernel,
            Kernel::Depthwise { project: None, .. }
        ));
    }

    #[test]
    fn a_depthwise_output_read_elsewhere_is_kept() {
        let plan = separable(false, false, true);
        assert!(matches!(
            plan.steps[0].kernel,
            Kernel::Depthwise { project: None, .. }
        ));
        assert!(matches!(plan.steps[1].kernel, Kernel::Conv1x1 { .. }));
    }
}
