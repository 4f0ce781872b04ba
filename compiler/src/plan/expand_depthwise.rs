//! A 1×1 conv whose only reader is the depthwise conv right after it runs inside that conv,
//! band by band (the kernels' `mbconv::expand_depthwise`): an MBConv's expand
//! and depthwise convs. The 1×1 conv's output (6× the block's input) is then never
//! written: its slot is emptied, and the conv's input lives until the depthwise step,
//! which now reads it. The outputs are bit for bit the separate kernels'.
//!
//! Only where the kernels' fixed rule says it pays (`mbconv::worth_fusing`: an expanded
//! tensor of 2 MiB or more, few rows expanded twice; D0's 256² and 128² stages and its 64²
//! stride-2 one, Lite0's 160² and 80² ones);
//! batch 1 only (the fused kernel takes one image); no residual, gates or channels-last
//! output on the 1×1 conv.

use crate::kernels::mbconv::worth_fusing;

use super::{Expand, Kernel, Slot, Step};

/// Fuses every such pair in `steps` (removing the 1×1 conv's step).
pub(super) fn fuse(
    steps: &mut Vec<Step>,
    slots: &mut [Slot],
    outputs: &[(String, usize)],
    batch: usize,
) {
    if batch != 1 {
        return;
    }
    let read_once = super::read_once(steps, slots.len(), outputs);
    let mut i = 0;
    while i + 1 < steps.len() {
        let (a, b) = (&steps[i], &steps[i + 1]);
        let fits = match (&a.kernel, &b.kernel) {
            (
                &Kernel::Conv1x1 {
                    n: 1,
                    cin,
                    cout,
                    hw,
                    act,
                    nhwc: false,
                    gated: false,
                    ..
                },
                &Kernel::Depthwise {
                    c,
                    h,
                    w,
                    k,
                    stride,
                    expand: None,
                    ..
                },
            ) if a.inputs.len() == 1
                && a.images <= 1
                && b.images <= 1
                && b.inputs.first() == Some(&a.output)
                && read_once[a.output]
                && c == cout
                && h * w == hw
                && worth_fusing(cin, c, h, w, k, stride) =>
            {
                Some(Expand { cin, act })
            }
            _ => None,
        };
        let Some(e) = fits else {
            i += 1;
            continue;
        };
        let conv = steps.remove(i);
        slots[conv.output].len = 0;
        let dw = &mut steps[i];
        dw.inputs[0] = conv.inputs[0];
        dw.weights.splice(0..0, conv.weights);
        if let Kernel::Depthwise { expand, .. } = &mut dw.kernel {
            *expand = Some(e);
        }
        i += 1;
    }
}
