//! The floating-point functions the runtime's scalar code calls that `core` lacks on stable
//! Rust (`exp`, `ln`, `sqrt`, `powf`, `round_ties_even`), for `no_std` builds.
//!
//! With the `std` feature the inherent methods of `f32`/`f64` are used (they take precedence
//! over a trait's methods of the same name, and [`Float`] is not even in scope then). Without
//! it, `crate::prelude` brings [`Float`] into scope, so the same `x.exp()` resolves here.
//!
//! Accuracy: every function computes in `f64` with range reduction and a series whose
//! truncation error is below `f64` rounding, so the `f64` results are within a few ulp and
//! the `f32` ones (rounded from them) within about one ulp of the correctly rounded value — the
//! same as the platform's `libm`, which is what keeps a `no_std` build's detections equal to
//! a `std` build's (`tests/consumers` checks it on D0). These run in post-processing and in
//! the scalar fallback, never in the SIMD kernels (they have their own `exp`).

/// `ln 2` split in a high part with trailing zero bits (exact in `k · LN2_HI` for
/// `|k| < 2^11`) and the rest, for the range reduction of [`exp`].
const LN2_HI: f64 = 6.931_471_803_691_238e-1;
const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;

/// `e^x`. Overflows to `+∞` above ~709.78, underflows to `0` below ~-745.1; NaN stays NaN.
pub fn exp(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x > 709.782_712_893_384 {
        return f64::INFINITY;
    }
    if x < -745.133_219_101_941_1 {
        return 0.0;
    }
    // x = k·ln 2 + r, |r| ≤ ln2/2 (k rounded to nearest: ties are harmless here).
    let kf = x * core::f64::consts::LOG2_E;
    let k = if kf >= 0.0 {
        (kf + 0.5) as i64
    } else {
        (kf - 0.5) as i64
    };
    let r = (x - k as f64 * LN2_HI) - k as f64 * LN2_LO;
    // e^r by its Taylor series to r^13/13!: |r| ≤ 0.347, so the remainder is < 5e-18.
    let mut term = 1.0;
    let mut sum = 1.0;
    for i in 1..=13 {
        term *= r / i as f64;
        sum += term;
    }
    scale2(sum, k)
}

/// `v · 2^k` for `v` in [0.7, 1.5] and `k` from [`exp`]'s range, through at most two exact
/// power-of-two factors (so subnormal results round once).
fn scale2(v: f64, k: i64) -> f64 {
    let pow2 = |e: i64| f64::from_bits(((e + 1023) as u64) << 52);
    if k > 1023 {
        v * pow2(1023) * pow2(k - 1023)
    } else if k < -1022 {
        v * pow2(-1022) * pow2(k + 1022)
    } else {
        v * pow2(k)
    }
}

/// The natural logarithm: `-∞` at 0, NaN below 0 and for NaN, `+∞` at `+∞`.
pub fn ln(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 {
        return f64::NEG_INFINITY;
    }
    if x == f64::INFINITY {
        return x;
    }
    // x = m · 2^e with m in [√½, √2); subnormals scaled into the normal range first.
    let (mut bits, mut e) = (x.to_bits(), 0i64);
    if bits >> 52 == 0 {
        bits = (x * f64::from_bits((1023u64 + 54) << 52)).to_bits();
        e -= 54;
    }
    e += ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    if m > core::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    // ln m = 2·atanh(s), s = (m − 1)/(m + 1), |s| ≤ 0.1716: the series to s^25 is below
    // f64 rounding.
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut term = s;
    let mut sum = 0.0;
    let mut n = 1.0;
    while n < 27.0 {
        sum += term / n;
        term *= s2;
        n += 2.0;
    }
    2.0 * sum + e as f64 * core::f64::consts::LN_2
}

/// The square root (NaN below 0), within one ulp.
pub fn sqrt(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 || x == f64::INFINITY {
        return x;
    }
    // Scale by an even power of two into [1, 4), Newton from a linear guess (each step
    // doubles the correct bits: 6 steps from ~3 bits), then scale back.
    let bits = x.to_bits();
    let (mut y, mut e) = if bits >> 52 == 0 {
        (x * f64::from_bits((1023u64 + 54) << 52), -54i64)
    } else {
        (x, 0)
    };
    let be = ((y.to_bits() >> 52) & 0x7ff) as i64 - 1023;
    let half = be.div_euclid(2);
    y = f64::from_bits(
        (y.to_bits() & ((1u64 << 52) - 1)) | (((be - 2 * half + 1023) as u64) << 52),
    );
    e += 2 * half;
    let mut g = 0.5 + 0.5 * y;
    for _ in 0..6 {
        g = 0.5 * (g + y / g);
    }
    // One correction to the neighbour whose square is nearer (the squares are rounded, so
    // this is within an ulp of the correctly rounded root, not always equal to it).
    let up = f64::from_bits(g.to_bits() + 1);
    let down = f64::from_bits(g.to_bits() - 1);
    let err = |c: f64| (c * c - y).abs();
    if err(up) < err(g) {
        g = up;
    } else if err(down) < err(g) {
        g = down;
    }
    g * f64::from_bits(((e / 2 + 1023) as u64) << 52)
}

/// `x` rounded to the nearest integer, ties to even.
pub fn round_ties_even(x: f32) -> f32 {
    // Adding and subtracting 2^23 leaves no fraction bits, and IEEE rounding is to nearest,
    // ties to even; values this large are integers already.
    const BIG: f32 = 8_388_608.0;
    if x.is_nan() || x.abs() >= BIG {
        return x;
    }
    let big = if x < 0.0 { -BIG } else { BIG };
    (x + big) - big
}

/// The methods the runtime calls on `f32`/`f64` that only `std` has, for `no_std` builds
/// (see the module docs).
pub trait Float: Sized {
    /// `e^self`.
    fn exp(self) -> Self;
    /// The natural logarithm.
    fn ln(self) -> Self;
    /// The square root.
    fn sqrt(self) -> Self;
    /// `self^p` for `self > 0`.
    fn powf(self, p: Self) -> Self;
    /// Rounded to the nearest integer, ties to even.
    fn round_ties_even(self) -> Self;
}

impl Float for f64 {
    fn exp(self) -> f64 {
        exp(self)
    }
    fn ln(self) -> f64 {
        ln(self)
    }
    fn sqrt(self) -> f64 {
        sqrt(self)
    }
    fn powf(self, p: f64) -> f64 {
        exp(p * ln(self))
    }
    fn round_ties_even(self) -> f64 {
        const BIG: f64 = 4_503_599_627_370_496.0;
        if self.is_nan() || self.abs() >= BIG {
            return self;
        }
        let big = if self < 0.0 { -BIG } else { BIG };
        (self + big) - big
    }
}

impl Float for f32 {
    fn exp(self) -> f32 {
        exp(f64::from(self)) as f32
    }
    fn ln(self) -> f32 {
        ln(f64::from(self)) as f32
    }
    fn sqrt(self) -> f32 {
        sqrt(f64::from(self)) as f32
    }
    fn powf(self, p: f32) -> f32 {
        exp(f64::from(p) * ln(f64::from(self))) as f32
    }
    fn round_ties_even(self) -> f32 {
        round_ties_even(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative error in units of `f64::EPSILON`.
    fn ulps(got: f64, want: f64) -> f64 {
        if got == want {
            return 0.0;
        }
        ((got - want) / want).abs() / f64::EPSILON
    }

    #[test]
    fn exp_matches_std_within_a_few_ulp() {
        let mut worst = 0.0f64;
        let mut x = -740.0;
        while x < 709.0 {
            worst = worst.max(ulps(exp(x), x.exp()));
            x += 0.137;
        }
        for x in [-1e-300, 0.0, 1e-10, 0.5, 1.0, -1.0, 88.0, -87.0, 709.7] {
            worst = worst.max(ulps(exp(x), x.exp()));
        }
        assert!(worst < 4.0, "exp: {worst} ulp");
        assert_eq!(exp(710.0), f64::INFINITY);
        assert_eq!(exp(-746.0), 0.0);
        assert!(exp(f64::NAN).is_nan());
        // Subnormal results.
        let (g, w) = (exp(-740.0), (-740.0f64).exp());
        assert!((g - w).abs() <= w * 1e-12, "{g} vs {w}");
    }

    #[test]
    fn ln_matches_std_within_a_few_ulp() {
        let mut worst = 0.0f64;
        for i in 1..4000 {
            let x = (i as f64 * 0.731).powi(3) * 1e-6;
            worst = worst.max(ulps(ln(x), x.ln()));
        }
        for x in [1e-310, 1e-300, 0.5, 2.0, 1e300, core::f64::consts::E] {
            worst = worst.max(ulps(ln(x), x.ln()));
        }
        assert!(worst < 4.0, "ln: {worst} ulp");
        assert_eq!(ln(1.0), 0.0);
        assert_eq!(ln(0.0), f64::NEG_INFINITY);
        assert!(ln(-1.0).is_nan());
    }

    #[test]
    fn sqrt_is_within_an_ulp() {
        for i in 0..5000 {
            let x = (i as f64 * 1.37).powi(5) * 1e-9 + 1e-320 * i as f64;
            let (g, w) = (sqrt(x), x.sqrt());
            assert!(
                g.to_bits().abs_diff(w.to_bits()) <= 1,
                "sqrt({x}): {g} vs {w}"
            );
        }
        assert_eq!(sqrt(4.0), 2.0);
        assert!(sqrt(-1.0).is_nan());
        assert_eq!(sqrt(f64::INFINITY), f64::INFINITY);
    }

    #[test]
    fn f32_methods_match_std() {
        for i in -2000..2000 {
            let x = i as f32 * 0.043;
            let (g, w) = (Float::exp(x), x.exp());
            assert!(
                (g - w).abs() <= w * 2.0 * f32::EPSILON,
                "exp({x}): {g} vs {w}"
            );
            let y = (i32::abs(i) as f32 + 0.5) * 0.37;
            let (g, w) = (Float::ln(y), y.ln());
            assert!(
                (g - w).abs() <= 2.0 * f32::EPSILON * w.abs().max(1.0),
                "ln({y})"
            );
            let (g, w) = (Float::sqrt(y), y.sqrt());
            assert!(
                g.to_bits().abs_diff(w.to_bits()) <= 1,
                "sqrt({y}): {g} vs {w}"
            );
            let v = i as f32 * 0.25;
            assert_eq!(Float::round_ties_even(v), v.round_ties_even(), "round({v})");
        }
        let (g, w) = (Float::powf(2f64, 1.0 / 3.0), 2f64.powf(1.0 / 3.0));
        assert!((g - w).abs() < 4.0 * f64::EPSILON, "{g} vs {w}");
        assert_eq!(Float::round_ties_even(2.5f32), 2.0);
        assert_eq!(Float::round_ties_even(-3.5f32), -4.0);
        assert!(Float::exp(f32::NAN).is_nan());
    }
}
