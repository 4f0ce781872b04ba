//! Anchor boxes, generated exactly as effdet's `Anchors` does.
//!
//! The box head predicts offsets relative to these anchors, so they must match the reference
//! bit for bit in order and to within f32 rounding in value: effdet computes them in f64 with
//! numpy and casts to f32 once, and so do we.

use crate::prelude::*;

/// What determines the anchor set of a model (effdet's config fields of the same names).
#[derive(Debug, Clone, PartialEq)]
pub struct AnchorConfig {
    /// Network input size as `[height, width]` in pixels.
    pub image_size: [usize; 2],
    /// Lowest pyramid level with a head output (3 for every EfficientDet).
    pub min_level: usize,
    /// Highest pyramid level with a head output (7, or 8 for D7x).
    pub max_level: usize,
    /// Octave scales per level: anchor sizes `2^(o / num_scales)` for `o` in `0..num_scales`.
    pub num_scales: usize,
    /// Aspect ratios in effdet's pair form `(ax, ay)`: the anchor is `ax` times as wide and
    /// `ay` times as tall as its square base. effdet's default is `(1, 1), (1.4, 0.7), (0.7, 1.4)`.
    pub aspect_ratios: Vec<[f64; 2]>,
    /// Size of the base anchor in units of the level's stride (4 for D0–D7, 3 for Lite).
    pub anchor_scale: f64,
}

impl AnchorConfig {
    /// The configuration every `tf_efficientdet_*` model uses: levels 3–7, 3 octave scales,
    /// aspect pairs (1, 1), (1.4, 0.7), (0.7, 1.4), with the given input size `[h, w]` and
    /// anchor scale (4.0 for D0–D7, 3.0 for Lite0–4). D7x differs only by `max_level = 8`.
    pub fn efficientdet(image_size: [usize; 2], anchor_scale: f64) -> Self {
        AnchorConfig {
            image_size,
            min_level: 3,
            max_level: 7,
            num_scales: 3,
            aspect_ratios: vec![[1.0, 1.0], [1.4, 0.7], [0.7, 1.4]],
            anchor_scale,
        }
    }
}

/// Feature map size `[h, w]` of every level `0..=max_level`, indexed by level (index 0 is the
/// image itself). Each level halves the previous one rounding up (`(s - 1) / 2 + 1`), which is
/// what the TF-'same'-padded stride-2 convolutions and pools of the network produce.
pub fn feature_sizes(image_size: [usize; 2], max_level: usize) -> Vec<[usize; 2]> {
    let mut sizes = Vec::with_capacity(max_level.saturating_add(1));
    let mut size = image_size;
    sizes.push(size);
    for _ in 0..max_level {
        size = [size[0].div_ceil(2), size[1].div_ceil(2)];
        sizes.push(size);
    }
    sizes
}

/// Where one pyramid level's anchors sit in the flat anchor list.
#[derive(Debug, Clone, PartialEq)]
pub struct AnchorLevel {
    /// Pyramid level (3 for P3).
    pub level: usize,
    /// Index of the level's first anchor in [`Anchors::boxes`].
    pub offset: usize,
    /// Feature map size `[h, w]` of the level; the head output of this level is
    /// `[1, A·channels, h, w]`.
    pub feature_size: [usize; 2],
    /// Distance between anchor centres `[y, x]` in input pixels: image size / feature size as a
    /// float, so not a power of two when the size does not divide (Lite0 P7: 106.67).
    pub stride: [f64; 2],
}

/// All anchors of a model as `[y1, x1, y2, x2]` in input pixels (not clipped), in effdet's
/// order: levels ascending; within a level location-major in row-major `(y, x)` order; at each
/// location octave scale outer, aspect ratio inner. This is the order in which the
/// post-processing flattens the head outputs, so anchor `i` belongs to flattened row `i`.
#[derive(Debug, Clone, PartialEq)]
pub struct Anchors {
    boxes: Vec<[f32; 4]>,
    levels: Vec<AnchorLevel>,
    per_location: usize,
}

impl Anchors {
    /// Generates the anchors of `config`.
    ///
    /// Computation follows effdet (numpy, f64) and stores f32: per level stride
    /// `s = image / feature` per dimension; base size `anchor_scale · s · 2^(o/num_scales)`;
    /// half extents `base · ax / 2` and `base · ay / 2`; centres `s/2 + k·s` (as numpy's
    /// `arange` produces them). A level with an empty feature map (zero-sized image) has no
    /// anchors; `min_level > max_level` gives no levels at all.
    pub fn new(config: &AnchorConfig) -> Anchors {
        let sizes = if config.min_level <= config.max_level {
            feature_sizes(config.image_size, config.max_level)
        } else {
            Vec::new()
        };
        let per_location = config.num_scales * config.aspect_ratios.len();
        let [image_h, image_w] = config.image_size.map(|s| s as f64);

        let mut boxes = Vec::new();
        let mut levels = Vec::new();
        for (level, &feature_size) in sizes.iter().enumerate().skip(config.min_level) {
            let [fh, fw] = feature_size;
            let stride = [image_h / fh as f64, image_w / fw as f64];
            levels.push(AnchorLevel {
                level,
                offset: boxes.len(),
                feature_size,
                stride,
            });
            if fh == 0 || fw == 0 {
                continue;
            }
            let ys = numpy_arange(stride[0] / 2.0, stride[0], fh);
            let xs = numpy_arange(stride[1] / 2.0, stride[1], fw);

            // Half extents [half_h, half_w] of the anchors at one location, in (octave, aspect)
            // order, with effdet's association order of the products.
            let mut halves = Vec::with_capacity(per_location);
            for octave in 0..config.num_scales {
                let octave_scale = 2f64.powf(octave as f64 / config.num_scales as f64);
                let base_y = config.anchor_scale * stride[0] * octave_scale;
                let base_x = config.anchor_scale * stride[1] * octave_scale;
                for &[ax, ay] in &config.aspect_ratios {
                    halves.push([base_y * ay / 2.0, base_x * ax / 2.0]);
                }
            }

            boxes.reserve(fh * fw * per_location);
            for &cy in &ys {
                for &cx in &xs {
                    for &[hh, hw] in &halves {
                        boxes.push([
                            (cy - hh) as f32,
                            (cx - hw) as f32,
                            (cy + hh) as f32,
                            (cx + hw) as f32,
                        ]);
                    }
                }
            }
        }
        Anchors {
            boxes,
            levels,
            per_location,
        }
    }

    /// All anchors, `[y1, x1, y2, x2]`, in the order described on [`Anchors`].
    pub fn boxes(&self) -> &[[f32; 4]] {
        &self.boxes
    }

    /// Total number of anchors (49,104 for D0).
    pub fn len(&self) -> usize {
        self.boxes.len()
    }

    /// True when there are no anchors at all.
    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }

    /// The levels, ascending, with their offsets into [`Anchors::boxes`] and feature sizes.
    pub fn levels(&self) -> &[AnchorLevel] {
        &self.levels
    }

    /// Anchors per feature map location, `A = num_scales · aspect_ratios.len()` (9 for
    /// EfficientDet).
    pub fn num_anchors_per_location(&self) -> usize {
        self.per_location
    }
}

/// `numpy.arange(start, ·, step)` values for a known length `n`. numpy writes the first two
/// values as `start` and `start + step`, then fills `start + i·delta` with
/// `delta = (start + step) − start`, which can differ from `step` in the last bit; we do the same.
fn numpy_arange(start: f64, step: f64, n: usize) -> Vec<f64> {
    let delta = (start + step) - start;
    (0..n)
        .map(|i| match i {
            0 => start,
            1 => start + step,
            _ => start + i as f64 * delta,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_box(actual: [f32; 4], expected: [f64; 4]) {
        for (got, want) in actual.iter().zip(expected) {
            assert!(
                (f64::from(*got) - want).abs() < 1e-4,
                "{actual:?} != {expected:?}"
            );
        }
    }

    fn first_last(anchors: &Anchors, level_index: usize) -> ([f32; 4], [f32; 4]) {
        let lv = &anchors.levels()[level_index];
        let n = lv.feature_size[0] * lv.feature_size[1] * anchors.num_anchors_per_location();
        (
            anchors.boxes()[lv.offset],
            anchors.boxes()[lv.offset + n - 1],
        )
    }

    #[test]
    fn feature_sizes_ceil_halve() {
        assert_eq!(
            feature_sizes([512, 512], 7)[3..],
            [[64, 64], [32, 32], [16, 16], [8, 8], [4, 4]]
        );
        // Lite0: 320 → 160, 80, 40, 20, 10, 5, 3 (ceil(5/2) = 3).
        assert_eq!(
            feature_sizes([320, 320], 7)[3..],
            [[40, 40], [20, 20], [10, 10], [5, 5], [3, 3]]
        );
        // Per dimension, and a level's index is its level.
        let s = feature_sizes([300, 17], 3);
        assert_eq!(s, vec![[300, 17], [150, 9], [75, 5], [38, 3]]);
        assert_eq!(feature_sizes([0, 1], 2), vec![[0, 1], [0, 1], [0, 1]]);
    }

    #[test]
    fn d0_totals_levels_and_order() {
        let anchors = Anchors::new(&AnchorConfig::efficientdet([512, 512], 4.0));
        // 9 · (64² + 32² + 16² + 8² + 4²) = 9 · 5456.
        assert_eq!(anchors.len(), 49_104);
        assert_eq!(anchors.num_anchors_per_location(), 9);
        let offsets: Vec<usize> = anchors.levels().iter().map(|l| l.offset).collect();
        assert_eq!(offsets, [0, 36_864, 46_080, 48_384, 48_960]);
        assert_eq!(anchors.levels()[4].stride, [128.0, 128.0]);

        // Location-major, then octave outer, aspect inner. P3 first location, centre (4, 4),
        // stride 8, octave 0: base = 4·8 = 32.
        let b = anchors.boxes();
        // aspect (1, 1): half 16 → [-12, -12, 20, 20]
        assert_box(b[0], [-12.0, -12.0, 20.0, 20.0]);
        // aspect (1.4, 0.7): half_w = 32·1.4/2 = 22.4, half_h = 32·0.7/2 = 11.2
        assert_box(b[1], [-7.2, -18.4, 15.2, 26.4]);
        // aspect (0.7, 1.4): half_w 11.2, half_h 22.4
        assert_box(b[2], [-18.4, -7.2, 26.4, 15.2]);
        // octave 1, aspect (1, 1): half = 16·2^(1/3) = 20.158737
        assert_box(b[3], [-16.158737, -16.158737, 24.158737, 24.158737]);
        // octave 2, aspect (1, 1): half = 16·2^(2/3) = 25.398417
        assert_box(b[6], [-21.398417, -21.398417, 29.398417, 29.398417]);
        // Second location is x + 1: centre (4, 12).
        assert_box(b[9], [-12.0, -4.0, 20.0, 28.0]);
        // Location 64 is the second row: centre (12, 4).
        assert_box(b[64 * 9], [-4.0, -12.0, 28.0, 20.0]);
    }

    #[test]
    fn d0_first_and_last_anchor_of_each_level() {
        let anchors = Anchors::new(&AnchorConfig::efficientdet([512, 512], 4.0));
        // First anchor of a level with stride s: centre s/2, octave 0 aspect (1, 1),
        // half = 4·s/2 = 2s → [-1.5s, -1.5s, 2.5s, 2.5s].
        // Last anchor: centre 512 − s/2, octave 2, aspect (0.7, 1.4):
        // base = 4s·2^(2/3) = 6.3496042s, half_w = base·0.7/2 = 2.2223615s,
        // half_h = base·1.4/2 = 4.4447229s.
        let expected_last = [
            // s = 8: centre 508, half_w 17.778892, half_h 35.557784
            [472.442216, 490.221108, 543.557784, 525.778892],
            // s = 16: centre 504, half_w 35.557784, half_h 71.115567
            [432.884433, 468.442216, 575.115567, 539.557784],
            // s = 32: centre 496, half_w 71.115567, half_h 142.231134
            [353.768866, 424.884433, 638.231134, 567.115567],
            // s = 64: centre 480, half_w 142.231134, half_h 284.462269
            [195.537731, 337.768866, 764.462269, 622.231134],
            // s = 128: centre 448, half_w 284.462269, half_h 568.924537
            [-120.924537, 163.537731, 1016.924537, 732.462269],
        ];
        for (i, last) in expected_last.iter().enumerate() {
            let s = 8.0 * f64::from(1u32 << i);
            let (first, actual_last) = first_last(&anchors, i);
            assert_box(first, [-1.5 * s, -1.5 * s, 2.5 * s, 2.5 * s]);
            assert_box(actual_last, *last);
        }
    }

    #[test]
    fn lite0_first_and_last_anchor_of_each_level() {
        let anchors = Anchors::new(&AnchorConfig::efficientdet([320, 320], 3.0));
        // 9 · (40² + 20² + 10² + 5² + 3²) = 9 · 2134.
        assert_eq!(anchors.len(), 19_206);
        let p7 = &anchors.levels()[4];
        assert_eq!(p7.feature_size, [3, 3]);
        // P7 stride is 320/3, not 128.
        assert!((p7.stride[0] - 106.666_666_666_666_67).abs() < 1e-12);

        // First: centre s/2, half = 3·s/2 = 1.5s → [-s, -s, 2s, 2s].
        // Last: centre s/2 + (n−1)·s, base = 3s·2^(2/3) = 4.7622032s,
        // half_w = base·0.35 = 1.6667711s, half_h = base·0.7 = 3.3335422s.
        let strides = [8.0, 16.0, 32.0, 64.0, 320.0 / 3.0];
        let expected_last = [
            // s = 8, n = 40: centre 316, half_w 13.334169, half_h 26.668338
            [289.331662, 302.665831, 342.668338, 329.334169],
            // s = 16, n = 20: centre 312
            [258.663325, 285.331662, 365.336675, 338.668338],
            // s = 32, n = 10: centre 304
            [197.326649, 250.663325, 410.673351, 357.336675],
            // s = 64, n = 5: centre 288
            [74.653299, 181.326649, 501.346701, 394.673351],
            // s = 106.67, n = 3: centre 266.666667, half_w 177.788918, half_h 355.577836
            [-88.911169, 88.877749, 622.244502, 444.455584],
        ];
        for (i, (&s, last)) in strides.iter().zip(&expected_last).enumerate() {
            let (first, actual_last) = first_last(&anchors, i);
            assert_box(first, [-s, -s, 2.0 * s, 2.0 * s]);
            assert_box(actual_last, *last);
        }
    }

    #[test]
    fn non_square_strides_per_dimension() {
        // 64 × 96 (h × w), one level, one anchor per location: stride 8 in both, 8 × 12 map.
        let config = AnchorConfig {
            image_size: [64, 96],
            min_level: 3,
            max_level: 3,
            num_scales: 1,
            aspect_ratios: vec![[1.0, 1.0]],
            anchor_scale: 1.0,
        };
        let anchors = Anchors::new(&config);
        assert_eq!(anchors.len(), 8 * 12);
        assert_eq!(anchors.levels()[0].feature_size, [8, 12]);
        // Row-major: index 12 is (y 1, x 0), centre (12, 4), half 4.
        assert_box(anchors.boxes()[12], [8.0, 0.0, 16.0, 8.0]);
        assert_box(anchors.boxes()[95], [56.0, 88.0, 64.0, 96.0]);
    }

    #[test]
    fn degenerate_configs_do_not_panic() {
        let mut config = AnchorConfig::efficientdet([0, 0], 4.0);
        let anchors = Anchors::new(&config);
        assert!(anchors.is_empty());
        assert_eq!(anchors.levels().len(), 5);

        config.image_size = [1, 1];
        assert_eq!(Anchors::new(&config).len(), 5 * 9);

        config.min_level = 8;
        assert!(Anchors::new(&config).levels().is_empty());

        config.min_level = 3;
        config.aspect_ratios.clear();
        let anchors = Anchors::new(&config);
        assert!(anchors.is_empty());
        assert_eq!(anchors.num_anchors_per_location(), 0);
    }
}
