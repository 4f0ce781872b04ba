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

#[cfg(test)]
mod tests {
    use super::*;

    fn all_acts() -> Vec<Act> {
        vec![
            Act::None,
            Act::Relu,
            Act::Relu6,
            Act::Swish,
            Act::Sigmoid,
            Act::Clip {
                min: -1.5,
                max: 2.25,
            },
            Act::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
            Act::HardSwish,
        ]
    }

    fn reference(act: Act, x: f32) -> f64 {
        let x = x as f64;
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        match act {
            Act::None => x,
            Act::Relu => x.max(0.0),
            Act::Relu6 => x.clamp(0.0, 6.0),
            Act::Swish => x * sig(x),
            Act::Sigmoid => sig(x),
            Act::Clip { min, max } => x.max(min as f64).min(max as f64),
            Act::HardSigmoid { alpha, beta } => (alpha as f64 * x + beta as f64).clamp(0.0, 1.0),
            Act::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
        }
    }

    /// Dense grid over [−lim, lim] plus the special values; odd length to hit the tails.
    fn inputs(lim: f32) -> Vec<f32> {
        let n = 200_001;
        let mut v: Vec<f32> = (0..n)
            .map(|i| -lim + 2.0 * lim * i as f32 / (n - 1) as f32)
            .collect();
        v.extend([0.0, -0.0, 1e-30, -1e-30, 1e-3, -1e-3, 6.0, 3.0, -3.0]);
        v
    }

    /// Max relative error of apply_slice(isa) vs the f64 reference, over |x| ≤ lim.
    fn max_rel_err(isa: Isa, act: Act, lim: f32) -> f64 {
        let xs = inputs(lim);
        let mut ys = xs.clone();
        apply_slice(isa, act, &mut ys);
        let mut worst = 0.0f64;
        for (&x, &y) in xs.iter().zip(&ys) {
            let r = reference(act, x);
            let err = (y as f64 - r).abs();
            let err = match act {
                // Relative error (absolute below 1e-30, where the clamped tails live).
                Act::Swish | Act::Sigmoid => err / r.abs().max(1e-30),
                // Piecewise-linear ones: relative, absolute below 1 (an FMA and a separate
                // multiply and add differ by an ulp of the product, not of the result).
                _ => err / r.abs().max(1.0),
            };
            worst = worst.max(err);
        }
        worst
    }

    #[test]
    fn simd_matches_reference() {
        for isa in Isa::available() {
            for act in all_acts() {
                let lim = 87.0;
                let err = max_rel_err(isa, act, lim);
                let tol = match (isa, act) {
                    (_, Act::Swish | Act::Sigmoid) => 1e-6,
                    // Scalar and exact ops: f32 rounding only.
                    _ => 2e-7,
                };
                assert!(err <= tol, "{isa:?} {act:?}: max rel err {err:e} > {tol:e}");
            }
        }
    }

    #[test]
    fn extreme_inputs_stay_finite() {
        for isa in Isa::available() {
            for act in [Act::Swish, Act::Sigmoid] {
                let xs = [
                    -1e30f32,
                    -1000.0,
                    -100.0,
                    -88.5,
                    88.5,
                    100.0,
                    1e30,
                    f32::MAX,
                ];
                let mut ys = xs;
                apply_slice(isa, act, &mut ys);
                for (&x, &y) in xs.iter().zip(&ys) {
                    assert!(y.is_finite(), "{isa:?} {act:?}({x}) = {y}");
                    let r = reference(act, x);
                    if x < 0.0 {
                        assert!((y as f64 - r).abs() <= 2e-38 * x.abs().max(1.0) as f64);
                    } else {
                        assert!((y as f64 - r).abs() <= 1e-6 * r.abs());
                    }
                }
            }
        }
    }

    #[test]
    fn every_length_is_covered() {
        for isa in Isa::available() {
            for n in 0..=70 {
                let xs: Vec<f32> = (0..n).map(|i| i as f32 * 0.37 - 9.0).collect();
                let mut ys = xs.clone();
                apply_slice(isa, Act::Relu6, &mut ys);
                for (x, y) in xs.iter().zip(&ys) {
                    assert_eq!(*y, Act::Relu6.apply(*x));
                }
            }
        }
    }

    /// Max relative error of apply_slice(isa) against the scalar definition `Act::apply`
    /// (itself within ~1 ulp of the f64 reference) over |x| ≤ lim.
    fn max_rel_vs_scalar(isa: Isa, act: Act, lim: f32) -> f64 {
        let xs = inputs(lim);
        let mut ys = xs.clone();
        apply_slice(isa, act, &mut ys);
        xs.iter()
            .zip(&ys)
            .map(|(&x, &y)| {
                let r = act.apply(x) as f64;
                (y as f64 - r).abs() / r.abs().max(1e-30)
            })
            .fold(0.0, f64::max)
    }

    #[test]
    fn simd_matches_scalar_definition() {
        for isa in Isa::available() {
            for act in [Act::Swish, Act::Sigmoid] {
                let err = max_rel_vs_scalar(isa, act, 87.0);
                assert!(err <= 1e-6, "{isa:?} {act:?}: {err:e} from Act::apply");
            }
        }
    }

    /// Prints the measured accuracy (run with `--nocapture`).
    #[test]
    fn report_accuracy() {
        for isa in Isa::available() {
            for act in [Act::Swish, Act::Sigmoid] {
                for lim in [10.0, 87.0] {
                    let e = max_rel_err(isa, act, lim);
                    let s = max_rel_vs_scalar(isa, act, lim);
                    println!(
                        "{isa:?} {act:?} |x|<={lim}: max rel err {e:.3e} vs f64, {s:.3e} vs Act::apply"
                    );
                }
            }
        }
    }
}
