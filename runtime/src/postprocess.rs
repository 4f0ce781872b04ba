//! From raw head outputs to detections: effdet's predict path (`DetBenchPredict` →
//! `_post_process` → `generate_detections`).
//!
//! 1. Top-`pre_nms_topk` over every (anchor, class) logit of all levels at once.
//! 2. Decode the selected boxes against their anchors to `[x1, y1, x2, y2]`.
//! 3. Sigmoid the selected logits.
//! 4. NMS: per-class hard NMS at IoU 0.5 by default, or Gaussian soft-NMS.
//! 5. Keep the best `max_detections`, shift classes to 1-based, optionally drop low scores.
//!
//! Boxes are in network-input pixels and not clipped (effdet clips only when it is given the
//! image size); [`Detection::rescaled`] with the scale [`crate::preprocess`] returns maps them
//! back to the original image. Unlike effdet there is no zero padding to 100 rows.

use crate::anchors::Anchors;
use crate::decode::{decode_box, sigmoid};
use crate::nms::{hard_nms, soft_nms_gaussian, NmsScratch};
use crate::prelude::*;
use crate::topk::TopK;
use core::fmt;

/// Which non-maximum suppression to run.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum NmsMethod {
    /// Greedy NMS as torchvision's `batched_nms`: a candidate is dropped when a better one
    /// overlaps it with IoU above [`DetectOptions::iou_threshold`]. effdet's default.
    #[default]
    Hard,
    /// Gaussian soft-NMS as effdet's `soft_nms` (`soft_nms=True`): overlapping candidates are
    /// not dropped but their scores multiplied by `exp(−iou² / sigma)`; candidates whose score
    /// falls to 0.001 or below are dropped. [`DetectOptions::iou_threshold`] is not used.
    /// effdet uses `sigma = 0.5`.
    SoftGaussian {
        /// Width of the Gaussian penalty.
        sigma: f32,
    },
}

/// Post-processing options; [`Default`] is effdet's predict path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectOptions {
    /// Drop detections whose final score is below this (kept when `score >= threshold`),
    /// applied after the `max_detections` cut. `None` (default) keeps everything, as effdet.
    pub score_threshold: Option<f32>,
    /// Most detections returned (default 100).
    pub max_detections: usize,
    /// How many (anchor, class) logits enter NMS (default 5000).
    pub pre_nms_topk: usize,
    /// IoU above which hard NMS suppresses (default 0.5).
    pub iou_threshold: f32,
    /// Hard NMS (default) or Gaussian soft-NMS.
    pub nms: NmsMethod,
    /// Suppress across classes instead of per class (default false).
    pub class_agnostic: bool,
    /// The valid (un-padded) region `[height, width]` of the network input: decoded boxes
    /// are clipped to it before NMS, as effdet does when it knows the image size. `None`
    /// (default, and what the raw-output fixtures were made with) clips nothing.
    pub clip: Option<[f32; 2]>,
}

impl DetectOptions {
    /// Checks every field's range: `score_threshold` and `iou_threshold` in [0, 1] (a
    /// negative threshold keeps everything, as in the C ABI), soft-NMS `sigma` positive and
    /// finite, `clip` positive and finite. [`postprocess_into`] calls it first.
    pub fn validate(&self) -> Result<(), PostprocessError> {
        let bad = |m: String| Err(PostprocessError::Options(m));
        if let Some(t) = self.score_threshold {
            if t.is_nan() || t > 1.0 {
                return bad(format!("score_threshold {t} is not a score in [0, 1]"));
            }
        }
        if !(0.0..=1.0).contains(&self.iou_threshold) {
            return bad(format!(
                "iou_threshold {} is not in [0, 1]",
                self.iou_threshold
            ));
        }
        if let NmsMethod::SoftGaussian { sigma } = self.nms {
            if !(sigma > 0.0 && sigma.is_finite()) {
                return bad(format!(
                    "soft-NMS sigma {sigma} must be positive and finite"
                ));
            }
        }
        if let Some(c) = self.clip {
            if c.iter().any(|v| !(*v > 0.0 && v.is_finite())) {
                return bad(format!("clip {c:?} must be positive and finite"));
            }
        }
        Ok(())
    }
}

impl Default for DetectOptions {
    fn default() -> Self {
        DetectOptions {
            score_threshold: None,
            max_detections: 100,
            pre_nms_topk: 5000,
            iou_threshold: 0.5,
            nms: NmsMethod::Hard,
            class_agnostic: false,
            clip: None,
        }
    }
}

/// How a model's heads hand over their outputs: the post-processing reads them in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeadLayout {
    /// One class and one box output per level, NCHW `[1, A·C, H, W]` and `[1, A·4, H, W]`
    /// (effdet, and the PyTorch exports).
    #[default]
    PerLevel,
    /// One class output `[1, N, C]` and one box output `[1, N, 4]` over all `N` anchors,
    /// levels concatenated in order, row `(y·W + x)·A + a` within a level (a Keras head's
    /// NHWC output reshaped and concatenated, as tf2onnx exports it).
    Concatenated,
}

/// What the class outputs hold and how they are laid out; [`Default`] is effdet's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeadFormat {
    /// Where each level's values are.
    pub layout: HeadLayout,
    /// The class outputs are scores already (the network ends in a sigmoid) rather than
    /// logits.
    pub scores: bool,
}

/// One detected object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// Box `[x1, y1, x2, y2]` in network-input pixels, not clipped.
    pub bbox: [f32; 4],
    /// Sigmoid score (after soft-NMS decay when that is used).
    pub score: f32,
    /// 1-based class id (COCO ids for the released models; see [`crate::coco_label`]).
    pub class: u32,
}

impl Detection {
    /// The detection with its box multiplied by `scale`: pass the value [`crate::preprocess`]
    /// returned to get original-image pixels (effdet's `img_scale`).
    pub fn rescaled(self, scale: f32) -> Detection {
        Detection {
            bbox: self.bbox.map(|v| v * scale),
            ..self
        }
    }
}

/// Why head outputs were rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostprocessError {
    /// The number of class or box outputs is not the number of anchor levels.
    LevelCount {
        /// Levels of the anchors.
        expected: usize,
        /// Class outputs given.
        class_outputs: usize,
        /// Box outputs given.
        box_outputs: usize,
    },
    /// A class output does not have `A · num_classes · H · W` elements.
    ClassOutputLength {
        /// Pyramid level (3 for P3).
        level: usize,
        /// Expected element count (saturated at `usize::MAX`).
        expected: usize,
        /// Actual element count.
        actual: usize,
    },
    /// A box output does not have `A · 4 · H · W` elements.
    BoxOutputLength {
        /// Pyramid level (3 for P3).
        level: usize,
        /// Expected element count (saturated at `usize::MAX`).
        expected: usize,
        /// Actual element count.
        actual: usize,
    },
    /// `num_classes` does not fit the `u32` class ids.
    TooManyClasses(usize),
    /// A [`DetectOptions`] field is out of its range (the message names it).
    Options(String),
}

impl fmt::Display for PostprocessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PostprocessError::LevelCount {
                expected,
                class_outputs,
                box_outputs,
            } => write!(
                f,
                "expected {expected} pyramid levels, got {class_outputs} class outputs and \
                 {box_outputs} box outputs"
            ),
            PostprocessError::ClassOutputLength {
                level,
                expected,
                actual,
            } => write!(
                f,
                "class output of P{level} has {actual} elements, expected {expected}"
            ),
            PostprocessError::BoxOutputLength {
                level,
                expected,
                actual,
            } => write!(
                f,
                "box output of P{level} has {actual} elements, expected {expected}"
            ),
            PostprocessError::TooManyClasses(n) => {
                write!(f, "{n} classes do not fit 32-bit class ids")
            }
            PostprocessError::Options(m) => write!(f, "invalid detect options: {m}"),
        }
    }
}

impl core::error::Error for PostprocessError {}

/// Working memory of [`postprocess_into`], kept between calls so that steady-state
/// post-processing does not allocate.
#[derive(Debug, Default, Clone)]
pub struct PostprocessScratch {
    topk: TopK,
    boxes: Vec<[f32; 4]>,
    scores: Vec<f32>,
    classes: Vec<u32>,
    keep: Vec<(usize, f32)>,
    nms: NmsScratch,
}

/// Runs effdet's post-processing on one image's raw head outputs and returns the detections,
/// best first.
///
/// Steps, as effdet's predict path: top-`pre_nms_topk` over every (anchor, class) logit of all
/// levels at once (ties to the lower flattened index); decode the selected boxes against their
/// anchors to `[x1, y1, x2, y2]`; sigmoid the logits; NMS per class (or class-agnostic), hard
/// or Gaussian soft-NMS; keep the best `max_detections`; classes 1-based; drop scores below
/// `score_threshold` if set. Boxes are in network-input pixels and not clipped; there is no
/// zero padding.
///
/// `class_outputs[i]` is level `i`'s class head output as laid out in NCHW
/// `[1, A·num_classes, H, W]` (channel `a·num_classes + c`), `box_outputs[i]` the box head
/// output `[1, A·4, H, W]` (channel `a·4 + k`, `k` in the order ty, tx, th, tw), levels
/// ascending as in [`Anchors::levels`].
///
/// Outputs whose count or sizes do not match `anchors` give no detections; use
/// [`postprocess_into`] to get the reason.
pub fn postprocess(
    anchors: &Anchors,
    num_classes: usize,
    class_outputs: &[&[f32]],
    box_outputs: &[&[f32]],
    opts: &DetectOptions,
) -> Vec<Detection> {
    let mut out = Vec::new();
    let mut scratch = PostprocessScratch::default();
    match postprocess_into(
        anchors,
        num_classes,
        class_outputs,
        box_outputs,
        opts,
        &mut scratch,
        &mut out,
    ) {
        Ok(()) => out,
        Err(_) => Vec::new(),
    }
}

/// [`postprocess`] writing into `out` (cleared first) with reusable `scratch`, and reporting
/// mismatched outputs as an error instead of returning nothing.
pub fn postprocess_into(
    anchors: &Anchors,
    num_classes: usize,
    class_outputs: &[&[f32]],
    box_outputs: &[&[f32]],
    opts: &DetectOptions,
    scratch: &mut PostprocessScratch,
    out: &mut Vec<Detection>,
) -> Result<(), PostprocessError> {
    postprocess_heads_into(
        anchors,
        num_classes,
        HeadFormat::default(),
        class_outputs,
        box_outputs,
        opts,
        scratch,
        out,
    )
}

/// [`postprocess_into`] for heads of any [`HeadFormat`]: with
/// [`HeadLayout::Concatenated`], `class_outputs` and `box_outputs` are one slice each
/// (`N·C` and `N·4` values); with `scores`, the class values are taken as scores as they
/// are instead of through a sigmoid. The steps are the same: the flattened index of value
/// `(anchor, class)` is `anchor·C + class` in both layouts, so ties break alike.
#[allow(clippy::too_many_arguments)]
pub fn postprocess_heads_into(
    anchors: &Anchors,
    num_classes: usize,
    format: HeadFormat,
    class_outputs: &[&[f32]],
    box_outputs: &[&[f32]],
    opts: &DetectOptions,
    scratch: &mut PostprocessScratch,
    out: &mut Vec<Detection>,
) -> Result<(), PostprocessError> {
    out.clear();
    opts.validate()?;
    match format.layout {
        HeadLayout::PerLevel => validate(anchors, num_classes, class_outputs, box_outputs)?,
        HeadLayout::Concatenated => {
            validate_concatenated(anchors, num_classes, class_outputs, box_outputs)?
        }
    }
    let a_count = anchors.num_anchors_per_location();
    let total = anchors.len() * num_classes;
    let k = opts.pre_nms_topk.min(total);
    if k == 0 || opts.max_detections == 0 {
        return Ok(());
    }

    // 1. Top-k over the flattened logits. The reference flattens NHWC, so the global index
    //    of logit (level, y, x, a, c) is (offset + (y·W + x)·A + a)·C + c; we read the NCHW
    //    planes in memory order and compute that index.
    let PostprocessScratch {
        topk,
        boxes,
        scores,
        classes,
        keep,
        nms,
    } = scratch;
    topk.reset_above(k, candidate_floor(opts, format.scores));
    if format.layout == HeadLayout::Concatenated {
        topk.push_slice(class_outputs[0], |i| i);
    }
    for (level, &cls) in anchors
        .levels()
        .iter()
        .zip(class_outputs)
        .filter(|_| format.layout == HeadLayout::PerLevel)
    {
        let hw = level.feature_size[0] * level.feature_size[1];
        if hw == 0 {
            continue;
        }
        for (channel, plane) in cls.chunks_exact(hw).enumerate() {
            let (a, c) = (channel / num_classes, channel % num_classes);
            topk.push_slice(plane, |p| {
                (level.offset + p * a_count + a) * num_classes + c
            });
        }
    }

    // 2. + 3. Decode the winners and turn logits into scores.
    boxes.clear();
    scores.clear();
    classes.clear();
    let levels = anchors.levels();
    let anchor_boxes = anchors.boxes();
    topk.finish(|logit, index| {
        let anchor = index / num_classes;
        let class = index % num_classes;
        // The level holding this anchor: the last one starting at or before it. Levels with
        // no anchors share their offset with the next one, so take the last such level.
        let li = levels
            .partition_point(|l| l.offset <= anchor)
            .saturating_sub(1);
        let level = &levels[li];
        let hw = level.feature_size[0] * level.feature_size[1];
        let local = anchor - level.offset;
        let (p, a) = (local / a_count, local % a_count);
        let codes = match format.layout {
            HeadLayout::PerLevel => [0, 1, 2, 3].map(|k| box_outputs[li][(a * 4 + k) * hw + p]),
            HeadLayout::Concatenated => [0, 1, 2, 3].map(|k| box_outputs[0][anchor * 4 + k]),
        };
        let mut b = decode_box(&anchor_boxes[anchor], codes);
        if let Some([h, w]) = opts.clip {
            b = [
                b[0].clamp(0.0, w),
                b[1].clamp(0.0, h),
                b[2].clamp(0.0, w),
                b[3].clamp(0.0, h),
            ];
        }
        boxes.push(b);
        scores.push(if format.scores { logit } else { sigmoid(logit) });
        // Fits: validate() checked num_classes against u32.
        classes.push(class as u32);
    });

    // 4. NMS, which also applies the max_detections cut (its output is best first).
    keep.clear();
    match opts.nms {
        NmsMethod::Hard => hard_nms(
            boxes,
            scores,
            classes,
            opts.iou_threshold,
            opts.class_agnostic,
            opts.max_detections,
            nms,
            keep,
        ),
        NmsMethod::SoftGaussian { sigma } => soft_nms_gaussian(
            boxes,
            scores,
            classes,
            sigma,
            opts.class_agnostic,
            opts.max_detections,
            nms,
            keep,
        ),
    }

    // 5. 1-based classes, optional score threshold.
    out.extend(
        keep.iter()
            .filter(|&&(_, score)| opts.score_threshold.is_none_or(|t| score >= t))
            .map(|&(i, score)| Detection {
                bbox: boxes[i],
                score,
                class: classes[i] + 1,
            }),
    );
    Ok(())
}

/// The class value below which a candidate cannot end above `opts.score_threshold`, so it
/// need not enter the top-k at all: the threshold itself for scores, its logit (less a margin
/// far above the sigmoid's rounding) for logits.
///
/// Why this changes no result: the values it drops rank below every value that can pass the
/// threshold, so the top-k keeps the same passing candidates in the same order, and under
/// hard NMS a candidate only suppresses ones ranked after it, which fail the threshold too.
/// It makes a threshold cheap, and a top-k of everything (keras-retinanet has none) usable.
fn candidate_floor(opts: &DetectOptions, scores: bool) -> Option<f32> {
    let t = opts.score_threshold?;
    if opts.nms != NmsMethod::Hard || t <= 0.0 {
        return None;
    }
    if scores {
        return Some(t);
    }
    // sigmoid(l) reaches 1.0 in f32 for finite l: no logit bound for thresholds that high.
    if t >= 0.999 {
        return None;
    }
    let t = f64::from(t);
    Some(((t / (1.0 - t)).ln() - 1e-3) as f32)
}

fn validate_concatenated(
    anchors: &Anchors,
    num_classes: usize,
    class_outputs: &[&[f32]],
    box_outputs: &[&[f32]],
) -> Result<(), PostprocessError> {
    if num_classes >= u32::MAX as usize {
        return Err(PostprocessError::TooManyClasses(num_classes));
    }
    let ([cls], [bx]) = (class_outputs, box_outputs) else {
        return Err(PostprocessError::LevelCount {
            expected: 1,
            class_outputs: class_outputs.len(),
            box_outputs: box_outputs.len(),
        });
    };
    let level = anchors.levels().first().map_or(0, |l| l.level);
    let expected = anchors.len().saturating_mul(num_classes);
    if cls.len() != expected {
        return Err(PostprocessError::ClassOutputLength {
            level,
            expected,
            actual: cls.len(),
        });
    }
    let expected = anchors.len().saturating_mul(4);
    if bx.len() != expected {
        return Err(PostprocessError::BoxOutputLength {
            level,
            expected,
            actual: bx.len(),
        });
    }
    Ok(())
}

fn validate(
    anchors: &Anchors,
    num_classes: usize,
    class_outputs: &[&[f32]],
    box_outputs: &[&[f32]],
) -> Result<(), PostprocessError> {
    // Class ids are reported 1-based in a u32.
    if num_classes >= u32::MAX as usize {
        return Err(PostprocessError::TooManyClasses(num_classes));
    }
    let levels = anchors.levels();
    if class_outputs.len() != levels.len() || box_outputs.len() != levels.len() {
        return Err(PostprocessError::LevelCount {
            expected: levels.len(),
            class_outputs: class_outputs.len(),
            box_outputs: box_outputs.len(),
        });
    }
    let a_count = anchors.num_anchors_per_location();
    for ((level, cls), bx) in levels.iter().zip(class_outputs).zip(box_outputs) {
        let locations = level.feature_size[0].saturating_mul(level.feature_size[1]);
        let expected = locations
            .saturating_mul(a_count)
            .saturating_mul(num_classes);
        if cls.len() != expected {
            return Err(PostprocessError::ClassOutputLength {
                level: level.level,
                expected,
                actual: cls.len(),
            });
        }
        let expected = locations.saturating_mul(a_count).saturating_mul(4);
        if bx.len() != expected {
            return Err(PostprocessError::BoxOutputLength {
                level: level.level,
                expected,
                actual: bx.len(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn out_of_range_options_are_errors_not_panics() {
        let ok = DetectOptions::default();
        assert!(ok.validate().is_ok());
        for bad in [
            DetectOptions {
                clip: Some([-1.0, 5.0]),
                ..ok
            },
            DetectOptions {
                clip: Some([f32::NAN, 5.0]),
                ..ok
            },
            DetectOptions {
                score_threshold: Some(f32::NAN),
                ..ok
            },
            DetectOptions {
                score_threshold: Some(2.0),
                ..ok
            },
            DetectOptions {
                iou_threshold: -0.1,
                ..ok
            },
            DetectOptions {
                nms: NmsMethod::SoftGaussian { sigma: 0.0 },
                ..ok
            },
        ] {
            let e = bad.validate().unwrap_err();
            assert!(e.to_string().starts_with("invalid detect options: "), "{e}");
        }
        // Negative thresholds keep everything (the C ABI's convention).
        assert!(DetectOptions {
            score_threshold: Some(-1.0),
            ..ok
        }
        .validate()
        .is_ok());
    }

    use super::*;
    use crate::anchors::AnchorConfig;

    /// A 16×16 "model" with one level (P3: 2×2 map, stride 8), one 8×8 anchor per location
    /// and 2 classes. Anchors as [y1, x1, y2, x2]: location 0 (centre 4, 4) [0, 0, 8, 8],
    /// location 1 (4, 12) [0, 8, 8, 16], location 2 (12, 4) [8, 0, 16, 8], location 3 [8, 8, 16, 16].
    fn tiny() -> Anchors {
        Anchors::new(&AnchorConfig {
            image_size: [16, 16],
            min_level: 3,
            max_level: 3,
            num_scales: 1,
            aspect_ratios: vec![[1.0, 1.0]],
            anchor_scale: 1.0,
        })
    }

    /// Raw outputs of `tiny()`: class channel c, plane index p = location; every logit −10
    /// except class 0: location 0 → 2.0, location 1 → 1.0; class 1: location 1 → 0.5. Location
    /// 1's box is moved left by tx = −0.75 (6 px): xyxy [2, 0, 10, 8], IoU with location 0's
    /// [0, 0, 8, 8] = 48 / 80 = 0.6.
    fn tiny_outputs() -> (Vec<f32>, Vec<f32>) {
        let mut cls = vec![-10.0; 2 * 4];
        cls[0] = 2.0;
        cls[1] = 1.0;
        cls[4 + 1] = 0.5;
        let mut bx = vec![0.0; 4 * 4];
        bx[4 + 1] = -0.75; // channel 1 = tx, location 1
        (cls, bx)
    }

    // sigmoid(2) = 0.880797, sigmoid(1) = 0.731059, sigmoid(0.5) = 0.622459,
    // sigmoid(−10) = 4.54e−5; Gaussian decay at IoU 0.6: exp(−0.36/0.5) = 0.486752;
    // at IoU 1: exp(−2) = 0.135335.
    const S2: f32 = 0.880_797_1;
    const S1: f32 = 0.731_058_6;
    const S05: f32 = 0.622_459_3;
    const BOX0: [f32; 4] = [0.0, 0.0, 8.0, 8.0];
    const BOX1: [f32; 4] = [2.0, 0.0, 10.0, 8.0];

    fn run(opts: &DetectOptions) -> Vec<Detection> {
        let (cls, bx) = tiny_outputs();
        postprocess(&tiny(), 2, &[&cls], &[&bx], opts)
    }

    fn assert_dets(actual: &[Detection], expected: &[([f32; 4], f32, u32)]) {
        assert_eq!(actual.len(), expected.len(), "{actual:?}");
        for (d, &(bbox, score, class)) in actual.iter().zip(expected) {
            assert_eq!(d.class, class, "{actual:?}");
            assert!((d.score - score).abs() < 1e-6, "{actual:?}");
            for (got, want) in d.bbox.iter().zip(bbox) {
                assert!((got - want).abs() < 1e-5, "{actual:?}");
            }
        }
    }

    #[test]
    fn default_is_effdet_predict_path() {
        let o = DetectOptions::default();
        assert_eq!(o.max_detections, 100);
        assert_eq!(o.pre_nms_topk, 5000);
        assert_eq!(o.iou_threshold, 0.5);
        assert_eq!(o.nms, NmsMethod::Hard);
        assert!(!o.class_agnostic && o.score_threshold.is_none());
    }

    #[test]
    fn hard_per_class() {
        // Class 0 location 1 (IoU 0.6 with location 0) is suppressed; class 1 location 1 is
        // not (other class). Class 1 location 0 (−10) is suppressed by class 1 location 1.
        // The −10 logits at locations 2 and 3 (disjoint) survive in both classes: 6 in all.
        let dets = run(&DetectOptions::default());
        assert_eq!(dets.len(), 6);
        assert_dets(&dets[..2], &[(BOX0, S2, 1), (BOX1, S05, 2)]);
        assert!(dets[2..].iter().all(|d| d.score < 1e-4));
    }

    #[test]
    fn score_threshold_applies_to_final_scores() {
        let opts = DetectOptions {
            score_threshold: Some(0.01),
            ..DetectOptions::default()
        };
        assert_dets(&run(&opts), &[(BOX0, S2, 1), (BOX1, S05, 2)]);
        // Inclusive: a threshold equal to a score keeps it.
        let opts = DetectOptions {
            score_threshold: Some(S05),
            ..DetectOptions::default()
        };
        assert_eq!(run(&opts).len(), 2);
    }

    #[test]
    fn hard_class_agnostic() {
        // Class 1 location 1 now overlaps class 0 location 0 at IoU 0.6 and goes too.
        let opts = DetectOptions {
            class_agnostic: true,
            score_threshold: Some(0.01),
            ..DetectOptions::default()
        };
        assert_dets(&run(&opts), &[(BOX0, S2, 1)]);
    }

    #[test]
    fn soft_nms_per_class() {
        // Take class 0 location 0 (0.880797): class 0 location 1 decays to
        // 0.731059 · 0.486752 = 0.355844, and every −10 candidate (4.5e−5 ≤ 0.001) is dropped.
        // Then class 1 location 1 (0.622459, untouched), then class 0 location 1.
        let opts = DetectOptions {
            nms: NmsMethod::SoftGaussian { sigma: 0.5 },
            ..DetectOptions::default()
        };
        let decayed = S1 * 0.486_752_26;
        assert!((decayed - 0.355_844_4).abs() < 1e-6);
        assert_dets(
            &run(&opts),
            &[(BOX0, S2, 1), (BOX1, S05, 2), (BOX1, decayed, 1)],
        );
    }

    #[test]
    fn soft_nms_class_agnostic() {
        // Take class 0 location 0: both location-1 candidates decay by 0.486752, to 0.355844
        // (class 0) and 0.302983 (class 1). Take 0.355844: the class 1 candidate has the same
        // box (IoU 1) and decays by exp(−2) to 0.041004.
        let opts = DetectOptions {
            nms: NmsMethod::SoftGaussian { sigma: 0.5 },
            class_agnostic: true,
            ..DetectOptions::default()
        };
        assert_dets(
            &run(&opts),
            &[
                (BOX0, S2, 1),
                (BOX1, 0.355_844_4, 1),
                (BOX1, 0.041_004_36, 2),
            ],
        );
    }

    /// The threshold as a top-k floor (`candidate_floor`) gives exactly what thresholding
    /// the unfiltered result gives: many overlapping boxes, logits and scores, a small and a
    /// whole-graph top-k, thresholds between and on the values.
    #[test]
    fn a_threshold_gives_what_filtering_afterwards_gives() {
        let anchors = Anchors::new(&AnchorConfig {
            image_size: [64, 64],
            min_level: 3,
            max_level: 4,
            num_scales: 2,
            aspect_ratios: vec![[1.0, 1.0], [1.4, 0.7]],
            anchor_scale: 4.0,
        });
        let classes = 3;
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        let logits: Vec<f32> = (0..anchors.len() * classes).map(|_| next() * 4.0).collect();
        let scores: Vec<f32> = logits.iter().map(|&l| sigmoid(l)).collect();
        let deltas: Vec<f32> = (0..anchors.len() * 4).map(|_| next() * 0.5).collect();
        let format = |scores| HeadFormat {
            layout: HeadLayout::Concatenated,
            scores,
        };
        for (values, is_scores) in [(&logits, false), (&scores, true)] {
            for topk in [40, usize::MAX] {
                for t in [0.2f32, 0.5, sigmoid(logits[7]), 0.9] {
                    let opts = |score_threshold| DetectOptions {
                        score_threshold,
                        pre_nms_topk: topk,
                        max_detections: 30,
                        ..DetectOptions::default()
                    };
                    let run = |o: &DetectOptions| {
                        let mut out = Vec::new();
                        postprocess_heads_into(
                            &anchors,
                            classes,
                            format(is_scores),
                            &[values],
                            &[&deltas],
                            o,
                            &mut PostprocessScratch::default(),
                            &mut out,
                        )
                        .unwrap();
                        out
                    };
                    let mut want = run(&opts(None));
                    want.retain(|d| d.score >= t);
                    let got = run(&opts(Some(t)));
                    assert!(!got.is_empty() || t >= 0.9, "t = {t}");
                    assert_eq!(got, want, "scores {is_scores}, topk {topk}, t = {t}");
                }
            }
        }
    }

    #[test]
    fn pre_nms_topk_and_max_detections() {
        let opts = DetectOptions {
            pre_nms_topk: 1,
            ..DetectOptions::default()
        };
        assert_dets(&run(&opts), &[(BOX0, S2, 1)]);
        let opts = DetectOptions {
            max_detections: 2,
            ..DetectOptions::default()
        };
        assert_dets(&run(&opts), &[(BOX0, S2, 1), (BOX1, S05, 2)]);
    }

    #[test]
    fn zero_detections() {
        let anchors = tiny();
        let cls = vec![-20.0; 8];
        let bx = vec![0.0; 16];
        let opts = DetectOptions {
            score_threshold: Some(0.5),
            ..DetectOptions::default()
        };
        assert!(postprocess(&anchors, 2, &[&cls], &[&bx], &opts).is_empty());
        let opts = DetectOptions {
            max_detections: 0,
            ..DetectOptions::default()
        };
        assert!(postprocess(&anchors, 2, &[&cls], &[&bx], &opts).is_empty());
        let opts = DetectOptions {
            pre_nms_topk: 0,
            ..DetectOptions::default()
        };
        assert!(postprocess(&anchors, 2, &[&cls], &[&bx], &opts).is_empty());
        // No classes: empty class outputs are the right size.
        assert!(postprocess(&anchors, 0, &[&[]], &[&bx], &DetectOptions::default()).is_empty());
    }

    #[test]
    fn mismatched_outputs_are_errors_not_panics() {
        let anchors = tiny();
        let (cls, bx) = tiny_outputs();
        let opts = DetectOptions::default();
        let mut scratch = PostprocessScratch::default();
        let mut out = vec![Detection {
            bbox: [0.0; 4],
            score: 1.0,
            class: 1,
        }];
        let err = postprocess_into(&anchors, 2, &[], &[&bx], &opts, &mut scratch, &mut out);
        assert!(matches!(err, Err(PostprocessError::LevelCount { .. })));
        assert!(out.is_empty(), "out is cleared on error");
        let err = postprocess_into(&anchors, 3, &[&cls], &[&bx], &opts, &mut scratch, &mut out);
        assert_eq!(
            err,
            Err(PostprocessError::ClassOutputLength {
                level: 3,
                expected: 12,
                actual: 8
            })
        );
        let err = postprocess_into(
            &anchors,
            2,
            &[&cls],
            &[&bx[..15]],
            &opts,
            &mut scratch,
            &mut out,
        );
        assert!(matches!(err, Err(PostprocessError::BoxOutputLength { .. })));
        assert!(err.unwrap_err().to_string().contains("P3"));
        assert!(postprocess(&anchors, 2, &[&cls[..7]], &[&bx], &opts).is_empty());
        let err = postprocess_into(
            &anchors,
            usize::MAX,
            &[&cls],
            &[&bx],
            &opts,
            &mut scratch,
            &mut out,
        );
        assert!(matches!(err, Err(PostprocessError::TooManyClasses(_))));
    }

    #[test]
    fn non_finite_inputs_do_not_panic() {
        let anchors = tiny();
        let cls = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            f32::NAN,
            1.0,
            -1.0,
            2.0,
        ];
        let bx = [
            f32::NAN,
            0.0,
            f32::INFINITY,
            0.0,
            0.0,
            f32::NEG_INFINITY,
            0.0,
            0.0,
            100.0,
            -100.0,
            0.0,
            0.0,
            0.0,
            0.0,
            f32::MAX,
            0.0,
        ];
        for nms in [NmsMethod::Hard, NmsMethod::SoftGaussian { sigma: 0.5 }] {
            for class_agnostic in [false, true] {
                let opts = DetectOptions {
                    nms,
                    class_agnostic,
                    ..DetectOptions::default()
                };
                let dets = postprocess(&anchors, 2, &[&cls], &[&bx], &opts);
                assert!(dets.len() <= 8);
                let opts = DetectOptions {
                    score_threshold: Some(0.5),
                    ..opts
                };
                let dets = postprocess(&anchors, 2, &[&cls], &[&bx], &opts);
                assert!(dets.iter().all(|d| d.score >= 0.5));
            }
        }
    }

    #[test]
    fn scratch_reuse_gives_identical_results() {
        let anchors = tiny();
        let (cls, bx) = tiny_outputs();
        let mut scratch = PostprocessScratch::default();
        let mut out = Vec::new();
        let mut previous = None;
        for nms in [
            NmsMethod::Hard,
            NmsMethod::SoftGaussian { sigma: 0.5 },
            NmsMethod::Hard,
        ] {
            let opts = DetectOptions {
                nms,
                ..DetectOptions::default()
            };
            postprocess_into(&anchors, 2, &[&cls], &[&bx], &opts, &mut scratch, &mut out).unwrap();
            assert_eq!(out, postprocess(&anchors, 2, &[&cls], &[&bx], &opts));
            if nms == NmsMethod::Hard {
                if let Some(p) = &previous {
                    assert_eq!(&out, p);
                }
                previous = Some(out.clone());
            }
        }
    }

    /// A 16 × 32 image (h × w), levels 3–4, two aspect pairs (1, 1) and (2, 1).
    fn two_levels() -> Anchors {
        Anchors::new(&AnchorConfig {
            image_size: [16, 32],
            min_level: 3,
            max_level: 4,
            num_scales: 1,
            aspect_ratios: vec![[1.0, 1.0], [2.0, 1.0]],
            anchor_scale: 1.0,
        })
    }

    #[test]
    fn layout_of_anchors_channels_and_levels() {
        // 16 × 32 image (h × w), levels 3–4, two aspect pairs (1, 1) and (2, 1), 3 classes.
        // P3: 2 × 4 map, stride 8, A = 2; P4: 1 × 2 map, stride 16.
        let anchors = two_levels();
        let (c, a_count) = (3, 2);
        let mut cls3 = vec![-10.0; a_count * c * 8];
        let mut bx3 = vec![0.0; a_count * 4 * 8];
        let mut cls4 = vec![-10.0; a_count * c * 2];
        let bx4 = vec![0.0; a_count * 4 * 2];
        // P3, anchor a = 1 (aspect (2, 1)), class 2, y = 1, x = 3: channel 1·3 + 2 = 5,
        // plane index 1·4 + 3 = 7. Anchor centre (12, 28), half_w 8, half_h 4.
        cls3[5 * 8 + 7] = 5.0;
        // th = ln 2 (channel 1·4 + 2 = 6) doubles the height: y 4..20.
        bx3[6 * 8 + 7] = core::f32::consts::LN_2;
        // P4, anchor a = 0, class 0, x = 1: channel 0, plane index 1. Centre (8, 24), half 8.
        cls4[1] = 4.0;
        let opts = DetectOptions {
            score_threshold: Some(0.5),
            ..DetectOptions::default()
        };
        let dets = postprocess(&anchors, c, &[&cls3, &cls4], &[&bx3, &bx4], &opts);
        assert_dets(
            &dets,
            &[
                ([20.0, 4.0, 36.0, 20.0], sigmoid(5.0), 3),
                ([16.0, 0.0, 32.0, 16.0], sigmoid(4.0), 1),
            ],
        );
    }

    /// The same values as per-level NCHW planes and as Keras' concatenated rows (scores
    /// already sigmoided) give the same detections.
    #[test]
    fn concatenated_scores_match_per_level_logits() {
        let anchors = two_levels();
        let (c, a_count) = (3, 2);
        let mut state = 11u32;
        let mut next = move || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1 << 24) as f32 * 4.0 - 2.0
        };
        let sizes = [8, 2];
        let cls: Vec<Vec<f32>> = sizes
            .iter()
            .map(|hw| (0..a_count * c * hw).map(|_| next()).collect())
            .collect();
        let bx: Vec<Vec<f32>> = sizes
            .iter()
            .map(|hw| (0..a_count * 4 * hw).map(|_| next() / 4.0).collect())
            .collect();
        // Rows (level, p, a), columns class or coordinate.
        let mut rows_cls = Vec::new();
        let mut rows_box = Vec::new();
        for (l, &hw) in sizes.iter().enumerate() {
            for p in 0..hw {
                for a in 0..a_count {
                    rows_cls.extend((0..c).map(|k| sigmoid(cls[l][(a * c + k) * hw + p])));
                    rows_box.extend((0..4).map(|k| bx[l][(a * 4 + k) * hw + p]));
                }
            }
        }
        let opts = DetectOptions::default();
        let per_level = postprocess(&anchors, c, &[&cls[0], &cls[1]], &[&bx[0], &bx[1]], &opts);
        let format = HeadFormat {
            layout: HeadLayout::Concatenated,
            scores: true,
        };
        let mut concatenated = Vec::new();
        postprocess_heads_into(
            &anchors,
            c,
            format,
            &[&rows_cls],
            &[&rows_box],
            &opts,
            &mut PostprocessScratch::default(),
            &mut concatenated,
        )
        .unwrap();
        assert!(!per_level.is_empty());
        assert_eq!(per_level, concatenated);
        // A concatenated output of the wrong length, or per level, is an error.
        let short = &rows_cls[1..];
        let mut out = Vec::new();
        let mut scratch = PostprocessScratch::default();
        for (cls_in, box_in) in [
            (vec![short], vec![&rows_box[..]]),
            (vec![&cls[0][..], &cls[1][..]], vec![&bx[0][..], &bx[1][..]]),
        ] {
            assert!(postprocess_heads_into(
                &anchors,
                c,
                format,
                &cls_in,
                &box_in,
                &opts,
                &mut scratch,
                &mut out
            )
            .is_err());
        }
    }

    #[test]
    fn rescaled_maps_boxes_only() {
        let d = Detection {
            bbox: [1.0, 2.0, 3.0, 4.0],
            score: 0.5,
            class: 7,
        };
        let r = d.rescaled(2.0);
        assert_eq!(r.bbox, [2.0, 4.0, 6.0, 8.0]);
        assert_eq!((r.score, r.class), (0.5, 7));
    }
}
