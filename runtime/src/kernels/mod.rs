//! What the generated kernels are built on: the instruction set ([`Isa`], chosen once per
//! model), the vector primitives ([`simd`], `#[inline(always)]`, one implementation per ISA:
//! AVX-512F, AVX2+FMA, NEON, portable), the activations ([`act`]), the thread pool
//! ([`pool`]), per-thread scratch buffers ([`scratch`]) and the denormal mode ([`denormals`]).
//!
//! The op kernels themselves (1×1 and dense convs, depthwise, BiFPN fusion, squeeze-excite,
//! the MBConv expand→depthwise fusion, the generic ops) are not here: the compiler holds
//! their source and writes it into every generated model (`effdet-compiler`'s `kernels`
//! module), so the runtime carries only what every model shares.
//!
//! Layout everywhere: NCHW f32, each channel a contiguous `H·W` plane. Kernels split their
//! work over output channels with [`Par`], a handle on the model's persistent [`Pool`], so
//! each thread writes a disjoint contiguous part of the output, always the same part:
//! results are bit-identical at every thread count.
//!
//! Allocation: kernels take their temporary buffers from per-thread buffers ([`scratch`])
//! that only grow, so once every kernel of a model has run on a thread (the first forward
//! pass), calls on that thread allocate nothing (`effdet-compiler`'s `tests/no_alloc.rs`).

#![allow(unsafe_code)]

pub mod act;
pub mod denormals;
pub mod pool;
pub mod scratch;
pub mod simd;

use crate::prelude::*;

pub use act::Act;
pub use denormals::FlushDenormals;
pub use pool::{Columns, Par, Pool};

/// `d0 · d1 · …` for the size checks at a kernel's entry: panics naming `what` when the
/// product overflows, so a check can never pass on a wrapped size and let a kernel read
/// past its slices.
pub fn size(what: &str, dims: &[usize]) -> usize {
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

    /// This instruction set's code for a const parameter ([`isa_code`]).
    pub const fn code(self) -> u8 {
        match self {
            Isa::Avx512 => isa_code::AVX512,
            Isa::Avx2 => isa_code::AVX2,
            Isa::Neon => isa_code::NEON,
            Isa::Scalar => isa_code::SCALAR,
        }
    }

    /// The instruction set of code `c` ([`isa_code`]; any other code is `Scalar`). A
    /// `const fn`, so in a function compiled for `const I: u8`, `Isa::of(I)` is a constant
    /// and a `match` on it keeps only that instruction set's arm.
    pub const fn of(c: u8) -> Isa {
        match c {
            isa_code::AVX512 => Isa::Avx512,
            isa_code::AVX2 => Isa::Avx2,
            isa_code::NEON => Isa::Neon,
            _ => Isa::Scalar,
        }
    }
}

/// A kernel call's dimension: `D` in a generated call's per-shape instance (its trip counts
/// and blocking then constants), else (`D` = 0: run-time entry points, tests) `v`.
#[inline(always)]
pub const fn dim<const D: usize>(v: usize) -> usize {
    match D {
        0 => v,
        d => d,
    }
}

/// [`Isa`] as a const parameter. The kernels and a generated model's block functions take
/// their instruction set as their last const parameter (`f::<…, { isa_code::AVX512 }>`), so
/// each is compiled once per instruction set with only that one's code in it, and a model
/// chooses among those versions once per forward pass ([`with_isa!`](crate::with_isa)).
pub mod isa_code {
    /// [`Isa::Avx512`](super::Isa::Avx512).
    pub const AVX512: u8 = 0;
    /// [`Isa::Avx2`](super::Isa::Avx2).
    pub const AVX2: u8 = 1;
    /// [`Isa::Neon`](super::Isa::Neon).
    pub const NEON: u8 = 2;
    /// [`Isa::Scalar`](super::Isa::Scalar).
    pub const SCALAR: u8 = 3;
}

/// Evaluates `$body` with `$i` a `const` holding the code ([`isa_code`]) of the run-time
/// instruction set `$isa`: one copy of `$body` per instruction set this target has (AVX-512,
/// AVX2 and portable on x86-64; NEON and portable on aarch64; portable elsewhere), a
/// `match` choosing among them. How a run-time [`Isa`] reaches code compiled per
/// instruction set: a generated model's forward pass, and the kernels' run-time entry
/// points. An instruction set the target lacks takes the portable copy.
#[macro_export]
macro_rules! with_isa {
    ($isa:expr, $i:ident => $body:expr) => {
        match $isa {
            #[cfg(target_arch = "x86_64")]
            $crate::kernels::Isa::Avx512 => {
                const $i: u8 = $crate::kernels::isa_code::AVX512;
                $body
            }
            #[cfg(target_arch = "x86_64")]
            $crate::kernels::Isa::Avx2 => {
                const $i: u8 = $crate::kernels::isa_code::AVX2;
                $body
            }
            #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
            $crate::kernels::Isa::Neon => {
                const $i: u8 = $crate::kernels::isa_code::NEON;
                $body
            }
            _ => {
                const $i: u8 = $crate::kernels::isa_code::SCALAR;
                $body
            }
        }
    };
}
pub use crate::with_isa;
