//! Depthwise convolution (one `k×k` filter per channel) with bias and activation fused.
//!
//! Vectorized along the output row. Borders cost nothing in the inner loop: each input row
//! is copied once into a small ring of zero-padded rows (`PaddedRows`, a few KB that stay in
//! L1), and for stride 2 that copy also splits even and odd columns into two half-rows, so
//! every tap is one contiguous vector load. Four (or eight) output rows are computed at once,
//! sharing each loaded input vector between the rows whose windows contain it.
//!
//! The ring lives in a per-thread `scratch` buffer: once a call has run on
//! a thread, later calls there allocate nothing.
//!
//! With AVX-512 or AVX2, narrow or small planes (rows of 10 or 20 outputs, 16² and
//! smaller) go to `depthwise_lanes` instead, which vectorizes across channels and gives the
//! same bits.

use ::effdet_runtime::kernels::scratch;
use ::effdet_runtime::kernels::simd::{require, usable, Vf32};
use ::effdet_runtime::kernels::{dim, size, Act, Isa, Par};

/// Calls `$f::<K, S, A $extra>($args…)` for the fast-path kernel size `$k` and stride `$s`
/// and the code `A` of activation `$act` (`$extra`: `, ` and any further const arguments): the run-time dispatch of [`depthwise_pooled`] and
/// [`super::mbconv::expand_depthwise`] onto the entry points a generated model calls
/// directly (which compile only the variants that model uses).
macro_rules! by_shape {
    ($f:ident [$($extra:tt)*], $k:expr, $s:expr, $act:expr; $($arg:expr),* $(,)?) => {
        match ($k, $s) {
            (3, 1) => by_shape!(@act $f [$($extra)*], 3, 1, $act; $($arg),*),
            (3, 2) => by_shape!(@act $f [$($extra)*], 3, 2, $act; $($arg),*),
            (5, 1) => by_shape!(@act $f [$($extra)*], 5, 1, $act; $($arg),*),
            (5, 2) => by_shape!(@act $f [$($extra)*], 5, 2, $act; $($arg),*),
            (k, s) => unreachable!("no depthwise fast path for k {k} stride {s}"),
        }
    };
    (@act $f:ident [$($extra:tt)*], $k:literal, $s:literal, $act:expr; $($arg:expr),*) => {{
        use ::effdet_runtime::kernels::act::code;
        match $act.code() {
            code::NONE => $f::<$k, $s, { code::NONE } $($extra)*>($($arg),*),
            code::SWISH => $f::<$k, $s, { code::SWISH } $($extra)*>($($arg),*),
            code::RELU6 => $f::<$k, $s, { code::RELU6 } $($extra)*>($($arg),*),
            code::SIGMOID => $f::<$k, $s, { code::SIGMOID } $($extra)*>($($arg),*),
            _ => $f::<$k, $s, { code::ANY } $($extra)*>($($arg),*),
        }
    }};
}
pub(crate) use by_shape;

/// Whether `k` and `stride` have a fast path (the others take plain loops).
pub fn fast(k: usize, stride: usize) -> bool {
    matches!(k, 3 | 5) && matches!(stride, 1 | 2)
}

/// How a fast-path call runs on each instruction set: which kernel ([`lanes_worth`]) and,
/// for the row kernel, how many output rows a block computes ([`tall_blocks`]). A bit set
/// per choice, a const parameter of the kernels: [`route`] of the shape, which the compiler
/// passes, so that a model compiles the routes its shapes take; or [`route::AUTO`], chosen
/// per call at run time (the run-time entry points). Every route computes the same bits.
pub mod route {
    /// The row kernel, 4-row blocks, on every instruction set.
    pub const ROWS: u8 = 0;
    /// AVX-512: channels across a vector ([`super::super::depthwise_lanes`]).
    pub const LANES_512: u8 = 1;
    /// AVX-512: 8-row blocks.
    pub const TALL_512: u8 = 2;
    /// AVX2: channels across a vector.
    pub const LANES_256: u8 = 4;
    /// NEON: 8-row blocks.
    pub const TALL_NEON: u8 = 8;
    /// Chosen at run time from the call's shape.
    pub const AUTO: u8 = 0x80;
}

/// The [`route`] of a call of `c` channels, `oh × ow` outputs, kernel size `k` and stride
/// `stride` (a fast path), by the same fixed rules as [`route::AUTO`] applies at run time.
pub fn route(c: usize, oh: usize, ow: usize, k: usize, stride: usize) -> u8 {
    let mut r = route::ROWS;
    if lanes_worth(Isa::Avx512, c, oh, ow, k, stride) {
        r |= route::LANES_512;
    }
    if tall_blocks(Isa::Avx512, k, ow) {
        r |= route::TALL_512;
    }
    if lanes_worth(Isa::Avx2, c, oh, ow, k, stride) {
        r |= route::LANES_256;
    }
    if tall_blocks(Isa::Neon, k, ow) {
        r |= route::TALL_NEON;
    }
    r
}

/// Whether [`super::depthwise_lanes`] (channels across a vector) beats the row kernel on `isa` for `c` channels of `oh × ow`
/// outputs (`k`, `stride`): at least one whole group of `lanes` channels, and either rows
/// that leave at least a quarter of the row kernel's lanes empty (widths 10 and 20 with
/// AVX-512, 10 with AVX2) or a group's padded input of at most 24² pixels (36 KB with
/// AVX-512, about L1: D0's 16² stage and the heads' small levels, where the row kernel's
/// per-plane ring costs as much as its FMAs). Larger planes stay with the row kernel: the
/// pixel-major buffer leaves L1 (672 channels 5×5 at 32²: 233 µs by rows, 386 by
/// channels). Other instruction sets: never.
///
/// Measured on an AMD EPYC Zen 4, one thread, warm caches, row kernel → this one
/// (`bench_kernels`, swish). AVX-512: 1152 channels 5×5 at 10², 155 → 71 µs; 672 channels
/// 5×5 at 20², 286 → 140 µs (stride 2, 109 → 63 µs); 480 channels 3×3 at 20², 105 → 69
/// µs; 1152 channels 5×5 at 16², 175 → 156 µs. AVX2: 284 → 161, 359 → 285 (231 → 139),
/// 195 → 147 µs; 1152 channels 3×3 at 10², 209 → 118 µs; at 16², 255 → 260 µs (even).
pub(crate) fn lanes_worth(
    isa: Isa,
    c: usize,
    oh: usize,
    ow: usize,
    k: usize,
    stride: usize,
) -> bool {
    let lanes = match isa {
        Isa::Avx512 => 16,
        Isa::Avx2 => 8,
        _ => return false,
    };
    let padded = oh.saturating_sub(1) * stride + k;
    let padded = padded.saturating_mul(ow.saturating_sub(1) * stride + k);
    c >= lanes && (4 * ow <= 3 * ow.next_multiple_of(lanes) || padded <= 24 * 24)
}

/// The input a band of output rows `o0..o1` (`o0 < o1`) of a depthwise conv reads, for an
/// input of `h` rows with `pads` (`[top, left, bottom, right]`), kernel `k` and `stride`:
/// the image rows `(i0, i1)` and the band's own pads (its zero rows above and below those,
/// the columns' pads as they are). A call on the band (its `h` being `i1 − i0`) computes
/// the band's rows bit for bit as the whole conv does.
pub(crate) fn band_input(
    (o0, o1): (usize, usize),
    h: usize,
    pads: [usize; 4],
    k: usize,
    stride: usize,
) -> ((usize, usize), [usize; 4]) {
    // Padded rows o0·s .. (o1−1)·s + k; the image rows among them.
    let (lo, hi) = (o0 * stride, (o1 - 1) * stride + k);
    let i0 = lo.saturating_sub(pads[0]).min(h);
    let i1 = hi.saturating_sub(pads[0]).min(h);
    let top = pads[0].saturating_sub(lo).min(hi - lo);
    let bottom = hi - lo - top - (i1 - i0);
    ((i0, i1), [top, pads[1], bottom, pads[3]])
}

/// Output size of a sliding window: `(len + pads − k) / stride + 1`.
pub(crate) fn out_len(
    len: usize,
    pad_before: usize,
    pad_after: usize,
    k: usize,
    stride: usize,
) -> usize {
    let padded = len
        .checked_add(pad_before)
        .and_then(|v| v.checked_add(pad_after))
        .expect("window: padded length overflows usize");
    assert!(
        padded >= k && k > 0 && stride > 0,
        "window {k} (stride {stride}) does not fit {padded}"
    );
    (padded - k) / stride + 1
}

/// A generated call's padding as one const parameter (`PADS`): `[top, left, bottom,
/// right]`, each below 2¹⁵; else 0, the padding given at run time (as a shape constant 0
/// is).
pub const fn pads(p: [usize; 4]) -> u64 {
    let m = (1 << 15) - 1;
    if p[0] > m || p[1] > m || p[2] > m || p[3] > m {
        return 0;
    }
    1 << 63 | p[0] as u64 | (p[1] as u64) << 15 | (p[2] as u64) << 30 | (p[3] as u64) << 45
}

/// The padding of a call's `PADS` ([`pads`]), or `pads` where it has none (0).
#[inline(always)]
pub(crate) const fn fixed_pads<const P: u64>(pads: [usize; 4]) -> [usize; 4] {
    if P == 0 {
        return pads;
    }
    let m = (1 << 15) - 1;
    [
        (P & m) as usize,
        (P >> 15 & m) as usize,
        (P >> 30 & m) as usize,
        (P >> 45 & m) as usize,
    ]
}

/// Panics, naming `what`, unless each size constant of a generated call (`consts`, 0: none)
/// is its argument's value (`args`).
pub(crate) fn check_dims(what: &str, consts: &[usize], args: &[usize]) {
    assert!(
        consts.iter().zip(args).all(|(&c, &a)| c == 0 || c == a),
        "{what}: compiled for the sizes {consts:?}, called with {args:?}"
    );
}

/// [`check_dims`], and that the call's `PADS` (if any) is `pads`.
pub(crate) fn check_fixed<const P: u64>(
    what: &str,
    consts: &[usize],
    args: &[usize],
    pads: [usize; 4],
) {
    check_dims(what, consts, args);
    assert!(
        fixed_pads::<P>(pads) == pads,
        "{what}: compiled for the pads {:?}, called with {pads:?}",
        fixed_pads::<P>(pads)
    );
}

/// The input and output planes of a depthwise conv: its sizes (an instance's constants `H`,
/// `W` and `P` where it has them, else the arguments: [`dim`], [`fixed_pads`]) and the
/// output size they give. What a kernel's calling thread and its workers both derive.
#[derive(Clone, Copy)]
pub(crate) struct Planes {
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) pads: [usize; 4],
    pub(crate) oh: usize,
    pub(crate) ow: usize,
    /// `h · w`.
    pub(crate) plane_in: usize,
    /// `oh · ow`.
    pub(crate) plane_out: usize,
}

impl Planes {
    /// The planes of a call of kernel `k` and `stride` (`what` names the kernel in the
    /// overflow and window panics).
    #[inline(always)]
    pub(crate) fn new<const H: usize, const W: usize, const P: u64>(
        what: &str,
        h: usize,
        w: usize,
        pads: [usize; 4],
        k: usize,
        stride: usize,
    ) -> Planes {
        let (h, w, pads) = (dim::<H>(h), dim::<W>(w), fixed_pads::<P>(pads));
        let oh = out_len(h, pads[0], pads[2], k, stride);
        let ow = out_len(w, pads[1], pads[3], k, stride);
        Planes {
            h,
            w,
            pads,
            oh,
            ow,
            plane_in: size(what, &[h, w]),
            plane_out: size(what, &[oh, ow]),
        }
    }
}

/// Depthwise convolution: `y[c] = act(bias[c] + conv(x[c], w[c]))`.
///
/// `x`: `[c][h][w_in]`; `w`: `[c][k][k]`; `bias`: `[c]`; `y`: `[c][oh][ow]` with
/// `oh = (h + pads[0] + pads[2] − k) / stride + 1` and `ow` likewise from `pads[1]`, `pads[3]`.
/// `pads` is `[top, left, bottom, right]`. Fast for `k ∈ {3, 5}` and `stride ∈ {1, 2}`; any
/// other `k`/`stride` is computed correctly by a scalar loop.
#[allow(clippy::too_many_arguments)]
pub fn depthwise(
    isa: Isa,
    par: Par,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    y: &mut [f32],
    c: usize,
    h: usize,
    w_in: usize,
    k: usize,
    stride: usize,
    pads: [usize; 4],
    act: Act,
) {
    depthwise_pooled(
        isa,
        par,
        x,
        w,
        bias,
        y,
        c,
        h,
        w_in,
        k,
        stride,
        pads,
        act,
        &mut [],
    );
}

/// [`depthwise`] that also writes the mean of each output plane to `means` (`c` floats, or
/// none when empty), taken right after the plane is computed, while it is still in cache:
/// the channel means a squeeze-excite of this output needs, without reading the map
/// again. They are computed by the squeeze-excite kernel's own code, so they equal its
/// means bit for bit (see `se::squeeze_excite_gates_from_means`).
///
/// # Panics
/// As [`depthwise`]; and if `means` is neither empty nor `c` long.
#[allow(clippy::too_many_arguments)]
pub fn depthwise_pooled(
    isa: Isa,
    par: Par,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    y: &mut [f32],
    c: usize,
    h: usize,
    w_in: usize,
    k: usize,
    stride: usize,
    pads: [usize; 4],
    act: Act,
    means: &mut [f32],
) {
    ::effdet_runtime::with_isa!(usable(isa), I => {
        if fast(k, stride) {
            by_shape!(depthwise_fixed[, { route::AUTO }, 0, 0, 0, 0, I], k, stride, act;
                par, x, w, bias, y, c, h, w_in, k, stride, pads, act, means);
        } else {
            depthwise_general::<I>(par, x, w, bias, y, c, h, w_in, k, stride, pads, act, means);
        }
    });
}

/// [`depthwise_pooled`] compiled for kernel size `K`, stride `S`, activation code `A`
/// (`effdet_runtime::kernels::act::code`), [`route`] `R` and instruction set `I`
/// (`effdet_runtime::kernels::isa_code`), which a generated model chooses per call: only
/// the variants a model calls are compiled into it. `k`, `stride` and `act` must be those
/// constants' values (`R` changes the speed, never a value). A generated call also fixes
/// its shape: `C`, `H`, `W` and `PADS` ([`pads`]) are `c`, `h`, `w_in` and `pads` (0: given
/// at run time).
///
/// # Panics
/// As [`depthwise_pooled`]; and if `(K, S)` has no fast path ([`fast`]), the arguments
/// differ from the constants, or this CPU does not run `I`.
#[allow(clippy::too_many_arguments)]
pub fn depthwise_fixed<
    const K: usize,
    const S: usize,
    const A: u8,
    const R: u8,
    const C: usize,
    const H: usize,
    const W: usize,
    const PADS: u64,
    const I: u8,
>(
    par: Par,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    y: &mut [f32],
    c: usize,
    h: usize,
    w_in: usize,
    k: usize,
    stride: usize,
    pads: [usize; 4],
    act: Act,
    means: &mut [f32],
) {
    assert!(
        fast(K, S) && (k, stride) == (K, S),
        "depthwise: compiled for kernel {K} stride {S}, called with {k} and {stride}"
    );
    check_fixed::<PADS>("depthwise", &[C, H, W], &[c, h, w_in], pads);
    let act = act.fixed::<A>();
    require::<I>("depthwise");
    for_groups::<C, H, W, PADS>(
        par,
        x,
        w,
        bias,
        y,
        c,
        h,
        w_in,
        k,
        stride,
        pads,
        act,
        means,
        run_planes::<K, S, A, R, I>,
    );
}

/// [`depthwise_pooled`] for any kernel size and stride, by plain loops: what a generated
/// model calls for the shapes without a fast path. Compiled for instruction set `I` (the
/// means' code; the conv itself is plain loops).
///
/// # Panics
/// As [`depthwise_pooled`]; and if this CPU does not run `I`.
#[allow(clippy::too_many_arguments)]
pub fn depthwise_general<const I: u8>(
    par: Par,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    y: &mut [f32],
    c: usize,
    h: usize,
    w_in: usize,
    k: usize,
    stride: usize,
    pads: [usize; 4],
    act: Act,
    means: &mut [f32],
) {
    require::<I>("depthwise");
    for_groups::<0, 0, 0, 0>(
        par,
        x,
        w,
        bias,
        y,
        c,
        h,
        w_in,
        k,
        stride,
        pads,
        act,
        means,
        |a| {
            depthwise_any(a);
            if !a.means.is_empty() {
                super::se::plane_means::<I>(a.y, a.means, a.oh * a.ow);
            }
        },
    );
}

/// The checks of a depthwise call and its split into groups of channels, one per thread;
/// `run` computes a group. The sizes are `C`, `H`, `W` and `P`'s where those are not 0.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn for_groups<const C: usize, const H: usize, const W: usize, const P: u64>(
    par: Par,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    y: &mut [f32],
    c: usize,
    h: usize,
    w_in: usize,
    k: usize,
    stride: usize,
    pads: [usize; 4],
    act: Act,
    means: &mut [f32],
    run: impl Fn(&mut Args) + Sync,
) {
    let c = dim::<C>(c);
    assert!(
        means.is_empty() || means.len() == c,
        "depthwise: {} means for {c} channels",
        means.len()
    );
    let Planes {
        h,
        w: w_in,
        pads,
        plane_in,
        plane_out,
        ..
    } = Planes::new::<H, W, P>("depthwise", h, w_in, pads, k, stride);
    assert!(
        x.len() >= size("depthwise", &[c, plane_in]),
        "depthwise: input too short"
    );
    assert!(
        w.len() >= size("depthwise", &[c, k, k]) && bias.len() >= c,
        "depthwise: weights too short"
    );
    assert!(
        y.len() >= size("depthwise", &[c, plane_out]),
        "depthwise: output too short"
    );
    if c == 0 {
        return;
    }
    let y = &mut y[..c * plane_out];
    let group = c.div_ceil(par.threads());
    let per_group = if means.is_empty() { 0 } else { group };
    let work = c * plane_out * k * k;
    par.for_each_chunk_with(
        y,
        group * plane_out,
        means,
        per_group,
        work,
        |gi, yg, mg| {
            // The sizes again, from the constants where the call has them.
            let Planes {
                h,
                w: w_in,
                pads,
                oh,
                ow,
                plane_in,
                plane_out,
            } = Planes::new::<H, W, P>("depthwise", h, w_in, pads, k, stride);
            let (c0, n) = (gi * group, yg.len() / plane_out);
            run(&mut Args {
                x: &x[c0 * plane_in..(c0 + n) * plane_in],
                x_stride: plane_in,
                w: &w[c0 * k * k..(c0 + n) * k * k],
                bias: &bias[c0..c0 + n],
                y: yg,
                y_stride: plane_out,
                h,
                w_in,
                oh,
                ow,
                k,
                stride,
                pads,
                act,
                means: mg,
            });
        },
    );
}

/// One group of channels of a depthwise convolution: `x`, `w`, `bias` hold exactly its
/// channels; input plane `i` starts at `x[i · x_stride]` and output plane `i` at
/// `y[i · y_stride]` (`h · w_in` and `oh · ow` apart normally; bands of rows of taller
/// planes in [`super::mbconv`] and [`super::separable`]).
pub(crate) struct Args<'a> {
    pub(crate) x: &'a [f32],
    pub(crate) x_stride: usize,
    pub(crate) w: &'a [f32],
    pub(crate) bias: &'a [f32],
    pub(crate) y: &'a mut [f32],
    pub(crate) y_stride: usize,
    pub(crate) h: usize,
    pub(crate) w_in: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
    pub(crate) k: usize,
    pub(crate) stride: usize,
    pub(crate) pads: [usize; 4],
    pub(crate) act: Act,
    /// The group's channel means (empty: not wanted).
    pub(crate) means: &'a mut [f32],
}

impl Args<'_> {
    /// The same call for channels `n..` only.
    #[cfg(target_arch = "x86_64")]
    fn skip(&mut self, n: usize) -> Args<'_> {
        let kk = self.k * self.k;
        Args {
            x: &self.x[n * self.x_stride..],
            w: &self.w[n * kk..],
            bias: &self.bias[n..],
            y: &mut self.y[n * self.y_stride..],
            means: if self.means.is_empty() {
                &mut []
            } else {
                &mut self.means[n..]
            },
            ..*self
        }
    }
}

/// Runs the fast path (kernel size `K`, stride `S`, activation code `A`) on one group of
/// channels, with the vector type of instruction set `I` (which the caller checked this CPU
/// runs, with `require`) and the kernels of route `R`:
/// channel-vectorized for narrow or small planes where it pays ([`super::depthwise_lanes`]),
/// else the row kernel. With a fixed route each branch is a constant (`const { }`), so
/// rustc compiles the kernels it selects only.
pub(crate) fn run_planes<const K: usize, const S: usize, const A: u8, const R: u8, const I: u8>(
    a: &mut Args,
) {
    assert!(fast(K, S) && (a.k, a.stride) == (K, S));
    let isa = Isa::of(I);
    if const { R == route::AUTO } {
        #[cfg(target_arch = "x86_64")]
        if lanes_worth(isa, a.bias.len(), a.oh, a.ow, K, S) {
            // SAFETY: the caller checked that this CPU runs `I` (AVX-512F+FMA or AVX2+FMA,
            // the only ones `lanes_worth` takes); `a` is checked by the callers as for the
            // row kernel.
            let done = unsafe { super::depthwise_lanes::run::<K, S, A, I>(a) };
            if done < a.bias.len() {
                run_rows::<K, S, A, I>(&mut a.skip(done));
            }
            return;
        }
        run_rows::<K, S, A, I>(a);
        return;
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            let done = if const { R & route::LANES_512 != 0 } {
                // SAFETY: the caller checked that this CPU runs `I`: AVX-512F and FMA; `a`
                // is checked by the callers as for the row kernel.
                unsafe { super::depthwise_lanes::run_avx512::<K, S, A>(a) }
            } else {
                0
            };
            if done < a.bias.len() {
                let a = &mut a.skip(done);
                // SAFETY: as above.
                unsafe {
                    if const { R & route::TALL_512 != 0 } {
                        planes_avx512::<K, S, 8, A>(a)
                    } else {
                        planes_avx512::<K, S, 4, A>(a)
                    }
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            let done = if const { R & route::LANES_256 != 0 } {
                // SAFETY: the caller checked that this CPU runs `I`: AVX2 and FMA; `a` is
                // checked by the callers as for the row kernel.
                unsafe { super::depthwise_lanes::run_avx2::<K, S, A>(a) }
            } else {
                0
            };
            if done < a.bias.len() {
                // SAFETY: as above.
                unsafe { planes_avx2::<K, S, 4, A>(&mut a.skip(done)) }
            }
        }
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        Isa::Neon => {
            if const { R & route::TALL_NEON != 0 } {
                planes_neon::<K, S, 8, A>(a)
            } else {
                planes_neon::<K, S, 4, A>(a)
            }
        }
        _ => planes_scalar::<K, S, 4, A>(a),
    }
}

/// [`run_planes`] with the row kernel only.
pub(crate) fn run_rows<const K: usize, const S: usize, const A: u8, const I: u8>(a: &mut Args) {
    let isa = Isa::of(I);
    let tall = tall_blocks(isa, K, a.ow);
    match isa {
        // SAFETY: the caller checked that this CPU runs `I`: AVX-512F and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if tall => unsafe { planes_avx512::<K, S, 8, A>(a) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { planes_avx512::<K, S, 4, A>(a) },
        // SAFETY: the caller checked that this CPU runs `I`: AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { planes_avx2::<K, S, 4, A>(a) },
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        Isa::Neon if tall => planes_neon::<K, S, 8, A>(a),
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        Isa::Neon => planes_neon::<K, S, 4, A>(a),
        _ => planes_scalar::<K, S, 4, A>(a),
    }
}

// One function per ISA, (K, S), block height and activation: each gets its own register
// allocation (sharing one function between the two block heights cost 13% on small
// planes).

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn planes_avx512<const K: usize, const S: usize, const RB: usize, const A: u8>(
    a: &mut Args,
) {
    // SAFETY: this function only runs where AVX-512F is available.
    unsafe { planes::<core::arch::x86_64::__m512, K, S, RB>(a, a.act.fixed::<A>()) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn planes_avx2<const K: usize, const S: usize, const RB: usize, const A: u8>(a: &mut Args) {
    // SAFETY: this function only runs where AVX2 and FMA are available.
    unsafe { planes::<core::arch::x86_64::__m256, K, S, RB>(a, a.act.fixed::<A>()) }
}

#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
fn planes_neon<const K: usize, const S: usize, const RB: usize, const A: u8>(a: &mut Args) {
    // SAFETY: NEON is part of every aarch64 CPU.
    unsafe { planes::<core::arch::aarch64::float32x4_t, K, S, RB>(a, a.act.fixed::<A>()) }
}

fn planes_scalar<const K: usize, const S: usize, const RB: usize, const A: u8>(a: &mut Args) {
    // SAFETY: the one-lane f32 path runs on any CPU.
    unsafe { planes::<f32, K, S, RB>(a, a.act.fixed::<A>()) }
}

/// Whether to compute 8 output rows at a time rather than 4. More rows share more loads
/// and give more independent accumulator chains; measured on Zen 4, 8 rows win for 3×3 up
/// to 64 outputs wide with 32 vector registers (AVX-512), and lose on wider planes (more
/// concurrent row streams, a larger ring) and with 16 registers (AVX2: spills). NEON has 32
/// registers too. 5×5 on AVX-512 planes one vector wide (the 16² and 10² stages, where a
/// plane of 4-row blocks is mostly block overhead): 8 rows made D0 2.5% and Lite0 1–2%
/// faster on an Intel Xeon (wider planes: no gain).
fn tall_blocks(isa: Isa, k: usize, ow: usize) -> bool {
    match isa {
        Isa::Avx512 => k == 3 && ow <= 64 || k == 5 && ow <= 16,
        Isa::Neon => k == 3 && ow <= 64,
        _ => false,
    }
}

/// # Safety
/// The CPU must support `V`'s instructions; `a`'s slices hold their planes (checked by
/// [`depthwise`]). `act` is `a.act` (a constant where the caller specializes it).
#[inline(always)]
unsafe fn planes<V: Vf32, const K: usize, const S: usize, const RB: usize>(a: &mut Args, act: Act) {
    let (oh, ow) = (a.oh, a.ow);
    let plane_in = a.h * a.w_in;
    let shape = RingShape::new(1, V::LANES, a.h, a.w_in, a.pads, K, S, (RB - 1) * S + K, ow);
    let mut buf = scratch::take::<f32>(shape.floats());
    let mut rows = PaddedRows::new(shape, &mut buf);
    let n = a.bias.len();
    for ch in 0..n {
        rows.reset();
        let src = &a.x[ch * a.x_stride..][..plane_in];
        let out = &mut a.y[ch * a.y_stride..][..oh * ow];
        // SAFETY: the CPU supports V (caller); the kernel writes `out`'s rows only.
        unsafe {
            let wv = &a.w[ch * K * K..(ch + 1) * K * K];
            let bv = V::splat(a.bias[ch]);
            let mut oy = 0;
            while oy + RB <= oh {
                rows.fill::<V>(src, (oy + RB - 1) * S + K);
                block::<V, K, S, RB>(&rows, oy * S, wv, bv, &mut out[oy * ow..], ow, act);
                oy += RB;
            }
            if RB > 4 && oy + 4 <= oh {
                rows.fill::<V>(src, (oy + 3) * S + K);
                block::<V, K, S, 4>(&rows, oy * S, wv, bv, &mut out[oy * ow..], ow, act);
                oy += 4;
            }
            let left = oh - oy;
            if left > 0 {
                rows.fill::<V>(src, (oh - 1) * S + K);
                let o = &mut out[oy * ow..];
                match left {
                    3 => block::<V, K, S, 3>(&rows, oy * S, wv, bv, o, ow, act),
                    2 => block::<V, K, S, 2>(&rows, oy * S, wv, bv, o, ow, act),
                    _ => block::<V, K, S, 1>(&rows, oy * S, wv, bv, o, ow, act),
                }
            }
            if !a.means.is_empty() {
                super::se::means_v::<V>(out, &mut a.means[ch..ch + 1], oh * ow);
            }
        }
    }
}

/// `R` output rows from padded input rows `p0 ..= p0 + (R−1)·S + K − 1`, all in the ring.
///
/// # Safety
/// The CPU must support `V`'s instructions; `out` holds at least `R·ow` values; the ring
/// holds the rows (its sizing covers every load of `ceil(ow / LANES)` vectors).
#[inline(always)]
unsafe fn block<V: Vf32, const K: usize, const S: usize, const R: usize>(
    rows: &PaddedRows,
    p0: usize,
    wv: &[f32],
    bias: V,
    out: &mut [f32],
    ow: usize,
    act: Act,
) {
    let span = (R - 1) * S + K;
    let mut src = [core::ptr::null::<f32>(); 24];
    for (j, p) in src.iter_mut().enumerate().take(span) {
        *p = rows.row(0, p0 + j);
    }
    let lanes = V::LANES;
    assert!(out.len() >= R * ow && wv.len() >= K * K);
    let t = Taps {
        src: &src,
        half: rows.half,
        w: wv.as_ptr(),
        bias,
        out: out.as_mut_ptr(),
        ow,
        act,
    };
    let mut base = 0;
    // Two vector columns at a time where the tile has at most 4 rows: each accumulator is
    // one chain of K·K dependent FMAs, and 4 chains keep only 4 of the FMA latency's ~10
    // slots busy; 8 chains double the rate (3×3 AVX2 at 128²: ~1.4× faster). Same FMA order
    // per output either way, so the results are the same bit for bit.
    if R <= 4 {
        while base + 2 * lanes <= ow {
            // SAFETY: forwarded contract; both columns are whole vectors of the row.
            unsafe { columns::<V, K, S, R, 2>(&t, base) };
            base += 2 * lanes;
        }
    }
    while base < ow {
        // SAFETY: forwarded contract.
        unsafe { columns::<V, K, S, R, 1>(&t, base) };
        base += lanes;
    }
}

/// What [`columns`] reads and writes: the ring's row pointers of a block, its filter, bias,
/// output rows and activation.
struct Taps<'a, V> {
    src: &'a [*const f32; 24],
    half: usize,
    w: *const f32,
    bias: V,
    out: *mut f32,
    ow: usize,
    act: Act,
}

/// `C` vector columns (1 or 2; `R·C` ≤ 8) of a block's `R` output rows, from output column
/// `base`: bias, then tap column by tap column, then the activation and the stores (the
/// last vector of a row partially, with `C` = 1).
///
/// # Safety
/// As [`block`]; with `C` = 2 both columns are whole vectors within the row.
#[inline(always)]
unsafe fn columns<V: Vf32, const K: usize, const S: usize, const R: usize, const C: usize>(
    t: &Taps<'_, V>,
    base: usize,
) {
    let lanes = V::LANES;
    // SAFETY: loads stay within the ring rows (see `PaddedRows::new`) and the K·K
    // weights (kx < K: `black_box` is the identity), stores within the R output rows
    // (the last vector of a row is stored partially).
    unsafe {
        let mut acc = [t.bias; 8];
        // Tap column outermost: only that column's K weights are live, so they, the
        // loaded input vectors and the accumulators all stay in registers. The column
        // loop stays a real loop (opaque trip count): fully unrolled, LLVM regroups the
        // FMAs into one long dependent chain per accumulator and spills.
        for kx in 0..core::hint::black_box(K) {
            let off = if S == 1 {
                base + kx
            } else {
                (kx & 1) * t.half + base + kx / 2
            };
            let mut col = [V::splat(0.0); 5];
            for (ky, c) in col.iter_mut().enumerate().take(K) {
                *c = V::splat(*t.w.add(ky * K + kx));
            }
            // Output row i, tap row ky reads input row i·S + ky. Loads of the same
            // input row by several output rows are merged by the compiler; written
            // as a loop over input rows with range checks instead, the 8-row stride-2
            // block kept the checks as branches (20% slower).
            for i in 0..R {
                for (ky, &w) in col.iter().enumerate().take(K) {
                    for c in 0..C {
                        let x = V::load(t.src[i * S + ky].add(off + c * lanes));
                        acc[i * C + c] = V::fma(x, w, acc[i * C + c]);
                    }
                }
            }
        }
        let rem = t.ow - base;
        V::act_each(&mut acc[..R * C], t.act);
        for i in 0..R {
            for c in 0..C {
                let o = t.out.add(i * t.ow + base + c * lanes);
                if C > 1 || rem >= lanes {
                    V::store(o, acc[i * C + c]);
                } else {
                    V::store_n(o, acc[i * C + c], rem);
                }
            }
        }
    }
}

/// The geometry of [`PaddedRows`]: `planes` rings of `slots` padded rows each.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RingShape {
    planes: usize,
    slots: usize,
    pitch: usize,
    /// Stride 2: floats per half-row (a multiple of the lane count); 0 for stride 1.
    half: usize,
    stride2: bool,
    h: usize,
    w: usize,
    top: usize,
    left: usize,
}

impl RingShape {
    /// Rings of `slots` rows for `planes` planes of `h × w`, read by `k`-wide windows with
    /// column stride `stride` (1 or 2), producing rows of `ow` outputs in vectors of
    /// `lanes`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        planes: usize,
        lanes: usize,
        h: usize,
        w: usize,
        pads: [usize; 4],
        k: usize,
        stride: usize,
        slots: usize,
        ow: usize,
    ) -> RingShape {
        debug_assert!(stride == 1 || stride == 2);
        let padded = pads[1] + w + pads[3];
        let vec_end = ow.div_ceil(lanes) * lanes;
        let (pitch, half) = if stride == 1 {
            // Loads reach column vec_end − 1 + k − 1.
            let len = padded.max(vec_end + k - 1);
            (len.div_ceil(lanes) * lanes, 0)
        } else {
            // Loads reach half-column vec_end − 1 + (k − 1) / 2; `fill` stores whole vectors
            // up to half-column left/2 + 1 + ceil(w/2) rounded up to lanes.
            let stores = pads[1] / 2 + 1 + w.div_ceil(2).div_ceil(lanes) * lanes;
            let half = padded.div_ceil(2).max(vec_end + (k - 1) / 2).max(stores);
            let half = half.div_ceil(lanes) * lanes;
            (2 * half, half)
        };
        RingShape {
            planes,
            slots,
            pitch,
            half,
            stride2: stride == 2,
            h,
            w,
            top: pads[0],
            left: pads[1],
        }
    }

    /// The floats of buffer the rings take.
    pub(crate) fn floats(&self) -> usize {
        self.planes * self.slots * self.pitch
    }
}

/// Rings of zero-padded rows of `planes` input planes of one shape, filled in order (all
/// planes in step), in a buffer the caller lends (a `scratch` buffer, so
/// that no call allocates).
///
/// Padded row `p` of plane `i` (input row `p − pads[0]`, zeros outside the image) lives in
/// slot `p % slots` of ring `i`. Stride 1: a slot is the padded row (`pads[1]` zeros, the
/// row, zeros). Stride 2: a slot is two halves of `half` floats, the padded row's even
/// columns then its odd columns, so padded column `2·j + t` is at `t·half + j`. Slots are
/// long enough for every vector load of a row of `ow` outputs.
pub(crate) struct PaddedRows<'a> {
    buf: &'a mut [f32],
    s: RingShape,
    /// Stride 2: floats per half-row (a multiple of the lane count); 0 for stride 1.
    pub(crate) half: usize,
    /// The next padded row to fill.
    next: usize,
}

impl<'a> PaddedRows<'a> {
    /// Rings of `shape` in `buf` (at least `shape.floats()` long; its contents do not
    /// matter: the rings' part is zeroed here).
    pub(crate) fn new(shape: RingShape, buf: &'a mut [f32]) -> PaddedRows<'a> {
        let buf = &mut buf[..shape.floats()];
        buf.fill(0.0);
        PaddedRows {
            buf,
            s: shape,
            half: shape.half,
            next: 0,
        }
    }

    /// Starts over for other planes of the same shape.
    pub(crate) fn reset(&mut self) {
        self.next = 0;
    }

    /// Fills padded rows up to (excluding) `end` from `src`, the one `h × w` plane of rings
    /// with `planes == 1`.
    ///
    /// # Safety
    /// The CPU must support `V`'s instructions, with `V::LANES` the `lanes` of the shape.
    #[inline(always)]
    pub(crate) unsafe fn fill<V: Vf32>(&mut self, src: &[f32], end: usize) {
        debug_assert_eq!(self.s.planes, 1);
        while self.next < end {
            let p = self.next;
            self.next += 1;
            // SAFETY: forwarded contract.
            unsafe { self.fill_row::<V>(0, src, p) };
        }
    }

    /// Fills padded rows up to (excluding) `end` of every plane from `src`, `planes`
    /// consecutive `h × w` planes.
    ///
    /// # Safety
    /// As [`Self::fill`].
    #[inline(always)]
    pub(crate) unsafe fn fill_planes<V: Vf32>(&mut self, src: &[f32], end: usize) {
        while self.next < end {
            let p = self.next;
            self.next += 1;
            for plane in 0..self.s.planes {
                // SAFETY: forwarded contract.
                unsafe { self.fill_row::<V>(plane, src, p) };
            }
        }
    }

    /// Fills padded row `p` of plane `plane` (of the planes at `src`) into its slot.
    ///
    /// # Safety
    /// As [`Self::fill`].
    #[inline(always)]
    unsafe fn fill_row<V: Vf32>(&mut self, plane: usize, src: &[f32], p: usize) {
        let RingShape {
            slots,
            pitch,
            half,
            stride2,
            h,
            w,
            top,
            left,
            ..
        } = self.s;
        let lanes = V::LANES;
        let iy = p.wrapping_sub(top);
        let slot = &mut self.buf[(plane * slots + p % slots) * pitch..][..pitch];
        if p < top || iy >= h {
            // A padding row. (Pad columns are zero from the start and only ever
            // overwritten with zeros.)
            match stride2 {
                false => slot[left..left + w].fill(0.0),
                true => slot.fill(0.0),
            }
            return;
        }
        let row = &src[(plane * h + iy) * w..][..w];
        let (x, s) = (row.as_ptr(), slot.as_mut_ptr());
        if !stride2 {
            let mut j = 0;
            while j < w {
                // SAFETY: reads row[j..min(j + lanes, w)], writes slot[left + j..]
                // within the same count; slot has left + w floats.
                unsafe {
                    if j + lanes <= w {
                        V::store(s.add(left + j), V::load(x.add(j)));
                    } else {
                        V::store_n(s.add(left + j), V::load_n(x.add(j), w - j, 0.0), w - j);
                    }
                }
                j += lanes;
            }
            return;
        }
        // Padded column c = left + i holds x[i]: with left = 2q + r, x's even elements
        // go to half-column q + i/2 of the even half (r = 0) or the odd half (r = 1),
        // and its odd elements to q + i/2 (odd half, r = 0) or q + 1 + i/2 (even
        // half, r = 1).
        let q = left / 2;
        let (to_even, to_odd) = match left % 2 {
            0 => (q, half + q),
            _ => (half + q, q + 1),
        };
        let mut j = 0;
        while 2 * j < w {
            let n = w - 2 * j;
            // SAFETY: the loads read row[2j .. 2j + min(n, 2·lanes)] (masked beyond
            // w, filling zeros); the stores write lanes floats at j + q (+1) within
            // each half, which the shape sized for (half ≥ q + 1 + ceil(w/2) rounded
            // to lanes).
            unsafe {
                let a = match n >= lanes {
                    true => V::load(x.add(2 * j)),
                    false => V::load_n(x.add(2 * j), n, 0.0),
                };
                let b = match n {
                    _ if n >= 2 * lanes => V::load(x.add(2 * j + lanes)),
                    _ if n > lanes => V::load_n(x.add(2 * j + lanes), n - lanes, 0.0),
                    _ => V::splat(0.0),
                };
                let (e, o) = V::deinterleave(a, b);
                V::store(s.add(to_even + j), e);
                V::store(s.add(to_odd + j), o);
            }
            j += lanes;
        }
    }

    /// The start of padded row `p`'s slot of plane `plane` (which must have been filled and
    /// not overwritten).
    #[inline(always)]
    pub(crate) fn row(&self, plane: usize, p: usize) -> *const f32 {
        debug_assert!(p < self.next && p + self.s.slots >= self.next);
        self.buf[(plane * self.s.slots + p % self.s.slots) * self.s.pitch..].as_ptr()
    }
}

/// Any kernel size and stride: plain loops (correct, not fast).
fn depthwise_any(a: &mut Args) {
    let (h, w, oh, ow, k, s) = (a.h, a.w_in, a.oh, a.ow, a.k, a.stride);
    for ch in 0..a.bias.len() {
        let src = &a.x[ch * a.x_stride..][..h * w];
        let wk = &a.w[ch * k * k..][..k * k];
        let out = &mut a.y[ch * a.y_stride..][..oh * ow];
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = a.bias[ch];
                for ky in 0..k {
                    let iy = (oy * s + ky).wrapping_sub(a.pads[0]);
                    if iy >= h {
                        continue;
                    }
                    for kx in 0..k {
                        let ix = (ox * s + kx).wrapping_sub(a.pads[1]);
                        if ix < w {
                            acc += wk[ky * k + kx] * src[iy * w + ix];
                        }
                    }
                }
                out[oy * ow + ox] = a.act.apply(acc);
            }
        }
    }
}

