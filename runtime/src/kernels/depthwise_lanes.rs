//! Depthwise convolution of narrow planes, vectorized across channels (AVX-512).
//!
//! The row kernel of [`super::depthwise`] puts output pixels of one row in the lanes: a
//! row of 10 or 20 outputs (Lite0's 10² and 20² stages) fills 10 of 16 or 20 of 32 lanes,
//! and a 10² plane is so small that its ring of padded rows costs as much again. Here 16
//! channels at a time are transposed into pixel-major order (`[padded pixel][16]`, the
//! frame zero), convolved with every lane busy, and transposed back into their planes.
//!
//! Each output gets the row kernel's FMAs in the row kernel's order (bias, then tap column
//! by tap column, tap row by tap row, the padding's zeros included) and the same
//! activation code, so both kernels give the same bits: which one runs a shape never shows
//! in the results (tested below).

use core::arch::x86_64::*;

use super::depthwise::Args;
use super::scratch;
use super::simd::Vf32;
use super::Act;

/// Channels per group: the lanes of one vector.
const L: usize = 16;

/// Whether this kernel beats the row kernel for `c` channels of `oh × ow` outputs (`k`,
/// `stride`): at least one whole group, and either rows that leave at least a quarter of
/// the row kernel's lanes empty (widths 10, 20 of Lite0's planes) or a group's padded
/// input (`[pixel][16]`) of at most 24² pixels, 36 KB, about L1 (D0's 16² stage and the
/// heads' small levels, where the row kernel's per-plane ring costs as much as its FMAs).
/// Larger full-width planes stay with the row kernel: the pixel-major buffer leaves L1
/// (672 channels 5×5 at 32²: 233 µs by rows, 386 by channels).
///
/// Measured on an AMD EPYC Zen 4, one thread, warm caches, row kernel → this one: 1152
/// channels 5×5 at 10², 163 → 59 µs; 672 channels 5×5 at 20², 228 → 116 µs (stride 2,
/// 90 → 57 µs); 480 channels 3×3 at 20², 74 → 55 µs; 1152 channels 5×5 at 16², 152 → 125
/// µs; 64 channels 3×3 at 16², 6.5 → 3.9 µs, at 10², 5.8 → 1.8 µs.
pub(crate) fn worth(c: usize, oh: usize, ow: usize, k: usize, stride: usize) -> bool {
    let padded = oh.saturating_sub(1) * stride + k;
    let padded = padded.saturating_mul(ow.saturating_sub(1) * stride + k);
    c >= L && (4 * ow <= 3 * ow.next_multiple_of(L) || padded <= 24 * 24)
}

/// All `L`-channel groups of `a` (the first `a.bias.len() / L * L` channels; `k` 3 or 5,
/// `stride` 1 or 2); returns how many channels it computed. Means are taken as the row
/// kernel takes them.
///
/// # Safety
/// The CPU supports AVX-512F and FMA; `a`'s slices hold its planes (as for the row kernel).
#[target_feature(enable = "avx512f,fma")]
pub(crate) unsafe fn run(a: &mut Args) -> usize {
    // SAFETY: forwarded contract.
    unsafe {
        match (a.k, a.stride) {
            (3, 1) => groups::<3, 1>(a),
            (3, 2) => groups::<3, 2>(a),
            (5, 1) => groups::<5, 1>(a),
            (5, 2) => groups::<5, 2>(a),
            (k, s) => unreachable!("no depthwise fast path for k {k} stride {s}"),
        }
    }
}

/// The mask of the first `n` (≤ 16) lanes.
#[inline(always)]
fn mask(n: usize) -> __mmask16 {
    ((1u32 << n) - 1) as __mmask16
}

/// Transposes the 16×16 matrix whose rows are `r`.
///
/// # Safety
/// AVX-512F is enabled in the caller.
#[inline(always)]
unsafe fn transpose(r: &mut [__m512; 16]) {
    // SAFETY: register-only shuffles (AVX-512F, enabled by the caller).
    unsafe {
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        let mut u = [_mm512_setzero_ps(); 16];
        for i in 0..4 {
            let b = 4 * i;
            u[b] = _mm512_shuffle_ps::<0x44>(t[b], t[b + 2]);
            u[b + 1] = _mm512_shuffle_ps::<0xEE>(t[b], t[b + 2]);
            u[b + 2] = _mm512_shuffle_ps::<0x44>(t[b + 1], t[b + 3]);
            u[b + 3] = _mm512_shuffle_ps::<0xEE>(t[b + 1], t[b + 3]);
        }
        // u[4i + j] holds column j (and j + 4, + 8, + 12) of rows 4i..4i+4, one 128-bit lane
        // per column group.
        for i in 0..2 {
            let b = 8 * i;
            for j in 0..4 {
                t[b + j] = _mm512_shuffle_f32x4::<0x88>(u[b + j], u[b + 4 + j]);
                t[b + 4 + j] = _mm512_shuffle_f32x4::<0xDD>(u[b + j], u[b + 4 + j]);
            }
        }
        for j in 0..8 {
            r[j] = _mm512_shuffle_f32x4::<0x88>(t[j], t[8 + j]);
            r[8 + j] = _mm512_shuffle_f32x4::<0xDD>(t[j], t[8 + j]);
        }
    }
}

/// `R` output rows × `P` output columns of one group from output pixel (`oy`, `ox`): `xt`
/// the padded pixel-major input (`wp` pixels a row), `wt` the `[K·K][16]` weights, `yt`
/// the pixel-major output (`ow` pixels a row).
///
/// # Safety
/// AVX-512F and FMA are enabled; the pixels read and written are within the buffers.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const K: usize, const S: usize, const R: usize, const P: usize>(
    xt: *const f32,
    wp: usize,
    wt: *const f32,
    bias: __m512,
    yt: *mut f32,
    ow: usize,
    (oy, ox): (usize, usize),
    act: Act,
) {
    // SAFETY: the caller's contract; `kx, ky < K` (`black_box` is the identity).
    unsafe {
        let mut acc = [bias; 8];
        // As the row kernel: tap column outermost, then tap row, each output's FMAs in
        // that order.
        for kx in 0..core::hint::black_box(K) {
            let mut col = [_mm512_setzero_ps(); 5];
            for (ky, c) in col.iter_mut().enumerate().take(K) {
                *c = _mm512_loadu_ps(wt.add((ky * K + kx) * L));
            }
            for i in 0..R {
                for (ky, &w) in col.iter().enumerate().take(K) {
                    for p in 0..P {
                        let px = ((oy + i) * S + ky) * wp + (ox + p) * S + kx;
                        let x = _mm512_loadu_ps(xt.add(px * L));
                        acc[i * P + p] = <__m512 as Vf32>::fma(x, w, acc[i * P + p]);
                    }
                }
            }
        }
        <__m512 as Vf32>::act_each(&mut acc[..R * P], act);
        for i in 0..R {
            for p in 0..P {
                _mm512_storeu_ps(yt.add(((oy + i) * ow + ox + p) * L), acc[i * P + p]);
            }
        }
    }
}

/// `R` output rows of one group, `P` columns at a time, then one.
///
/// # Safety
/// As [`tile`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn rows<const K: usize, const S: usize, const R: usize>(
    xt: *const f32,
    wp: usize,
    wt: *const f32,
    bias: __m512,
    yt: *mut f32,
    ow: usize,
    oy: usize,
    act: Act,
) {
    let mut ox = 0;
    // SAFETY: forwarded contract; columns stay below `ow`.
    unsafe {
        while ox + 2 <= ow {
            tile::<K, S, R, 2>(xt, wp, wt, bias, yt, ow, (oy, ox), act);
            ox += 2;
        }
        if ox < ow {
            tile::<K, S, R, 1>(xt, wp, wt, bias, yt, ow, (oy, ox), act);
        }
    }
}

/// # Safety
/// As [`run`].
#[inline(always)]
unsafe fn groups<const K: usize, const S: usize>(a: &mut Args) -> usize {
    let (h, w_in, oh, ow) = (a.h, a.w_in, a.oh, a.ow);
    let (pt, pl) = (a.pads[0], a.pads[1]);
    // The padded rows and columns the outputs read.
    let (hp, wp) = ((oh - 1) * S + K, (ow - 1) * S + K);
    let (plane_in, plane_out) = (h * w_in, oh * ow);
    let n_groups = a.bias.len() / L;
    let out_px = plane_out.next_multiple_of(L);
    let mut buf = scratch::take::<f32>((hp * wp + out_px + K * K) * L);
    let (xt, rest) = buf.split_at_mut(hp * wp * L);
    let (yt, wt) = rest.split_at_mut(out_px * L);
    // SAFETY: AVX-512F and FMA (caller). Loads: channel `c0 + ci < bias.len()` of x, row
    // `iy < h`, pixels `ix0.. ix0 + n ≤ w_in` (masked); of xt, pixels `< hp·wp` (`py < hp`,
    // `px < wp`; `tile` reads `(oy·S + ky)·wp + ox·S + kx` < hp·wp); of yt, `out_px` pixels
    // (the tail beyond `plane_out` is garbage, never stored). Stores: planes
    // `(c0 + ci)·y_stride + q` for `q < plane_out` (masked), within y as the row kernel's.
    unsafe {
        for g in 0..n_groups {
            let c0 = g * L;
            xt.fill(0.0);
            let x = a.x.as_ptr().add(c0 * plane_in);
            for iy in 0..h.min(hp.saturating_sub(pt)) {
                let py = iy + pt;
                let mut ix0 = 0;
                while ix0 < w_in {
                    let n = (w_in - ix0).min(L);
                    let mut r = [_mm512_setzero_ps(); 16];
                    for (ci, v) in r.iter_mut().enumerate() {
                        *v = _mm512_maskz_loadu_ps(mask(n), x.add(ci * plane_in + iy * w_in + ix0));
                    }
                    transpose(&mut r);
                    for (j, v) in r.iter().enumerate().take(n) {
                        let px = ix0 + j + pl;
                        if px >= wp {
                            break;
                        }
                        _mm512_storeu_ps(xt.as_mut_ptr().add((py * wp + px) * L), *v);
                    }
                    ix0 += L;
                }
            }
            for (tap, row) in wt.chunks_exact_mut(L).enumerate() {
                for (ci, v) in row.iter_mut().enumerate() {
                    *v = a.w[(c0 + ci) * K * K + tap];
                }
            }
            let bias = _mm512_loadu_ps(a.bias.as_ptr().add(c0));
            let (xp, wtp, yp) = (xt.as_ptr(), wt.as_ptr(), yt.as_mut_ptr());
            let mut oy = 0;
            while oy + 4 <= oh {
                rows::<K, S, 4>(xp, wp, wtp, bias, yp, ow, oy, a.act);
                oy += 4;
            }
            while oy < oh {
                rows::<K, S, 1>(xp, wp, wtp, bias, yp, ow, oy, a.act);
                oy += 1;
            }
            let y = a.y.as_mut_ptr().add(c0 * a.y_stride);
            let mut q0 = 0;
            while q0 < plane_out {
                let n = (plane_out - q0).min(L);
                let mut r = [_mm512_setzero_ps(); 16];
                for (j, v) in r.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(yp.add((q0 + j) * L));
                }
                transpose(&mut r);
                for (ci, v) in r.iter().enumerate() {
                    _mm512_mask_storeu_ps(y.add(ci * a.y_stride + q0), mask(n), *v);
                }
                q0 += L;
            }
            if !a.means.is_empty() {
                for ci in 0..L {
                    let ch = c0 + ci;
                    let out = &a.y[ch * a.y_stride..][..plane_out];
                    super::se::means_v::<__m512>(out, &mut a.means[ch..ch + 1], plane_out);
                }
            }
        }
    }
    n_groups * L
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::simd::test_util::Rng;

    #[test]
    fn transposes() {
        if !std::is_x86_feature_detected!("avx512f") {
            return;
        }
        let m: Vec<f32> = (0..256).map(|i| i as f32).collect();
        #[target_feature(enable = "avx512f")]
        unsafe fn run(m: &[f32]) -> Vec<f32> {
            // SAFETY: AVX-512F detected; 256 floats.
            unsafe {
                let mut r = [_mm512_setzero_ps(); 16];
                for (i, v) in r.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(m.as_ptr().add(16 * i));
                }
                transpose(&mut r);
                let mut out = vec![0.0; 256];
                for (i, v) in r.iter().enumerate() {
                    _mm512_storeu_ps(out.as_mut_ptr().add(16 * i), *v);
                }
                out
            }
        }
        // SAFETY: AVX-512F detected above.
        let t = unsafe { run(&m) };
        for i in 0..16 {
            for j in 0..16 {
                assert_eq!(t[16 * i + j], m[16 * j + i], "({i}, {j})");
            }
        }
    }

    #[test]
    fn the_rule_picks_narrow_rows() {
        // (c, oh, ow, k, stride)
        assert!(worth(1152, 10, 10, 5, 1) && worth(672, 20, 20, 5, 1) && worth(672, 10, 10, 5, 2));
        assert!(worth(1152, 16, 16, 5, 1) && worth(64, 16, 16, 3, 1) && worth(64, 3, 3, 3, 1));
        assert!(!worth(672, 16, 16, 5, 2), "a 35² padded input");
        assert!(!worth(672, 32, 32, 5, 1) && !worth(64, 40, 40, 3, 1) && !worth(8, 10, 10, 3, 1));
    }

    /// Same bits as the row kernel, means included: kernel sizes and strides, TF 'same'
    /// and symmetric padding, planes narrower than a vector and wider (two column chunks),
    /// smaller than the kernel, odd heights (row tiles of 4 and the rest), and channels past
    /// the last whole group (left to the row kernel).
    #[test]
    fn matches_the_row_kernel_bit_for_bit() {
        use crate::kernels::depthwise::{out_len, run_planes, run_rows};
        use crate::kernels::Isa;
        if !Isa::available().contains(&Isa::Avx512) {
            return;
        }
        let mut rng = Rng::new(3);
        // (c, h, w, k, s, pads)
        let cases = [
            (16, 10, 10, 5, 1, [2, 2, 2, 2]),
            (37, 10, 10, 3, 1, [1, 1, 1, 1]),
            (33, 20, 20, 5, 2, [1, 1, 2, 2]),
            (32, 20, 20, 3, 2, [0, 0, 1, 1]),
            (48, 7, 9, 5, 1, [2, 2, 2, 2]),
            (16, 3, 3, 5, 1, [2, 2, 2, 2]),
            (17, 2, 1, 3, 1, [1, 1, 1, 1]),
            (16, 11, 37, 3, 2, [1, 1, 1, 1]),
            (20, 13, 36, 5, 1, [2, 2, 2, 2]),
        ];
        for (c, h, w, k, s, pads) in cases {
            let oh = out_len(h, pads[0], pads[2], k, s);
            let ow = out_len(w, pads[1], pads[3], k, s);
            assert!(
                worth(c, oh, ow, k, s),
                "case {c} {h}x{w}: not a case for this kernel"
            );
            let x = rng.vec(c * h * w);
            let (wt, b) = (rng.vec(c * k * k), rng.vec(c));
            for act in [Act::Swish, Act::Relu6, Act::None] {
                let run = |f: fn(Isa, &mut Args)| {
                    let (mut y, mut m) = (vec![f32::NAN; c * oh * ow], vec![f32::NAN; c]);
                    let mut a = Args {
                        x: &x,
                        w: &wt,
                        bias: &b,
                        y: &mut y,
                        y_stride: oh * ow,
                        h,
                        w_in: w,
                        oh,
                        ow,
                        k,
                        stride: s,
                        pads,
                        act,
                        means: &mut m,
                    };
                    f(Isa::Avx512, &mut a);
                    (y, m)
                };
                let (want, want_m) = run(run_rows);
                let (got, got_m) = run(run_planes);
                let what = format!("{c}ch {h}x{w} k{k} s{s} {pads:?} {act:?}");
                assert!(want.iter().all(|v| v.is_finite()), "{what}: reference");
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert!(bits(&got) == bits(&want), "{what}: outputs differ");
                assert!(bits(&got_m) == bits(&want_m), "{what}: means differ");
            }
        }
    }
}
