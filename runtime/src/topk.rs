//! Deterministic partial top-k, for picking the best few thousand of millions of logits.
//!
//! effdet runs `torch.topk(k = 5000)` over every (anchor, class) logit: 4.4 million for D0,
//! 40 million for D7. Sorting them all would dominate post-processing, so candidates stream
//! through a buffer of at most `2k` entries that is cut back to the best `k` with
//! `select_nth_unstable_by` whenever it fills; after the first cut, anything below the current
//! k-th best is rejected, 16 values at a time with one vectorised comparison. Amortised cost
//! is O(n + k log k).
//!
//! Order is total and deterministic: higher value first, ties by lower index (torch leaves the
//! order of equal values unspecified). Values compare as `f32::total_cmp` does, so a NaN logit
//! (positive) counts as larger than any number, as it does in `torch.topk`.

use crate::prelude::*;

/// Maps an `f32` to an `i32` whose integer order is `f32::total_cmp` order.
fn sort_key(value: f32) -> i32 {
    let bits = value.to_bits() as i32;
    // Negative floats: flip the magnitude bits so that larger magnitudes sort lower.
    bits ^ ((((bits >> 31) as u32) >> 1) as i32)
}

/// Inverse of [`sort_key`] (the transform is an involution).
fn key_value(key: i32) -> f32 {
    f32::from_bits((key ^ ((((key >> 31) as u32) >> 1) as i32)) as u32)
}

/// Best first: larger key, then smaller index.
fn best_first(a: &(i32, usize), b: &(i32, usize)) -> core::cmp::Ordering {
    b.0.cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Streaming top-k selector; reusable across calls without reallocating.
#[derive(Debug, Default, Clone)]
pub(crate) struct TopK {
    k: usize,
    buf: Vec<(i32, usize)>,
    /// Key of the current k-th best once the buffer has been cut at least once.
    threshold: Option<i32>,
    /// Key below which nothing is admitted (`i32::MIN`: everything is).
    floor: i32,
}

impl TopK {
    /// Starts a new selection of the best `k` values among those not below `floor`
    /// (`f32::total_cmp` order; `None` admits every value).
    pub(crate) fn reset_above(&mut self, k: usize, floor: Option<f32>) {
        self.k = k;
        self.buf.clear();
        self.threshold = None;
        self.floor = floor.map_or(i32::MIN, sort_key);
    }

    /// Offers `value` with its (unique) `index`.
    #[cfg(test)]
    fn push(&mut self, value: f32, index: usize) {
        self.push_slice(&[value], |_| index);
    }

    /// Offers every `values[i]` with the (unique) index `index_of(i)`.
    ///
    /// Works in chunks of 16: the keys of a chunk and their maximum are computed branch-free
    /// (the compiler vectorises this), and a chunk whose maximum is below the current k-th
    /// best, which is almost every chunk once the buffer has been cut, is skipped whole.
    pub(crate) fn push_slice(&mut self, values: &[f32], index_of: impl Fn(usize) -> usize) {
        const CHUNK: usize = 16;
        if self.k == 0 {
            return;
        }
        // The floor admits everything above it until the first cut; the k-th best, which is
        // above the floor, after it.
        let mut threshold = self.threshold.unwrap_or(self.floor);
        for (c, chunk) in values.chunks(CHUNK).enumerate() {
            let mut keys = [i32::MIN; CHUNK];
            for (key, &v) in keys.iter_mut().zip(chunk) {
                *key = sort_key(v);
            }
            if keys.iter().copied().fold(i32::MIN, i32::max) < threshold {
                continue;
            }
            for (i, &key) in keys[..chunk.len()].iter().enumerate() {
                // Equal keys may still win on a smaller index.
                if key >= threshold {
                    self.buf.push((key, index_of(c * CHUNK + i)));
                    if self.buf.len() >= self.k.saturating_mul(2).max(self.k + 1) {
                        self.cut();
                        threshold = self.threshold.unwrap_or(self.floor);
                    }
                }
            }
        }
    }

    fn cut(&mut self) {
        let k = self.k;
        self.buf.select_nth_unstable_by(k - 1, best_first);
        self.buf.truncate(k);
        self.threshold = Some(self.buf[k - 1].0);
    }

    /// Finishes the selection: calls `f(value, index)` for the best `min(k, pushed)` values,
    /// best first.
    pub(crate) fn finish(&mut self, mut f: impl FnMut(f32, usize)) {
        if self.buf.len() > self.k {
            self.cut();
        }
        self.buf.sort_unstable_by(best_first);
        for &(key, index) in &self.buf {
            f(key_value(key), index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select(values: &[f32], k: usize) -> Vec<(f32, usize)> {
        let mut topk = TopK::default();
        topk.reset_above(k, None);
        for (i, &v) in values.iter().enumerate() {
            topk.push(v, i);
        }
        let mut out = Vec::new();
        topk.finish(|v, i| out.push((v, i)));
        out
    }

    /// Full sort by the same rule: the answer partial selection must reproduce.
    fn reference(values: &[f32], k: usize) -> Vec<(f32, usize)> {
        let mut all: Vec<(f32, usize)> = values.iter().copied().zip(0..).collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        all.truncate(k);
        all
    }

    fn lcg_values(n: usize, levels: u64) -> Vec<f32> {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((state >> 33) % levels) as f32 * 0.25 - 10.0
            })
            .collect()
    }

    #[test]
    fn key_order_is_total_cmp_order() {
        let values = [
            f32::NEG_INFINITY,
            -3.5,
            -1.0,
            -0.0,
            0.0,
            1e-30,
            2.0,
            f32::INFINITY,
            f32::NAN,
        ];
        for w in values.windows(2) {
            assert!(sort_key(w[0]) < sort_key(w[1]), "{w:?}");
        }
        for v in values {
            assert_eq!(key_value(sort_key(v)).to_bits(), v.to_bits());
        }
    }

    #[test]
    fn matches_full_sort_with_many_ties() {
        // 80 distinct values over 100k entries: lots of ties at the k-th place.
        let values = lcg_values(100_000, 80);
        for k in [1, 7, 5000, 99_999, 100_000, 200_000] {
            assert_eq!(select(&values, k), reference(&values, k), "k = {k}");
        }
    }

    #[test]
    fn a_floor_admits_only_values_not_below_it() {
        let values = lcg_values(50_000, 80);
        for (k, floor) in [(10, -3.0f32), (5000, 0.0), (60_000, -9.75), (100, 100.0)] {
            let mut topk = TopK::default();
            topk.reset_above(k, Some(floor));
            topk.push_slice(&values, |i| i);
            let mut got = Vec::new();
            topk.finish(|v, i| got.push((v, i)));
            let want: Vec<(f32, usize)> = reference(&values, values.len())
                .into_iter()
                .filter(|&(v, _)| v >= floor)
                .take(k)
                .collect();
            assert_eq!(got, want, "k = {k}, floor = {floor}");
        }
    }

    #[test]
    fn ties_prefer_lower_index() {
        assert_eq!(select(&[1.0; 6], 3), [(1.0, 0), (1.0, 1), (1.0, 2)]);
    }

    #[test]
    fn k_zero_and_empty_input() {
        assert!(select(&[1.0, 2.0], 0).is_empty());
        assert!(select(&[], 5).is_empty());
    }

    #[test]
    fn nan_ranks_first() {
        let out = select(&[1.0, f32::NAN, 3.0], 2);
        assert!(out[0].0.is_nan() && out[0].1 == 1);
        assert_eq!(out[1], (3.0, 2));
    }
}
