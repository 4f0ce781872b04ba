//! Dense (ungrouped) convolutions with a spatial kernel: the stem (3→32, 3×3, stride 2) and
//! any other small dense conv; and [`conv_generic`], a plain-loop grouped/dilated conv for
//! unusual ONNX graphs.
//!
//! [`conv_dense`] is vectorized along the output row. Each input plane's rows go through a
//! ring of zero-padded rows (`PaddedRows`, de-interleaved for column stride 2, as in the
//! depthwise kernel); a register tile of several output channels × two vectors of pixels
//! accumulates over every input channel and tap, each loaded input vector feeding all the
//! tile's channels. Bias and activation are fused in the epilogue. The rings and the table
//! of row pointers live in per-thread `scratch` buffers (no allocation
//! per call).

use super::depthwise::{out_len, PaddedRows, RingShape};
use ::effdet_runtime::kernels::act::code;
use ::effdet_runtime::kernels::scratch;
use ::effdet_runtime::kernels::simd::{require, usable, Vf32};
use ::effdet_runtime::kernels::{size, Act, Isa, Par};
use ::effdet_runtime::specialize_act;

/// Dense 2-D convolution: `y[co] = act(bias[co] + Σ_ci conv(x[ci], w[co][ci]))`.
///
/// `x`: `[cin][h][w_in]`; `w`: `[cout][cin][kernel[0]][kernel[1]]`; `bias`: `[cout]`;
/// `y`: `[cout][oh][ow]` with `oh = (h + pads[0] + pads[2] − kernel[0]) / stride[0] + 1`
/// and `ow` likewise. `pads` is `[top, left, bottom, right]`. Vectorized for a column stride
/// of 1 or 2 (any kernel, any row stride); other strides take a scalar loop.
#[allow(clippy::too_many_arguments)]
pub fn conv_dense(
    isa: Isa,
    par: Par,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    y: &mut [f32],
    cin: usize,
    cout: usize,
    h: usize,
    w_in: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    pads: [usize; 4],
    act: Act,
) {
    ::effdet_runtime::with_isa!(usable(isa), I => conv_dense_fixed::<{ code::ANY }, I>(
        par, x, w, bias, y, cin, cout, h, w_in, kernel, stride, pads, act,
    ));
}

/// [`conv_dense`] compiled for activation code `A` (`effdet_runtime::kernels::act::code`)
/// and instruction set `I` (`effdet_runtime::kernels::isa_code`) only, as a generated model
/// calls it; `act` must be that code's activation (any with `code::ANY`).
///
/// # Panics
/// As [`conv_dense`]; and if `act` is not the activation of `A` or this CPU does not run
/// `I`.
#[allow(clippy::too_many_arguments)]
pub fn conv_dense_fixed<const A: u8, const I: u8>(
    par: Par,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    y: &mut [f32],
    cin: usize,
    cout: usize,
    h: usize,
    w_in: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    pads: [usize; 4],
    act: Act,
) {
    let act = act.fixed::<A>();
    require::<I>("conv_dense");
    let oh = out_len(h, pads[0], pads[2], kernel[0], stride[0]);
    let ow = out_len(w_in, pads[1], pads[3], kernel[1], stride[1]);
    let plane_out = size("conv_dense", &[oh, ow]);
    let taps = size("conv_dense", &[cin, kernel[0], kernel[1]]);
    assert!(
        x.len() >= size("conv_dense", &[cin, h, w_in]),
        "conv_dense: input too short"
    );
    assert!(
        w.len() >= size("conv_dense", &[cout, taps]) && bias.len() >= cout,
        "conv_dense: weights too short"
    );
    assert!(
        y.len() >= size("conv_dense", &[cout, plane_out]),
        "conv_dense: output too short"
    );
    if cout == 0 {
        return;
    }
    let y = &mut y[..cout * plane_out];
    if cin == 0 {
        for (co, plane) in y.chunks_mut(plane_out).enumerate() {
            plane.fill(act.apply(bias[co]));
        }
        return;
    }
    if !matches!(stride[1], 1 | 2) {
        return conv_generic(
            par,
            x,
            w,
            Some(bias),
            None,
            y,
            cin,
            cout,
            1,
            h,
            w_in,
            kernel,
            stride,
            [1, 1],
            pads,
            act,
        );
    }
    // Whole register tiles of output channels per thread.
    let group = cout.div_ceil(par.threads()).div_ceil(8) * 8;
    par.for_each_chunk(y, group * plane_out, cout * plane_out * taps, |gi, yg| {
        let (c0, n) = (gi * group, yg.len() / plane_out);
        let mut a = Args {
            x,
            w: &w[c0 * taps..(c0 + n) * taps],
            bias: &bias[c0..c0 + n],
            y: yg,
            cin,
            h,
            w_in,
            oh,
            ow,
            kernel,
            stride,
            pads,
            act,
        };
        match Isa::of(I) {
            // SAFETY: `require` checked that this CPU runs `I`: AVX-512F and FMA.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { run_avx512::<A>(&mut a) },
            // SAFETY: `require` checked that this CPU runs `I`: AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { run_avx2::<A>(&mut a) },
            // SAFETY: NEON is part of every aarch64 CPU (32 registers: the AVX-512 tile).
            #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
            Isa::Neon => unsafe {
                specialize_act!(A, a.act, act => run::<core::arch::aarch64::float32x4_t, 8, 2>(&mut a, act))
            },
            // SAFETY: the one-lane f32 path runs on any CPU.
            _ => unsafe { run::<f32, 4, 2>(&mut a, act) },
        }
    });
}

/// A group of output channels of a dense convolution (all input channels).
struct Args<'a> {
    x: &'a [f32],
    w: &'a [f32],
    bias: &'a [f32],
    y: &'a mut [f32],
    cin: usize,
    h: usize,
    w_in: usize,
    oh: usize,
    ow: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    pads: [usize; 4],
    act: Act,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn run_avx512<const A: u8>(a: &mut Args) {
    // SAFETY: this function only runs where AVX-512F is available.
    unsafe { specialize_act!(A, a.act, act => run::<core::arch::x86_64::__m512, 8, 2>(a, act)) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<const A: u8>(a: &mut Args) {
    // SAFETY: this function only runs where AVX2 and FMA are available.
    unsafe { specialize_act!(A, a.act, act => run::<core::arch::x86_64::__m256, 4, 2>(a, act)) }
}

/// Computes the group with tiles of `COB` output channels × `NV` vectors.
///
/// # Safety
/// The CPU must support `V`'s instructions; the column stride is 1 or 2; `a`'s slices hold
/// their tensors (checked by [`conv_dense`]); `act` is `a.act` (a constant where the caller
/// specializes it).
#[inline(always)]
unsafe fn run<V: Vf32, const COB: usize, const NV: usize>(a: &mut Args, act: Act) {
    let [kh, kw] = a.kernel;
    let (cin, oh, ow) = (a.cin, a.oh, a.ow);
    let plane_in = a.h * a.w_in;
    let taps = cin * kh * kw;
    let n = a.bias.len();
    // Rows padded for loads of whole NV-vector tiles.
    let wide = ow.div_ceil(NV * V::LANES) * NV * V::LANES;
    let shape = RingShape::new(
        cin,
        V::LANES,
        a.h,
        a.w_in,
        a.pads,
        kw,
        a.stride[1],
        kh,
        wide,
    );
    let mut ring_buf = scratch::take::<f32>(shape.floats());
    let mut rings = PaddedRows::new(shape, &mut ring_buf);
    let half = rings.half;
    let mut rows_buf = scratch::take::<*const f32>(cin * kh);
    let rows: &mut [*const f32] = &mut rows_buf;
    for oy in 0..oh {
        let p0 = oy * a.stride[0];
        // SAFETY: the CPU supports V (caller).
        unsafe { rings.fill_planes::<V>(&a.x[..cin * plane_in], p0 + kh) };
        for (ci, r) in rows.chunks_exact_mut(kh).enumerate() {
            for (ky, r) in r.iter_mut().enumerate() {
                *r = rings.row(ci, p0 + ky);
            }
        }
        let mut co = 0;
        while co < n {
            let left = n - co;
            let t = Tile {
                rows,
                w: &a.w[co * taps..],
                bias: &a.bias[co..],
                kw,
                half,
            };
            let out = &mut a.y[co * oh * ow + oy * ow..];
            // SAFETY: the CPU supports V; the ring rows cover `wide` outputs; `out` holds the
            // rows of the tile's channels (checked in `tile`).
            unsafe {
                co += match (a.stride[1], left) {
                    (1, l) if l >= COB => tile::<V, COB, NV, 1>(&t, out, oh * ow, ow, act),
                    (1, l) if l >= 4 => tile::<V, 4, NV, 1>(&t, out, oh * ow, ow, act),
                    (1, _) => tile::<V, 1, NV, 1>(&t, out, oh * ow, ow, act),
                    (_, l) if l >= COB => tile::<V, COB, NV, 2>(&t, out, oh * ow, ow, act),
                    (_, l) if l >= 4 => tile::<V, 4, NV, 2>(&t, out, oh * ow, ow, act),
                    _ => tile::<V, 1, NV, 2>(&t, out, oh * ow, ow, act),
                };
            }
        }
    }
}

/// What one output row of a tile of channels reads.
struct Tile<'a> {
    /// `cin · kh` padded input rows, in weight order (`[ci][ky]`).
    rows: &'a [*const f32],
    /// The tile's first channel's weights; channel `c` at `c · taps`.
    w: &'a [f32],
    bias: &'a [f32],
    kw: usize,
    half: usize,
}

/// One output row of `COB` channels (`out[c · plane ..][.. ow]`); returns `COB`.
///
/// # Safety
/// The CPU must support `V`'s instructions; every row pointer covers loads of
/// `ceil(ow / (NV·LANES))` whole tiles (see `PaddedRows`).
#[inline(always)]
unsafe fn tile<V: Vf32, const COB: usize, const NV: usize, const SX: usize>(
    t: &Tile,
    out: &mut [f32],
    plane: usize,
    ow: usize,
    act: Act,
) -> usize {
    let taps = t.rows.len() * t.kw;
    assert!(t.w.len() >= COB * taps && t.bias.len() >= COB);
    assert!(out.len() >= (COB - 1) * plane + ow);
    let lanes = V::LANES;
    let out = out.as_mut_ptr();
    let wp = t.w.as_ptr();
    let mut base = 0;
    while base < ow {
        // SAFETY: weight reads are below COB·taps (asserted); row loads are within the
        // padded rows (caller); stores write only pixels < ow of the COB rows (asserted).
        unsafe {
            let mut acc = [[V::splat(0.0); NV]; COB];
            for (c, a) in acc.iter_mut().enumerate() {
                *a = [V::splat(t.bias[c]); NV];
            }
            let mut tap = 0;
            for &row in t.rows {
                for kx in 0..t.kw {
                    let off = if SX == 1 {
                        kx
                    } else {
                        (kx & 1) * t.half + kx / 2
                    };
                    let src = row.add(base + off);
                    let mut v = [V::splat(0.0); NV];
                    for (j, v) in v.iter_mut().enumerate() {
                        *v = V::load(src.add(j * lanes));
                    }
                    for (c, a) in acc.iter_mut().enumerate() {
                        let wv = V::splat(*wp.add(c * taps + tap));
                        for j in 0..NV {
                            a[j] = V::fma(v[j], wv, a[j]);
                        }
                    }
                    tap += 1;
                }
            }
            V::act_each(acc.as_flattened_mut(), act);
            for (c, a) in acc.iter().enumerate() {
                for (j, &r) in a.iter().enumerate() {
                    let at = base + j * lanes;
                    if at >= ow {
                        break;
                    }
                    let o = out.add(c * plane + at);
                    if ow - at >= lanes {
                        V::store(o, r);
                    } else {
                        V::store_n(o, r, ow - at);
                    }
                }
            }
        }
        base += NV * lanes;
    }
    COB
}

/// General 2-D convolution with plain loops: any groups, dilation, stride and padding.
///
/// Computes `y = act(conv(x, w) + bias) + residual` (the IR's conv epilogue order).
/// `x`: `[cin][h][w_in]`; `w`: `[cout][cin/groups][kernel[0]][kernel[1]]`; `bias`: `[cout]`;
/// `residual` and `y`: `[cout][oh][ow]` with
/// `oh = (h + pads[0] + pads[2] − dilation[0]·(kernel[0] − 1) − 1) / stride[0] + 1`.
#[allow(clippy::too_many_arguments)]
pub fn conv_generic(
    par: Par,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    y: &mut [f32],
    cin: usize,
    cout: usize,
    groups: usize,
    h: usize,
    w_in: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    pads: [usize; 4],
    act: Act,
) {
    assert!(
        groups > 0 && cin.is_multiple_of(groups) && cout.is_multiple_of(groups),
        "conv_generic: bad groups"
    );
    assert!(
        kernel.iter().all(|&k| k > 0) && dilation.iter().all(|&d| d > 0),
        "conv_generic: kernel {kernel:?} and dilation {dilation:?} must be positive"
    );
    let span = |d: usize| size("conv_generic", &[dilation[d], kernel[d] - 1]) + 1;
    let oh = out_len(h, pads[0], pads[2], span(0), stride[0]);
    let ow = out_len(w_in, pads[1], pads[3], span(1), stride[1]);
    let [kh, kw] = kernel;
    let (cin_g, cout_g) = (cin / groups, cout / groups);
    let plane = size("conv_generic", &[oh, ow]);
    assert!(
        x.len() >= size("conv_generic", &[cin, h, w_in]),
        "conv_generic: input too short"
    );
    assert!(
        w.len() >= size("conv_generic", &[cout, cin_g, kh, kw]),
        "conv_generic: weights too short"
    );
    assert!(
        bias.is_none_or(|b| b.len() >= cout),
        "conv_generic: bias too short"
    );
    assert!(
        residual.is_none_or(|r| r.len() >= size("conv_generic", &[cout, plane])),
        "conv_generic: residual too short"
    );
    assert!(
        y.len() >= size("conv_generic", &[cout, plane]),
        "conv_generic: output too short"
    );
    if plane == 0 {
        return;
    }
    let y = &mut y[..cout * plane];
    let work = cout * plane * cin_g * kh * kw;
    par.for_each_chunk(y, plane, work, |co, out| {
        let g = co / cout_g;
        out.fill(bias.map_or(0.0, |b| b[co]));
        for ci in 0..cin_g {
            let src = &x[(g * cin_g + ci) * h * w_in..][..h * w_in];
            for ky in 0..kh {
                for kx in 0..kw {
                    let wv = w[((co * cin_g + ci) * kh + ky) * kw + kx];
                    let dy = (ky * dilation[0]) as isize - pads[0] as isize;
                    let dx = (kx * dilation[1]) as isize - pads[1] as isize;
                    let (y0, y1) = valid_range(oh, stride[0], dy, h);
                    let (x0, x1) = valid_range(ow, stride[1], dx, w_in);
                    for oy in y0..y1 {
                        let iy = ((oy * stride[0]) as isize + dy) as usize;
                        let row = &src[iy * w_in..][..w_in];
                        let orow = &mut out[oy * ow..][..ow];
                        if stride[1] == 1 {
                            let start = (x0 as isize + dx) as usize;
                            for (o, &i) in orow[x0..x1].iter_mut().zip(&row[start..]) {
                                *o += wv * i;
                            }
                        } else {
                            for (ox, o) in orow.iter_mut().enumerate().take(x1).skip(x0) {
                                *o += wv * row[((ox * stride[1]) as isize + dx) as usize];
                            }
                        }
                    }
                }
            }
        }
        for v in out.iter_mut() {
            *v = act.apply(*v);
        }
        if let Some(r) = residual {
            for (o, &r) in out.iter_mut().zip(&r[co * plane..][..plane]) {
                *o += r;
            }
        }
    });
}

/// The outputs `[lo, hi)` whose input position `o·stride + offset` lies in `0..len`.
fn valid_range(out: usize, stride: usize, offset: isize, len: usize) -> (usize, usize) {
    let lo = if offset >= 0 { 0 } else { (-offset) as usize }.div_ceil(stride);
    let last = len as isize - 1 - offset;
    let hi = if last < 0 {
        0
    } else {
        (last as usize / stride + 1).min(out)
    };
    (lo.min(hi), hi)
}

