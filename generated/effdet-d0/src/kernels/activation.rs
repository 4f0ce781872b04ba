//! An activation over a whole tensor, in place: the generic `Activation` op of imported
//! graphs (an activation no conv or sum took into its epilogue), on the runtime's vector
//! activations (`effdet_runtime::kernels::act`), whose accuracy the tests here measure.

use ::effdet_runtime::kernels::act::apply_portable;
#[cfg(target_arch = "x86_64")]
use ::effdet_runtime::kernels::act::isa_ok;
use ::effdet_runtime::kernels::{Act, Isa};

/// Applies `act` to every element of `x` in place, with the instruction set `isa`
/// (which must be one this CPU supports, i.e. from [`Isa::detect`] or [`Isa::available`]).
#[inline]
pub fn apply_slice(isa: Isa, act: Act, x: &mut [f32]) {
    if act == Act::None {
        return;
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            assert!(
                isa_ok(isa),
                "apply_slice: AVX-512F not supported by this CPU"
            );
            // SAFETY: the CPU supports AVX-512F and FMA (checked just above).
            unsafe { avx512::apply_slice(act, x) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            assert!(
                isa_ok(isa),
                "apply_slice: AVX2/FMA not supported by this CPU"
            );
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { avx2::apply_slice(act, x) }
        }
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        Isa::Neon => neon::apply_slice(act, x),
        _ => apply_portable(act, x),
    }
}

/// [`apply_slice`] for AVX-512.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use ::effdet_runtime::kernels::act::avx512::apply;
    use ::effdet_runtime::kernels::Act;
    use core::arch::x86_64::*;

    /// [`super::apply_slice`] for AVX-512.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and FMA.
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn apply_slice(act: Act, x: &mut [f32]) {
        let n = x.len();
        let p = x.as_mut_ptr();
        let mut i = 0;
        // SAFETY: every access is within x[..n]: full vectors while i + 16 ≤ n, then one
        // masked load/store of the n − i < 16 remaining lanes.
        unsafe {
            while i + 64 <= n {
                let a = apply(act, _mm512_loadu_ps(p.add(i)));
                let b = apply(act, _mm512_loadu_ps(p.add(i + 16)));
                let c = apply(act, _mm512_loadu_ps(p.add(i + 32)));
                let d = apply(act, _mm512_loadu_ps(p.add(i + 48)));
                _mm512_storeu_ps(p.add(i), a);
                _mm512_storeu_ps(p.add(i + 16), b);
                _mm512_storeu_ps(p.add(i + 32), c);
                _mm512_storeu_ps(p.add(i + 48), d);
                i += 64;
            }
            while i + 16 <= n {
                _mm512_storeu_ps(p.add(i), apply(act, _mm512_loadu_ps(p.add(i))));
                i += 16;
            }
            if i < n {
                let m: __mmask16 = (1u16 << (n - i)) - 1;
                let v = apply(act, _mm512_maskz_loadu_ps(m, p.add(i)));
                _mm512_mask_storeu_ps(p.add(i), m, v);
            }
        }
    }
}

/// [`apply_slice`] for AVX2.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use ::effdet_runtime::kernels::act::avx2::{apply, first_lanes};
    use ::effdet_runtime::kernels::Act;
    use core::arch::x86_64::*;

    /// [`super::apply_slice`] for AVX2.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn apply_slice(act: Act, x: &mut [f32]) {
        let n = x.len();
        let p = x.as_mut_ptr();
        let mut i = 0;
        // SAFETY: every access is within x[..n]: full vectors while i + 8 ≤ n, then one
        // masked load/store of the n − i < 8 remaining lanes.
        unsafe {
            while i + 32 <= n {
                let a = apply(act, _mm256_loadu_ps(p.add(i)));
                let b = apply(act, _mm256_loadu_ps(p.add(i + 8)));
                let c = apply(act, _mm256_loadu_ps(p.add(i + 16)));
                let d = apply(act, _mm256_loadu_ps(p.add(i + 24)));
                _mm256_storeu_ps(p.add(i), a);
                _mm256_storeu_ps(p.add(i + 8), b);
                _mm256_storeu_ps(p.add(i + 16), c);
                _mm256_storeu_ps(p.add(i + 24), d);
                i += 32;
            }
            while i + 8 <= n {
                _mm256_storeu_ps(p.add(i), apply(act, _mm256_loadu_ps(p.add(i))));
                i += 8;
            }
            if i < n {
                let m = first_lanes(n - i);
                let v = apply(act, _mm256_maskload_ps(p.add(i), m));
                _mm256_maskstore_ps(p.add(i), m, v);
            }
        }
    }
}

/// [`apply_slice`] for NEON.
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
mod neon {
    use ::effdet_runtime::kernels::act::neon::apply;
    use ::effdet_runtime::kernels::Act;
    use core::arch::aarch64::*;

    /// [`super::apply_slice`] for NEON: whole vectors, then the tail (fewer than 4 values)
    /// through a padded copy, so every value gets the same arithmetic wherever a slice
    /// starts (results do not depend on how threads split the work).
    pub fn apply_slice(act: Act, x: &mut [f32]) {
        let mut chunks = x.chunks_exact_mut(4);
        for c in &mut chunks {
            // SAFETY: `c` holds exactly 4 floats.
            unsafe { vst1q_f32(c.as_mut_ptr(), apply(act, vld1q_f32(c.as_ptr()))) }
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let mut t = [0f32; 4];
            t[..tail.len()].copy_from_slice(tail);
            // SAFETY: `t` holds exactly 4 floats.
            unsafe { vst1q_f32(t.as_mut_ptr(), apply(act, vld1q_f32(t.as_ptr()))) }
            let n = tail.len();
            tail.copy_from_slice(&t[..n]);
        }
    }
}

