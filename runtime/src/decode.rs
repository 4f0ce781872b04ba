//! Box decoding and score activation, as effdet's `decode_box_outputs` and `sigmoid` compute
//! them.
//!
//! Everything is f32 with the reference's order of operations (no fused multiply-add), so
//! decoded boxes agree with PyTorch to the last bit or two.

#[cfg(not(feature = "std"))]
use crate::math::Float;

/// Decodes regression outputs `codes = [ty, tx, th, tw]` against `anchor = [y1, x1, y2, x2]`
/// into a box `[x1, y1, x2, y2]` (effdet's `output_xyxy=True` form).
///
/// The anchor's centre is moved by `ty·h_a` and `tx·w_a`, its size scaled by `exp(th)` and
/// `exp(tw)` (the Faster R-CNN coder without variance factors). No clipping.
pub fn decode_box(anchor: &[f32; 4], codes: [f32; 4]) -> [f32; 4] {
    let [ay1, ax1, ay2, ax2] = *anchor;
    let [ty, tx, th, tw] = codes;
    let ycenter_a = (ay1 + ay2) / 2.0;
    let xcenter_a = (ax1 + ax2) / 2.0;
    let ha = ay2 - ay1;
    let wa = ax2 - ax1;

    let w = tw.exp() * wa;
    let h = th.exp() * ha;
    let ycenter = ty * ha + ycenter_a;
    let xcenter = tx * wa + xcenter_a;
    [
        xcenter - w / 2.0,
        ycenter - h / 2.0,
        xcenter + w / 2.0,
        ycenter + h / 2.0,
    ]
}

/// The logistic function `1 / (1 + e^-x)`: EfficientDet scores every class independently
/// (no softmax, no background class). Saturates to exactly 0 and 1 for large |x|.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_codes_give_the_anchor_in_xyxy() {
        assert_eq!(
            decode_box(&[-12.0, -7.0, 20.0, 25.0], [0.0; 4]),
            [-7.0, -12.0, 25.0, 20.0]
        );
    }

    #[test]
    fn shifts_and_scales() {
        // Anchor centre (y 4, x 4), h = 32, w = 16.
        let anchor = [-12.0, -4.0, 20.0, 12.0];
        // ty = 0.5 → y centre 4 + 16 = 20; tx = -0.25 → x centre 4 − 4 = 0;
        // th = ln 2 → h = 64; tw = 0 → w = 16.
        let b = decode_box(&anchor, [0.5, -0.25, core::f32::consts::LN_2, 0.0]);
        let expected = [-8.0, -12.0, 8.0, 52.0];
        for (got, want) in b.iter().zip(expected) {
            assert!((got - want).abs() < 1e-5, "{b:?}");
        }
    }

    #[test]
    fn sigmoid_values() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert!((sigmoid(2.0) - 0.880_797_1).abs() < 1e-7);
        assert!((sigmoid(-4.595_12) - 0.01).abs() < 1e-7);
        assert_eq!(sigmoid(-200.0), 0.0);
        assert_eq!(sigmoid(200.0), 1.0);
        assert!(sigmoid(f32::NAN).is_nan());
    }
}
