//! A minimal vector abstraction for the non-GEMM kernels (depthwise, dense, fuse, SE).
//!
//! Each kernel body is written once, generic over [`Vf32`], as `#[inline(always)]` code;
//! a thin `#[target_feature]` entry point per ISA instantiates it, so every helper here is
//! inlined into a function compiled for that ISA. `f32` itself implements [`Vf32`] with one
//! lane: the portable scalar path is the same algorithm.
//!
//! All methods are `unsafe`: the pointer ones read or write `LANES` (or `n`) floats, and the
//! x86 implementations must only run on a CPU with the matching features, which the kernels
//! guarantee by checking the instruction set they are compiled for ([`require`]).

use super::{Act, Isa};

/// `isa` if this CPU can run it, else the best lower one that it can: a safe kernel entry
/// point must not execute AVX-512 just because a caller passed `Isa::Avx512` (costs a
/// cached feature lookup).
#[inline]
pub fn usable(isa: Isa) -> Isa {
    match (isa, Isa::detect()) {
        (Isa::Avx512, best @ (Isa::Avx512 | Isa::Avx2)) => best,
        (Isa::Avx2, Isa::Avx512 | Isa::Avx2) => Isa::Avx2,
        (Isa::Neon, Isa::Neon) => Isa::Neon,
        _ => Isa::Scalar,
    }
}

/// `Isa::of(I)`, the instruction set a kernel compiled for `I` ([`super::isa_code`]) runs,
/// after checking that this CPU can run it: a kernel's entry point calls this before any of
/// `I`'s instructions run (a cached feature lookup), which is what its `unsafe` calls of
/// `#[target_feature]` functions rely on. A generated model passes the instruction set it
/// detected, so it never fails there.
///
/// # Panics
/// If this CPU cannot run `I`, naming `what` (the kernel).
#[inline]
#[track_caller]
pub fn require<const I: u8>(what: &str) -> Isa {
    let isa = Isa::of(I);
    assert!(
        super::act::isa_ok(isa),
        "{what}: compiled for {isa:?}, which this CPU does not run"
    );
    isa
}

/// Evaluates `$body` with `$act` bound to a compile-time constant activation: the one of
/// activation code `$code` (a const parameter: `act::code`) when it is fixed, which is how
/// a generated model calls a kernel, so only that copy is compiled; with `code::ANY`, one
/// copy per common activation (swish, none, ReLU6 of the Lite models) chosen by `$value`
/// at run time, and the run-time value for the rest, so that inlined epilogues lose their
/// per-vector `match` where it matters (ReLU6's made Lite0 3–4% faster with the conv1x1
/// one, Intel Xeon).
#[macro_export]
#[doc(hidden)]
macro_rules! specialize_act {
    ($code:expr, $value:expr, $act:ident => $body:expr) => {
        // A `match` on the constant itself: rustc compiles only the arm it selects.
        match $code {
            $crate::kernels::act::code::ANY => match $value {
                $crate::kernels::Act::Swish => {
                    let $act = $crate::kernels::Act::Swish;
                    $body
                }
                $crate::kernels::Act::None => {
                    let $act = $crate::kernels::Act::None;
                    $body
                }
                $crate::kernels::Act::Relu6 => {
                    let $act = $crate::kernels::Act::Relu6;
                    $body
                }
                $act => $body,
            },
            _ => {
                let $act = $value.fixed::<{ $code }>();
                $body
            }
        }
    };
}
pub use crate::specialize_act;

/// A vector of `LANES` f32 values.
///
/// # Safety
///
/// Every method has one contract, stated here once (hence the `allow`): the pointer
/// methods read or write `LANES` (or `n`) floats at `p`, which must be valid for it; an
/// x86 or NEON implementation runs only on a CPU with its features (kernels compiled for
/// an instruction set check it with [`require`]).
#[allow(clippy::missing_safety_doc)]
pub trait Vf32: Copy {
    /// Lanes per vector.
    const LANES: usize;
    /// Every lane `v`.
    unsafe fn splat(v: f32) -> Self;
    /// Reads `LANES` floats from `p` (unaligned).
    unsafe fn load(p: *const f32) -> Self;
    /// Writes `LANES` floats to `p` (unaligned).
    unsafe fn store(p: *mut f32, v: Self);
    /// Reads `n < LANES` floats from `p`; the other lanes hold `fill`.
    unsafe fn load_n(p: *const f32, n: usize, fill: f32) -> Self;
    /// Writes the first `n < LANES` lanes to `p`.
    unsafe fn store_n(p: *mut f32, v: Self, n: usize);
    /// `a + b`, lane by lane.
    unsafe fn add(a: Self, b: Self) -> Self;
    /// `a · b`, lane by lane.
    unsafe fn mul(a: Self, b: Self) -> Self;
    /// `a · b + c`.
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
    /// The larger of `a` and `b`, lane by lane.
    unsafe fn max(a: Self, b: Self) -> Self;
    /// The sum of the lanes.
    unsafe fn sum(a: Self) -> f32;
    /// Splits the `2·LANES` values `a ++ b` into their even- and odd-indexed halves.
    unsafe fn deinterleave(a: Self, b: Self) -> (Self, Self);
    /// `[a0, a0, a1, a1, …]`: each of the low `LANES/2` lanes twice (for 1 lane: `a`).
    unsafe fn dup_low(a: Self) -> Self;
    /// The activation `act` on every lane.
    unsafe fn act(a: Self, act: Act) -> Self;
    /// Transposes the `LANES × LANES` matrix whose rows are `r[..LANES]` (the rest of `r`
    /// is left as it is). This default goes through memory; AVX-512 and AVX2 shuffle in
    /// registers. (Only the x86 channel-vectorized depthwise conv uses it so far.)
    #[inline(always)]
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    unsafe fn transpose(r: &mut [Self; 16]) {
        let l = Self::LANES;
        let (mut m, mut t) = ([0.0f32; 256], [0.0f32; 256]);
        // SAFETY: `l ≤ 16` rows of `l` floats within the 256-float buffers.
        unsafe {
            for (i, v) in r.iter().enumerate().take(l) {
                Self::store(m.as_mut_ptr().add(i * l), *v);
            }
            for i in 0..l {
                for j in 0..l {
                    t[i * l + j] = m[j * l + i];
                }
            }
            for (i, v) in r.iter_mut().enumerate().take(l) {
                *v = Self::load(t.as_ptr().add(i * l));
            }
        }
    }
    /// [`Vf32::act`] on each of a few vectors (a register tile's accumulators), with the
    /// exp-based activations interleaved across them where the ISA has a version for it;
    /// bit for bit the same results.
    #[inline(always)]
    unsafe fn act_each(v: &mut [Self], act: Act) {
        for x in v {
            // SAFETY: forwarded contract.
            *x = unsafe { Self::act(*x, act) };
        }
    }
}

impl Vf32 for f32 {
    const LANES: usize = 1;
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        v
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees `p` is valid for one read.
        unsafe { *p }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self) {
        // SAFETY: the caller guarantees `p` is valid for one write.
        unsafe { *p = v }
    }
    #[inline(always)]
    unsafe fn load_n(_: *const f32, _: usize, fill: f32) -> Self {
        // n < 1: nothing is read.
        fill
    }
    #[inline(always)]
    unsafe fn store_n(_: *mut f32, _: Self, _: usize) {}
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        a + b
    }
    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        a * b
    }
    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        // Not `mul_add`: without hardware FMA that is a slow libm call.
        a * b + c
    }
    #[inline(always)]
    unsafe fn max(a: Self, b: Self) -> Self {
        a.max(b)
    }
    #[inline(always)]
    unsafe fn sum(a: Self) -> f32 {
        a
    }
    #[inline(always)]
    unsafe fn deinterleave(a: Self, b: Self) -> (Self, Self) {
        (a, b)
    }
    #[inline(always)]
    unsafe fn dup_low(a: Self) -> Self {
        a
    }
    #[inline(always)]
    unsafe fn act(a: Self, act: Act) -> Self {
        act.apply(a)
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Act, Vf32};
    use core::arch::x86_64::*;

    impl Vf32 for __m512 {
        const LANES: usize = 16;
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            // SAFETY: AVX-512F is enabled in every caller (dispatch on Isa::Avx512).
            unsafe { _mm512_set1_ps(v) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: the caller guarantees 16 readable floats at `p`.
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: Self) {
            // SAFETY: the caller guarantees 16 writable floats at `p`.
            unsafe { _mm512_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn load_n(p: *const f32, n: usize, fill: f32) -> Self {
            let m = ((1u32 << n) - 1) as __mmask16;
            // SAFETY: masked-off lanes are not read (no fault); the first n are readable.
            unsafe { _mm512_mask_loadu_ps(_mm512_set1_ps(fill), m, p) }
        }
        #[inline(always)]
        unsafe fn store_n(p: *mut f32, v: Self, n: usize) {
            let m = ((1u32 << n) - 1) as __mmask16;
            // SAFETY: only the first n lanes are written, and they are writable.
            unsafe { _mm512_mask_storeu_ps(p, m, v) }
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            // SAFETY: AVX-512F is enabled in every caller.
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: Self, b: Self) -> Self {
            // SAFETY: AVX-512F is enabled in every caller.
            unsafe { _mm512_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            // SAFETY: AVX-512F is enabled in every caller.
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn max(a: Self, b: Self) -> Self {
            // SAFETY: AVX-512F is enabled in every caller.
            unsafe { _mm512_max_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sum(a: Self) -> f32 {
            // SAFETY: AVX-512F is enabled in every caller.
            unsafe { _mm512_reduce_add_ps(a) }
        }
        #[inline(always)]
        unsafe fn deinterleave(a: Self, b: Self) -> (Self, Self) {
            // SAFETY: AVX-512F is enabled in every caller.
            unsafe {
                let even =
                    _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
                let odd =
                    _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
                (
                    _mm512_permutex2var_ps(a, even, b),
                    _mm512_permutex2var_ps(a, odd, b),
                )
            }
        }
        #[inline(always)]
        unsafe fn dup_low(a: Self) -> Self {
            // SAFETY: AVX-512F is enabled in every caller.
            unsafe {
                let idx = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
                _mm512_permutexvar_ps(idx, a)
            }
        }
        #[inline(always)]
        unsafe fn act(a: Self, act: Act) -> Self {
            // SAFETY: AVX-512F and FMA are enabled in every caller.
            unsafe { crate::kernels::act::avx512::apply(act, a) }
        }
        #[inline(always)]
        unsafe fn transpose(r: &mut [Self; 16]) {
            // SAFETY: register-only shuffles; AVX-512F is enabled in every caller.
            unsafe {
                // 2×2 blocks of single lanes, then of pairs (within 128-bit lanes), then of
                // 128-bit lanes twice.
                let mut t = [_mm512_setzero_ps(); 16];
                for i in 0..8 {
                    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
                    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
                }
                let mut u = [_mm512_setzero_ps(); 16];
                for i in 0..4 {
                    let b = 4 * i;
                    u[b] = _mm512_shuffle_ps::<0x44>(t[b], t[b + 2]);
                    u[b + 1] = _mm512_shuffle_ps::<0xEE>(t[b], t[b + 2]);
                    u[b + 2] = _mm512_shuffle_ps::<0x44>(t[b + 1], t[b + 3]);
                    u[b + 3] = _mm512_shuffle_ps::<0xEE>(t[b + 1], t[b + 3]);
                }
                for i in 0..2 {
                    let b = 8 * i;
                    for j in 0..4 {
                        t[b + j] = _mm512_shuffle_f32x4::<0x88>(u[b + j], u[b + 4 + j]);
                        t[b + 4 + j] = _mm512_shuffle_f32x4::<0xDD>(u[b + j], u[b + 4 + j]);
                    }
                }
                for j in 0..8 {
                    r[j] = _mm512_shuffle_f32x4::<0x88>(t[j], t[8 + j]);
                    r[8 + j] = _mm512_shuffle_f32x4::<0xDD>(t[j], t[8 + j]);
                }
            }
        }
    }

    impl Vf32 for __m256 {
        const LANES: usize = 8;
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            // SAFETY: AVX2 is enabled in every caller (dispatch on Isa::Avx2).
            unsafe { _mm256_set1_ps(v) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: the caller guarantees 8 readable floats at `p`.
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: Self) {
            // SAFETY: the caller guarantees 8 writable floats at `p`.
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn load_n(p: *const f32, n: usize, fill: f32) -> Self {
            let mut v = [fill; 8];
            // SAFETY: n < 8 floats are readable at `p`; `v` has room for them.
            unsafe {
                core::ptr::copy_nonoverlapping(p, v.as_mut_ptr(), n);
                _mm256_loadu_ps(v.as_ptr())
            }
        }
        #[inline(always)]
        unsafe fn store_n(p: *mut f32, v: Self, n: usize) {
            let mut t = [0f32; 8];
            // SAFETY: `t` holds 8 floats; n < 8 floats are writable at `p`.
            unsafe {
                _mm256_storeu_ps(t.as_mut_ptr(), v);
                core::ptr::copy_nonoverlapping(t.as_ptr(), p, n);
            }
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            // SAFETY: AVX2 is enabled in every caller.
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: Self, b: Self) -> Self {
            // SAFETY: AVX2 is enabled in every caller.
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            // SAFETY: FMA is enabled in every caller.
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn max(a: Self, b: Self) -> Self {
            // SAFETY: AVX2 is enabled in every caller.
            unsafe { _mm256_max_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sum(a: Self) -> f32 {
            // SAFETY: AVX2 is enabled in every caller.
            unsafe {
                let s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_add_ss(s, _mm_movehdup_ps(s));
                _mm_cvtss_f32(s)
            }
        }
        #[inline(always)]
        unsafe fn deinterleave(a: Self, b: Self) -> (Self, Self) {
            // SAFETY: AVX2 is enabled in every caller.
            unsafe {
                // Per 128-bit lane: [a0 a2 b0 b2 | a4 a6 b4 b6]; then order the 64-bit pairs.
                let e = _mm256_shuffle_ps(a, b, 0b10_00_10_00);
                let o = _mm256_shuffle_ps(a, b, 0b11_01_11_01);
                let fix = |v: __m256| {
                    _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), 0b11_01_10_00))
                };
                (fix(e), fix(o))
            }
        }
        #[inline(always)]
        unsafe fn dup_low(a: Self) -> Self {
            // SAFETY: AVX2 is enabled in every caller.
            unsafe { _mm256_permutevar8x32_ps(a, _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3)) }
        }
        #[inline(always)]
        unsafe fn act(a: Self, act: Act) -> Self {
            // SAFETY: AVX2 and FMA are enabled in every caller.
            unsafe { crate::kernels::act::avx2::apply(act, a) }
        }
        #[inline(always)]
        unsafe fn transpose(r: &mut [Self; 16]) {
            // SAFETY: register-only shuffles; AVX2 is enabled in every caller.
            unsafe {
                let mut t = [_mm256_setzero_ps(); 8];
                for i in 0..4 {
                    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
                    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
                }
                let mut u = [_mm256_setzero_ps(); 8];
                for i in 0..2 {
                    let b = 4 * i;
                    u[b] = _mm256_shuffle_ps::<0x44>(t[b], t[b + 2]);
                    u[b + 1] = _mm256_shuffle_ps::<0xEE>(t[b], t[b + 2]);
                    u[b + 2] = _mm256_shuffle_ps::<0x44>(t[b + 1], t[b + 3]);
                    u[b + 3] = _mm256_shuffle_ps::<0xEE>(t[b + 1], t[b + 3]);
                }
                for j in 0..4 {
                    r[j] = _mm256_permute2f128_ps::<0x20>(u[j], u[4 + j]);
                    r[4 + j] = _mm256_permute2f128_ps::<0x31>(u[j], u[4 + j]);
                }
            }
        }
        #[inline(always)]
        unsafe fn act_each(v: &mut [Self], act: Act) {
            use crate::kernels::act::avx2;
            // SAFETY: AVX2 and FMA are enabled in every caller.
            unsafe {
                match act {
                    Act::Swish => avx2::swish_each(v),
                    Act::Sigmoid => avx2::sigmoid_each(v),
                    // A plain loop, not `for_each` with a closure: a closure does not
                    // inherit the caller's target features, so the intrinsics of `apply`
                    // (min/max for ReLU6) were out-of-line calls (Lite0 ~23% of its time).
                    _ => {
                        for x in v.iter_mut() {
                            *x = avx2::apply(act, *x);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
mod arm {
    use super::{Act, Vf32};
    use core::arch::aarch64::*;

    // NEON is part of the aarch64 target: the arithmetic intrinsics are safe calls here,
    // only the pointer ones need the caller's guarantee.
    impl Vf32 for float32x4_t {
        const LANES: usize = 4;
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            // SAFETY: NEON is enabled for this target (the module is compiled only then).
            unsafe { vdupq_n_f32(v) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: the caller guarantees 4 readable floats at `p`.
            unsafe { vld1q_f32(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: Self) {
            // SAFETY: the caller guarantees 4 writable floats at `p`.
            unsafe { vst1q_f32(p, v) }
        }
        #[inline(always)]
        unsafe fn load_n(p: *const f32, n: usize, fill: f32) -> Self {
            let mut v = [fill; 4];
            // SAFETY: n < 4 floats are readable at `p`; `v` has room for them.
            unsafe {
                core::ptr::copy_nonoverlapping(p, v.as_mut_ptr(), n);
                vld1q_f32(v.as_ptr())
            }
        }
        #[inline(always)]
        unsafe fn store_n(p: *mut f32, v: Self, n: usize) {
            let mut t = [0f32; 4];
            // SAFETY: `t` holds 4 floats; n < 4 floats are writable at `p`.
            unsafe {
                vst1q_f32(t.as_mut_ptr(), v);
                core::ptr::copy_nonoverlapping(t.as_ptr(), p, n);
            }
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            // SAFETY: NEON is enabled for this target (the module is compiled only then).
            unsafe { vaddq_f32(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: Self, b: Self) -> Self {
            // SAFETY: NEON is enabled for this target (the module is compiled only then).
            unsafe { vmulq_f32(a, b) }
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            // SAFETY: NEON is enabled for this target (the module is compiled only then).
            unsafe { vfmaq_f32(c, a, b) }
        }
        #[inline(always)]
        unsafe fn max(a: Self, b: Self) -> Self {
            // SAFETY: NEON is enabled for this target (the module is compiled only then).
            unsafe { vmaxq_f32(a, b) }
        }
        #[inline(always)]
        unsafe fn sum(a: Self) -> f32 {
            // SAFETY: NEON is enabled for this target (the module is compiled only then).
            unsafe { vaddvq_f32(a) }
        }
        #[inline(always)]
        unsafe fn deinterleave(a: Self, b: Self) -> (Self, Self) {
            // SAFETY: NEON is enabled for this target (the module is compiled only then).
            unsafe { (vuzp1q_f32(a, b), vuzp2q_f32(a, b)) }
        }
        #[inline(always)]
        unsafe fn dup_low(a: Self) -> Self {
            // SAFETY: NEON is enabled for this target (the module is compiled only then).
            unsafe { vzip1q_f32(a, a) }
        }
        #[inline(always)]
        unsafe fn act(a: Self, act: Act) -> Self {
            crate::kernels::act::neon::apply(act, a)
        }
    }
}

/// Helpers for the kernels' tests: a deterministic generator and a tolerance check.
#[doc(hidden)]
pub mod test_util {
    use crate::prelude::*;

    /// xorshift64*: deterministic pseudo-random values without dependencies.
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Rng {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }
        /// Uniform in [-1, 1).
        pub fn f32(&mut self) -> f32 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
            (v as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
        pub fn vec(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| self.f32()).collect()
        }
    }

    /// Checks `got` against the f64 reference `want` with a relative tolerance.
    pub fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let ok = (g as f64 - w).abs() <= tol * w.abs().max(1.0)
                || (g.is_infinite() && g as f64 == w);
            assert!(ok, "{what}: element {i}: got {g}, want {w}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Isa;

    /// Runs the lane-level checks for one vector type.
    ///
    /// # Safety
    /// The CPU must support `V`'s instruction set.
    unsafe fn check<V: Vf32>() {
        let n = V::LANES;
        let a: Vec<f32> = (0..2 * n).map(|i| i as f32).collect();
        let mut out = vec![0f32; 2 * n];
        // SAFETY: every pointer covers 2·LANES floats, or LANES² for the transpose; the caller
        // checked the CPU.
        unsafe {
            let (e, o) = V::deinterleave(V::load(a.as_ptr()), V::load(a.as_ptr().add(n)));
            V::store(out.as_mut_ptr(), e);
            V::store(out.as_mut_ptr().add(n), o);
            let want: Vec<f32> = (0..n)
                .map(|i| 2.0 * i as f32)
                .chain((0..n).map(|i| 2.0 * i as f32 + 1.0))
                .collect();
            assert_eq!(out, want);
            V::store(out.as_mut_ptr(), V::dup_low(V::load(a.as_ptr())));
            let want: Vec<f32> = (0..n)
                .map(|i| if n == 1 { 0.0 } else { (i / 2) as f32 })
                .collect();
            assert_eq!(&out[..n], &want[..]);
            assert_eq!(V::sum(V::load(a.as_ptr())), (n * (n - 1) / 2) as f32);
            for k in 0..n {
                let v = V::load_n(a.as_ptr().add(1), k, -1.0);
                out.fill(7.0);
                V::store_n(out.as_mut_ptr(), v, k);
                V::store(out.as_mut_ptr().add(n), v);
                for i in 0..n {
                    assert_eq!(out[i], if i < k { (i + 1) as f32 } else { 7.0 });
                    assert_eq!(out[n + i], if i < k { (i + 1) as f32 } else { -1.0 });
                }
            }
            // transpose: the LANES × LANES matrix of 0, 1, 2, … row by row.
            let m: Vec<f32> = (0..n * n).map(|i| i as f32).collect();
            let mut r = [V::splat(0.0); 16];
            for (i, v) in r.iter_mut().enumerate().take(n) {
                *v = V::load(m.as_ptr().add(n * i));
            }
            V::transpose(&mut r);
            let mut t = vec![0f32; n * n];
            for (i, v) in r.iter().enumerate().take(n) {
                V::store(t.as_mut_ptr().add(n * i), *v);
            }
            for i in 0..n {
                for j in 0..n {
                    assert_eq!(t[n * i + j], m[n * j + i], "{n} lanes: ({i}, {j})");
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn check512() {
        // SAFETY: the caller checked the CPU.
        unsafe { check::<core::arch::x86_64::__m512>() }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn check256() {
        // SAFETY: the caller checked the CPU.
        unsafe { check::<core::arch::x86_64::__m256>() }
    }

    #[test]
    fn lanes_behave_on_every_isa() {
        for isa in Isa::available() {
            match isa {
                // SAFETY: Isa::available lists only what this CPU supports.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => unsafe { check512() },
                // SAFETY: as above.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { check256() },
                // SAFETY: NEON is part of every aarch64 CPU.
                #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
                Isa::Neon => unsafe { check::<core::arch::aarch64::float32x4_t>() },
                // SAFETY: the scalar lane type runs anywhere.
                _ => unsafe { check::<f32>() },
            }
        }
    }
}
