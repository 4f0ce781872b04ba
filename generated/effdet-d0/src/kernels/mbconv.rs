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

