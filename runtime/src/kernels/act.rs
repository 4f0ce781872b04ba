//! Activation functions as kernel epilogues.
//!
//! [`Act::apply`] is the scalar definition and the reference; [`apply_portable`] the
//! portable path over a slice. For use inside SIMD kernels, [`avx512`] and [`avx2`] hold `#[inline(always)]` helpers on `__m512` /
//! `__m256` values (see those modules for how to call them so they inline).
//!
//! Swish and sigmoid use a short `exp`: `e^t = 2^n · p(r)` with `n = round(t·log2 e)`,
//! `r = t − n·ln 2` (|r| ≤ ln2/2) and `p` a degree-5 minimax polynomial (relative error
//! 1.8e-7 when evaluated in f32), then one division: `x / (1 + e^−x)`, `1 / (1 + e^−x)`.
//! A division costs one instruction on the divider, which runs beside the FMA pipes; the
//! reciprocal estimate plus a Newton step would take three FMA-pipe slots. The SIMD paths
//! reduce with one FMA against `ln 2` in f32 (its 1.9e-9 error adds ≤ 2.4e-7 at |x| = 87),
//! the portable path, without FMA, with an exact two-constant (Cody–Waite) reduction.
//! The exp argument is clamped to [−87, 87], so everything stays finite: sigmoid(x) of
//! x < −87 is 1.6e-38 instead of smaller, swish(x) is x·1.6e-38 there; for x > 87 sigmoid is
//! exactly 1 and swish(x) exactly x.
//!
//! Measured maximum relative error against an f64 reference (the compiler's
//! `kernels::activation` test `report_accuracy`, 200 k
//! points over |x| ≤ 87): swish 3.1e-7 and sigmoid 3.0e-7 on AVX-512 and AVX2, 2.9e-7 and
//! 2.4e-7 on the portable path. Separately rounded products differ from fused ones by an
//! ulp of the product, so the piecewise-linear activations (hard sigmoid/swish) match the
//! scalar definition to 2e-7 of max(|result|, 1).

use super::Isa;
#[cfg(not(feature = "std"))]
use crate::math::Float;

/// A pointwise activation applied in a kernel's epilogue (same definitions as the
/// compiler's IR).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    /// Identity.
    None,
    /// `max(x, 0)`.
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x · sigmoid(x)`.
    Swish,
    /// `1 / (1 + exp(−x))`.
    Sigmoid,
    /// `min(max(x, min), max)`.
    Clip {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
    /// `max(0, min(1, alpha·x + beta))`.
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// `x · max(0, min(1, x/6 + 1/2))`.
    HardSwish,
}

impl Act {
    /// The scalar definition (the reference for the SIMD versions).
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Act::None => x,
            Act::Relu => x.max(0.0),
            Act::Relu6 => x.clamp(0.0, 6.0),
            Act::Swish => x / (1.0 + (-x).exp()),
            Act::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Act::Clip { min, max } => x.max(min).min(max),
            Act::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Act::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
        }
    }

    /// This activation's [`code`]: what a generated model passes as a kernel's const
    /// parameter ([`code::ANY`] for those without a code of their own).
    pub const fn code(self) -> u8 {
        match self {
            Act::None => code::NONE,
            Act::Swish => code::SWISH,
            Act::Relu6 => code::RELU6,
            Act::Sigmoid => code::SIGMOID,
            _ => code::ANY,
        }
    }

    /// The activation of code `A` (a constant, so a kernel compiled for `A` holds that
    /// activation's code only), or `self` where `A` is [`code::ANY`].
    ///
    /// # Panics
    /// If `A` is a code other than `ANY` and `self` is not its activation: a caller passed
    /// a code that does not match its `Act`.
    #[inline(always)]
    pub fn fixed<const A: u8>(self) -> Act {
        let fixed = match A {
            code::NONE => Act::None,
            code::SWISH => Act::Swish,
            code::RELU6 => Act::Relu6,
            code::SIGMOID => Act::Sigmoid,
            _ => return self,
        };
        assert!(fixed == self, "activation code {A} given for {self:?}");
        fixed
    }
}

/// The codes of the activations a kernel can take as a const parameter (an [`Act`] carries
/// data, so it cannot be one). A generated model passes each call's code, so a kernel is
/// compiled for the activations the model uses and no other; `ANY` reads the [`Act`] at
/// run time (the piecewise-linear ones with parameters).
pub mod code {
    /// The activation is the `Act` argument, read at run time.
    pub const ANY: u8 = 0;
    /// [`super::Act::None`].
    pub const NONE: u8 = 1;
    /// [`super::Act::Swish`].
    pub const SWISH: u8 = 2;
    /// [`super::Act::Relu6`].
    pub const RELU6: u8 = 3;
    /// [`super::Act::Sigmoid`].
    pub const SIGMOID: u8 = 4;
}

// The short exp, shared by both SIMD paths (see the module docs).
const CLAMP: f32 = 87.0;
const LOG2E: f32 = core::f32::consts::LOG2_E;
// 1.5·2^23: adding it to |t| < 2^22 rounds t to an integer (round to nearest even).
const SHIFT: f32 = 12_582_912.0;
// One-constant reduction: ln 2 in f32 is off by 1.9e-9, which adds ≤ |n|·1.9e-9 ≤ 2.4e-7
// relative error at |x| = 87 (≤ 3e-8 for |x| ≤ 10); a second constant would cost an FMA.
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "aarch64", target_feature = "neon")
))]
const LN2: f32 = core::f32::consts::LN_2;
// p(r) ≈ e^r on [−ln2/2, ln2/2], degree-5 minimax in relative error.
const P0: f32 = 1.000_000_1;
const P1: f32 = 0.999_999_7;
const P2: f32 = 0.499_988_5;
const P3: f32 = 0.166_676_12;
const P4: f32 = 0.041_920_375;
const P5: f32 = 0.008_296_94;

/// The portable path of the kernels' `activation::apply_slice` (and the portable kernels' epilogue): the
/// piecewise-linear activations as [`Act::apply`], swish and sigmoid with the same short
/// exp as the SIMD paths in plain arithmetic (no FMA, no libm), which LLVM vectorizes.
pub fn apply_portable(act: Act, x: &mut [f32]) {
    match act {
        Act::None => {}
        Act::Swish => {
            for v in x.iter_mut() {
                *v /= 1.0 + exp_neg_portable(*v);
            }
        }
        Act::Sigmoid => {
            for v in x.iter_mut() {
                *v = 1.0 / (1.0 + exp_neg_portable(*v));
            }
        }
        _ => {
            for v in x.iter_mut() {
                *v = act.apply(*v);
            }
        }
    }
}

/// `e^(−x)` (x clamped to [−87, 87]) without FMA: rounding by the 1.5·2^23 trick and a
/// two-constant reduction whose first product is exact.
#[inline(always)]
fn exp_neg_portable(x: f32) -> f32 {
    const C1: f32 = 0.693_359_4; // 355/512: n·C1 is exact for |n| < 2^15
    const C2: f32 = -2.121_944_4e-4; // ln 2 − C1
    let x = x.clamp(-CLAMP, CLAMP);
    let n = (x * -LOG2E + SHIFT) - SHIFT;
    // r' = x + n·ln 2 = −r, so e^r = p(−r').
    let r = (x + n * C1) + n * C2;
    let p = ((((-P5 * r + P4) * r - P3) * r + P2) * r - P1) * r + P0;
    p * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

/// Whether this CPU can run `isa` (cheap: `is_x86_feature_detected!` caches its answer).
/// Without `std` there is no run-time detection: an x86 instruction set counts as present
/// when the crate was compiled with its target features (`-C target-feature=+avx2,+fma`).
#[inline]
// Without `std`, `has!(a) && has!(b)` is an expression of constants.
#[cfg_attr(not(feature = "std"), allow(clippy::nonminimal_bool, clippy::eq_op))]
pub fn isa_ok(isa: Isa) -> bool {
    #[cfg(all(target_arch = "x86_64", feature = "std"))]
    macro_rules! has {
        ($f:tt) => {
            ::std::arch::is_x86_feature_detected!($f)
        };
    }
    #[cfg(all(target_arch = "x86_64", not(feature = "std")))]
    macro_rules! has {
        ($f:tt) => {
            cfg!(target_feature = $f)
        };
    }
    match isa {
        Isa::Scalar => true,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => has!("avx512f") && has!("fma"),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => has!("avx2") && has!("fma"),
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        Isa::Neon => true,
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// Activations on `__m512` values (16 lanes), for AVX-512F kernels.
///
/// The helpers are `#[inline(always)]` functions without target features of their own: call
/// them only from a function compiled with `#[target_feature(enable = "avx512f,fma")]` (or
/// from another `#[inline(always)]` helper that ends up inside one), where they inline and
/// compile to plain AVX-512 instructions. That function itself may only run after
/// [`Isa::detect`] returned [`Isa::Avx512`]; that is the safety contract of every helper
/// here. Example:
///
/// ```ignore
/// #[target_feature(enable = "avx512f,fma")]
/// unsafe fn my_epilogue(v: __m512, act: Act) -> __m512 {
///     // SAFETY: we run in an avx512f+fma context, entered after Isa::detect().
///     unsafe { act::avx512::apply(act, v) }
/// }
/// ```
///
/// [`Act`] parameters are matched per call; hoist nothing by hand: with the activation
/// fixed for a whole kernel call, the branch is perfectly predicted.
#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    use super::*;
    use core::arch::x86_64::*;

    /// `e^(−x)` for `x` in [−87, 87] (the caller clamps).
    #[inline(always)]
    unsafe fn exp_neg(x: __m512) -> __m512 {
        // SAFETY: the caller guarantees an avx512f+fma context.
        unsafe {
            // n = round(−x·log2 e): adding 1.5·2^23 rounds to an integer (one FMA and one
            // subtraction, which runs on the add pipes, instead of a multiply and a round).
            let shift = _mm512_set1_ps(SHIFT);
            let n = _mm512_sub_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(-LOG2E), shift), shift);
            // r' = x + n·ln2 = −r, so e^r = p(−r'): the odd coefficients change sign.
            let r = _mm512_fmadd_ps(n, _mm512_set1_ps(LN2), x);
            let mut p = _mm512_set1_ps(-P5);
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P4));
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(-P3));
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P2));
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(-P1));
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P0));
            _mm512_scalef_ps(p, n)
        }
    }

    #[inline(always)]
    unsafe fn clamp(x: __m512) -> __m512 {
        // SAFETY: the caller guarantees an avx512f+fma context.
        unsafe {
            _mm512_min_ps(
                _mm512_max_ps(x, _mm512_set1_ps(-CLAMP)),
                _mm512_set1_ps(CLAMP),
            )
        }
    }

    /// `sigmoid(x)`, relative error ≤ 1e-6.
    ///
    /// # Safety
    /// Only inside an `avx512f,fma` target-feature context (see the module docs).
    #[inline(always)]
    pub unsafe fn sigmoid(x: __m512) -> __m512 {
        // SAFETY: forwarded contract.
        unsafe {
            _mm512_div_ps(
                _mm512_set1_ps(1.0),
                _mm512_add_ps(_mm512_set1_ps(1.0), exp_neg(clamp(x))),
            )
        }
    }

    /// `x · sigmoid(x)`, relative error ≤ 1e-6.
    ///
    /// # Safety
    /// Only inside an `avx512f,fma` target-feature context (see the module docs).
    #[inline(always)]
    pub unsafe fn swish(x: __m512) -> __m512 {
        // SAFETY: forwarded contract.
        unsafe { _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0), exp_neg(clamp(x)))) }
    }

    /// `act(x)` lane-wise.
    ///
    /// # Safety
    /// Only inside an `avx512f,fma` target-feature context (see the module docs).
    #[inline(always)]
    pub unsafe fn apply(act: Act, x: __m512) -> __m512 {
        // SAFETY: forwarded contract.
        unsafe {
            match act {
                Act::None => x,
                Act::Relu => _mm512_max_ps(x, _mm512_setzero_ps()),
                Act::Relu6 => {
                    _mm512_min_ps(_mm512_max_ps(x, _mm512_setzero_ps()), _mm512_set1_ps(6.0))
                }
                Act::Swish => swish(x),
                Act::Sigmoid => sigmoid(x),
                Act::Clip { min, max } => {
                    _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(min)), _mm512_set1_ps(max))
                }
                Act::HardSigmoid { alpha, beta } => {
                    let v = _mm512_fmadd_ps(x, _mm512_set1_ps(alpha), _mm512_set1_ps(beta));
                    _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), _mm512_set1_ps(1.0))
                }
                Act::HardSwish => {
                    let v = _mm512_fmadd_ps(x, _mm512_set1_ps(1.0 / 6.0), _mm512_set1_ps(0.5));
                    let v =
                        _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), _mm512_set1_ps(1.0));
                    _mm512_mul_ps(x, v)
                }
            }
        }
    }
}

/// Activations on `__m256` values (8 lanes), for AVX2+FMA kernels.
///
/// Same contract as [`avx512`]: call only from a function compiled with
/// `#[target_feature(enable = "avx2,fma")]`, entered after [`Isa::detect`] returned
/// [`Isa::Avx2`] or [`Isa::Avx512`].
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use super::*;
    use core::arch::x86_64::*;

    /// `e^(−x)` for `x` in [−87, 87] (the caller clamps).
    #[inline(always)]
    unsafe fn exp_neg(x: __m256) -> __m256 {
        // SAFETY: the caller guarantees an avx2+fma context.
        unsafe {
            // The shift carries the exponent bias: the low mantissa bits of `kn` are n + 127
            // (1..=253 for |x| ≤ 87), so `kn << 23` is the bit pattern of 2^n.
            let shift = _mm256_set1_ps(SHIFT + 127.0);
            let kn = _mm256_fmadd_ps(x, _mm256_set1_ps(-LOG2E), shift);
            let n = _mm256_sub_ps(kn, shift);
            let r = _mm256_fmadd_ps(n, _mm256_set1_ps(LN2), x);
            let mut p = _mm256_set1_ps(-P5);
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P4));
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(-P3));
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P2));
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(-P1));
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P0));
            let e = _mm256_slli_epi32::<23>(_mm256_castps_si256(kn));
            _mm256_mul_ps(p, _mm256_castsi256_ps(e))
        }
    }

    #[inline(always)]
    unsafe fn clamp(x: __m256) -> __m256 {
        // SAFETY: the caller guarantees an avx2+fma context.
        unsafe {
            _mm256_min_ps(
                _mm256_max_ps(x, _mm256_set1_ps(-CLAMP)),
                _mm256_set1_ps(CLAMP),
            )
        }
    }

    /// `sigmoid(x)`, relative error ≤ 1e-6.
    ///
    /// # Safety
    /// Only inside an `avx2,fma` target-feature context (see the module docs).
    #[inline(always)]
    pub unsafe fn sigmoid(x: __m256) -> __m256 {
        // SAFETY: forwarded contract.
        unsafe {
            _mm256_div_ps(
                _mm256_set1_ps(1.0),
                _mm256_add_ps(_mm256_set1_ps(1.0), exp_neg(clamp(x))),
            )
        }
    }

    /// `1 + e^(−x)` of the first (at most 16) vectors of `x` into `d`, step by step across all
    /// of them: the exp is a chain of ~12 dependent operations, so one vector at a time
    /// leaves the FMA pipes waiting on latency; interleaving a register tile's vectors fills
    /// them. The same arithmetic as [`exp_neg`], so the same results bit for bit.
    #[inline(always)]
    unsafe fn one_plus_exp_neg_each(x: &[__m256], d: &mut [__m256; 16]) {
        // SAFETY: the caller guarantees an avx2+fma context.
        unsafe {
            let n = x.len().min(16);
            let zero = _mm256_setzero_ps();
            let (mut t, mut kn, mut r, mut p) = ([zero; 16], [zero; 16], [zero; 16], [zero; 16]);
            let shift = _mm256_set1_ps(SHIFT + 127.0);
            for i in 0..n {
                t[i] = clamp(x[i]);
            }
            for i in 0..n {
                kn[i] = _mm256_fmadd_ps(t[i], _mm256_set1_ps(-LOG2E), shift);
            }
            for i in 0..n {
                let nn = _mm256_sub_ps(kn[i], shift);
                r[i] = _mm256_fmadd_ps(nn, _mm256_set1_ps(LN2), t[i]);
            }
            for i in 0..n {
                p[i] = _mm256_fmadd_ps(_mm256_set1_ps(-P5), r[i], _mm256_set1_ps(P4));
            }
            for c in [-P3, P2, -P1, P0] {
                for i in 0..n {
                    p[i] = _mm256_fmadd_ps(p[i], r[i], _mm256_set1_ps(c));
                }
            }
            for i in 0..n {
                let e = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_castps_si256(kn[i])));
                d[i] = _mm256_add_ps(_mm256_set1_ps(1.0), _mm256_mul_ps(p[i], e));
            }
        }
    }

    /// [`swish`] of every vector of `x`, 16 at a time interleaved; bit for bit [`swish`]'s.
    ///
    /// # Safety
    /// Only inside an `avx2,fma` target-feature context (see the module docs).
    #[inline(always)]
    pub unsafe fn swish_each(x: &mut [__m256]) {
        // SAFETY: forwarded contract.
        unsafe { over_one_plus_exp_neg::<false>(x) }
    }

    /// [`sigmoid`] of every vector of `x`, 16 at a time interleaved; bit for bit
    /// [`sigmoid`]'s.
    ///
    /// # Safety
    /// Only inside an `avx2,fma` target-feature context (see the module docs).
    #[inline(always)]
    pub unsafe fn sigmoid_each(x: &mut [__m256]) {
        // SAFETY: forwarded contract.
        unsafe { over_one_plus_exp_neg::<true>(x) }
    }

    /// `v / (1 + e^(−v))` (swish) or, with `ONE`, `1 / (1 + e^(−v))` (sigmoid) for every
    /// vector, 16 at a time.
    #[inline(always)]
    unsafe fn over_one_plus_exp_neg<const ONE: bool>(x: &mut [__m256]) {
        // SAFETY: the caller guarantees an avx2+fma context.
        unsafe {
            for x in x.chunks_mut(16) {
                let mut d = [_mm256_setzero_ps(); 16];
                one_plus_exp_neg_each(x, &mut d);
                for (v, d) in x.iter_mut().zip(d) {
                    let num = if ONE { _mm256_set1_ps(1.0) } else { *v };
                    *v = _mm256_div_ps(num, d);
                }
            }
        }
    }

    /// `x · sigmoid(x)`, relative error ≤ 1e-6.
    ///
    /// # Safety
    /// Only inside an `avx2,fma` target-feature context (see the module docs).
    #[inline(always)]
    pub unsafe fn swish(x: __m256) -> __m256 {
        // SAFETY: forwarded contract.
        unsafe { _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), exp_neg(clamp(x)))) }
    }

    /// `act(x)` lane-wise.
    ///
    /// # Safety
    /// Only inside an `avx2,fma` target-feature context (see the module docs).
    #[inline(always)]
    pub unsafe fn apply(act: Act, x: __m256) -> __m256 {
        // SAFETY: forwarded contract.
        unsafe {
            match act {
                Act::None => x,
                Act::Relu => _mm256_max_ps(x, _mm256_setzero_ps()),
                Act::Relu6 => {
                    _mm256_min_ps(_mm256_max_ps(x, _mm256_setzero_ps()), _mm256_set1_ps(6.0))
                }
                Act::Swish => swish(x),
                Act::Sigmoid => sigmoid(x),
                Act::Clip { min, max } => {
                    _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(min)), _mm256_set1_ps(max))
                }
                Act::HardSigmoid { alpha, beta } => {
                    let v = _mm256_fmadd_ps(x, _mm256_set1_ps(alpha), _mm256_set1_ps(beta));
                    _mm256_min_ps(_mm256_max_ps(v, _mm256_setzero_ps()), _mm256_set1_ps(1.0))
                }
                Act::HardSwish => {
                    let v = _mm256_fmadd_ps(x, _mm256_set1_ps(1.0 / 6.0), _mm256_set1_ps(0.5));
                    let v =
                        _mm256_min_ps(_mm256_max_ps(v, _mm256_setzero_ps()), _mm256_set1_ps(1.0));
                    _mm256_mul_ps(x, v)
                }
            }
        }
    }

    /// A lane mask selecting the first `n` (0..=8) lanes, for `_mm256_maskload_ps` /
    /// `_mm256_maskstore_ps`.
    ///
    /// # Safety
    /// Only inside an `avx2` target-feature context.
    #[inline(always)]
    pub unsafe fn first_lanes(n: usize) -> __m256i {
        // SAFETY: forwarded contract.
        unsafe {
            let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), idx)
        }
    }
}

/// Activations on `float32x4_t` values (4 lanes), for aarch64 NEON kernels.
///
/// NEON is part of every aarch64 CPU (the target enables it), so these helpers need no
/// target-feature context: the arithmetic intrinsics are safe to call, only the pointer
/// ones are `unsafe`. The same short exp as the x86 paths, the same constants.
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
pub mod neon {
    use super::*;
    use core::arch::aarch64::*;

    /// `e^(−x)` for `x` in [−87, 87] (the caller clamps).
    #[inline(always)]
    fn exp_neg(x: float32x4_t) -> float32x4_t {
        // SAFETY: NEON is enabled for this target (the module is compiled only then).
        unsafe {
            // The shift carries the exponent bias, as on AVX2: `kn << 23` is the bits of 2^n.
            let shift = vdupq_n_f32(SHIFT + 127.0);
            let kn = vfmaq_f32(shift, x, vdupq_n_f32(-LOG2E));
            let n = vsubq_f32(kn, shift);
            let r = vfmaq_f32(x, n, vdupq_n_f32(LN2));
            let mut p = vdupq_n_f32(-P5);
            for c in [P4, -P3, P2, -P1, P0] {
                p = vfmaq_f32(vdupq_n_f32(c), p, r);
            }
            let e = vreinterpretq_f32_u32(vshlq_n_u32::<23>(vreinterpretq_u32_f32(kn)));
            vmulq_f32(p, e)
        }
    }

    #[inline(always)]
    fn clamp(x: float32x4_t) -> float32x4_t {
        // SAFETY: NEON is enabled for this target (the module is compiled only then).
        unsafe { vminq_f32(vmaxq_f32(x, vdupq_n_f32(-CLAMP)), vdupq_n_f32(CLAMP)) }
    }

    /// `sigmoid(x)`, relative error ≤ 1e-6.
    #[inline(always)]
    pub fn sigmoid(x: float32x4_t) -> float32x4_t {
        // SAFETY: NEON is enabled for this target (the module is compiled only then).
        unsafe {
            let one = vdupq_n_f32(1.0);
            vdivq_f32(one, vaddq_f32(one, exp_neg(clamp(x))))
        }
    }

    /// `x · sigmoid(x)`, relative error ≤ 1e-6.
    #[inline(always)]
    pub fn swish(x: float32x4_t) -> float32x4_t {
        // SAFETY: NEON is enabled for this target (the module is compiled only then).
        unsafe { vdivq_f32(x, vaddq_f32(vdupq_n_f32(1.0), exp_neg(clamp(x)))) }
    }

    /// `act(x)` lane-wise.
    #[inline(always)]
    pub fn apply(act: Act, x: float32x4_t) -> float32x4_t {
        // SAFETY: NEON is enabled for this target (the module is compiled only then).
        unsafe {
            let zero = vdupq_n_f32(0.0);
            match act {
                Act::None => x,
                Act::Relu => vmaxq_f32(x, zero),
                Act::Relu6 => vminq_f32(vmaxq_f32(x, zero), vdupq_n_f32(6.0)),
                Act::Swish => swish(x),
                Act::Sigmoid => sigmoid(x),
                Act::Clip { min, max } => {
                    vminq_f32(vmaxq_f32(x, vdupq_n_f32(min)), vdupq_n_f32(max))
                }
                Act::HardSigmoid { alpha, beta } => {
                    let v = vfmaq_f32(vdupq_n_f32(beta), x, vdupq_n_f32(alpha));
                    vminq_f32(vmaxq_f32(v, zero), vdupq_n_f32(1.0))
                }
                Act::HardSwish => {
                    let v = vfmaq_f32(vdupq_n_f32(0.5), x, vdupq_n_f32(1.0 / 6.0));
                    vmulq_f32(x, vminq_f32(vmaxq_f32(v, zero), vdupq_n_f32(1.0)))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_fix_their_activation_and_any_keeps_the_argument() {
        let all = [
            Act::None,
            Act::Relu,
            Act::Relu6,
            Act::Swish,
            Act::Sigmoid,
            Act::HardSwish,
            Act::Clip {
                min: -1.0,
                max: 2.0,
            },
            Act::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
        ];
        for a in all {
            assert_eq!(a.fixed::<{ code::ANY }>(), a);
            let fixed = match a.code() {
                code::NONE => a.fixed::<{ code::NONE }>(),
                code::SWISH => a.fixed::<{ code::SWISH }>(),
                code::RELU6 => a.fixed::<{ code::RELU6 }>(),
                code::SIGMOID => a.fixed::<{ code::SIGMOID }>(),
                code::ANY => a,
                c => panic!("unknown code {c}"),
            };
            assert_eq!(fixed, a);
        }
        assert_eq!(Act::Relu.code(), code::ANY);
        assert_ne!(Act::Swish.code(), Act::Sigmoid.code());
    }

    #[test]
    #[should_panic(expected = "activation code 2 given for Relu6")]
    fn a_code_that_is_not_the_argument_panics() {
        Act::Relu6.fixed::<{ code::SWISH }>();
    }

    /// The interleaved swish and sigmoid of a register tile give the one-vector ones bit for bit,
    /// for every tile size up to 20 vectors (past one 16-vector step), on ordinary and
    /// extreme inputs.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn interleaved_swish_and_sigmoid_are_the_vector_ones_bit_for_bit() {
        use core::arch::x86_64::*;
        assert!(
            Isa::available().contains(&Isa::Avx2),
            "x86-64 machines this project runs on have AVX2"
        );
        #[target_feature(enable = "avx2,fma")]
        unsafe fn both(values: &[f32], n: usize) -> (Vec<u32>, Vec<u32>) {
            // SAFETY: AVX2 and FMA were checked above; loads and stores stay in 8-float
            // chunks of local arrays.
            unsafe {
                let mut tile: Vec<__m256> = values
                    .chunks_exact(8)
                    .take(n)
                    .map(|c| _mm256_loadu_ps(c.as_ptr()))
                    .collect();
                let mut sig = tile.clone();
                let one: Vec<__m256> = tile
                    .iter()
                    .map(|&v| avx2::swish(v))
                    .chain(tile.iter().map(|&v| avx2::sigmoid(v)))
                    .collect();
                avx2::swish_each(&mut tile);
                avx2::sigmoid_each(&mut sig);
                tile.extend(sig);
                let bits = |vs: &[__m256]| {
                    let mut out = vec![0f32; 8 * vs.len()];
                    for (v, o) in vs.iter().zip(out.chunks_exact_mut(8)) {
                        _mm256_storeu_ps(o.as_mut_ptr(), *v);
                    }
                    out.iter().map(|f| f.to_bits()).collect::<Vec<u32>>()
                };
                (bits(&tile), bits(&one))
            }
        }
        let mut values: Vec<f32> = (0..160).map(|i| (i as f32 - 80.0) * 0.37).collect();
        values[..8].copy_from_slice(&[-1e9, -100.0, -87.5, -0.0, 0.0, 1e-30, 87.5, 1e9]);
        for n in 1..=20 {
            // SAFETY: AVX2 and FMA are present (asserted above).
            let (tile, one) = unsafe { both(&values, n) };
            assert_eq!(tile, one, "{n} vectors");
        }
    }
}
