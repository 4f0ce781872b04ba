//! Detection settings a spec carries (anchors, classes, normalization, NMS), turned into the
//! runtime's types, and post-processing of saved head outputs (`effdetc postprocess`).

use std::path::{Path, PathBuf};

use effdet_runtime::{
    AnchorConfig, Anchors, DetectOptions, Detection, HeadFormat, HeadLayout, NmsMethod,
    Normalization,
};

use crate::npy::{self, NpyError};
use crate::spec::schema::{self, Spec};

/// Everything post-processing needs to know about a model.
#[derive(Clone, Debug)]
pub struct DetectionSettings {
    pub anchors: AnchorConfig,
    pub num_classes: usize,
    pub options: DetectOptions,
    pub normalization: Normalization,
    /// How the head outputs are laid out and whether they are scores already.
    pub format: HeadFormat,
    /// Clip boxes to `[0, size − 1]` of the network input (keras-retinanet) instead of the
    /// image's valid region (effdet).
    pub clip_to_input: bool,
}

impl DetectionSettings {
    pub fn from_spec(spec: &Spec) -> DetectionSettings {
        let [h, w] = spec.input.image_size.value;
        let anchors = AnchorConfig {
            image_size: [h as usize, w as usize],
            min_level: spec.fpn.min_level.value as usize,
            max_level: spec.fpn.max_level.value as usize,
            num_scales: spec.anchors.num_scales.value as usize,
            aspect_ratios: spec.anchors.aspect_ratios.value.clone(),
            anchor_scale: spec.anchors.anchor_scale.value,
        };
        let p = &spec.postprocess;
        let options = DetectOptions {
            score_threshold: None,
            max_detections: p.max_detections as usize,
            pre_nms_topk: p.pre_nms_topk as usize,
            iou_threshold: p.nms.iou_threshold,
            nms: match p.nms.method {
                schema::NmsMethod::Hard => NmsMethod::Hard,
                schema::NmsMethod::SoftGaussian => NmsMethod::SoftGaussian { sigma: p.nms.sigma },
            },
            class_agnostic: !p.nms.class_aware,
            clip: None,
        };
        DetectionSettings {
            anchors,
            num_classes: spec.head.num_classes.value as usize,
            options,
            normalization: Normalization {
                mean: spec.input.mean.value,
                std: spec.input.std.value,
            },
            format: HeadFormat {
                layout: match p.head_layout {
                    schema::HeadLayout::PerLevel => HeadLayout::PerLevel,
                    schema::HeadLayout::Concatenated => HeadLayout::Concatenated,
                },
                scores: p.class_output == schema::ClassOutput::Sigmoid,
            },
            clip_to_input: spec.anchors.convention == schema::AnchorConvention::KerasRetinanet,
        }
    }

    /// The `[height, width]` boxes are clipped to when the network input is `input`
    /// (`[h, w]`) and the image fills `valid` of it.
    pub fn clip(&self, input: [usize; 2], valid: [f32; 2]) -> [f32; 2] {
        if self.clip_to_input {
            input.map(|v| v as f32 - 1.0)
        } else {
            valid
        }
    }

    /// The head outputs detection reads, `(name, shape)` for a batch of `batch`: the class
    /// heads, then the box heads, levels ascending (`class_P3` `[N, A·C, H, W]`, …,
    /// `box_P3` `[N, A·4, H, W]`, …), or `classification` `[N, anchors, C]` and `regression`
    /// `[N, anchors, 4]` for concatenated heads.
    pub fn head_outputs(&self, batch: usize) -> [Vec<(String, Vec<usize>)>; 2] {
        let anchors = Anchors::new(&self.anchors);
        if self.format.layout == HeadLayout::Concatenated {
            let n = anchors.len();
            return [
                vec![("classification".into(), vec![batch, n, self.num_classes])],
                vec![("regression".into(), vec![batch, n, 4])],
            ];
        }
        let a = anchors.num_anchors_per_location();
        let per_level = |kind: &str, channels: usize| {
            anchors
                .levels()
                .iter()
                .map(|l| {
                    let [h, w] = l.feature_size;
                    (format!("{kind}_P{}", l.level), vec![batch, channels, h, w])
                })
                .collect()
        };
        [
            per_level("class", a * self.num_classes),
            per_level("box", a * 4),
        ]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PostprocessError {
    #[error(transparent)]
    Npy(#[from] NpyError),
    #[error("post-processing: {0}")]
    Rejected(String),
    #[error("{dir}: no `{file}` (post-processing needs the raw head outputs `class_P<level>.npy` and `box_P<level>.npy`, as `effdetc run` writes them)")]
    Missing { dir: PathBuf, file: String },
}

/// Reads the raw head outputs saved in `dir` and runs effdet's predict path on them.
pub fn postprocess_dir(
    settings: &DetectionSettings,
    dir: &Path,
) -> Result<Vec<Detection>, PostprocessError> {
    let anchors = Anchors::new(&settings.anchors);
    let read = |(name, shape): &(String, Vec<usize>)| {
        let file = format!("{name}.npy");
        let path = dir.join(&file);
        if !path.exists() {
            return Err(PostprocessError::Missing {
                dir: dir.to_path_buf(),
                file,
            });
        }
        Ok(npy::read_f32(&path, shape)?.data)
    };
    let [class_heads, box_heads] = settings.head_outputs(1);
    let class_outputs = class_heads
        .iter()
        .map(read)
        .collect::<Result<Vec<_>, _>>()?;
    let box_outputs = box_heads.iter().map(read).collect::<Result<Vec<_>, _>>()?;
    let class_refs: Vec<&[f32]> = class_outputs.iter().map(Vec::as_slice).collect();
    let box_refs: Vec<&[f32]> = box_outputs.iter().map(Vec::as_slice).collect();
    let mut options = settings.options;
    if settings.clip_to_input {
        options.clip = Some(settings.clip(settings.anchors.image_size, [0.0; 2]));
    }
    let mut out = Vec::new();
    effdet_runtime::postprocess_heads_into(
        &anchors,
        settings.num_classes,
        settings.format,
        &class_refs,
        &box_refs,
        &options,
        &mut effdet_runtime::PostprocessScratch::default(),
        &mut out,
    )
    .map_err(|e| PostprocessError::Rejected(e.to_string()))?;
    Ok(out)
}

/// Detections as the `[N, 6]` rows `x1, y1, x2, y2, score, class`.
pub fn as_rows(detections: &[Detection]) -> crate::interp::Tensor {
    let data = detections
        .iter()
        .flat_map(|d| {
            [
                d.bbox[0],
                d.bbox[1],
                d.bbox[2],
                d.bbox[3],
                d.score,
                d.class as f32,
            ]
        })
        .collect();
    crate::interp::Tensor::new(vec![detections.len(), 6], data)
}

/// Detections as a JSON array of `{"bbox": [x1, y1, x2, y2], "score", "class", "label"}`.
pub fn as_json(detections: &[Detection]) -> String {
    let items: Vec<serde_json::Value> = detections
        .iter()
        .map(|d| {
            serde_json::json!({
                "bbox": d.bbox,
                "score": d.score,
                "class": d.class,
                "label": effdet_runtime::coco_label(d.class),
            })
        })
        .collect();
    serde_json::to_string_pretty(&items).unwrap_or_else(|_| "[]".into())
}
