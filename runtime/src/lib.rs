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

//! # `std` and `no_std`
//!
//! The `std` feature (on by default) brings the thread pool, per-thread scratch buffers that
//! make `forward` allocation-free after its first call, run-time CPU feature detection,
//! [`model::Weights::from_file`] and panics caught as [`model::Error::Panic`]. Without it the
//! crate is `#![no_std]` and needs only `core` and `alloc` (a global allocator): everything
//! runs on the calling thread, kernels allocate their scratch per call, the x86 instruction
//! set comes from the compile-time target features (`-C target-feature=+avx2,+fma` or
//! `-C target-cpu=native` to get AVX2; the baseline is the portable path; aarch64 always has
//! NEON), and [`math`] supplies the `exp`, `ln`, `sqrt` and `powf` that `core` lacks.

#![cfg_attr(not(feature = "std"), no_std)]
// `unsafe` is denied crate-wide and allowed only where SIMD intrinsics (`kernels`) or the
// in-place read of aligned embedded weights (`arena::as_f32`) need it, each with a SAFETY line.
#![deny(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod arena;
pub mod kernels;
pub mod math;
pub mod model;
mod prelude;

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

/// Expands to its items when this crate has its `std` feature, to nothing otherwise: lets
/// generated code (which may live in a crate without a `std` feature of its own, through
/// `include!` or `effdet_macros::model!`) offer its file-reading constructors exactly when
/// the runtime can read files.
#[cfg(feature = "std")]
#[macro_export]
macro_rules! if_std {
    ($($item:item)*) => { $($item)* };
}

/// Expands to its items when this crate has its `std` feature, to nothing otherwise.
#[cfg(not(feature = "std"))]
#[macro_export]
macro_rules! if_std {
    ($($item:item)*) => {};
}
