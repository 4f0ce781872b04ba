//! The op kernels of this model, written by effdetc (its `kernels` module), on
//! `effdet_runtime`'s ISA detection, vector primitives, activations, thread pool and
//! scratch buffers.

pub mod activation;
pub mod conv1x1;
pub mod dense;
pub mod depthwise;
#[cfg(target_arch = "x86_64")]
pub mod depthwise_lanes;
pub mod fuse;
pub mod fuse_depthwise;
pub mod generic;
pub mod mbconv;
pub mod se;
pub mod separable;
