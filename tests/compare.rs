//! The one comparison every golden test uses (included by path into each test crate:
//! `tests/lib.rs`, the compiler's integration tests, the consumer crates), so there is a
//! single rule and a single NaN policy:
//!
//! - error: `max |ours − ref|`, infinite when either side holds a NaN or an infinity (a
//!   plain `fold(0.0, f64::max)` drops NaN, and an all-NaN output would pass);
//! - tolerance: `1e-4 · max(1, max |ref − mean(ref)|)`, the fixtures' rule (infinite spread,
//!   hence a failing comparison, for a reference with NaN or infinity... see `max_error`).
#![allow(dead_code)] // Each crate uses a different part.

/// Max absolute difference; infinite when either side holds a NaN or an infinity.
///
/// # Panics
/// If the lengths differ.
pub fn max_error(ours: &[f32], reference: &[f32]) -> f64 {
    assert_eq!(
        ours.len(),
        reference.len(),
        "compared tensors differ in length"
    );
    ours.iter()
        .zip(reference)
        .map(|(x, y)| {
            if x.is_finite() && y.is_finite() {
                (*x as f64 - *y as f64).abs()
            } else {
                f64::INFINITY
            }
        })
        .fold(0.0, f64::max)
}

/// `max(1, max |ref − mean(ref)|)`: what the tolerance scales with.
pub fn spread(reference: &[f32]) -> f64 {
    let mean = reference.iter().map(|&v| v as f64).sum::<f64>() / reference.len().max(1) as f64;
    reference
        .iter()
        .map(|&v| (v as f64 - mean).abs())
        .fold(0.0, f64::max)
        .max(1.0)
}

/// The fixtures' tolerance for one reference tensor: `1e-4 · max(1, spread)`.
pub fn tolerance(reference: &[f32]) -> f64 {
    1e-4 * spread(reference)
}

/// `Ok((error, tolerance))` when `ours` is within `factor ·` [`tolerance`] of `reference`,
/// otherwise a message naming `name`. NaN or infinity on either side fails.
pub fn within(
    name: &str,
    ours: &[f32],
    reference: &[f32],
    factor: f64,
) -> Result<(f64, f64), String> {
    if ours.len() != reference.len() {
        return Err(format!(
            "{name}: {} values, the reference has {}",
            ours.len(),
            reference.len()
        ));
    }
    let err = max_error(ours, reference);
    let tol = factor * tolerance(reference);
    if err <= tol {
        Ok((err, tol))
    } else {
        Err(format!(
            "{name}: max error {err:e} exceeds the tolerance {tol:e}"
        ))
    }
}
