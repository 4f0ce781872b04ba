//! Non-maximum suppression: torchvision's hard NMS and effdet's Gaussian soft-NMS.
//!
//! Both work on candidates given as parallel slices (boxes `[x1, y1, x2, y2]`, scores, class
//! ids) and append `(candidate index, final score)` to `keep`, best first, stopping after
//! `max_out`. Suppression is per class unless `class_agnostic`.
//!
//! Ordering is deterministic: scores compare as `f32::total_cmp` (a NaN score ranks first, as
//! in torch's sort), and equal scores go to the lower candidate index. effdet's candidates
//! arrive sorted by logit (torch.topk), so the index is the top-k rank, which is how a stable
//! sort in torchvision breaks such ties.

use crate::prelude::*;
use core::cmp::Ordering;

/// Soft-NMS drops every candidate whose decayed score is not above this (effdet's
/// `score_threshold=.001` in `generate_detections`).
pub(crate) const SOFT_NMS_SCORE_FLOOR: f32 = 0.001;

/// Reusable working memory for the NMS functions.
#[derive(Debug, Default, Clone)]
pub(crate) struct NmsScratch {
    order: Vec<usize>,
    areas: Vec<f32>,
    scores: Vec<f32>,
    remaining: Vec<usize>,
    kept: Vec<usize>,
}

/// Box area `(x2 − x1)·(y2 − y1)`, as torchvision and effdet compute it (no "+1").
fn area(b: &[f32; 4]) -> f32 {
    (b[2] - b[0]) * (b[3] - b[1])
}

/// Intersection area, with widths and heights clamped at 0.
fn intersection(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    w * h
}

/// IoU as torchvision's CPU `nms` kernel computes it: `inter / (area_a + area_b − inter)`.
/// NaN for two empty boxes, which then never suppress each other.
fn iou_torchvision(a: &[f32; 4], area_a: f32, b: &[f32; 4], area_b: f32) -> f32 {
    let inter = intersection(a, b);
    inter / (area_a + area_b - inter)
}

/// IoU as effdet's soft-NMS (`pairwise_iou`) computes it: 0 unless the intersection is positive.
fn iou_effdet(a: &[f32; 4], area_a: f32, b: &[f32; 4], area_b: f32) -> f32 {
    let inter = intersection(a, b);
    if inter > 0.0 {
        inter / (area_a + area_b - inter)
    } else {
        0.0
    }
}

/// Scores descending (`total_cmp`), then index ascending.
fn by_score(scores: &[f32]) -> impl Fn(&usize, &usize) -> Ordering + '_ {
    move |&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b))
}

/// Greedy hard NMS (torchvision `batched_nms`): visit candidates by descending score, keep one
/// unless a kept candidate of the same class overlaps it with IoU `> iou_threshold`.
/// Kept candidates keep their scores.
///
/// In torchvision's greedy pass only kept candidates suppress, so checking each candidate
/// against the kept ones gives the same result, and the pass can stop at `max_out`: at most
/// `n · max_out` IoUs instead of `n²`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn hard_nms(
    boxes: &[[f32; 4]],
    scores: &[f32],
    classes: &[u32],
    iou_threshold: f32,
    class_agnostic: bool,
    max_out: usize,
    scratch: &mut NmsScratch,
    keep: &mut Vec<(usize, f32)>,
) {
    let n = boxes.len().min(scores.len()).min(classes.len());
    let s = scratch;
    s.order.clear();
    s.order.extend(0..n);
    s.order.sort_unstable_by(by_score(scores));
    s.areas.clear();
    s.areas.extend(boxes[..n].iter().map(area));
    s.kept.clear();

    for &j in &s.order {
        if s.kept.len() >= max_out {
            break;
        }
        let suppressed = s.kept.iter().any(|&i| {
            (class_agnostic || classes[i] == classes[j])
                && iou_torchvision(&boxes[i], s.areas[i], &boxes[j], s.areas[j]) > iou_threshold
        });
        if !suppressed {
            s.kept.push(j);
        }
    }
    keep.extend(s.kept.iter().map(|&i| (i, scores[i])));
}

/// Gaussian soft-NMS as effdet's `soft_nms` does it: repeatedly take the highest remaining
/// score (first such candidate on ties), then multiply the score of every remaining candidate
/// of the same class by `exp(−iou² / sigma)` (no hard IoU cut-off) and drop those whose score
/// is no longer above [`SOFT_NMS_SCORE_FLOOR`]. Reports the score each candidate had when
/// taken; these never increase.
///
/// Differs from effdet in one respect: effdet separates classes by shifting boxes by
/// `class · (max coordinate + 1)`, which costs precision in the IoU and lets boxes with
/// negative coordinates leak into the neighbouring class; this keeps classes strictly apart.
#[allow(clippy::too_many_arguments)]
pub(crate) fn soft_nms_gaussian(
    boxes: &[[f32; 4]],
    scores: &[f32],
    classes: &[u32],
    sigma: f32,
    class_agnostic: bool,
    max_out: usize,
    scratch: &mut NmsScratch,
    keep: &mut Vec<(usize, f32)>,
) {
    let n = boxes.len().min(scores.len()).min(classes.len());
    let s = scratch;
    s.scores.clear();
    s.scores.extend_from_slice(&scores[..n]);
    s.areas.clear();
    s.areas.extend(boxes[..n].iter().map(area));
    s.remaining.clear();
    s.remaining.extend(0..n);

    let mut taken = 0;
    while !s.remaining.is_empty() && taken < max_out {
        // torch.argmax: the first of equal maxima, in the original candidate order, which
        // `remaining` preserves.
        let mut best = 0;
        for p in 1..s.remaining.len() {
            if s.scores[s.remaining[p]].total_cmp(&s.scores[s.remaining[best]]) == Ordering::Greater
            {
                best = p;
            }
        }
        let top = s.remaining[best];
        keep.push((top, s.scores[top]));
        taken += 1;

        let mut write = 0;
        for p in 0..s.remaining.len() {
            let r = s.remaining[p];
            if p == best {
                continue;
            }
            if class_agnostic || classes[r] == classes[top] {
                let iou = iou_effdet(&boxes[top], s.areas[top], &boxes[r], s.areas[r]);
                // exp(−0/σ) is exactly 1; skipping it also keeps σ = 0 from making 0/0.
                if iou > 0.0 {
                    s.scores[r] *= (-(iou * iou) / sigma).exp();
                }
            }
            if s.scores[r] > SOFT_NMS_SCORE_FLOOR {
                s.remaining[write] = r;
                write += 1;
            }
        }
        s.remaining.truncate(write);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_hard(
        boxes: &[[f32; 4]],
        scores: &[f32],
        classes: &[u32],
        agnostic: bool,
    ) -> Vec<(usize, f32)> {
        let mut keep = Vec::new();
        hard_nms(
            boxes,
            scores,
            classes,
            0.5,
            agnostic,
            usize::MAX,
            &mut NmsScratch::default(),
            &mut keep,
        );
        keep
    }

    fn run_soft(
        boxes: &[[f32; 4]],
        scores: &[f32],
        classes: &[u32],
        agnostic: bool,
        max_out: usize,
    ) -> Vec<(usize, f32)> {
        let mut keep = Vec::new();
        soft_nms_gaussian(
            boxes,
            scores,
            classes,
            0.5,
            agnostic,
            max_out,
            &mut NmsScratch::default(),
            &mut keep,
        );
        keep
    }

    #[test]
    fn iou_without_plus_one() {
        let a = [0.0, 0.0, 10.0, 10.0];
        let b = [5.0, 0.0, 15.0, 10.0];
        // inter 50, union 150.
        assert_eq!(iou_torchvision(&a, area(&a), &b, area(&b)), 1.0 / 3.0);
        // Touching boxes do not overlap.
        let c = [10.0, 0.0, 20.0, 10.0];
        assert_eq!(iou_torchvision(&a, area(&a), &c, area(&c)), 0.0);
        // Empty boxes: NaN for torchvision (never suppresses), 0 for effdet's soft-NMS.
        let e = [1.0, 1.0, 1.0, 1.0];
        assert!(iou_torchvision(&e, 0.0, &e, 0.0).is_nan());
        assert_eq!(iou_effdet(&e, 0.0, &e, 0.0), 0.0);
    }

    #[test]
    fn hard_nms_per_class_and_agnostic() {
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],  // 0
            [1.0, 0.0, 11.0, 10.0],  // 1: IoU 0.818 with 0
            [0.0, 0.0, 10.0, 10.0],  // 2: same box as 0, other class
            [5.0, 0.0, 15.0, 10.0],  // 3: IoU 1/3 with 0: survives
            [20.0, 0.0, 30.0, 10.0], // 4: disjoint
        ];
        let scores = [0.9, 0.8, 0.7, 0.6, 0.95];
        let classes = [0, 0, 1, 0, 0];
        let keep = run_hard(&boxes, &scores, &classes, false);
        assert_eq!(keep, [(4, 0.95), (0, 0.9), (2, 0.7), (3, 0.6)]);
        let keep = run_hard(&boxes, &scores, &classes, true);
        assert_eq!(keep, [(4, 0.95), (0, 0.9), (3, 0.6)]);
    }

    #[test]
    fn hard_nms_only_suppresses_above_threshold() {
        // A 10×5 box inside a 10×10 one: inter 50, union 100, IoU exactly 0.5: not suppressed.
        let boxes = [[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0]];
        let keep = run_hard(&boxes, &[0.9, 0.8], &[0, 0], false);
        assert_eq!(keep.len(), 2);
    }

    #[test]
    fn hard_nms_ties_and_max_out() {
        let boxes = [
            [0.0, 0.0, 1.0, 1.0],
            [2.0, 0.0, 3.0, 1.0],
            [4.0, 0.0, 5.0, 1.0],
        ];
        let mut keep = Vec::new();
        hard_nms(
            &boxes,
            &[0.5, 0.5, 0.5],
            &[0, 1, 0],
            0.5,
            false,
            2,
            &mut NmsScratch::default(),
            &mut keep,
        );
        assert_eq!(keep, [(0, 0.5), (1, 0.5)]);
    }

    #[test]
    fn soft_nms_decays_with_gaussian() {
        let boxes = [
            [0.0, 0.0, 10.0, 10.0], // 0
            [5.0, 0.0, 15.0, 10.0], // 1: IoU 1/3 with 0
            [0.0, 0.0, 10.0, 10.0], // 2: IoU 1 with 0, other class
        ];
        let scores = [0.9, 0.8, 0.5];
        let keep = run_soft(&boxes, &scores, &[0, 0, 1], false, usize::MAX);
        // 0 first at 0.9; 1 decays by exp(−(1/3)²/0.5) = exp(−2/9) = 0.800737 → 0.640590;
        // 2 is another class: untouched, 0.5.
        assert_eq!(keep.len(), 3);
        assert_eq!(keep[0], (0, 0.9));
        assert_eq!(keep[1].0, 1);
        assert!((keep[1].1 - 0.640_589_6).abs() < 1e-6, "{keep:?}");
        assert_eq!(keep[2], (2, 0.5));

        // Class-agnostic: 2 decays by exp(−1/0.5) = 0.135335 → 0.067668 after 0 is taken, then
        // by exp(−2/9) again after 1 is taken → 0.054184.
        let keep = run_soft(&boxes, &scores, &[0, 0, 1], true, usize::MAX);
        assert_eq!(keep.len(), 3);
        assert_eq!(keep[2].0, 2);
        assert!((keep[2].1 - 0.054_184_3).abs() < 1e-6, "{keep:?}");
    }

    #[test]
    fn soft_nms_floor_and_first_pick() {
        // Nothing above the floor: only the very first pick survives (effdet takes its argmax
        // before pruning), whatever the classes.
        let boxes = [[0.0, 0.0, 1.0, 1.0], [5.0, 0.0, 6.0, 1.0]];
        let keep = run_soft(&boxes, &[0.0005, 0.0008], &[0, 1], false, 10);
        assert_eq!(keep, [(1, 0.0008)]);
        // A decayed score at or below the floor is dropped: 0.0015 · exp(−2) = 0.0002.
        let boxes = [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]];
        let keep = run_soft(&boxes, &[0.9, 0.0015], &[0, 0], false, 10);
        assert_eq!(keep, [(0, 0.9)]);
    }

    #[test]
    fn soft_nms_ties_max_out_and_zero_sigma() {
        let boxes = [
            [0.0, 0.0, 1.0, 1.0],
            [2.0, 0.0, 3.0, 1.0],
            [4.0, 0.0, 5.0, 1.0],
        ];
        let keep = run_soft(&boxes, &[0.5, 0.7, 0.7], &[0, 0, 0], false, 2);
        assert_eq!(keep, [(1, 0.7), (2, 0.7)]);
        // σ = 0: overlapping candidates go to 0, disjoint ones are untouched (no NaN).
        let boxes = [
            [0.0, 0.0, 2.0, 2.0],
            [1.0, 0.0, 3.0, 2.0],
            [9.0, 9.0, 10.0, 10.0],
        ];
        let mut keep = Vec::new();
        soft_nms_gaussian(
            &boxes,
            &[0.9, 0.8, 0.7],
            &[0, 0, 0],
            0.0,
            false,
            10,
            &mut NmsScratch::default(),
            &mut keep,
        );
        assert_eq!(keep, [(0, 0.9), (2, 0.7)]);
    }

    #[test]
    fn empty_input() {
        assert!(run_hard(&[], &[], &[], false).is_empty());
        assert!(run_soft(&[], &[], &[], false, 100).is_empty());
    }
}
