//! A BiFPN node's input fusion whose only reader is the depthwise conv right after it (the
//! node's separable conv) runs inside that conv, tile by tile of channels (the kernels'
//! `fuse_depthwise::fuse_depthwise_fixed`). The fused sum is then never written to the
//! arena: its slot is emptied, and the fusion's inputs live until the depthwise step,
//! which now reads them. The outputs are bit for bit the separate kernels'.
//!
//! The depthwise conv may come some steps after the fusion (an imported graph may order
//! other branches' steps in between): the fusion's inputs are then live until it.
//!
//! Only for the depthwise kernel's fast shapes (3×3 or 5×5, stride 1 or 2: every BiFPN
//! node's), when the sum is not a model output, and both kernels run per image alike.

use crate::kernels::depthwise::fast;

use super::{FusedSum, Kernel, Slot, Step};

/// Fuses every such pair in `steps` (removing the fusion's step).
pub(super) fn fuse(steps: &mut Vec<Step>, slots: &mut [Slot], outputs: &[(String, usize)]) {
    let read_once = super::read_once(steps, slots.len(), outputs);
    let mut i = 0;
    while i < steps.len() {
        let a = &steps[i];
        // The fusion's reader: the depthwise conv, maybe some steps later (an imported
        // graph may order other branches' steps in between). The fusion's inputs are
        // written once, so computing it there gives the same values.
        let Some(j) = super::reader_after(steps, i, a.output) else {
            i += 1;
            continue;
        };
        let b = &steps[j];
        let fits = match (&a.kernel, &b.kernel) {
            (
                Kernel::Fuse {
                    c,
                    oh,
                    ow,
                    samples,
                    act,
                },
                Kernel::Depthwise {
                    c: c_dw,
                    h,
                    w,
                    k,
                    stride,
                    expand: None,
                    sum: None,
                    ..
                },
            ) if b.inputs == [a.output]
                && a.images == b.images
                && read_once[a.output]
                && (c, oh, ow) == (c_dw, h, w)
                && fast(*k, *stride) =>
            {
                Some(FusedSum {
                    samples: samples.clone(),
                    act: *act,
                })
            }
            _ => None,
        };
        let Some(f) = fits else {
            i += 1;
            continue;
        };
        let sum = steps.remove(i);
        slots[sum.output].len = 0;
        let dw = &mut steps[j - 1];
        dw.inputs = sum.inputs;
        dw.weights.splice(0..0, sum.weights);
        if let Kernel::Depthwise { sum, .. } = &mut dw.kernel {
            *sum = Some(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Plan;
    use super::*;
    use crate::ir::{Fuse, Graph, Op, Sampling};
    use crate::passes::testutil::{conv, param};

    /// x → two 1×1 convs → their weighted sum → (another 1×1 conv of x, when `between`) →
    /// 3×3 depthwise conv; the sum also a graph output when `shared`.
    fn node(between: bool, shared: bool) -> Plan {
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
        if between {
            let other = conv(&mut g, "other", x, 4, 1, 1, true);
            g.mark_output("other", other);
        }
        let d = conv(&mut g, "dw", s, 8, 3, 8, true);
        g.mark_output("y", d);
        if shared {
            g.mark_output("s", s);
        }
        Plan::build(&g).unwrap()
    }

    #[test]
    fn the_sum_runs_inside_its_depthwise_conv() {
        for between in [false, true] {
            let plan = node(between, false);
            let names: Vec<&str> = plan.steps.iter().map(|s| s.name.as_str()).collect();
            let want: &[&str] = if between {
                &["a", "b", "other", "dw"]
            } else {
                &["a", "b", "dw"]
            };
            assert_eq!(names, want);
            assert!(
                !plan
                    .steps
                    .iter()
                    .any(|s| matches!(s.kernel, Kernel::Fuse { .. })),
                "{:?}",
                plan.steps
            );
            let dw = plan.steps.last().unwrap();
            let Kernel::Depthwise {
                sum: Some(sum),
                expand: None,
                ..
            } = &dw.kernel
            else {
                panic!("{:?}", dw.kernel);
            };
            assert_eq!(sum.samples.len(), 2);
            // Both convs' outputs, the coefficients before the depthwise weights.
            assert_eq!(dw.inputs, [plan.steps[0].output, plan.steps[1].output]);
            assert_eq!(dw.weights.len(), 3);
        }
    }

    #[test]
    fn a_sum_read_elsewhere_is_kept() {
        let plan = node(false, true);
        assert!(plan
            .steps
            .iter()
            .any(|s| matches!(s.kernel, Kernel::Fuse { .. })));
        assert!(matches!(
            plan.steps.last().unwrap().kernel,
            Kernel::Depthwise { sum: None, .. }
        ));
    }
}
