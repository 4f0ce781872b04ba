//! Depthwise convolution of narrow or small planes, vectorized across channels (AVX-512,
//! AVX2).
//!
//! The row kernel of [`super::depthwise`] puts output pixels of one row in the lanes: a
//! row of 10 or 20 outputs (Lite0's 10² and 20² stages) fills 10 of 16 or 20 of 32 lanes,
//! and a plane of a few hundred pixels pays its ring of padded rows as much as its FMAs.
//! Here one vector's worth of channels at a time is transposed (in registers, `LANES ×
//! LANES` blocks) into pixel-major order (`[padded pixel][LANES]`, the frame zero),
//! convolved with every lane busy, and transposed back into the planes.
//!
//! Each output gets the row kernel's FMAs in the row kernel's order (bias, then tap column
//! by tap column, tap row by tap row, the padding's zeros included) and the same
//! activation code, so both kernels give the same bits: which one runs a shape never shows
//! in the results (tested below).

use core::arch::x86_64::*;

use super::depthwise::Args;
use ::effdet_runtime::kernels::scratch;
use ::effdet_runtime::kernels::simd::Vf32;
use ::effdet_runtime::kernels::{Act, Isa};

/// All whole groups of channels of `a` (one vector's worth each; `k` 3 or 5, `stride` 1
/// or 2) with the vectors of instruction set `I`; returns how many channels it computed
/// (the rest is left to the row kernel). Means are taken as the row kernel takes them.
///
/// # Safety
/// The CPU supports `I` (AVX-512F+FMA or AVX2+FMA); `a`'s slices hold its planes (as for
/// the row kernel).
pub(crate) unsafe fn run<const K: usize, const S: usize, const A: u8, const I: u8>(
    a: &mut Args,
) -> usize {
    // SAFETY: forwarded contract.
    unsafe {
        match Isa::of(I) {
            Isa::Avx512 => run_avx512::<K, S, A>(a),
            Isa::Avx2 => run_avx2::<K, S, A>(a),
            _ => 0,
        }
    }
}

#[target_feature(enable = "avx512f,fma")]
pub(crate) unsafe fn run_avx512<const K: usize, const S: usize, const A: u8>(
    a: &mut Args,
) -> usize {
    // SAFETY: forwarded contract (AVX-512F and FMA enabled here).
    unsafe { groups::<__m512, K, S, A>(a) }
}

#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn run_avx2<const K: usize, const S: usize, const A: u8>(a: &mut Args) -> usize {
    // SAFETY: forwarded contract (AVX2 and FMA enabled here).
    unsafe { groups::<__m256, K, S, A>(a) }
}

/// One group's buffers as the tiles see them: `xt` the padded pixel-major input (`wp`
/// pixels a row), `wt` the `[K·K][LANES]` weights, `yt` the pixel-major output (`ow`
/// pixels a row), and the group's bias and activation.
#[derive(Clone, Copy)]
struct Group<V> {
    xt: *const f32,
    wp: usize,
    wt: *const f32,
    bias: V,
    yt: *mut f32,
    ow: usize,
    act: Act,
}

/// `R` output rows × `P` output columns of group `g` from output pixel (`oy`, `ox`).
///
/// # Safety
/// `V`'s instructions are enabled; the pixels read and written are within `g`'s buffers.
#[inline(always)]
unsafe fn tile<V: Vf32, const K: usize, const S: usize, const R: usize, const P: usize>(
    g: &Group<V>,
    oy: usize,
    ox: usize,
) {
    let l = V::LANES;
    // SAFETY: the caller's contract; `kx, ky < K` (`black_box` is the identity).
    unsafe {
        let mut acc = [g.bias; 8];
        // As the row kernel: tap column outermost, then tap row, each output's FMAs in
        // that order.
        for kx in 0..core::hint::black_box(K) {
            let mut col = [V::splat(0.0); 5];
            for (ky, c) in col.iter_mut().enumerate().take(K) {
                *c = V::load(g.wt.add((ky * K + kx) * l));
            }
            for i in 0..R {
                for (ky, &w) in col.iter().enumerate().take(K) {
                    for p in 0..P {
                        let px = ((oy + i) * S + ky) * g.wp + (ox + p) * S + kx;
                        let x = V::load(g.xt.add(px * l));
                        acc[i * P + p] = V::fma(x, w, acc[i * P + p]);
                    }
                }
            }
        }
        V::act_each(&mut acc[..R * P], g.act);
        for i in 0..R {
            for p in 0..P {
                V::store(g.yt.add(((oy + i) * g.ow + ox + p) * l), acc[i * P + p]);
            }
        }
    }
}

/// `R` output rows of group `g` from row `oy`, two columns at a time, then one.
///
/// # Safety
/// As [`tile`].
#[inline(always)]
unsafe fn rows<V: Vf32, const K: usize, const S: usize, const R: usize>(g: &Group<V>, oy: usize) {
    let mut ox = 0;
    // SAFETY: forwarded contract; columns stay below `ow`.
    unsafe {
        while ox + 2 <= g.ow {
            tile::<V, K, S, R, 2>(g, oy, ox);
            ox += 2;
        }
        if ox < g.ow {
            tile::<V, K, S, R, 1>(g, oy, ox);
        }
    }
}

/// # Safety
/// As [`run`], with `V` the vectors of the instruction set enabled in the caller.
#[inline(always)]
unsafe fn groups<V: Vf32, const K: usize, const S: usize, const A: u8>(a: &mut Args) -> usize {
    let l = V::LANES;
    let (h, w_in, oh, ow) = (a.h, a.w_in, a.oh, a.ow);
    let (pt, pl) = (a.pads[0], a.pads[1]);
    // The padded rows and columns the outputs read.
    let (hp, wp) = ((oh - 1) * S + K, (ow - 1) * S + K);
    let (xs, plane_out) = (a.x_stride, oh * ow);
    let n_groups = a.bias.len() / l;
    // The strides' bounds for the raw loads and stores below (the row kernel slices).
    let last = (n_groups * l).saturating_sub(1);
    assert!(
        n_groups == 0
            || (a.x.len() >= last * xs + h * w_in && a.y.len() >= last * a.y_stride + plane_out),
        "depthwise: planes too short for their strides"
    );
    let out_px = plane_out.next_multiple_of(l);
    let mut buf = scratch::take::<f32>((hp * wp + out_px + K * K) * l);
    let (xt, rest) = buf.split_at_mut(hp * wp * l);
    let (yt, wt) = rest.split_at_mut(out_px * l);
    // SAFETY: `V`'s instructions are enabled (caller). Loads: channel `c0 + ci <
    // bias.len()` of x, row `iy < h`, pixels `ix0 .. ix0 + n ≤ w_in` (partial loads); of xt,
    // pixels `< hp·wp` (`py < hp`, `px < wp`; `tile` reads `(oy·S + ky)·wp + ox·S + kx` <
    // hp·wp); of yt, `out_px` pixels (the tail past `plane_out` holds stale values, never
    // stored). Stores: planes `(c0 + ci)·y_stride + q` for `q < plane_out` (partial
    // stores), within y as the row kernel's.
    unsafe {
        for g in 0..n_groups {
            let c0 = g * l;
            xt.fill(0.0);
            let x = a.x.as_ptr().add(c0 * xs);
            for iy in 0..h.min(hp.saturating_sub(pt)) {
                let py = iy + pt;
                let mut ix0 = 0;
                while ix0 < w_in {
                    let n = (w_in - ix0).min(l);
                    let mut r = [V::splat(0.0); 16];
                    for (ci, v) in r.iter_mut().enumerate().take(l) {
                        let src = x.add(ci * xs + iy * w_in + ix0);
                        *v = if n == l {
                            V::load(src)
                        } else {
                            V::load_n(src, n, 0.0)
                        };
                    }
                    V::transpose(&mut r);
                    for (j, v) in r.iter().enumerate().take(n) {
                        let px = ix0 + j + pl;
                        if px >= wp {
                            break;
                        }
                        V::store(xt.as_mut_ptr().add((py * wp + px) * l), *v);
                    }
                    ix0 += l;
                }
            }
            for (tap, row) in wt.chunks_exact_mut(l).enumerate() {
                for (ci, v) in row.iter_mut().enumerate() {
                    *v = a.w[(c0 + ci) * K * K + tap];
                }
            }
            let yp = yt.as_mut_ptr();
            let group = Group {
                xt: xt.as_ptr(),
                wp,
                wt: wt.as_ptr(),
                bias: V::load(a.bias.as_ptr().add(c0)),
                yt: yp,
                ow,
                act: a.act.fixed::<A>(),
            };
            let mut oy = 0;
            while oy + 4 <= oh {
                rows::<V, K, S, 4>(&group, oy);
                oy += 4;
            }
            while oy < oh {
                rows::<V, K, S, 1>(&group, oy);
                oy += 1;
            }
            let y = a.y.as_mut_ptr().add(c0 * a.y_stride);
            let mut q0 = 0;
            while q0 < plane_out {
                let n = (plane_out - q0).min(l);
                let mut r = [V::splat(0.0); 16];
                for (j, v) in r.iter_mut().enumerate().take(l) {
                    *v = V::load(yp.add((q0 + j) * l));
                }
                V::transpose(&mut r);
                for (ci, v) in r.iter().enumerate().take(l) {
                    let dst = y.add(ci * a.y_stride + q0);
                    if n == l {
                        V::store(dst, *v);
                    } else {
                        V::store_n(dst, *v, n);
                    }
                }
                q0 += l;
            }
            if !a.means.is_empty() {
                for ch in c0..c0 + l {
                    let out = &a.y[ch * a.y_stride..][..plane_out];
                    super::se::means_v::<V>(out, &mut a.means[ch..ch + 1], plane_out);
                }
            }
        }
    }
    n_groups * l
}

