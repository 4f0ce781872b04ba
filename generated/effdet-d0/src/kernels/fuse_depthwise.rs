//! A BiFPN node's weighted input fusion feeding its separable conv's depthwise conv, tile
//! by tile of channels: `y = act(depthwise(act_sum(Σ_i coef[i] · sample_i(x_i))))`.
//!
//! Both halves work channel by channel, so each thread takes a run of channels and, a tile
//! of [`tile_channels`] at a time, fuses the inputs' planes into a per-thread buffer and
//! runs the depthwise conv from it. The fused sum (at D0's P3 a 1 MB tensor, per node) is
//! never written to the arena: one tile of it stays in L2 between its writer and its
//! reader, instead of the whole tensor going out and coming back.
//!
//! The pointwise half of the separable conv needs every channel of a pixel, so it runs
//! after this kernel as a 1×1 conv on the depthwise output. Where the separable conv runs
//! band by band ([`super::separable::worth_fusing`]: D0's and Lite0's nodes), the plan
//! takes [`super::separable::sum_depthwise_pointwise_fixed`] instead, which computes the
//! sum the same way for a band's rows; this kernel serves the wider nodes.
//!
//! Each output value is the one the two kernels compute one after the other, bit for bit:
//! both compute each channel on its own, in the same order whatever channels a call covers
//! (and every depthwise route gives the same bits).

use super::depthwise::{check_fixed, fast, run_planes, Args as Depthwise, Planes};
use super::fuse::{check, run_channels, Args as Sum, Sample};
use ::effdet_runtime::kernels::scratch;
use ::effdet_runtime::kernels::simd::require;
use ::effdet_runtime::kernels::{dim, size, Act, Par};

/// Floats of one tile of fused planes: 128 KB, so that the tile, the input rows the sum
/// reads and the depthwise conv's output rows all stay in L2 (1 MiB per core in the cache
/// model the compiler's fixed rules assume).
const TILE_FLOATS: usize = 32 * 1024;

/// Channels per tile for `c` channels of `h × w` fused planes: as many planes as fit in
/// `TILE_FLOATS` (128 KB) (at least one), in whole vectors of 16 channels when 16 or more fit, so
/// that the depthwise conv's channels-across-a-vector route can take a tile of small
/// planes. Emitted code picks its depthwise route for this many channels.
pub fn tile_channels(c: usize, h: usize, w: usize) -> usize {
    let fit = TILE_FLOATS / h.saturating_mul(w).max(1);
    let fit = if fit >= 16 { fit / 16 * 16 } else { fit };
    fit.clamp(1, c.max(1))
}

/// `y = act(depthwise(act_sum(Σ_i coef[i] · sample_i(x_i))))`, compiled for the depthwise
/// conv's kernel size `K`, stride `S`, activation code `A`, the sum's activation code `AF`
/// (`effdet_runtime::kernels::act::code`), the depthwise route `R`
/// ([`super::depthwise::route`], for tiles of [`tile_channels`] channels) and the
/// instruction set `I` (`effdet_runtime::kernels::isa_code`), as a generated model calls it;
/// `k`, `stride`, `act` and `act_sum` must be those constants' values. A generated call also
/// fixes its shape: `C`, `H`, `W` and `PADS` ([`super::depthwise::pads`]) are `c`, `h`, `w`
/// and `pads` (0: given at run time), so that its tiles and their trip counts are constants.
///
/// `inputs` and `coef` as [`super::fuse::fuse`] takes them for an `h × w` output of `c`
/// channels; `w_dw`: `[c][k][k]`; `b_dw`: `[c]`; `y`: `[c][oh][ow]` as
/// [`super::depthwise::depthwise`] sizes it. `k` is 3 or 5 and `stride` 1 or 2.
///
/// # Panics
/// If a slice is too short for these sizes, a max pool does not give `h × w`, the
/// arguments differ from the constants, or this CPU does not run `I`.
#[allow(clippy::too_many_arguments)]
pub fn fuse_depthwise_fixed<
    const K: usize,
    const S: usize,
    const A: u8,
    const AF: u8,
    const R: u8,
    const C: usize,
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
    y: &mut [f32],
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pads: [usize; 4],
    act: Act,
) {
    assert!(
        fast(K, S) && (k, stride) == (K, S),
        "fuse_depthwise: compiled for kernel {K} stride {S}, called with {k} and {stride}"
    );
    check_fixed::<PADS>("fuse_depthwise", &[C, H, W], &[c, h, w], pads);
    let (act, act_sum) = (act.fixed::<A>(), act_sum.fixed::<AF>());
    let g = Tiles::new::<K, S, C, H, W, PADS>(c, h, w, pads);
    let (c, h, w) = (g.c, g.p.h, g.p.w);
    let (plane_in, plane_out) = (g.p.plane_in, g.p.plane_out);
    check(inputs, coef, c * plane_in, c, h, w);
    assert!(
        w_dw.len() >= size("fuse_depthwise", &[c, k, k])
            && b_dw.len() >= c
            && y.len() >= size("fuse_depthwise", &[c, plane_out]),
        "fuse_depthwise: slices too short for c {c}, {h}×{w}, k {k}"
    );
    require::<I>("fuse_depthwise");
    if c == 0 || plane_out == 0 {
        return;
    }
    let y = &mut y[..c * plane_out];
    let group = c.div_ceil(par.threads());
    let work = c * (plane_in * inputs.len().max(1) * 4 + plane_out * k * k);
    par.for_each_chunk(y, group * plane_out, work, |gi, yg| {
        // The geometry again, from the constants where the call has them.
        let Tiles {
            p:
                Planes {
                    h,
                    w,
                    pads,
                    oh,
                    ow,
                    plane_in,
                    plane_out,
                },
            tile,
            ..
        } = Tiles::new::<K, S, C, H, W, PADS>(c, h, w, pads);
        let (c0, n) = (gi * group, yg.len() / plane_out);
        let whole = (h, w, (0, h));
        sum_tiles::<AF, I>(
            inputs,
            coef,
            act_sum,
            whole,
            (c0, n),
            tile,
            |t0, m, fused| {
                let first = c0 + t0;
                run_planes::<K, S, A, R, I>(&mut Depthwise {
                    x: fused,
                    x_stride: plane_in,
                    w: &w_dw[first * K * K..(first + m) * K * K],
                    bias: &b_dw[first..first + m],
                    y: &mut yg[t0 * plane_out..(t0 + m) * plane_out],
                    y_stride: plane_out,
                    h,
                    w_in: w,
                    oh,
                    ow,
                    k: K,
                    stride: S,
                    pads,
                    act,
                    means: &mut [],
                });
            },
        );
    });
}

/// The geometry of a [`fuse_depthwise_fixed`] call: its sizes (constants where the call
/// has them), output size and channels per tile ([`tile_channels`]).
struct Tiles {
    c: usize,
    p: Planes,
    tile: usize,
}

impl Tiles {
    #[inline(always)]
    fn new<
        const K: usize,
        const S: usize,
        const C: usize,
        const H: usize,
        const W: usize,
        const PADS: u64,
    >(
        c: usize,
        h: usize,
        w: usize,
        pads: [usize; 4],
    ) -> Tiles {
        let c = dim::<C>(c);
        let p = Planes::new::<H, W, PADS>("fuse_depthwise", h, w, pads, K, S);
        Tiles {
            c,
            p,
            tile: tile_channels(c, p.h, p.w),
        }
    }
}

/// A BiFPN node's weighted sum (`act_sum(Σ_i coef[i] · sample_i(x_i))`, `h × w` planes)
/// for channels `c0 .. c0 + n`, rows `rows.0 .. rows.1` of each, `tile` channels at a time
/// into a per-thread buffer: `f(t0, m, sum)` takes each tile (channels `c0 + t0 ..` of
/// `m`, planes of `(rows.1 − rows.0) · w` floats) to run a depthwise conv on. The inputs
/// were checked by [`check`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn sum_tiles<const AF: u8, const I: u8>(
    inputs: &[(&[f32], Sample)],
    coef: &[f32],
    act_sum: Act,
    (h, w, rows): (usize, usize, (usize, usize)),
    (c0, n): (usize, usize),
    tile: usize,
    mut f: impl FnMut(usize, usize, &[f32]),
) {
    let plane = (rows.1 - rows.0) * w;
    let mut buf = scratch::take::<f32>(tile.min(n) * plane);
    for t0 in (0..n).step_by(tile) {
        let m = tile.min(n - t0);
        let sum = &mut buf[..m * plane];
        run_channels::<AF, I>(Sum {
            inputs,
            coef,
            y: sum,
            c0: c0 + t0,
            oh: h,
            ow: w,
            rows,
            act: act_sum,
        });
        f(t0, m, sum);
    }
}

