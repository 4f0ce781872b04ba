//! `tf_efficientdet_d0` compiled by effdetc from `d0.yaml`.
//!
//! Every shape, stride and padding is a constant of the generated code; the op kernels
//! (AVX-512, AVX2+FMA, NEON or portable, chosen at run time) are in `src/kernels/`, written
//! by effdetc, on the vendored `effdet-runtime`'s vector primitives and thread pool.
//!
//! Without its default `std` feature (`default-features = false`) the library is `#![no_std]`
//! (`core` + `alloc`): `Model::from_bytes` instead of `Model::from_file`, one thread, and on
//! x86-64 the instruction set the crate was compiled for (`-C target-feature=+avx2,+fma`).
//!
//! Input: `[1, 3, 512, 512]` f32, NCHW, normalized.
//!
//! | output | shape |
//! |---|---|
//! | `class_P3` | `[1, 810, 64, 64]` |
//! | `class_P4` | `[1, 810, 32, 32]` |
//! | `class_P5` | `[1, 810, 16, 16]` |
//! | `class_P6` | `[1, 810, 8, 8]` |
//! | `class_P7` | `[1, 810, 4, 4]` |
//! | `box_P3` | `[1, 36, 64, 64]` |
//! | `box_P4` | `[1, 36, 32, 32]` |
//! | `box_P5` | `[1, 36, 16, 16]` |
//! | `box_P6` | `[1, 36, 8, 8]` |
//! | `box_P7` | `[1, 36, 4, 4]` |
//!
//! Arena: 20971520 bytes. Packed weights: 15814720 bytes, embedded in the library (`Model::new()`), or read from a file (`Model::from_file`).
//!
//! ```no_run
//! let mut model = effdet_d0::Model::new();
//! let input = vec![0.0f32; effdet_d0::INPUT_SHAPE.iter().product()];
//! let outputs = model.forward(&input)?;
//! let class_p3 = outputs.get("class_P3");
//! # Ok::<(), effdet_d0::Error>(())
//! ```

#![cfg_attr(not(feature = "std"), no_std)]

mod model;
pub use model::*;
