//! effdet's evaluation preprocessing: resize keeping the aspect ratio, paste at the top-left
//! of a canvas filled with the mean colour, normalise, write NCHW.
//!
//! This is effdet's `transforms_coco_eval` (`ResizePad` + `ImageToNumpy`) followed by its
//! loader's normalisation, in that order: the resize and the fill happen on 8-bit pixels and
//! only then is `(x − mean) / std` applied in f32. So the padding is not exactly 0 after
//! normalising: it is `(round(mean) − mean) / std`, as in the reference.
//!
//! The resize is PIL's `Image.resize(..., BILINEAR)` (Pillow's `ImagingResample`), reproduced
//! exactly: a separable convolution with the triangle filter, whose support widens with the
//! downscale factor (so downscaling averages, i.e. antialiases, rather than sampling two
//! pixels); weights normalised per output pixel, converted to 22-bit fixed point, rounded;
//! one pass per axis through an 8-bit intermediate, in the order Pillow 13 picks. See
//! [`resample_coefficients`] and [`resize_bilinear`] for the rules.

use crate::prelude::*;
use alloc::borrow::Cow;
use core::fmt;

/// A borrowed 8-bit image, rows top to bottom, pixels interleaved (HWC).
#[derive(Debug, Clone, Copy)]
pub struct Image<'a> {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// 1 (grey, replicated to RGB), 3 (RGB) or 4 (RGBA, alpha ignored).
    pub channels: usize,
    /// `height · width · channels` bytes.
    pub data: &'a [u8],
}

/// Per-channel (R, G, B) normalisation `(x − mean) / std` with `x` in 0..255.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalization {
    /// Channel means in 0..255; rounded, they are also the padding colour.
    pub mean: [f32; 3],
    /// Channel standard deviations in 0..255.
    pub std: [f32; 3],
}

impl Normalization {
    /// ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225), times 255: the
    /// `tf_efficientdet_d*` models.
    pub const IMAGENET: Normalization = Normalization {
        mean: [123.675, 116.28, 103.53],
        std: [58.395, 57.12, 57.375],
    };

    /// Mean = std = 0.5, times 255, mapping pixels to −1..1: the `tf_efficientdet_lite*` and
    /// AdvProp (`_ap`) models.
    pub const INCEPTION: Normalization = Normalization {
        mean: [127.5; 3],
        std: [127.5; 3],
    };

    /// The padding colour: the mean rounded half to even (Python's `round`, as effdet's
    /// `resolve_fill_color`), clamped to 0..255.
    fn fill_colour(&self) -> [u8; 3] {
        self.mean.map(|m| {
            let r = m.round_ties_even();
            if r.is_nan() {
                0
            } else {
                r.clamp(0.0, 255.0) as u8
            }
        })
    }
}

/// Why an image could not be preprocessed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreprocessError {
    /// `data` does not hold `height · width · channels` bytes.
    DataLength {
        /// Bytes the dimensions call for (saturated at `usize::MAX`).
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// The image has no pixels.
    ZeroSized {
        /// Width given.
        width: usize,
        /// Height given.
        height: usize,
    },
    /// Channels other than 1, 3 or 4.
    UnsupportedChannels(usize),
    /// The target size has a zero dimension.
    ZeroTarget,
    /// The output buffer is not `3 · target_h · target_w` long.
    OutputLength {
        /// Length needed (saturated at `usize::MAX`).
        expected: usize,
        /// Length given.
        actual: usize,
    },
}

impl fmt::Display for PreprocessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PreprocessError::DataLength { expected, actual } => write!(
                f,
                "image data has {actual} bytes, its dimensions call for {expected}"
            ),
            PreprocessError::ZeroSized { width, height } => {
                write!(f, "image is {width}×{height}: it has no pixels")
            }
            PreprocessError::UnsupportedChannels(c) => write!(
                f,
                "images with {c} channels are not supported (1 grey, 3 RGB or 4 RGBA)"
            ),
            PreprocessError::ZeroTarget => write!(f, "target size has a zero dimension"),
            PreprocessError::OutputLength { expected, actual } => write!(
                f,
                "output buffer has {actual} elements, 3 × target height × width is {expected}"
            ),
        }
    }
}

impl core::error::Error for PreprocessError {}

/// Prepares `image` as the network input of size `target = [h, w]`, writing NCHW `f32`
/// (`[1, 3, h, w]`, RGB) into `out` (length `3·h·w`), and returns the factor `1/s` that maps
/// boxes in network-input pixels back to the original image (effdet's `img_scale`; see
/// [`crate::Detection::rescaled`]).
///
/// With `s = min(h / height, w / width)` (f64), the image is resized to
/// `floor(height·s) × floor(width·s)`, pasted at the top-left, the rest filled with the mean
/// colour rounded half to even, then normalised with `norm` in f32 (so the padding is
/// `(round(mean) − mean) / std`, not exactly 0, as in effdet). A scaled dimension that floors
/// to 0 (extreme aspect ratios) is made 1 pixel.
///
/// The resize reproduces Pillow's `resize(..., BILINEAR)` exactly: a separable triangle-filter
/// convolution whose support grows with the downscale factor (so downscaling averages rather
/// than samples), weights in 22-bit fixed point, one pass per axis through an 8-bit
/// intermediate, in Pillow 13's order (vertical first when the height shrinks and
/// `2·(width − new width) < height − new height`, else horizontal first; Pillow ≤ 12 always
/// went horizontal first, which differs by ±1 on some pixels). Grey is replicated to RGB;
/// alpha is dropped before resizing.
///
/// Allocates the resize intermediates; errors leave `out` untouched.
pub fn preprocess(
    image: &Image<'_>,
    target: [usize; 2],
    norm: &Normalization,
    out: &mut [f32],
) -> Result<f32, PreprocessError> {
    let (w, h, ch) = (image.width, image.height, image.channels);
    if !matches!(ch, 1 | 3 | 4) {
        return Err(PreprocessError::UnsupportedChannels(ch));
    }
    if w == 0 || h == 0 {
        return Err(PreprocessError::ZeroSized {
            width: w,
            height: h,
        });
    }
    let expected = w.saturating_mul(h).saturating_mul(ch);
    if image.data.len() != expected {
        return Err(PreprocessError::DataLength {
            expected,
            actual: image.data.len(),
        });
    }
    let [th, tw] = target;
    if th == 0 || tw == 0 {
        return Err(PreprocessError::ZeroTarget);
    }
    let plane = th.saturating_mul(tw);
    let expected = plane.saturating_mul(3);
    if out.len() != expected {
        return Err(PreprocessError::OutputLength {
            expected,
            actual: out.len(),
        });
    }

    let scale = (th as f64 / h as f64).min(tw as f64 / w as f64);
    // Python's int() truncates; `as` saturates, and the clamp keeps 1..=target.
    let nh = ((h as f64 * scale) as usize).clamp(1, th);
    let nw = ((w as f64 * scale) as usize).clamp(1, tw);

    let rgb = to_rgb(image);
    let resized = resize_bilinear(&rgb, w, h, nw, nh);

    let fill = norm.fill_colour();
    for c in 0..3 {
        let (mean, std) = (norm.mean[c], norm.std[c]);
        let out_plane = &mut out[c * plane..(c + 1) * plane];
        for (y, row) in out_plane.chunks_exact_mut(tw).enumerate() {
            for (x, v) in row.iter_mut().enumerate() {
                let pixel = if y < nh && x < nw {
                    resized[(y * nw + x) * 3 + c]
                } else {
                    fill[c]
                };
                *v = (f32::from(pixel) - mean) / std;
            }
        }
    }
    Ok((1.0 / scale) as f32)
}

/// RGB bytes of `image`: grey replicated (PIL's `convert('RGB')`), alpha dropped (effdet
/// converts to RGB before resizing, so there is no premultiplication).
fn to_rgb<'a>(image: &Image<'a>) -> Cow<'a, [u8]> {
    match image.channels {
        3 => Cow::Borrowed(image.data),
        1 => Cow::Owned(image.data.iter().flat_map(|&g| [g, g, g]).collect()),
        _ => Cow::Owned(
            image
                .data
                .chunks_exact(image.channels)
                .flat_map(|p| [p[0], p[1], p[2]])
                .collect(),
        ),
    }
}

/// Fixed-point precision of Pillow's 8-bit resampling weights.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Weights of a 1-D resize from `in_size` to `out_size`, as Pillow's `precompute_coeffs` +
/// `normalize_coeffs_8bpc` compute them for the bilinear (triangle) filter:
///
/// * `scale = in/out`, `filterscale = max(scale, 1)`, `support = filterscale`;
/// * output pixel `i` has centre `c = (i + 0.5)·scale` in input coordinates and reads input
///   pixels `xmin = trunc(c − support + 0.5)` (at least 0) up to, not including,
///   `trunc(c + support + 0.5)` (at most `in`);
/// * input pixel `j` gets weight `tri((j − c + 0.5) / filterscale)` with `tri(t) = max(0, 1 − |t|)`,
///   the weights of one output pixel normalised to sum 1 (f64);
/// * each weight becomes `trunc(0.5 + w·2²²)`.
///
/// Returns `(first input index, weights)` per output pixel.
fn resample_coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            // C's (int) cast truncates toward zero, as `as` does.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
            let weights: Vec<f64> = (xmin..xmax)
                .map(|j| {
                    let t = ((j as f64 - center + 0.5) * ss).abs();
                    if t < 1.0 {
                        1.0 - t
                    } else {
                        0.0
                    }
                })
                .collect();
            let sum: f64 = weights.iter().sum();
            let fixed = weights
                .iter()
                .map(|&w| {
                    let w = if sum != 0.0 { w / sum } else { w };
                    (0.5 + w * f64::from(1u32 << PRECISION_BITS)) as i32
                })
                .collect();
            (xmin as usize, fixed)
        })
        .collect()
}

/// Pillow's `clip8`: drop the fixed-point fraction, saturate to 0..255.
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One output sample: the rounded weighted sum of `pixel(first + t)` over the weights.
fn convolve(first: usize, weights: &[i32], pixel: impl Fn(usize) -> u8) -> u8 {
    let mut acc: i64 = 1 << (PRECISION_BITS - 1);
    for (t, &k) in weights.iter().enumerate() {
        acc += i64::from(pixel(first + t)) * i64::from(k);
    }
    clip8(acc)
}

/// Resizes packed RGB `src` (`w × h`) to `nw × nh` with one horizontal and one vertical pass,
/// each skipped when its dimension does not change, through an 8-bit intermediate.
///
/// The pass order matters by ±1 on some pixels. Pillow up to 12 always ran the horizontal pass
/// first; Pillow 13 (installed beside the reference toolchain) runs the vertical pass first
/// when the height shrinks and `2·(w − nw) < h − nh`, a rule we established by comparing
/// both orders with its output on ~1,500 random size pairs (no exceptions). We follow
/// Pillow 13.
fn resize_bilinear(src: &[u8], w: usize, h: usize, nw: usize, nh: usize) -> Cow<'_, [u8]> {
    let shrink_w = w as i128 - nw as i128;
    let shrink_h = h as i128 - nh as i128;
    let vertical_first = nw != w && shrink_h > 0 && 2 * shrink_w < shrink_h;
    let mut img = Cow::Borrowed(src);
    if vertical_first {
        img = Cow::Owned(resize_vertical(&img, w, h, nh));
        img = Cow::Owned(resize_horizontal(&img, w, nh, nw));
    } else {
        if nw != w {
            img = Cow::Owned(resize_horizontal(&img, w, h, nw));
        }
        if nh != h {
            img = Cow::Owned(resize_vertical(&img, nw, h, nh));
        }
    }
    img
}

/// Horizontal pass: packed RGB `w × h` → `nw × h`.
fn resize_horizontal(src: &[u8], w: usize, h: usize, nw: usize) -> Vec<u8> {
    let coeffs = resample_coefficients(w, nw);
    let mut out = vec![0u8; h * nw * 3];
    for (y, out_row) in out.chunks_exact_mut(nw * 3).enumerate() {
        let in_row = &src[y * w * 3..(y + 1) * w * 3];
        for (x, (first, weights)) in coeffs.iter().enumerate() {
            for c in 0..3 {
                out_row[x * 3 + c] = convolve(*first, weights, |j| in_row[j * 3 + c]);
            }
        }
    }
    out
}

/// Vertical pass: packed RGB `w × h` → `w × nh`.
fn resize_vertical(src: &[u8], w: usize, h: usize, nh: usize) -> Vec<u8> {
    let coeffs = resample_coefficients(h, nh);
    let row_len = w * 3;
    let mut out = vec![0u8; nh * row_len];
    for (out_row, (first, weights)) in out.chunks_exact_mut(row_len).zip(&coeffs) {
        for (i, v) in out_row.iter_mut().enumerate() {
            *v = convolve(*first, weights, |j| src[j * row_len + i]);
        }
    }
    out
}

/// [`preprocess`] for a network whose input is NHWC (a TensorFlow/Keras export): the same
/// values, laid out `[height][width][3]`. Allocates the planar intermediate.
pub fn preprocess_nhwc(
    image: &Image<'_>,
    target: [usize; 2],
    norm: &Normalization,
    out: &mut [f32],
) -> Result<f32, PreprocessError> {
    let mut planar = vec![0.0; out.len()];
    let scale = preprocess(image, target, norm, &mut planar)?;
    // `preprocess` accepted `out.len()`: three planes of `target` pixels.
    let plane = out.len() / 3;
    for (p, pixel) in out.chunks_exact_mut(3).enumerate() {
        for (c, v) in pixel.iter_mut().enumerate() {
            *v = planar[c * plane + p];
        }
    }
    Ok(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(image: &Image<'_>, target: [usize; 2], norm: &Normalization) -> (Vec<f32>, f32) {
        let mut out = vec![f32::NAN; 3 * target[0] * target[1]];
        let scale = preprocess(image, target, norm, &mut out).unwrap();
        (out, scale)
    }

    /// Identity normalisation, so outputs are pixel values and the fill is 0.
    const RAW: Normalization = Normalization {
        mean: [0.0; 3],
        std: [1.0; 3],
    };

    #[test]
    fn fill_colour_rounds_like_python() {
        // round(123.675) = 124, round(116.28) = 116, round(103.53) = 104; round(127.5) = 128.
        assert_eq!(Normalization::IMAGENET.fill_colour(), [124, 116, 104]);
        assert_eq!(Normalization::INCEPTION.fill_colour(), [128; 3]);
        let odd = Normalization {
            mean: [126.5, -3.0, 300.0],
            std: [1.0; 3],
        };
        assert_eq!(odd.fill_colour(), [126, 0, 255]);
    }

    #[test]
    fn pil_coefficients() {
        // Upscale 2 → 4: scale 0.5, support 1; output 0 has centre 0.25, reads inputs 0..1:
        // weight tri(0.25) = 0.75 for input 0 alone → normalised 1.
        let c = resample_coefficients(2, 4);
        assert_eq!(c[0], (0, vec![1 << 22]));
        // Output 1: centre 0.75, inputs 0..2, weights tri(−0.25), tri(0.75) = 0.75, 0.25.
        assert_eq!(c[1], (0, vec![3 << 20, 1 << 20]));
        // Downscale 4 → 2: scale 2, support 2; output 0: centre 1, inputs 0..3 (trunc(3.5)),
        // weights tri((j − 0.5)/2) = 0.75, 0.75, 0.25 → /1.75.
        let c = resample_coefficients(4, 2);
        assert_eq!(c[0].0, 0);
        let expected: Vec<i32> = [0.75, 0.75, 0.25]
            .iter()
            .map(|w| (0.5 + w / 1.75 * 4_194_304.0) as i32)
            .collect();
        assert_eq!(c[0].1, expected);
    }

    #[test]
    fn matches_pillow_bilinear() {
        // Expected values from Pillow 13.0: Image.fromarray(a).resize((w, h), BILINEAR) with
        // a[y, x] = (y·7 + x·13) % 256 in R, (x·29 + y·3) % 256 in G, 255 − R in B, for a
        // 7 × 5 (w × h) image.
        let (w, h) = (7, 5);
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let r = ((y * 7 + x * 13) % 256) as u8;
                data.extend_from_slice(&[r, ((x * 29 + y * 3) % 256) as u8, 255 - r]);
            }
        }
        let down = resize_bilinear(&data, w, h, 3, 2);
        assert_eq!(&down[..], PIL_DOWN_7X5_TO_3X2);
        let up = resize_bilinear(&data, w, h, 11, 8);
        assert_eq!(&up[..], PIL_UP_7X5_TO_11X8);
    }

    #[test]
    fn matches_pillow_13_vertical_first() {
        // 6 × 11 → 5 × 3: 2·(6 − 5) < 11 − 3, so Pillow 13 runs the vertical pass first; the
        // horizontal-first order gives different pixels for this image. Pattern as above with
        // R = (y·21 + x·13) % 256; expected values from Pillow 13.0.
        let (w, h) = (6, 11);
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let r = ((y * 21 + x * 13) % 256) as u8;
                data.extend_from_slice(&[r, ((x * 29 + y * 3) % 256) as u8, 255 - r]);
            }
        }
        #[rustfmt::skip]
        let expected: &[u8] = &[
            38, 11, 217, 53, 44, 202, 68, 78, 188, 82, 111, 173, 97, 144, 158,
            108, 21, 147, 123, 54, 132, 138, 88, 118, 152, 121, 103, 167, 154, 88,
            178, 31, 77, 193, 64, 62, 208, 98, 48, 190, 131, 65, 186, 164, 69,
        ];
        assert_eq!(&resize_bilinear(&data, w, h, 5, 3)[..], expected);
        let horizontal_first = resize_vertical(&resize_horizontal(&data, w, h, 5), 5, h, 3);
        assert_ne!(&horizontal_first[..], expected);
    }

    #[test]
    fn letterbox_layout_and_scale() {
        // 4 × 2 (w × h) uniform image into 8 × 8: s = min(8/2, 8/4) = 2 → 8 × 4, rows 4..8
        // are fill.
        let data = [10u8, 20, 30].repeat(8);
        let image = Image {
            width: 4,
            height: 2,
            channels: 3,
            data: &data,
        };
        let (out, scale) = run(&image, [8, 8], &RAW);
        assert_eq!(scale, 0.5);
        for c in 0..3 {
            for y in 0..8 {
                for x in 0..8 {
                    let expected = if y < 4 { [10.0, 20.0, 30.0][c] } else { 0.0 };
                    assert_eq!(out[c * 64 + y * 8 + x], expected, "c {c} y {y} x {x}");
                }
            }
        }
    }

    #[test]
    fn normalisation_and_fill() {
        // 1 × 1 white pixel into 2 × 4 (h × w): s = min(2, 4) = 2 → 2 × 2 white, then fill.
        let image = Image {
            width: 1,
            height: 1,
            channels: 3,
            data: &[255, 255, 255],
        };
        let norm = Normalization::IMAGENET;
        let (out, scale) = run(&image, [2, 4], &norm);
        assert_eq!(scale, 0.5);
        for c in 0..3 {
            let white = (255.0 - norm.mean[c]) / norm.std[c];
            let fill = (f32::from(norm.fill_colour()[c]) - norm.mean[c]) / norm.std[c];
            let plane = &out[c * 8..(c + 1) * 8];
            assert_eq!(plane, [white, white, fill, fill, white, white, fill, fill]);
        }
        // Red channel: (255 − 123.675) / 58.395 = 2.2489; fill (124 − 123.675)/58.395 = 0.0056.
        assert!((out[0] - 2.248_908).abs() < 1e-5);
        assert!((out[2] - 0.005_565_544).abs() < 1e-6);
    }

    #[test]
    fn nhwc_holds_the_planar_values_pixel_by_pixel() {
        let data: Vec<u8> = (0..5 * 3 * 3).map(|v| (v * 37 % 256) as u8).collect();
        let image = Image {
            width: 5,
            height: 3,
            channels: 3,
            data: &data,
        };
        let norm = Normalization::IMAGENET;
        let (planar, scale) = run(&image, [4, 6], &norm);
        let mut nhwc = vec![0.0; 72];
        assert_eq!(preprocess_nhwc(&image, [4, 6], &norm, &mut nhwc), Ok(scale));
        for p in 0..24 {
            for c in 0..3 {
                assert_eq!(nhwc[p * 3 + c], planar[c * 24 + p]);
            }
        }
        let mut short = vec![0.0; 71];
        assert!(preprocess_nhwc(&image, [4, 6], &norm, &mut short).is_err());
    }

    #[test]
    fn grey_and_rgba_match_rgb() {
        let grey = [0u8, 50, 100, 150, 200, 250];
        let rgb: Vec<u8> = grey.iter().flat_map(|&g| [g, g, g]).collect();
        let rgba: Vec<u8> = grey.iter().flat_map(|&g| [g, g, g, 7]).collect();
        let image = |channels, data| Image {
            width: 3,
            height: 2,
            channels,
            data,
        };
        let norm = Normalization::IMAGENET;
        let (a, _) = run(&image(3, &rgb), [5, 6], &norm);
        let (b, _) = run(&image(1, &grey), [5, 6], &norm);
        let (c, _) = run(&image(4, &rgba), [5, 6], &norm);
        assert_eq!(a, b);
        assert_eq!(a, c);
    }

    #[test]
    fn tiny_and_extreme_images() {
        let norm = Normalization::IMAGENET;
        for (w, h) in [
            (1, 1),
            (1, 4000),
            (4000, 1),
            (2, 3999),
            (10_000, 3),
            (513, 512),
        ] {
            let data: Vec<u8> = (0..w * h * 3).map(|i| (i * 31 % 251) as u8).collect();
            let image = Image {
                width: w,
                height: h,
                channels: 3,
                data: &data,
            };
            let (out, scale) = run(&image, [512, 512], &norm);
            assert!(out.iter().all(|v| v.is_finite()), "{w}×{h}");
            let s = (512.0 / h as f64).min(512.0 / w as f64);
            assert_eq!(scale, (1.0 / s) as f32, "{w}×{h}");
        }
        // 1 × 4000 (w × h): s = 0.128, width floors to 0 and is made 1: column 0 holds the
        // image, column 1 the fill.
        let data = vec![200u8; 4000 * 3];
        let image = Image {
            width: 1,
            height: 4000,
            channels: 3,
            data: &data,
        };
        let (out, _) = run(&image, [512, 512], &RAW);
        assert_eq!(out[0], 200.0);
        assert_eq!(out[1], 0.0);
        assert_eq!(out[511 * 512], 200.0);
    }

    #[test]
    fn errors() {
        let mut out = vec![0.0; 3 * 4];
        let data = [0u8; 12];
        let image = |width, height, channels, data| Image {
            width,
            height,
            channels,
            data,
        };
        let norm = Normalization::IMAGENET;
        assert_eq!(
            preprocess(&image(2, 2, 3, &data[..11]), [2, 2], &norm, &mut out),
            Err(PreprocessError::DataLength {
                expected: 12,
                actual: 11
            })
        );
        assert_eq!(
            preprocess(&image(0, 2, 3, &[]), [2, 2], &norm, &mut out),
            Err(PreprocessError::ZeroSized {
                width: 0,
                height: 2
            })
        );
        assert_eq!(
            preprocess(&image(2, 3, 2, &data), [2, 2], &norm, &mut out),
            Err(PreprocessError::UnsupportedChannels(2))
        );
        assert_eq!(
            preprocess(&image(2, 2, 3, &data), [0, 2], &norm, &mut out),
            Err(PreprocessError::ZeroTarget)
        );
        assert_eq!(
            preprocess(&image(2, 2, 3, &data), [2, 3], &norm, &mut out),
            Err(PreprocessError::OutputLength {
                expected: 18,
                actual: 12
            })
        );
        let huge = image(usize::MAX, 2, 3, &data);
        assert!(matches!(
            preprocess(&huge, [2, 2], &norm, &mut out),
            Err(PreprocessError::DataLength {
                expected: usize::MAX,
                ..
            })
        ));
        let msg = PreprocessError::UnsupportedChannels(2).to_string();
        assert!(msg.contains("2 channels"), "{msg}");
    }

    // Generated with Pillow 13.0 (see matches_pillow_bilinear); packed RGB, row-major.
    #[rustfmt::skip]
    const PIL_DOWN_7X5_TO_3X2: &[u8] = &[
        18, 28, 237, 46, 90, 209, 74, 152, 181, 32, 34, 223, 60, 96, 195, 88, 158, 167,
    ];

    #[rustfmt::skip]
    const PIL_UP_7X5_TO_11X8: &[u8] = &[
        0, 0, 255, 6, 13, 249, 14, 32, 241, 22, 50, 233, 31, 69, 224, 39, 87, 216, 47, 105, 208, 56, 124, 199,
        64, 142, 191, 72, 161, 183, 78, 174, 177, 3, 1, 252, 9, 14, 246, 17, 33, 238, 25, 51, 230, 34, 70, 221,
        42, 88, 213, 50, 106, 205, 59, 125, 196, 67, 143, 188, 75, 162, 180, 81, 175, 174, 7, 3, 248, 13, 16, 242,
        21, 35, 234, 29, 53, 226, 38, 72, 217, 46, 90, 209, 54, 108, 201, 63, 127, 192, 71, 145, 184, 79, 164, 176,
        85, 177, 170, 12, 5, 243, 18, 18, 237, 26, 37, 229, 34, 55, 221, 43, 74, 212, 51, 92, 204, 59, 110, 196,
        68, 129, 187, 76, 147, 179, 84, 166, 171, 90, 179, 165, 16, 7, 239, 22, 20, 233, 30, 39, 225, 38, 57, 217,
        47, 76, 208, 55, 94, 200, 63, 112, 192, 72, 131, 183, 80, 149, 175, 88, 168, 167, 94, 181, 161, 21, 9, 234,
        27, 22, 228, 35, 41, 220, 43, 59, 212, 52, 78, 203, 60, 96, 195, 68, 114, 187, 77, 133, 178, 85, 151, 170,
        93, 170, 162, 99, 183, 156, 25, 11, 230, 31, 24, 224, 39, 43, 216, 47, 61, 208, 56, 80, 199, 64, 98, 191,
        72, 116, 183, 81, 135, 174, 89, 153, 166, 97, 172, 158, 103, 185, 152, 28, 12, 227, 34, 25, 221, 42, 44, 213,
        50, 62, 205, 59, 81, 196, 67, 99, 188, 75, 117, 180, 84, 136, 171, 92, 154, 163, 100, 173, 155, 106, 186, 149,
    ];
}
