//! A separable conv: the depthwise conv (+ bias, activation) feeding the pointwise 1×1
//! conv (+ bias, activation, residual), band by band of output rows. The depthwise output
//! (at D0's P3 a 1 MB tensor per head conv) is never written to the arena: a band of it,
//! every channel of [`band_rows`] output rows, goes to a buffer of 256 KB (where
//! [`worth_fusing`]) that stays in L2 while the 1×1 conv reads it in place, once per panel
//! of output channels, with no copy of its blocks.
//!
//! A band is two parallel steps: the depthwise conv split by channels, then the 1×1 conv
//! split by panels of output channels, writing its band's columns of each output plane in
//! place. The depthwise conv reads the band's input rows in place (planes `h·w` apart), or
//! (a BiFPN node, [`sum_depthwise_pointwise_fixed`]) the node's weighted sum of those
//! rows, computed a tile of channels at a time into a per-thread buffer.
//!
//! Each output value is the one the two kernels compute one after the other, bit for bit:
//! the depthwise conv's per-pixel tap order does not depend on the rows a call covers
//! (padding rows become zero rows of the band), and the 1×1 conv's accumulation order does
//! not depend on its pixel blocking.

use super::conv1x1::{conv1x1_pixels, packed_len, MR};
use super::depthwise::{band_input, check_fixed, fast, run_planes, Args as Depthwise, Planes};
use super::fuse::{check, Sample};
use super::fuse_depthwise::{sum_tiles, tile_channels};
use ::effdet_runtime::kernels::scratch;
use ::effdet_runtime::kernels::simd::require;
use ::effdet_runtime::kernels::{dim, size, Act, Par};

/// Floats of one band of the depthwise output (all channels): 256 KB, so that it, the
/// input rows the depthwise conv reads and the weights stay in L2 (1 MiB per core in the
/// cache model the compiler's fixed rules assume) while every panel of the 1×1 conv reads
/// it.
const BAND_FLOATS: usize = 64 * 1024;

/// Output rows per band for `cin` channels of `oh × ow` depthwise outputs: as many as keep
/// a band within `BAND_FLOATS` (256 KB), in multiples of 8 (the depthwise kernel's tallest row
/// block), at least 8 (or all `oh`).
pub fn band_rows(cin: usize, oh: usize, ow: usize) -> usize {
    let rows = BAND_FLOATS / cin.saturating_mul(ow).max(1);
    (rows / 8 * 8).max(8).min(oh.max(1))
}

/// Whether [`depthwise_pointwise_fixed`] beats the two kernels for this shape (`cin`
/// channels of `oh × ow` depthwise outputs), by a fixed rule: a band of 8 rows (or the
/// whole plane) fits in `BAND_FLOATS` (256 KB). The 1×1 conv then reads the band where the
/// depthwise conv wrote it, with no copy of its blocks; measured 5–7% faster than the two
/// kernels for the heads' 64 channels at 64², 40² and 32² (Zen 5, one thread,
/// `examples/bench_separable.rs`). Wider bands lose: 160 channels at 112² (D3's P3 head)
/// ran 4–10% slower in bands of 3 to 14 rows, read in place or copied, as did Lite0's
/// MBConv depthwise → project pairs (240–1152 channels in bands of 5–6 rows of 40², 20²
/// and 10²; 3–5% slower at one thread, 10–15% at two, in the model).
pub fn worth_fusing(cin: usize, oh: usize, ow: usize) -> bool {
    cin.saturating_mul(ow).saturating_mul(oh.min(8)) <= BAND_FLOATS
}

/// `y = act_pw(conv1x1(act(depthwise(x))) (+ residual))`, compiled for the depthwise conv's
/// kernel size `K`, stride `S`, activation code `A`, the 1×1 conv's activation code `AP`
/// (`effdet_runtime::kernels::act::code`), the depthwise route `R`
/// ([`super::depthwise::route`] of `cin` channels of [`band_rows`] rows) and the instruction
/// set `I` (`effdet_runtime::kernels::isa_code`), as a generated model calls it; `k`,
/// `stride`, `act` and `act_pw` must be those constants' values. A generated call also
/// fixes its shape: `CIN`, `COUT`, `H`, `W` and `PADS` ([`super::depthwise::pads`]) are
/// `cin`, `cout`, `h`, `w` and `pads` (0: given at run time), so that its bands and their
/// trip counts are constants.
///
/// `x`: `[cin][h][w]`; `w_dw`: `[cin][k][k]`; `b_dw`: `[cin]`; `w_pw`: the `[cout][cin]`
/// weights packed by [`super::conv1x1::pack`]; `b_pw`: `[cout]` or empty; `residual` and
/// `y`: `[cout][oh][ow]` with `oh × ow` the depthwise output's size. `k` is 3 or 5 and
/// `stride` 1 or 2.
///
/// # Panics
/// If a slice is too short for these sizes, the arguments differ from the constants, or
/// this CPU does not run `I`.
#[allow(clippy::too_many_arguments)]
pub fn depthwise_pointwise_fixed<
    const K: usize,
    const S: usize,
    const A: u8,
    const AP: u8,
    const R: u8,
    const CIN: usize,
    const COUT: usize,
    const H: usize,
    const W: usize,
    const PADS: u64,
    const I: u8,
>(
    par: Par,
    x: &[f32],
    w_dw: &[f32],
    b_dw: &[f32],
    act: Act,
    w_pw: &[f32],
    b_pw: &[f32],
    act_pw: Act,
    residual: Option<&[f32]>,
    y: &mut [f32],
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pads: [usize; 4],
) {
    let shape = Shape::new::<K, S, A, AP, CIN, COUT, H, W, PADS>(
        cin, cout, h, w, k, stride, pads, act, act_pw,
    );
    let (cin, h, w) = (shape.cin, shape.h, shape.w);
    let plane_in = size("separable", &[h, w]);
    assert!(
        x.len() >= size("separable", &[cin, plane_in]),
        "separable: input too short for cin {cin}, {h}×{w}"
    );
    shape.run::<AP, R, CIN, I>(par, w_dw, b_dw, w_pw, b_pw, residual, y, |band, c0, d| {
        // The band's input rows, read in place (planes `h·w` apart).
        let x = &x[c0 * plane_in + band.i0 * w..];
        band.depthwise::<K, S, A, R, I>(x, plane_in, c0, d);
    });
}

/// A BiFPN node's separable conv fed by its weighted input fusion:
/// `y = act_pw(conv1x1(act(depthwise(act_sum(Σ_i coef[i] · sample_i(x_i))))) (+ residual))`,
/// the sum computed band by band too (the rows a band's depthwise conv reads, a tile of
/// channels at a time, as [`super::fuse_depthwise`] does for whole planes): neither the
/// sum nor the depthwise output is written to the arena. `AF` is the sum's activation
/// code, `act_sum` its activation; `inputs` and `coef` as [`super::fuse::fuse`] takes
/// them for an `h × w` output of `cin` channels; the rest as [`depthwise_pointwise_fixed`].
///
/// # Panics
/// As [`depthwise_pointwise_fixed`], and as [`super::fuse::fuse`] for the inputs.
#[allow(clippy::too_many_arguments)]
pub fn sum_depthwise_pointwise_fixed<
    const K: usize,
    const S: usize,
    const A: u8,
    const AF: u8,
    const AP: u8,
    const R: u8,
    const CIN: usize,
    const COUT: usize,
    const H: usize,
    const W: usize,
    const PADS: u64,
    const I: u8,
>(
    par: Par,
    inputs: &[(&[f32], Sample)],
    coef: &[f32],
    act_sum: Act,
    w_dw: &[f32],
    b_dw: &[f32],
    act: Act,
    w_pw: &[f32],
    b_pw: &[f32],
    act_pw: Act,
    residual: Option<&[f32]>,
    y: &mut [f32],
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pads: [usize; 4],
) {
    let act_sum = act_sum.fixed::<AF>();
    let shape = Shape::new::<K, S, A, AP, CIN, COUT, H, W, PADS>(
        cin, cout, h, w, k, stride, pads, act, act_pw,
    );
    let (cin, h, w) = (shape.cin, shape.h, shape.w);
    let plane_in = size("separable", &[h, w]);
    check(inputs, coef, cin * plane_in, cin, h, w);
    shape.run::<AP, R, CIN, I>(par, w_dw, b_dw, w_pw, b_pw, residual, y, |band, c0, d| {
        let n = d.len() / band.ld;
        let rows = band.i1 - band.i0;
        let tile = tile_channels(n, rows, w);
        let band_sum = (h, w, (band.i0, band.i1));
        sum_tiles::<AF, I>(
            inputs,
            coef,
            act_sum,
            band_sum,
            (c0, n),
            tile,
            |t0, m, sum| {
                let d = &mut d[t0 * band.ld..(t0 + m) * band.ld];
                band.depthwise::<K, S, A, R, I>(sum, rows * w, c0 + t0, d);
            },
        );
    });
}

/// The sizes of one separable conv, checked.
struct Shape {
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    k: usize,
    stride: usize,
    pads: [usize; 4],
    act: Act,
    act_pw: Act,
}

/// One band of output rows `o0..o1`: the image rows `i0..i1` its depthwise conv reads and
/// the zero rows around them (`pads[0]` above, `pads[2]` below), the row stride `ld` of
/// its depthwise output, and the shape.
struct Band<'a> {
    o0: usize,
    o1: usize,
    i0: usize,
    i1: usize,
    pads: [usize; 4],
    ld: usize,
    s: &'a Shape,
    w_dw: &'a [f32],
    b_dw: &'a [f32],
}

impl Band<'_> {
    /// The depthwise conv of channels `c0 .. c0 + n` of this band from `x` (their input
    /// rows `i0..i1`, planes `x_stride` apart) into `d` (`n` rows of `ld`).
    #[inline(always)]
    fn depthwise<const K: usize, const S: usize, const A: u8, const R: u8, const I: u8>(
        &self,
        x: &[f32],
        x_stride: usize,
        c0: usize,
        d: &mut [f32],
    ) {
        let (s, n) = (self.s, d.len() / self.ld);
        run_planes::<K, S, A, R, I>(&mut Depthwise {
            x,
            x_stride,
            w: &self.w_dw[c0 * K * K..(c0 + n) * K * K],
            bias: &self.b_dw[c0..c0 + n],
            y: d,
            y_stride: self.ld,
            h: self.i1 - self.i0,
            w_in: s.w,
            oh: self.o1 - self.o0,
            ow: s.ow,
            k: s.k,
            stride: s.stride,
            pads: self.pads,
            act: s.act,
            means: &mut [],
        });
    }
}

impl Shape {
    /// The sizes of a call, checked against its constants: the entry points' `CIN`, `COUT`,
    /// `H`, `W` and `PADS` (0: given at run time), which the sizes then are.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn new<
        const K: usize,
        const S: usize,
        const A: u8,
        const AP: u8,
        const CIN: usize,
        const COUT: usize,
        const H: usize,
        const W: usize,
        const PADS: u64,
    >(
        cin: usize,
        cout: usize,
        h: usize,
        w: usize,
        k: usize,
        stride: usize,
        pads: [usize; 4],
        act: Act,
        act_pw: Act,
    ) -> Shape {
        assert!(
            fast(K, S) && (k, stride) == (K, S),
            "separable: compiled for kernel {K} stride {S}, called with {k} and {stride}"
        );
        check_fixed::<PADS>("separable", &[CIN, COUT, H, W], &[cin, cout, h, w], pads);
        let p = Planes::new::<H, W, PADS>("separable", h, w, pads, k, stride);
        Shape {
            cin: dim::<CIN>(cin),
            cout: dim::<COUT>(cout),
            h: p.h,
            w: p.w,
            oh: p.oh,
            ow: p.ow,
            k,
            stride,
            pads: p.pads,
            act: act.fixed::<A>(),
            act_pw: act_pw.fixed::<AP>(),
        }
    }

    /// Checks the weights and outputs, then runs the bands: per band, `depthwise(band, c0,
    /// d)` fills the rows of channels `c0 ..` (`d`: a run of them, `band.ld` apart) on each
    /// thread, then the 1×1 conv reads them.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn run<const AP: u8, const R: u8, const CIN: usize, const I: u8>(
        &self,
        par: Par,
        w_dw: &[f32],
        b_dw: &[f32],
        w_pw: &[f32],
        b_pw: &[f32],
        residual: Option<&[f32]>,
        y: &mut [f32],
        depthwise: impl Fn(&Band, usize, &mut [f32]) + Sync,
    ) {
        let &Shape {
            cin,
            cout,
            h,
            oh,
            ow,
            k,
            stride,
            pads,
            act_pw,
            ..
        } = self;
        let plane_out = size("separable", &[oh, ow]);
        let y_len = size("separable", &[cout, plane_out]);
        assert!(
            w_dw.len() >= size("separable", &[cin, k, k])
                && b_dw.len() >= cin
                && w_pw.len() == packed_len(cout, cin)
                && (b_pw.is_empty() || b_pw.len() >= cout)
                && y.len() >= y_len
                && residual.is_none_or(|r| r.len() >= y_len),
            "separable: slices too short for cin {cin}, cout {cout}, {h}×{}, k {k}",
            self.w
        );
        require::<I>("separable");
        if cout == 0 || plane_out == 0 {
            return;
        }
        assert!(cin > 0, "separable: no input channels");
        let y = &mut y[..y_len];
        let residual = residual.map(|r| &r[..y_len]);
        let band = band_rows(cin, oh, ow);
        // The band's row stride: its pixels rounded up to 16, plus 16 (rows 64 bytes apart
        // in the cache sets, as conv1x1 pads its copies).
        let ld = (band * ow).next_multiple_of(16) + 16;
        let mut dbuf = scratch::take::<f32>(cin * ld);
        let dw_group = cin.div_ceil(par.threads());
        let pw_group = cout.div_ceil(MR).div_ceil(par.threads()) * MR;
        let mut o0 = 0;
        while o0 < oh {
            let o1 = (o0 + band).min(oh);
            let count = (o1 - o0) * ow;
            let ((i0, i1), band_pads) = band_input((o0, o1), h, pads, k, stride);
            let b = Band {
                o0,
                o1,
                i0,
                i1,
                pads: band_pads,
                ld,
                s: self,
                w_dw,
                b_dw,
            };
            let d = &mut dbuf[..cin * ld];
            par.for_each_chunk(d, dw_group * ld, cin * count * k * k, |gi, dc| {
                depthwise(&b, gi * dw_group, dc)
            });
            let d = &dbuf[..cin * ld];
            par.for_each_chunk(y, pw_group * plane_out, cout * count * cin, |gi, yc| {
                let (r0, rows) = (gi * pw_group, yc.len() / plane_out);
                let bias = if b_pw.is_empty() {
                    b_pw
                } else {
                    &b_pw[r0..r0 + rows]
                };
                let cin = dim::<CIN>(cin);
                conv1x1_pixels::<AP, CIN, I>(
                    d,
                    &w_pw[r0 * cin..][..packed_len(rows, cin)],
                    bias,
                    residual.map(|r| &r[r0 * plane_out..(r0 + rows) * plane_out]),
                    yc,
                    cin,
                    ld,
                    0,
                    count,
                    (plane_out, o0 * ow),
                    act_pw,
                );
            });
            o0 = o1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::op::tf_same_pad;
    use crate::kernels::conv1x1::{conv1x1, pack};
    use crate::kernels::depthwise::{by_shape, depthwise_pooled, out_len, route};
    use ::effdet_runtime::kernels::act::code;
    use ::effdet_runtime::kernels::simd::test_util::Rng;
    use ::effdet_runtime::kernels::Isa;
    use ::effdet_runtime::kernels::Pool;

    #[test]
    fn fuses_one_band_or_tall_bands() {
        assert!(worth_fusing(64, 64, 64), "D0's P3 head: 4 bands of 16 rows");
        assert!(worth_fusing(64, 32, 32), "D0's P4 head: one band");
        assert!(
            worth_fusing(64, 40, 40),
            "Lite0's P3 head: bands of 25 rows"
        );
        assert!(
            !worth_fusing(240, 40, 40),
            "Lite0's 40² MBConv: bands of 6 rows"
        );
        assert!(
            !worth_fusing(1152, 10, 10),
            "Lite0's 10² MBConv: bands of 5 rows"
        );
    }

    #[test]
    fn bands_fit_the_buffer() {
        assert_eq!(band_rows(64, 64, 64), 16, "D0's P3: 4 bands");
        assert_eq!(band_rows(64, 8, 8), 8, "one band");
        assert_eq!(band_rows(64, 5, 5), 5, "one band");
        assert_eq!(band_rows(300, 30, 100), 8, "4 bands");
        assert_eq!(band_rows(4096, 10, 40), 8, "at least 8 rows");
        assert_eq!(band_rows(0, 0, 0), 1);
    }

    /// The fused kernel gives the depthwise conv then the 1×1 conv (with and without a
    /// residual) bit for bit, on every ISA at 1–3 threads: one band and many (down to one
    /// output row), strides 1 and 2, channel counts off the panel size, planes smaller than
    /// the kernel, symmetric and TF 'same' padding.
    #[test]
    fn matches_the_two_kernels_bit_for_bit() {
        let mut rng = Rng::new(7);
        let cases = [
            // (cin, cout, h, w, k, stride)
            (8, 12, 9, 11, 3, 1),
            (5, 3, 9, 11, 5, 2),
            // Bands of 4 output rows (64 channels × 256 columns), then of 1.
            (64, 20, 30, 256, 3, 1),
            (700, 9, 7, 100, 3, 2),
            (3, 5, 3, 2, 5, 1),
            (40, 16, 20, 20, 3, 1),
        ];
        for (cin, cout, h, w, k, s) in cases {
            for same_pads in [true, false] {
                let pads = if same_pads {
                    let ((t, b), (l, r)) = (tf_same_pad(h, k, s, 1), tf_same_pad(w, k, s, 1));
                    [t, l, b, r]
                } else {
                    [k / 2; 4]
                };
                let oh = out_len(h, pads[0], pads[2], k, s);
                let ow = out_len(w, pads[1], pads[3], k, s);
                let x = rng.vec(cin * h * w);
                let (wd, bd) = (rng.vec(cin * k * k), rng.vec(cin));
                let wp = pack(&rng.vec(cout * cin), cout, cin);
                let (bp, res) = (rng.vec(cout), rng.vec(cout * oh * ow));
                let r = route(cin, band_rows(cin, oh, ow), ow, k, s);
                for isa in Isa::available() {
                    for threads in [1, 2, 3] {
                        let pool = Pool::new(threads);
                        let mut d = vec![f32::NAN; cin * oh * ow];
                        depthwise_pooled(
                            isa,
                            pool.par(),
                            &x,
                            &wd,
                            &bd,
                            &mut d,
                            cin,
                            h,
                            w,
                            k,
                            s,
                            pads,
                            Act::None,
                            &mut [],
                        );
                        for residual in [None, Some(&res[..])] {
                            let mut want = vec![f32::NAN; cout * oh * ow];
                            conv1x1(
                                isa,
                                pool.par(),
                                &d,
                                &wp,
                                &bp,
                                residual,
                                &mut want,
                                cin,
                                cout,
                                oh * ow,
                                Act::Swish,
                            );
                            let what = format!(
                                "{isa:?} cin{cin} cout{cout} {h}x{w} k{k} s{s} {pads:?} t{threads} res {}",
                                residual.is_some()
                            );
                            assert!(
                                want.iter().all(|v| v.is_finite()),
                                "{what}: reference not finite"
                            );
                            let bits =
                                |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                            let mut got = vec![f32::NAN; cout * oh * ow];
                            ::effdet_runtime::with_isa!(isa, I => by_shape!(
                                depthwise_pointwise_fixed[, { code::ANY }, { route::AUTO }, 0, 0, 0, 0, 0, I],
                                k, s, Act::None;
                                pool.par(), &x, &wd, &bd, Act::None, &wp, &bp, Act::Swish,
                                residual, &mut got, cin, cout, h, w, k, s, pads));
                            assert!(bits(&got) == bits(&want), "{what}: output differs");
                            // As a generated model calls it: the emitted route.
                            let mut fixed = vec![f32::NAN; cout * oh * ow];
                            let call = if (k, s) == (3, 1) {
                                call_fixed::<3, 1>
                            } else if (k, s) == (3, 2) {
                                call_fixed::<3, 2>
                            } else if (k, s) == (5, 1) {
                                call_fixed::<5, 1>
                            } else {
                                call_fixed::<5, 2>
                            };
                            call(
                                r, isa, &pool, &x, &wd, &bd, &wp, &bp, residual, &mut fixed, cin,
                                cout, h, w, pads,
                            );
                            assert!(bits(&fixed) == bits(&want), "{what}: fixed variant differs");
                        }
                    }
                }
            }
        }
    }

    /// The fused sum variant gives `fuse`, the depthwise conv and the 1×1 conv one after
    /// the other bit for bit, on every ISA at 1–3 threads: identity, nearest and max-pool
    /// inputs, one band and several (rows of the sum computed by two bands), channel tiles
    /// within a band.
    #[test]
    fn the_sum_variant_matches_the_three_kernels_bit_for_bit() {
        use crate::kernels::fuse::fuse;
        let mut rng = Rng::new(13);
        // (cin, cout, h, w)
        let cases: [(usize, usize, usize, usize); 3] =
            [(8, 12, 9, 11), (20, 16, 72, 72), (300, 9, 30, 100)];
        for (cin, cout, h, w) in cases {
            let (k, s, pads) = (3, 1, [1; 4]);
            let (uh, uw) = (h.div_ceil(2), w.div_ceil(2));
            let same = rng.vec(cin * h * w);
            let up = rng.vec(cin * uh * uw);
            let down = rng.vec(cin * 2 * h * 2 * w);
            let inputs: [(&[f32], Sample); 3] = [
                (&same, Sample::Identity),
                (&up, Sample::Nearest { h: uh, w: uw }),
                (
                    &down,
                    Sample::MaxPool {
                        h: 2 * h,
                        w: 2 * w,
                        kernel: [3, 3],
                        stride: [2, 2],
                        pads: [0, 0, 1, 1],
                    },
                ),
            ];
            let coef = [0.3, 0.5, 0.2];
            let (wd, bd) = (rng.vec(cin * k * k), rng.vec(cin));
            let wp = pack(&rng.vec(cout * cin), cout, cin);
            let bp = rng.vec(cout);
            for isa in Isa::available() {
                for threads in [1, 2, 3] {
                    let pool = Pool::new(threads);
                    let mut sum = vec![f32::NAN; cin * h * w];
                    fuse(
                        isa,
                        pool.par(),
                        &inputs,
                        &coef,
                        &mut sum,
                        cin,
                        h,
                        w,
                        Act::Swish,
                    );
                    let mut d = vec![f32::NAN; cin * h * w];
                    depthwise_pooled(
                        isa,
                        pool.par(),
                        &sum,
                        &wd,
                        &bd,
                        &mut d,
                        cin,
                        h,
                        w,
                        k,
                        s,
                        pads,
                        Act::None,
                        &mut [],
                    );
                    let mut want = vec![f32::NAN; cout * h * w];
                    conv1x1(
                        isa,
                        pool.par(),
                        &d,
                        &wp,
                        &bp,
                        None,
                        &mut want,
                        cin,
                        cout,
                        h * w,
                        Act::None,
                    );
                    let what = format!("{isa:?} cin{cin} cout{cout} {h}x{w} t{threads}");
                    assert!(want.iter().all(|v| v.is_finite()), "{what}: not finite");
                    let mut got = vec![f32::NAN; cout * h * w];
                    ::effdet_runtime::with_isa!(isa, I => sum_depthwise_pointwise_fixed::<
                        3,
                        1,
                        { code::NONE },
                        { code::SWISH },
                        { code::NONE },
                        { route::AUTO }, 0, 0, 0, 0, 0, I>(
                        pool.par(),
                        &inputs,
                        &coef,
                        Act::Swish,
                        &wd,
                        &bd,
                        Act::None,
                        &wp,
                        &bp,
                        Act::None,
                        None,
                        &mut got,
                        cin,
                        cout,
                        h,
                        w,
                        k,
                        s,
                        pads,
                    ));
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert!(bits(&got) == bits(&want), "{what}: output differs");
                }
            }
        }
    }

    /// The fixed variant for route `r`.
    #[allow(clippy::too_many_arguments)]
    fn call_fixed<const K: usize, const S: usize>(
        r: u8,
        isa: Isa,
        pool: &Pool,
        x: &[f32],
        wd: &[f32],
        bd: &[f32],
        wp: &[f32],
        bp: &[f32],
        residual: Option<&[f32]>,
        y: &mut [f32],
        cin: usize,
        cout: usize,
        h: usize,
        w: usize,
        pads: [usize; 4],
    ) {
        macro_rules! with_route {
            ($($r:expr),*) => {
                match r {
                    $(x_ if x_ == $r => ::effdet_runtime::with_isa!(isa, I => depthwise_pointwise_fixed::<
                            K, S, { code::NONE }, { code::SWISH }, { $r }, 0, 0, 0, 0, 0, I,
                        >(
                            pool.par(), x, wd, bd, Act::None, wp, bp, Act::Swish, residual, y,
                        cin, cout, h, w, K, S, pads,
                    )),)*
                    x_ => panic!("route {x_:#x} not in the test's list"),
                }
            };
        }
        with_route!(
            route::ROWS,
            route::TALL_512,
            route::TALL_NEON,
            route::TALL_512 | route::TALL_NEON,
            route::LANES_512 | route::LANES_256,
            route::LANES_512 | route::TALL_512 | route::LANES_256,
            route::LANES_512 | route::LANES_256 | route::TALL_NEON,
            route::LANES_512 | route::TALL_512 | route::LANES_256 | route::TALL_NEON,
            route::TALL_512 | route::LANES_256 | route::TALL_NEON,
            route::TALL_512 | route::LANES_256,
            route::LANES_256,
            route::LANES_256 | route::TALL_NEON
        );
    }

    /// A call of an instance compiled for another stride, or another shape, panics.
    #[test]
    fn refuses_another_stride_or_shape() {
        use crate::kernels::depthwise::pads;
        let x = vec![0.0; 4 * 36];
        let wp = pack(&[0.0; 8], 2, 4);
        let mut y = vec![0.0; 2 * 36];
        let (wd, bd) = ([0.0; 4 * 9], [0.0; 4]);
        let call = |h: usize, stride: usize, y: &mut [f32]| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                depthwise_pointwise_fixed::<
                    3,
                    1,
                    { code::NONE },
                    { code::NONE },
                    { route::AUTO },
                    4,
                    2,
                    5,
                    5,
                    { pads([1; 4]) },
                    { ::effdet_runtime::kernels::isa_code::SCALAR },
                >(
                    Par::serial(),
                    &x[..4 * h * 5],
                    &wd,
                    &bd,
                    Act::None,
                    &wp,
                    &[],
                    Act::None,
                    None,
                    &mut y[..2 * h * 5],
                    4,
                    2,
                    h,
                    5,
                    3,
                    stride,
                    [1; 4],
                )
            }))
            .map_err(|e| e.downcast_ref::<String>().cloned().unwrap_or_default())
        };
        let e = call(5, 2, &mut y).unwrap_err();
        assert!(e.contains("compiled for kernel 3 stride 1"), "{e}");
        let e = call(6, 1, &mut y).unwrap_err();
        assert!(e.contains("compiled for the sizes [4, 2, 5, 5]"), "{e}");
        call(5, 1, &mut y).expect("the shape it was compiled for");
        assert!(
            y[..50].iter().all(|&v| v == 0.0),
            "zero weights, no bias: zeros"
        );
    }
    /// A generated call's instance (sizes and padding constants: four bands of a 30 × 256
    /// plane, a residual) gives the run-time variant's output bit for bit, on
    /// every ISA at 1–3 threads.
    #[test]
    fn a_shape_instance_matches_the_run_time_variant() {
        use crate::kernels::depthwise::pads;
        const CIN: usize = 64;
        const COUT: usize = 20;
        const H: usize = 30;
        const W: usize = 256;
        let mut rng = Rng::new(17);
        let x = rng.vec(CIN * H * W);
        let (wd, bd) = (rng.vec(CIN * 9), rng.vec(CIN));
        let wp = pack(&rng.vec(COUT * CIN), COUT, CIN);
        let (bp, res) = (rng.vec(COUT), rng.vec(COUT * H * W));
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for isa in Isa::available() {
            let mut want = vec![f32::NAN; COUT * H * W];
            ::effdet_runtime::with_isa!(isa, I => depthwise_pointwise_fixed::<
                3, 1, { code::SWISH }, { code::NONE }, { route::AUTO }, 0, 0, 0, 0, 0, I,
            >(
                Par::serial(), &x, &wd, &bd, Act::Swish, &wp, &bp, Act::None, Some(&res),
                &mut want, CIN, COUT, H, W, 3, 1, [1; 4],
            ));
            assert!(want.iter().all(|v| v.is_finite()));
            for threads in [1, 2, 3] {
                let pool = Pool::new(threads);
                let mut got = vec![f32::NAN; COUT * H * W];
                ::effdet_runtime::with_isa!(isa, I => depthwise_pointwise_fixed::<
                    3, 1, { code::SWISH }, { code::NONE }, { route::AUTO },
                    CIN, COUT, H, W, { pads([1; 4]) }, I,
                >(
                    pool.par(), &x, &wd, &bd, Act::Swish, &wp, &bp, Act::None, Some(&res),
                    &mut got, CIN, COUT, H, W, 3, 1, [1; 4],
                ));
                assert!(
                    bits(&got) == bits(&want),
                    "{isa:?} t{threads}: output differs"
                );
            }
        }
    }
}
