//! The compute kernels generated code calls: SIMD for x86-64 (AVX-512F, AVX2+FMA) and
//! aarch64 (NEON) with a portable scalar path, chosen once per model by [`Isa::detect`].
//!
//! Layout everywhere: NCHW f32, batch 1, each channel a contiguous `H·W` plane. Weights come
//! pre-packed by the compiler (the `pack_*` functions here, run at build time) in the layout
//! each kernel wants. Every kernel writes its whole output and reads only its inputs; the
//! caller guarantees output and inputs do not overlap (they are disjoint slices).
//!
//! Intra-op threads: kernels split their work over output channels with [`Par`], a handle
//! on the model's persistent [`Pool`], so each thread writes a disjoint contiguous part of
//! the output, always the same part: results are bit-identical at every thread count.
//!
//! Allocation: kernels take their temporary buffers (padded row rings, resampled rows, index
//! tables; conv1x1's packed blocks of x) from per-thread buffers (`scratch`) that only grow,
//! so once every kernel of a model has run on a thread (the first forward pass), calls on
//! that thread allocate nothing (`tests/no_alloc.rs`). The pool's workers live as long as
//! the pool and always get the same parts of the same kernels, so the same holds for them. (The `pack*` functions, run at build time, and [`generic::fusion_coefficients`]
//! return new vectors by design.)

#![allow(unsafe_code)]

pub mod act;
pub mod conv1x1;
pub mod denormals;
pub mod dense;
pub mod depthwise;
#[cfg(target_arch = "x86_64")]
mod depthwise_lanes;
pub mod fuse;
pub mod generic;
pub mod mbconv;
pub mod pool;
mod scratch;
pub mod se;
mod simd;

use crate::prelude::*;

pub use act::Act;
pub use denormals::FlushDenormals;
pub use pool::{Columns, Par, Pool};

/// `d0 · d1 · …` for the size checks at a kernel's entry: panics naming `what` when the
/// product overflows, so a check can never pass on a wrapped size and let a kernel read
/// past its slices.
pub(crate) fn size(what: &str, dims: &[usize]) -> usize {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .unwrap_or_else(|| panic!("{what}: the size {dims:?} overflows usize"))
}

/// The instruction set a model runs with, detected once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F (with FMA).
    Avx512,
    /// AVX2 with FMA.
    Avx2,
    /// aarch64 Advanced SIMD (128-bit vectors, 32 registers; part of every aarch64 CPU).
    Neon,
    /// Portable Rust, no intrinsics.
    Scalar,
}

impl Isa {
    /// The best instruction set this CPU supports (without `std`: the best one the crate
    /// was compiled for, see [`act`]'s `isa_ok`).
    pub fn detect() -> Isa {
        [Isa::Avx512, Isa::Avx2, Isa::Neon]
            .into_iter()
            .find(|&i| act::isa_ok(i))
            .unwrap_or(Isa::Scalar)
    }

    /// Every instruction set this CPU can run, best first (for tests that compare them).
    pub fn available() -> Vec<Isa> {
        [Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Scalar]
            .into_iter()
            .filter(|&i| act::isa_ok(i))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "fuse: the size [4611686018427387904, 4] overflows usize")]
    fn an_overflowing_shape_panics_before_any_access() {
        // c · oh · ow wraps to a small number in release arithmetic; the check must not.
        let mut y = [0.0f32; 16];
        fuse::fuse(
            Isa::Scalar,
            Par::serial(),
            &[(&[0.0; 16], fuse::Sample::Identity)],
            &[1.0],
            &mut y,
            4,
            1 << 62,
            4,
            Act::None,
        );
    }

    #[test]
    #[should_panic(expected = "depthwise")]
    fn depthwise_checks_its_sizes_with_checked_arithmetic() {
        let mut y = [0.0f32; 4];
        depthwise::depthwise(
            Isa::Scalar,
            Par::serial(),
            &[0.0; 4],
            &[0.0; 9],
            &[0.0],
            &mut y,
            usize::MAX / 2,
            2,
            2,
            1,
            1,
            [0; 4],
            Act::None,
        );
    }
}
