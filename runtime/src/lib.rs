//! The tiny runtime shared by every crate that `effdetc` generates.
//!
//! It has no dependencies: generated crates must build offline from a copy of their own
//! directory, and whatever they share lives here. A standalone generated crate vendors a copy
//! (`runtime/`); the build-script way (`effdet_compiler::Build`) and the proc-macro way
//! (`effdet_macros::model!`) put generated code into your own crate, which then names
//! `::effdet_runtime`: depend on this crate (`effdet-runtime = { path = ".../runtime" }`)
//! alongside `effdet-compiler` or `effdet-macros`. It holds everything around the network
//! itself, following the PyTorch `effdet` reference (rwightman/efficientdet-pytorch), which is
//! this project's numerical reference:
//!
//! * [`preprocess`]: resize keeping the aspect ratio, paste top-left on a mean-colour canvas,
//!   normalise, write NCHW `f32` ([`Image`], [`Normalization`]).
//! * [`Anchors`]: the anchor boxes the box head regresses against ([`AnchorConfig`]).
//! * [`postprocess`]: effdet's predict path on the raw head outputs: top-k over all
//!   (anchor, class) logits, box decoding, sigmoid, per-class NMS (hard or Gaussian soft-NMS),
//!   top `max_detections` ([`DetectOptions`], [`Detection`]).
//! * [`coco_label`]: names for the 1-based COCO class ids the detector outputs.
//!
//! A typical call sequence:
//!
//! ```
//! use effdet_runtime::{postprocess, AnchorConfig, Anchors, DetectOptions};
//!
//! let anchors = Anchors::new(&AnchorConfig::efficientdet([512, 512], 4.0));
//! assert_eq!(anchors.len(), 49_104);
//! // `class_outputs` / `box_outputs`: one raw NCHW head output per level, P3 first.
//! # let lv = anchors.levels();
//! # let cls: Vec<Vec<f32>> = lv.iter().map(|l| vec![-5.0; 9 * 90 * l.feature_size[0] * l.feature_size[1]]).collect();
//! # let bx: Vec<Vec<f32>> = lv.iter().map(|l| vec![0.0; 9 * 4 * l.feature_size[0] * l.feature_size[1]]).collect();
//! # let class_outputs: Vec<&[f32]> = cls.iter().map(|v| v.as_slice()).collect();
//! # let box_outputs: Vec<&[f32]> = bx.iter().map(|v| v.as_slice()).collect();
//! let detections = postprocess(&anchors, 90, &class_outputs, &box_outputs, &DetectOptions::default());
//! assert!(detections.len() <= 100);
//! ```

// `unsafe` is denied crate-wide and allowed only where SIMD intrinsics (`kernels`) or the
// in-place read of aligned embedded weights (`arena::as_f32`) need it, each with a SAFETY line.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod arena;
pub mod kernels;
pub mod model;

mod anchors;
mod decode;
mod labels;
mod nms;
mod postprocess;
mod preprocess;
mod topk;

pub use anchors::{feature_sizes, AnchorConfig, AnchorLevel, Anchors};
pub use decode::{decode_box, sigmoid};
pub use labels::{coco_label, COCO_LABELS};
pub use postprocess::{
    postprocess, postprocess_heads_into, postprocess_into, DetectOptions, Detection, HeadFormat,
    HeadLayout, NmsMethod, PostprocessError, PostprocessScratch,
};
pub use preprocess::{preprocess, preprocess_nhwc, Image, Normalization, PreprocessError};
