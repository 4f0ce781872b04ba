//! The tiny runtime shared by every crate that `effdetc` generates.
//!
//! It has no dependencies: generated crates must build offline from a copy of their own
//! directory, and whatever they share lives here. It holds everything around the network
//! itself, following the PyTorch `effdet` reference (rwightman/efficientdet-pytorch), which is
//! this project's numerical reference:
//!
//! * [`Anchors`]: the anchor boxes the box head regresses against ([`AnchorConfig`]).
//! * [`decode_box`], [`sigmoid`]: box decoding and score activation.
//! * [`coco_label`]: names for the 1-based COCO class ids the detector outputs.

// Later SIMD kernels live in other crates; this part stays safe Rust.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod anchors;
mod decode;
mod labels;

pub use anchors::{feature_sizes, AnchorConfig, AnchorLevel, Anchors};
pub use decode::{decode_box, sigmoid};
pub use labels::{coco_label, COCO_LABELS};
