//! An MBConv's expand 1×1 conv (+ bias, activation) feeding its depthwise conv (+ bias,
//! activation), band by band: the expanded tensor (6× the block's input, 25 MB at D0's
//! 256² stage) is never written to the arena. A band of input rows is copied once into a
//! per-thread buffer that stays in L2; panel by panel of [`MR`] expanded channels, it is
//! expanded into a small buffer and the depthwise conv reads that; the rows two bands
//! share (`k − stride`) are expanded by both. Optionally the channel means of the output
//! (a squeeze-excite's squeeze) are taken at the end.
//!
//! Each output value is the one the two kernels compute one after the other, bit for bit:
//! the 1×1 conv's accumulation order does not depend on its pixel blocking, and the
//! depthwise conv's per-pixel tap order does not depend on the rows a call covers (padding
//! rows become zero rows of the band).

use super::conv1x1::{conv1x1_pixels, packed_len, MR};
use super::depthwise::{band_input, by_shape, check_fixed, fast, route, run_planes, Args, Planes};
use super::se::plane_means;
use ::effdet_runtime::kernels::scratch;
use ::effdet_runtime::kernels::simd::{require, usable};
use ::effdet_runtime::kernels::{dim, size, Act, Isa, Par};

/// Floats of one band of the block's input (`cin` channels × rows × width, copied with a
/// padded row stride): 256 KB, so that it, one panel's expanded rows and the depthwise
/// ring stay in L2 while every panel of the band reads it.
const BAND_FLOATS: usize = 64 * 1024;

/// Output rows per band for this shape: as many as keep the band's input (`cin` channels of
/// `w` pixels) within [`BAND_FLOATS`].
fn band_rows(cin: usize, w: usize, k: usize, stride: usize) -> usize {
    let rows_in = (BAND_FLOATS / (cin.max(1) * w.max(1))).max(k);
    (rows_in - k) / stride + 1
}

/// Whether [`expand_depthwise`] beats the two kernels one after the other for this shape,
/// by a fixed rule (the same on every machine, so generated code does not depend on the
/// one it was generated on): the expanded tensor (`c × h × w` floats) is at least 2 MiB,
/// as much as a core's L2, so that writing and reading it back runs from L3 or memory; and
/// the rows two bands both expand (`k − stride` per band) add at most 1/8 to the expand
/// conv. Below that size the separate kernels find the tensor in cache and the fused one
/// loses to its smaller calls and the repeated rows (AVX2 Zen 2, D0: the 256²×96 and
/// 128²×144 stages gain 2.1 and 1.0 ms; the 32²×672 stage would lose 1.3 ms). The floor
/// was 8 MiB; at 2 MiB D0's 64²×240 and Lite0's 80²×144 stages fuse too, 2–3% faster on an
/// Intel Xeon (interleaved runs of both crates).
pub fn worth_fusing(cin: usize, c: usize, h: usize, w: usize, k: usize, stride: usize) -> bool {
    let big = c.saturating_mul(h).saturating_mul(w).saturating_mul(4) >= 2 << 20;
    let band = band_rows(cin, w, k, stride);
    big && matches!(k, 3 | 5)
        && matches!(stride, 1 | 2)
        && 8 * k.saturating_sub(stride) <= band * stride
}

/// `y = act(depthwise(act_exp(conv1x1(x))))`, the means of `y`'s planes into `means`
/// (`c` floats, or nothing when empty).
///
/// `x`: `[cin][h][w]`; `w_exp`: the `[c][cin]` expand weights packed by
/// [`super::conv1x1::pack`]; `b_exp`: `[c]` or empty; `w_dw`: `[c][k][k]`; `b_dw`: `[c]`;
/// `y`: `[c][oh][ow]` as [`super::depthwise::depthwise`] sizes it. `k` is 3 or 5 and
/// `stride` 1 or 2 (the depthwise kernel's fast path).
///
/// Each thread takes a run of panels of [`MR`] channels; per band of output rows it copies
/// the band's input rows once (all `cin` channels, a row stride off the cache-set
/// multiples) and then, panel by panel, expands them into a small buffer and runs the
/// depthwise conv on it.
///
/// # Panics
/// If a slice is too short for these sizes, `k` or `stride` is not one of those, `means`
/// is neither empty nor `c` long.
#[allow(clippy::too_many_arguments)]
pub fn expand_depthwise(
    isa: Isa,
    par: Par,
    x: &[f32],
    w_exp: &[f32],
    b_exp: &[f32],
    act_exp: Act,
    w_dw: &[f32],
    b_dw: &[f32],
    y: &mut [f32],
    cin: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pads: [usize; 4],
    act: Act,
    means: &mut [f32],
) {
    assert!(
        fast(k, stride),
        "expand_depthwise: kernel {k} stride {stride} (3 or 5, 1 or 2)"
    );
    // The expand conv's activation and the route are chosen at run time.
    ::effdet_runtime::with_isa!(usable(isa), I => by_shape!(
        expand_depthwise_fixed[, { ::effdet_runtime::kernels::act::code::ANY }, { route::AUTO }, 0, 0, 0, 0, 0, I],
        k, stride, act;
        par, x, w_exp, b_exp, act_exp, w_dw, b_dw, y, cin, c, h, w, k, stride, pads, act, means));
}

/// [`expand_depthwise`] compiled for the depthwise conv's kernel size `K`, stride `S` and
/// activation code `A`, the expand conv's activation code `AE`
/// (`effdet_runtime::kernels::act::code`), the depthwise conv's route `R` (for panels
/// of [`MR`] channels: [`super::depthwise::route`]) and the instruction set `I`
/// (`effdet_runtime::kernels::isa_code`), as a generated model calls it: only
/// the variants a model calls are compiled into it. `k`, `stride`, `act` and `act_exp` must be
/// those constants' values. A generated call also fixes its shape: `CIN`, `C`, `H`, `W`
/// and `PADS` ([`super::depthwise::pads`]) are `cin`, `c`, `h`, `w` and `pads` (0: given
/// at run time), so that its bands, panels and their trip counts are constants.
///
/// # Panics
/// As [`expand_depthwise`]; and if the arguments differ from the constants, or this CPU
/// does not run `I`.
#[allow(clippy::too_many_arguments)]
pub fn expand_depthwise_fixed<
    const K: usize,
    const S: usize,
    const A: u8,
    const AE: u8,
    const R: u8,
    const CIN: usize,
    const C: usize,
    const H: usize,
    const W: usize,
    const PADS: u64,
    const I: u8,
>(
    par: Par,
    x: &[f32],
    w_exp: &[f32],
    b_exp: &[f32],
    act_exp: Act,
    w_dw: &[f32],
    b_dw: &[f32],
    y: &mut [f32],
    cin: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pads: [usize; 4],
    act: Act,
    means: &mut [f32],
) {
    assert!(
        fast(K, S) && (k, stride) == (K, S),
        "expand_depthwise: compiled for kernel {K} stride {S}, called with {k} and {stride}"
    );
    check_fixed::<PADS>("expand_depthwise", &[CIN, C, H, W], &[cin, c, h, w], pads);
    let (act, act_exp) = (act.fixed::<A>(), act_exp.fixed::<AE>());
    let g = Bands::new::<K, S, CIN, H, W, PADS>(cin, h, w, pads);
    let (cin, c, h, w) = (g.cin, dim::<C>(c), g.p.h, g.p.w);
    let (hw, plane_out) = (g.p.plane_in, g.p.plane_out);
    assert!(
        x.len() >= size("expand_depthwise", &[cin, hw])
            && w_exp.len() == packed_len(c, cin)
            && (b_exp.is_empty() || b_exp.len() >= c)
            && w_dw.len() >= size("expand_depthwise", &[c, k, k])
            && b_dw.len() >= c
            && y.len() >= size("expand_depthwise", &[c, plane_out])
            && (means.is_empty() || means.len() == c),
        "expand_depthwise: slices too short for cin {cin}, c {c}, {h}×{w}, k {k}"
    );
    require::<I>("expand_depthwise");
    if c == 0 || plane_out == 0 {
        return;
    }
    let y = &mut y[..c * plane_out];
    let panels = c.div_ceil(MR);
    let group = panels.div_ceil(par.threads()) * MR;
    let per_group = if means.is_empty() { 0 } else { group };
    let work = c * (hw * cin + plane_out * k * k);
    par.for_each_chunk_with(
        y,
        group * plane_out,
        means,
        per_group,
        work,
        |gi, yc, mc| {
            // The geometry again, from the constants where the call has them: the loops
            // below then run constant trip counts.
            let Bands {
                cin,
                p:
                    Planes {
                        h,
                        w,
                        pads,
                        oh,
                        ow,
                        plane_in: hw,
                        plane_out,
                    },
                band,
                max_in,
                ld,
            } = Bands::new::<K, S, CIN, H, W, PADS>(cin, h, w, pads);
            let c0 = gi * group;
            let n = yc.len() / plane_out;
            let mut xbuf = scratch::take::<f32>(cin * ld);
            let mut ebuf = scratch::take::<f32>(MR * max_in * w);
            let mut o0 = 0;
            while o0 < oh {
                let o1 = (o0 + band).min(oh);
                let ((i0, i1), band_pads) = band_input((o0, o1), h, pads, K, S);
                let count = (i1 - i0) * w;
                for (ci, row) in xbuf.chunks_exact_mut(ld).enumerate().take(cin) {
                    row[..count].copy_from_slice(&x[ci * hw + i0 * w..][..count]);
                }
                for p0 in (0..n).step_by(MR) {
                    let (r0, rows) = (c0 + p0, (n - p0).min(MR));
                    let wp = &w_exp[r0 * cin..][..packed_len(rows, cin)];
                    let bp = if b_exp.is_empty() {
                        b_exp
                    } else {
                        &b_exp[r0..r0 + rows]
                    };
                    let e = &mut ebuf[..rows * count];
                    conv1x1_pixels::<AE, CIN, I>(
                        &xbuf[..cin * ld],
                        wp,
                        bp,
                        None,
                        e,
                        cin,
                        ld,
                        0,
                        count,
                        (count, 0),
                        act_exp,
                    );
                    let mut a = Args {
                        x: e,
                        x_stride: count,
                        w: &w_dw[r0 * K * K..(r0 + rows) * K * K],
                        bias: &b_dw[r0..r0 + rows],
                        y: &mut yc[p0 * plane_out + o0 * ow..],
                        y_stride: plane_out,
                        h: i1 - i0,
                        w_in: w,
                        oh: o1 - o0,
                        ow,
                        k: K,
                        stride: S,
                        pads: band_pads,
                        act,
                        means: &mut [],
                    };
                    run_planes::<K, S, A, R, I>(&mut a);
                }
                o0 = o1;
            }
            if !mc.is_empty() {
                plane_means::<I>(yc, mc, plane_out);
            }
        },
    );
}

/// The geometry of an [`expand_depthwise_fixed`] call: its sizes (constants where the call
/// has them), output size, bands and the band buffer's row stride.
struct Bands {
    cin: usize,
    p: Planes,
    /// Output rows per band ([`band_rows`]).
    band: usize,
    /// Input rows of a band.
    max_in: usize,
    /// The band's row stride: its pixels rounded up to 16, plus 16 (rows 64 bytes apart in
    /// the cache sets, as conv1x1 pads its copies).
    ld: usize,
}

impl Bands {
    #[inline(always)]
    fn new<
        const K: usize,
        const S: usize,
        const CIN: usize,
        const H: usize,
        const W: usize,
        const PADS: u64,
    >(
        cin: usize,
        h: usize,
        w: usize,
        pads: [usize; 4],
    ) -> Bands {
        let cin = dim::<CIN>(cin);
        let p = Planes::new::<H, W, PADS>("expand_depthwise", h, w, pads, K, S);
        let band = band_rows(cin, p.w, K, S);
        let max_in = (band - 1) * S + K;
        Bands {
            cin,
            p,
            band,
            max_in,
            ld: (max_in * p.w).next_multiple_of(16) + 16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::op::tf_same_pad;

    #[test]
    fn fuses_the_large_planes_only() {
        // (cin, c, h, w, k, stride) of D0's MBConv expand → depthwise pairs.
        assert!(worth_fusing(16, 96, 256, 256, 3, 2));
        assert!(worth_fusing(24, 144, 128, 128, 3, 1));
        assert!(worth_fusing(40, 240, 64, 64, 3, 2));
        assert!(
            !worth_fusing(24, 144, 128, 128, 5, 2),
            "17% of the rows expanded twice"
        );
        assert!(
            !worth_fusing(112, 672, 32, 32, 5, 1),
            "bands of 14 rows: 4 of them expanded twice"
        );
        assert!(!worth_fusing(192, 1152, 16, 16, 5, 1), "1.1 MB: in cache");
        // Lite0 (320²): its 80²×144 stages.
        assert!(worth_fusing(24, 144, 80, 80, 3, 1) && worth_fusing(24, 144, 80, 80, 5, 2));
        assert!(
            !worth_fusing(64, 64, 64, 64, 3, 1),
            "a head's separable convs"
        );
        assert!(
            !worth_fusing(16, 96, 256, 256, 7, 1),
            "no fast depthwise path"
        );
    }
    use crate::kernels::conv1x1::{conv1x1, pack};
    use crate::kernels::depthwise::{depthwise_pooled, out_len};
    use ::effdet_runtime::kernels::simd::test_util::Rng;
    use ::effdet_runtime::kernels::Pool;

    /// The fused kernel gives the 1×1 conv then the depthwise conv (and its means) bit for
    /// bit, on every ISA at 1–3 threads: one band and many (a wide input makes short bands,
    /// down to one output row), strides 1 and 2, channel counts off the panel size,
    /// planes smaller than the kernel, symmetric and TF 'same' padding.
    #[test]
    fn matches_the_two_kernels_bit_for_bit() {
        let mut rng = Rng::new(5);
        let cases = [
            // (cin, c, h, w, k, stride)
            (4, 12, 9, 11, 3, 1),
            (3, 8, 9, 11, 5, 2),
            // Bands of 11 output rows (13 input rows of 16 × 300), then of 1 (5 of 40 × 600).
            (16, 20, 40, 300, 3, 1),
            (40, 9, 17, 600, 5, 2),
            (3, 5, 3, 2, 5, 1),
            (6, 16, 33, 70, 3, 2),
        ];
        for (cin, c, h, w, k, s) in cases {
            for same_pads in [true, false] {
                let pads = if same_pads {
                    let ((t, b), (l, r)) = (tf_same_pad(h, k, s, 1), tf_same_pad(w, k, s, 1));
                    [t, l, b, r]
                } else {
                    [k / 2; 4]
                };
                let x = rng.vec(cin * h * w);
                let we = rng.vec(c * cin);
                let wp = pack(&we, c, cin);
                let (be, wd, bd) = (rng.vec(c), rng.vec(c * k * k), rng.vec(c));
                let oh = out_len(h, pads[0], pads[2], k, s);
                let ow = out_len(w, pads[1], pads[3], k, s);
                for isa in Isa::available() {
                    for threads in [1, 2, 3] {
                        let pool = Pool::new(threads);
                        let mut e = vec![f32::NAN; c * h * w];
                        conv1x1(
                            isa,
                            pool.par(),
                            &x,
                            &wp,
                            &be,
                            None,
                            &mut e,
                            cin,
                            c,
                            h * w,
                            Act::Swish,
                        );
                        let (mut want, mut want_means) =
                            (vec![f32::NAN; c * oh * ow], vec![f32::NAN; c]);
                        depthwise_pooled(
                            isa,
                            pool.par(),
                            &e,
                            &wd,
                            &bd,
                            &mut want,
                            c,
                            h,
                            w,
                            k,
                            s,
                            pads,
                            Act::Swish,
                            &mut want_means,
                        );
                        let fused = |y: &mut [f32], m: &mut [f32]| {
                            expand_depthwise(
                                isa,
                                pool.par(),
                                &x,
                                &wp,
                                &be,
                                Act::Swish,
                                &wd,
                                &bd,
                                y,
                                cin,
                                c,
                                h,
                                w,
                                k,
                                s,
                                pads,
                                Act::Swish,
                                m,
                            )
                        };
                        let (mut got, mut got_means) =
                            (vec![f32::NAN; c * oh * ow], vec![f32::NAN; c]);
                        fused(&mut got, &mut got_means);
                        let what =
                            format!("{isa:?} cin{cin} c{c} {h}x{w} k{k} s{s} {pads:?} t{threads}");
                        assert!(
                            want.iter().all(|v| v.is_finite()),
                            "{what}: reference not finite"
                        );
                        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                        assert!(bits(&got) == bits(&want), "{what}: output differs");
                        assert!(
                            bits(&got_means) == bits(&want_means),
                            "{what}: means differ"
                        );
                        let mut plain = vec![f32::NAN; c * oh * ow];
                        fused(&mut plain, &mut []);
                        assert!(
                            bits(&plain) == bits(&want),
                            "{what}: output without means differs"
                        );
                        // As a generated model calls it: both activations fixed.
                        let mut fixed = vec![f32::NAN; c * oh * ow];
                        ::effdet_runtime::with_isa!(isa, I => by_shape!(
                            expand_depthwise_fixed[, { ::effdet_runtime::kernels::act::code::SWISH }, { route::AUTO }, 0, 0, 0, 0, 0, I],
                            k, s, Act::Swish;
                            pool.par(), &x, &wp, &be, Act::Swish, &wd, &bd, &mut fixed, cin,
                            c, h, w, k, s, pads, Act::Swish, &mut []));
                        assert!(
                            bits(&fixed) == bits(&want),
                            "{what}: the fixed variant differs"
                        );
                    }
                }
            }
        }
    }
    /// A generated call's instance (sizes and padding constants: 1-row bands of a 600-wide
    /// input, TF 'same' padding of stride 2) gives the run-time kernel's output and means
    /// bit for bit, on every ISA at 1–3 threads.
    #[test]
    fn a_shape_instance_matches_the_run_time_kernel() {
        use crate::kernels::depthwise::pads;
        use ::effdet_runtime::kernels::act::code;
        const CIN: usize = 40;
        const C: usize = 9;
        const H: usize = 17;
        const W: usize = 600;
        const P: [usize; 4] = [2, 1, 2, 2];
        let ((t, b), (l, r)) = (tf_same_pad(H, 5, 2, 1), tf_same_pad(W, 5, 2, 1));
        assert_eq!([t, l, b, r], P, "TF 'same' of 17 × 600, kernel 5, stride 2");
        let mut rng = Rng::new(9);
        let x = rng.vec(CIN * H * W);
        let wp = pack(&rng.vec(C * CIN), C, CIN);
        let (be, wd, bd) = (rng.vec(C), rng.vec(C * 25), rng.vec(C));
        let len = C * 9 * 300;
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for isa in Isa::available() {
            let (mut want, mut want_means) = (vec![f32::NAN; len], vec![f32::NAN; C]);
            expand_depthwise(
                isa,
                Par::serial(),
                &x,
                &wp,
                &be,
                Act::Swish,
                &wd,
                &bd,
                &mut want,
                CIN,
                C,
                H,
                W,
                5,
                2,
                P,
                Act::Relu6,
                &mut want_means,
            );
            assert!(want.iter().all(|v| v.is_finite()));
            for threads in [1, 2, 3] {
                let pool = Pool::new(threads);
                let (mut got, mut got_means) = (vec![f32::NAN; len], vec![f32::NAN; C]);
                ::effdet_runtime::with_isa!(usable(isa), I => expand_depthwise_fixed::<
                    5,
                    2,
                    { code::RELU6 },
                    { code::SWISH },
                    { route::AUTO },
                    CIN,
                    C,
                    H,
                    W,
                    { pads(P) },
                    I,
                >(
                    pool.par(),
                    &x,
                    &wp,
                    &be,
                    Act::Swish,
                    &wd,
                    &bd,
                    &mut got,
                    CIN,
                    C,
                    H,
                    W,
                    5,
                    2,
                    P,
                    Act::Relu6,
                    &mut got_means,
                ));
                assert!(
                    bits(&got) == bits(&want),
                    "{isa:?} t{threads}: output differs"
                );
                assert!(
                    bits(&got_means) == bits(&want_means),
                    "{isa:?} t{threads}: means"
                );
            }
        }
    }
}
