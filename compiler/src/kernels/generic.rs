//! The ops of the unfused path and of unusual ONNX graphs, with the semantics of the
//! compiler's IR (`compiler/src/ir/op.rs`) and the results of its reference interpreter
//! (`compiler/src/interp.rs`): the same formulas in the same f32 operation order, and f64
//! accumulation where the interpreter accumulates in f64 (pools, reductions).
//!
//! Plain loops that the compiler vectorizes (elementwise ops, batch norm, weighted sums,
//! copies); the activation uses the SIMD [`apply_slice`]. Shapes are row-major; the
//! vision ops take NCHW planes with `c` counting every `(n, c)` plane.
//!
//! Threads: the per-plane ops (batch norm, pools, resize, pad) split whole output planes,
//! the elementwise ones (activation, same-shape binary ops, weighted sums) runs of 16
//! elements, over [`Par`]; every output value is computed by the same code whatever the
//! split, so results do not depend on the thread count. Transpose, concat, reductions,
//! softmax and broadcasting binary ops run on the calling thread.

use super::activation::apply_slice;
use super::depthwise::out_len;
use ::effdet_runtime::kernels::scratch;
use ::effdet_runtime::kernels::simd::require;
use ::effdet_runtime::kernels::{Act, Par};
use ::effdet_runtime::model::prelude::*;

/// Calls `f(first_plane, planes_of_y)` for groups of whole planes of `plane` values of `y`
/// (`planes` of them), one group per thread. `work`: the op's element operations.
fn by_planes(
    par: Par,
    y: &mut [f32],
    planes: usize,
    plane: usize,
    work: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) {
    if planes == 0 || plane == 0 {
        return;
    }
    let group = planes.div_ceil(par.threads());
    par.for_each_chunk(&mut y[..planes * plane], group * plane, work, |gi, yc| {
        f(gi * group, yc)
    });
}

/// Calls `f(plane_index, x_plane, y_plane)` for each of the `planes` pairs of an input plane
/// of `x` (`in_plane` values) and an output plane of `y` (`out_plane` values), over groups
/// of planes as [`by_planes`] splits them.
#[allow(clippy::too_many_arguments)]
fn by_plane_pairs(
    par: Par,
    x: &[f32],
    in_plane: usize,
    y: &mut [f32],
    planes: usize,
    out_plane: usize,
    work: usize,
    f: impl Fn(usize, &[f32], &mut [f32]) + Sync,
) {
    by_planes(par, y, planes, out_plane, work, |p0, yc| {
        let src = x[p0 * in_plane..].chunks(in_plane.max(1));
        for (i, (src, dst)) in src.zip(yc.chunks_mut(out_plane)).enumerate() {
            f(p0 + i, src, dst);
        }
    });
}

/// Calls `f(offset, part_of_y)` for consecutive runs of `y` (multiples of 16 values, so SIMD
/// tails fall where they would serially), one per thread.
fn by_runs(par: Par, y: &mut [f32], work: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let run = y.len().div_ceil(par.threads()).next_multiple_of(16);
    par.for_each_chunk(y, run, work, |i, yc| f(i * run, yc));
}

/// An elementwise binary op with numpy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    /// `a + b`.
    Add,
    /// `a − b`.
    Sub,
    /// `a · b`.
    Mul,
    /// `a / b`.
    Div,
}

impl BinOp {
    /// The op on one pair of values.
    #[inline(always)]
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinOp::Add => a + b,
            BinOp::Sub => a - b,
            BinOp::Mul => a * b,
            BinOp::Div => a / b,
        }
    }
}

/// What a 2-D pooling window computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    /// Maximum; padded positions never win (as if they held −∞).
    Max,
    /// Average; padded positions count as zeros only when `count_include_pad` (and only
    /// within the padded frame).
    Avg {
        /// Whether padded positions count in the divisor.
        count_include_pad: bool,
    },
}

/// How a weighted sum combines its inputs (BiFPN nodes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FusionMethod {
    /// `Σ relu(w_i)·x_i / (Σ relu(w_j) + eps)`: EfficientDet's fast normalized fusion.
    FastAttention {
        /// Added to the normalizer.
        eps: f32,
    },
    /// `Σ softmax(w)_i·x_i`.
    Softmax,
    /// `Σ x_i`; no weights.
    Sum,
}

/// How a reduction combines the values along its axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceKind {
    /// The sum.
    Sum,
    /// The mean.
    Mean,
}

/// Inference batch norm over `c` channels of `hw` values (repeated if `x` holds several
/// batches): `y = (x − mean)·gamma/√(var + eps) + beta`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm(
    par: Par,
    x: &[f32],
    y: &mut [f32],
    c: usize,
    hw: usize,
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
) {
    assert_eq!(
        x.len(),
        y.len(),
        "batch_norm: input and output differ in length"
    );
    assert!(gamma.len() >= c && beta.len() >= c && mean.len() >= c && var.len() >= c);
    if hw == 0 || c == 0 {
        return;
    }
    let chw = ::effdet_runtime::kernels::size("batch_norm", &[c, hw]);
    assert!(
        x.len().is_multiple_of(chw),
        "batch_norm: input is not [n][c][hw]"
    );
    let len = y.len();
    by_plane_pairs(par, x, hw, y, len / hw, hw, len, |plane, src, dst| {
        let ch = plane % c;
        let (m, b) = (mean[ch], beta[ch]);
        let scale = gamma[ch] / (var[ch] + eps).sqrt();
        for (o, &v) in dst.iter_mut().zip(src) {
            *o = (v - m) * scale + b;
        }
    });
}

/// `y = act(x)`, out of place, with instruction set `I` (`effdet_runtime::kernels::isa_code`).
///
/// # Panics
/// If `x` and `y` differ in length, or this CPU does not run `I`.
pub fn activation<const I: u8>(par: Par, x: &[f32], y: &mut [f32], act: Act) {
    assert_eq!(
        x.len(),
        y.len(),
        "activation: input and output differ in length"
    );
    let isa = require::<I>("activation");
    let len = y.len();
    by_runs(par, y, len, |off, yc| {
        yc.copy_from_slice(&x[off..off + yc.len()]);
        apply_slice(isa, act, yc);
    });
}

/// `y = a op b` with numpy broadcasting (rank ≤ 6). `y_shape` must be the broadcast shape.
#[allow(clippy::too_many_arguments)]
pub fn binary(
    par: Par,
    op: BinOp,
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    y: &mut [f32],
    y_shape: &[usize],
) {
    let total: usize = y_shape.iter().product();
    assert!(a.len() >= a_shape.iter().product() && b.len() >= b_shape.iter().product());
    assert_eq!(y.len(), total, "binary: output length");
    assert!(y_shape.len() <= 6 && a_shape.len() <= y_shape.len() && b_shape.len() <= y_shape.len());
    if a_shape == b_shape {
        return by_runs(par, y, total, |off, yc| {
            let n = yc.len();
            elementwise(op, &a[off..off + n], &b[off..off + n], yc)
        });
    }
    // One side is one value per leading block, e.g. [1,C,H,W] · [1,C,1,1].
    if let Some(inner) = block_scalar(a_shape, b_shape, y_shape) {
        return by_plane_pairs(
            par,
            a,
            inner,
            y,
            total / inner,
            inner,
            total,
            |i, src, dst| {
                for (o, &v) in dst.iter_mut().zip(src) {
                    *o = op.apply(v, b[i]);
                }
            },
        );
    }
    if let Some(inner) = block_scalar(b_shape, a_shape, y_shape) {
        return by_plane_pairs(
            par,
            b,
            inner,
            y,
            total / inner,
            inner,
            total,
            |i, src, dst| {
                for (o, &v) in dst.iter_mut().zip(src) {
                    *o = op.apply(a[i], v);
                }
            },
        );
    }
    // General: an odometer over all but the last output dimension.
    let sa = broadcast_strides(a_shape, y_shape);
    let sb = broadcast_strides(b_shape, y_shape);
    let rank = y_shape.len();
    if total == 0 {
        return;
    }
    let last = y_shape[rank - 1];
    let (la, lb) = (sa[rank - 1], sb[rank - 1]);
    let mut idx = [0usize; 6];
    for dst in y.chunks_mut(last) {
        let ia: usize = (0..rank - 1).map(|d| idx[d] * sa[d]).sum();
        let ib: usize = (0..rank - 1).map(|d| idx[d] * sb[d]).sum();
        for (i, o) in dst.iter_mut().enumerate() {
            *o = op.apply(a[ia + i * la], b[ib + i * lb]);
        }
        advance(&mut idx[..rank - 1], &y_shape[..rank - 1]);
    }
}

fn elementwise(op: BinOp, a: &[f32], b: &[f32], y: &mut [f32]) {
    let it = y.iter_mut().zip(a).zip(b);
    match op {
        BinOp::Add => it.for_each(|((o, &a), &b)| *o = a + b),
        BinOp::Sub => it.for_each(|((o, &a), &b)| *o = a - b),
        BinOp::Mul => it.for_each(|((o, &a), &b)| *o = a * b),
        BinOp::Div => it.for_each(|((o, &a), &b)| *o = a / b),
    }
}

/// If `big` has the output's shape and `small` (right-aligned) matches it on a leading run
/// of dimensions and is 1 on all after, the element count of one such trailing block.
fn block_scalar(big: &[usize], small: &[usize], out: &[usize]) -> Option<usize> {
    if big != out {
        return None;
    }
    let rank = out.len();
    let dim = |d: usize| (d + small.len()).checked_sub(rank).map_or(1, |j| small[j]);
    // The first dimension from which `small` is 1 to the end.
    let split = (0..=rank)
        .rev()
        .take_while(|&d| d == rank || dim(d) == 1)
        .last()
        .unwrap_or(rank);
    let leading_match = (0..split).all(|d| dim(d) == out[d]);
    let inner: usize = out[split..].iter().product();
    (leading_match && split < rank && inner > 1).then_some(inner)
}

/// Strides to read a tensor of `shape` broadcast to `out` (rank ≤ 6): 0 along broadcast
/// dimensions.
fn broadcast_strides(shape: &[usize], out: &[usize]) -> [usize; 6] {
    let mut strides = [0; 6];
    let mut stride = 1;
    for (d, &len) in shape.iter().enumerate().rev() {
        let od = d + out.len() - shape.len();
        strides[od] = if len == 1 { 0 } else { stride };
        stride *= len;
    }
    strides
}

/// Steps a row-major multi-index; wraps to zero after the last position.
fn advance(idx: &mut [usize], shape: &[usize]) {
    for d in (0..idx.len()).rev() {
        idx[d] += 1;
        if idx[d] < shape[d] {
            return;
        }
        idx[d] = 0;
    }
}

/// Row-major strides of a shape, into `s` (`shape.len()` long).
fn strides(shape: &[usize], s: &mut [usize]) {
    s.fill(1);
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
}

/// `y[c] = mean(x[c])` over planes of `hw` values (summed in f64).
pub fn global_avg_pool(par: Par, x: &[f32], y: &mut [f32], c: usize, hw: usize) {
    assert!(
        x.len() >= c * hw && y.len() >= c,
        "global_avg_pool: lengths"
    );
    if hw == 0 {
        return y[..c].fill(f32::NAN);
    }
    // Output "planes" of one value each.
    by_plane_pairs(par, x, hw, y, c, 1, c * hw, |_, plane, out| {
        out[0] = (plane.iter().map(|&v| v as f64).sum::<f64>() / hw as f64) as f32;
    });
}

/// 2-D pooling of `c` planes of `h × w` into `oh × ow` with
/// `oh = (h + pads[0] + pads[2] − kernel[0]) / stride[0] + 1` (and `ow` likewise).
#[allow(clippy::too_many_arguments)]
pub fn pool2d(
    par: Par,
    kind: PoolKind,
    x: &[f32],
    y: &mut [f32],
    c: usize,
    h: usize,
    w: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    pads: [usize; 4],
) {
    let oh = out_len(h, pads[0], pads[2], kernel[0], stride[0]);
    let ow = out_len(w, pads[1], pads[3], kernel[1], stride[1]);
    assert!(
        x.len() >= c * h * w && y.len() >= c * oh * ow,
        "pool2d: lengths"
    );
    let work = c * oh * ow * kernel[0] * kernel[1];
    by_plane_pairs(par, x, h * w, y, c, oh * ow, work, |_, src, dst| {
        for oy in 0..oh {
            for ox in 0..ow {
                let (mut max, mut sum, mut count) = (f32::NEG_INFINITY, 0f32, 0usize);
                for ky in 0..kernel[0] {
                    for kx in 0..kernel[1] {
                        let iy = (oy * stride[0] + ky) as isize - pads[0] as isize;
                        let ix = (ox * stride[1] + kx) as isize - pads[1] as isize;
                        if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
                            // Padding beyond the padded frame never counts.
                            let framed = iy < (h + pads[2]) as isize && ix < (w + pads[3]) as isize;
                            if kind
                                == (PoolKind::Avg {
                                    count_include_pad: true,
                                })
                                && framed
                            {
                                count += 1;
                            }
                            continue;
                        }
                        let v = src[iy as usize * w + ix as usize];
                        max = max.max(v);
                        sum += v;
                        count += 1;
                    }
                }
                dst[oy * ow + ox] = match kind {
                    PoolKind::Max => max,
                    PoolKind::Avg { .. } => sum / count.max(1) as f32,
                };
            }
        }
    });
}

/// Nearest-neighbour resize of `c` planes from `h × w` to `oh × ow`: output `(oy, ox)`
/// reads `(⌊oy·h/oh⌋, ⌊ox·w/ow⌋)`.
#[allow(clippy::too_many_arguments)]
pub fn resize_nearest(
    par: Par,
    x: &[f32],
    y: &mut [f32],
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
) {
    assert!(
        x.len() >= c * h * w && y.len() >= c * oh * ow,
        "resize_nearest: lengths"
    );
    if oh * ow == 0 {
        return;
    }
    by_planes(par, y, c, oh * ow, c * oh * ow, |c0, yc| {
        // Per thread: each takes its own scratch table.
        let mut cols = scratch::take::<usize>(ow);
        for (ox, c) in cols.iter_mut().enumerate() {
            *c = ox * w / ow;
        }
        let cols: &[usize] = &cols;
        for (src, dst) in x[c0 * h * w..].chunks(h * w).zip(yc.chunks_mut(oh * ow)) {
            for (oy, out) in dst.chunks_mut(ow).enumerate() {
                let row = &src[(oy * h / oh) * w..][..w];
                for (o, &ix) in out.iter_mut().zip(cols) {
                    *o = row[ix];
                }
            }
        }
    });
}

/// Constant padding of `c` planes of `h × w` by `pads` (`[top, left, bottom, right]`).
#[allow(clippy::too_many_arguments)]
pub fn pad(
    par: Par,
    x: &[f32],
    y: &mut [f32],
    c: usize,
    h: usize,
    w: usize,
    pads: [usize; 4],
    value: f32,
) {
    let (oh, ow) = (h + pads[0] + pads[2], w + pads[1] + pads[3]);
    assert!(
        x.len() >= c * h * w && y.len() >= c * oh * ow,
        "pad: lengths"
    );
    if oh * ow == 0 {
        return;
    }
    if h * w == 0 {
        // Nothing to copy: every output is padding.
        return y[..c * oh * ow].fill(value);
    }
    by_plane_pairs(par, x, h * w, y, c, oh * ow, c * oh * ow, |_, src, dst| {
        for (oy, out) in dst.chunks_mut(ow).enumerate() {
            let iy = oy.wrapping_sub(pads[0]);
            if iy >= h {
                out.fill(value);
                continue;
            }
            out[..pads[1]].fill(value);
            out[pads[1]..pads[1] + w].copy_from_slice(&src[iy * w..(iy + 1) * w]);
            out[pads[1] + w..].fill(value);
        }
    });
}

/// The coefficients a weighted sum applies to its `n` inputs (the interpreter's
/// `fusion_coefficients`): `n` values for [`FusionMethod::Sum`], one per raw weight
/// otherwise. Returns a new vector (for build time; [`weighted_sum`] allocates nothing).
pub fn fusion_coefficients(method: FusionMethod, raw_weights: &[f32], n: usize) -> Vec<f32> {
    let len = match method {
        FusionMethod::Sum => n,
        _ => raw_weights.len(),
    };
    let mut coef = vec![0.0; len];
    coefficients_into(method, raw_weights, &mut coef);
    coef
}

/// [`fusion_coefficients`] into `coef` (one per raw weight, or any number for a sum).
fn coefficients_into(method: FusionMethod, raw_weights: &[f32], coef: &mut [f32]) {
    match method {
        FusionMethod::FastAttention { eps } => {
            let sum: f32 = raw_weights.iter().map(|v| v.max(0.0)).sum();
            for (k, v) in coef.iter_mut().zip(raw_weights) {
                *k = v.max(0.0) / (sum + eps);
            }
        }
        FusionMethod::Softmax => {
            let max = raw_weights
                .iter()
                .cloned()
                .fold(f32::NEG_INFINITY, f32::max);
            for (e, v) in coef.iter_mut().zip(raw_weights) {
                *e = (v - max).exp();
            }
            let sum: f32 = coef.iter().sum();
            for e in coef.iter_mut() {
                *e /= sum;
            }
        }
        FusionMethod::Sum => coef.fill(1.0),
    }
}

/// `y = Σ_i k_i · inputs[i]` with the coefficients of `method` from `raw_weights` (one
/// per input; ignored for [`FusionMethod::Sum`]).
pub fn weighted_sum(
    par: Par,
    method: FusionMethod,
    raw_weights: &[f32],
    inputs: &[&[f32]],
    y: &mut [f32],
) {
    if method != FusionMethod::Sum {
        assert_eq!(
            raw_weights.len(),
            inputs.len(),
            "weighted_sum: one weight per input"
        );
    }
    for x in inputs {
        assert!(x.len() >= y.len(), "weighted_sum: input too short");
    }
    let mut coef = scratch::take::<f32>(inputs.len());
    coefficients_into(method, raw_weights, &mut coef);
    let coef: &[f32] = &coef;
    let len = y.len();
    by_runs(par, y, len * inputs.len(), |off, yc| {
        yc.fill(0.0);
        for (x, &k) in inputs.iter().zip(coef) {
            for (o, &v) in yc.iter_mut().zip(&x[off..]) {
                *o += k * v;
            }
        }
    });
}

/// Permutes dimensions: output dimension `i` is input dimension `perm[i]`.
pub fn transpose(x: &[f32], shape: &[usize], perm: &[usize], y: &mut [f32]) {
    let total: usize = shape.iter().product();
    assert_eq!(perm.len(), shape.len(), "transpose: perm rank");
    assert!(x.len() >= total && y.len() >= total, "transpose: lengths");
    if total == 0 {
        return;
    }
    if shape.is_empty() {
        y[0] = x[0];
        return;
    }
    if let Some((batch, rows, cols)) = as_batched_2d(shape, perm) {
        let plane = rows * cols;
        let images = x[..total].chunks(plane).zip(y[..total].chunks_mut(plane));
        for (xb, yb) in images.take(batch) {
            transpose_2d(xb, rows, cols, yb);
        }
        return;
    }
    let rank = shape.len();
    // Input strides, output shape, input strides in output order, output index.
    let mut table = scratch::take::<usize>(4 * rank);
    let (src, rest) = table.split_at_mut(rank);
    let (out, rest) = rest.split_at_mut(rank);
    let (walk, idx) = rest.split_at_mut(rank);
    strides(shape, src);
    for ((o, w), &p) in out.iter_mut().zip(walk.iter_mut()).zip(perm) {
        (*o, *w) = (shape[p], src[p]);
    }
    let (last, step) = (out[rank - 1], walk[rank - 1]);
    let idx = &mut idx[..rank - 1];
    idx.fill(0);
    for dst in y[..total].chunks_mut(last) {
        let base: usize = idx.iter().zip(walk.iter()).map(|(i, s)| i * s).sum();
        for (i, o) in dst.iter_mut().enumerate() {
            *o = x[base + i * step];
        }
        advance(idx, &out[..rank - 1]);
    }
}

/// When `perm` only swaps two blocks of dimensions behind a common prefix — NCHW ↔ NHWC,
/// `[A, B] → [B, A]` — the transpose is a batch of 2-D ones: `(batch, rows, cols)`, with
/// dimensions of size 1 ignored and dimensions that stay adjacent merged.
fn as_batched_2d(shape: &[usize], perm: &[usize]) -> Option<(usize, usize, usize)> {
    // Output dims as input dims, size-1 ones dropped; on the stack, so a forward pass does
    // not allocate (ranks above 8 take the general path).
    let mut buf = [0usize; 8];
    let mut len = 0;
    for &d in perm.iter().filter(|&&d| shape[d] != 1) {
        *buf.get_mut(len)? = d;
        len += 1;
    }
    let kept = &buf[..len];
    let split = kept.iter().position(|&d| {
        kept.iter().any(|&e| {
            e < d && {
                // `e` comes after `d` in the output although it precedes it in the input.
                kept.iter().position(|&f| f == e) > kept.iter().position(|&f| f == d)
            }
        })
    })?;
    // kept = prefix (in input order) ++ second block ++ first block, each block increasing.
    let increasing = |s: &[usize]| s.windows(2).all(|w| w[1] > w[0]);
    let (prefix, rest) = kept.split_at(split);
    let mid = rest.iter().position(|&d| d < rest[0])?;
    let (second, first) = rest.split_at(mid);
    let contiguous = |s: &[usize]| s.windows(2).all(|w| w[1] == w[0] + 1);
    if !(increasing(prefix)
        && contiguous(first)
        && contiguous(second)
        && first.last().map(|&d| d + 1) == Some(second[0])
        && prefix.iter().all(|&d| d < first[0]))
    {
        return None;
    }
    let product = |s: &[usize]| s.iter().map(|&d| shape[d]).product::<usize>();
    Some((product(prefix), product(first), product(second)))
}

/// `y[c][r] = x[r][c]` for an `rows × cols` matrix, a tile at a time through a local
/// buffer: rows of the tile are read whole and columns written whole, so neither side walks
/// memory with a stride (a head output's rows are 16 KiB apart: strided reads of a tile's
/// column would all map to one L1 set and evict each other).
pub(crate) fn transpose_2d(x: &[f32], rows: usize, cols: usize, y: &mut [f32]) {
    // 64 × 64 (16 KiB, half an L1d): measured 4.0 ms on a [810, 4096] head output where
    // 32 × 32 took 5.6 and 8 × 8 8.9.
    const TILE: usize = 64;
    let (x, y) = (&x[..rows * cols], &mut y[..rows * cols]);
    // A narrow side (an RGB image's 3 channels) is a few output streams: no tile needed.
    if cols <= 16 {
        for (r, row) in x.chunks_exact(cols).enumerate() {
            for (c, &v) in row.iter().enumerate() {
                y[c * rows + r] = v;
            }
        }
        return;
    }
    if rows <= 16 {
        for (c, out) in y.chunks_exact_mut(rows).enumerate() {
            for (r, o) in out.iter_mut().enumerate() {
                *o = x[r * cols + c];
            }
        }
        return;
    }
    let mut tile = [[0f32; TILE]; TILE];
    for r0 in (0..rows).step_by(TILE) {
        let r1 = (r0 + TILE).min(rows);
        for c0 in (0..cols).step_by(TILE) {
            let c1 = (c0 + TILE).min(cols);
            for (t, r) in tile.iter_mut().zip(r0..r1) {
                let src = &x[r * cols + c0..r * cols + c1];
                if let Ok(full) = <&[f32; TILE]>::try_from(src) {
                    *t = *full;
                } else {
                    t[..src.len()]
                        .iter_mut()
                        .zip(src)
                        .for_each(|(d, s)| *d = *s);
                }
            }
            for (j, c) in (c0..c1).enumerate() {
                let out = &mut y[c * rows + r0..c * rows + r1];
                for (o, t) in out.iter_mut().zip(&tile) {
                    *o = t[j];
                }
            }
        }
    }
}

/// Joins `(data, shape)` inputs along `axis`; the other dimensions agree.
pub fn concat(inputs: &[(&[f32], &[usize])], axis: usize, y: &mut [f32]) {
    let Some(&(_, first)) = inputs.first() else {
        return;
    };
    assert!(axis < first.len(), "concat: axis out of range");
    let outer: usize = first[..axis].iter().product();
    let mut at = 0;
    for o in 0..outer {
        for (x, shape) in inputs {
            let chunk: usize = shape[axis..].iter().product();
            y[at..at + chunk].copy_from_slice(&x[o * chunk..(o + 1) * chunk]);
            at += chunk;
        }
    }
    assert_eq!(at, y.len(), "concat: output length");
}

/// Sums or averages `x` (of `shape`) over `axes` (sorted, distinct), accumulating in f64.
/// `y` holds the remaining positions in order (whether or not the reduced dims are kept).
pub fn reduce(kind: ReduceKind, x: &[f32], shape: &[usize], axes: &[usize], y: &mut [f32]) {
    let rank = shape.len();
    // The kept shape (reduced dims as 1), output strides (0 along reduced dims), index.
    let mut table = scratch::take::<usize>(3 * rank);
    let (kept, rest) = table.split_at_mut(rank);
    let (dst, idx) = rest.split_at_mut(rank);
    for (d, (k, &n)) in kept.iter_mut().zip(shape).enumerate() {
        *k = if axes.contains(&d) { 1 } else { n };
    }
    strides(kept, dst);
    for (d, s) in dst.iter_mut().enumerate() {
        if axes.contains(&d) {
            *s = 0;
        }
    }
    let total: usize = shape.iter().product();
    let outputs: usize = kept.iter().product();
    assert!(x.len() >= total && y.len() >= outputs, "reduce: lengths");
    let mut acc = scratch::take::<f64>(outputs);
    acc.fill(0.0);
    idx.fill(0);
    for &v in &x[..total] {
        let at: usize = idx.iter().zip(dst.iter()).map(|(i, s)| i * s).sum();
        acc[at] += v as f64;
        advance(idx, shape);
    }
    let count: usize = axes.iter().map(|&a| shape[a]).product();
    for (o, &v) in y.iter_mut().zip(acc.iter()) {
        *o = match kind {
            ReduceKind::Sum => v as f32,
            ReduceKind::Mean => (v / count.max(1) as f64) as f32,
        };
    }
}

/// `exp(x − max) / Σ exp(x − max)` along `axis` of `shape`.
pub fn softmax(x: &[f32], shape: &[usize], axis: usize, y: &mut [f32]) {
    assert!(axis < shape.len(), "softmax: axis out of range");
    let total: usize = shape.iter().product();
    assert!(x.len() >= total && y.len() >= total, "softmax: lengths");
    let y = &mut y[..total];
    y.copy_from_slice(&x[..total]);
    let len = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    if len == 0 || inner == 0 {
        return;
    }
    for block in y.chunks_mut(len * inner) {
        for i in 0..inner {
            let max = (0..len)
                .map(|k| block[k * inner + i])
                .fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for k in 0..len {
                let e = (block[k * inner + i] - max).exp();
                block[k * inner + i] = e;
                sum += e;
            }
            for k in 0..len {
                block[k * inner + i] /= sum;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::effdet_runtime::kernels::simd::test_util::{assert_close, Rng};
    use ::effdet_runtime::kernels::Isa;

    /// f64 numpy-broadcast reference.
    fn broadcast_ref(
        op: BinOp,
        a: &[f32],
        sa: &[usize],
        b: &[f32],
        sb: &[usize],
        so: &[usize],
    ) -> Vec<f64> {
        let total: usize = so.iter().product();
        let (ta, tb) = (broadcast_strides(sa, so), broadcast_strides(sb, so));
        let mut idx = vec![0; so.len()];
        let mut out = Vec::new();
        for _ in 0..total {
            let ia: usize = idx.iter().zip(&ta).map(|(i, s)| i * s).sum();
            let ib: usize = idx.iter().zip(&tb).map(|(i, s)| i * s).sum();
            let (x, y) = (a[ia] as f64, b[ib] as f64);
            out.push(match op {
                BinOp::Add => x + y,
                BinOp::Sub => x - y,
                BinOp::Mul => x * y,
                BinOp::Div => x / y,
            });
            advance(&mut idx, so);
        }
        out
    }

    #[test]
    fn binary_broadcasts() {
        let mut rng = Rng::new(41);
        #[rustfmt::skip]
        let cases: &[(&[usize], &[usize], &[usize])] = &[
            (&[1, 3, 4, 5], &[1, 3, 4, 5], &[1, 3, 4, 5]),
            (&[1, 3, 4, 5], &[1, 3, 1, 1], &[1, 3, 4, 5]),
            (&[1, 3, 1, 1], &[1, 3, 4, 5], &[1, 3, 4, 5]),
            (&[2, 3], &[3], &[2, 3]),
            (&[3], &[2, 1], &[2, 3]),
            (&[1, 3, 4, 5], &[5], &[1, 3, 4, 5]),
            (&[1, 3, 4, 5], &[4, 1], &[1, 3, 4, 5]),
            (&[2, 1, 4], &[1, 3, 1], &[2, 3, 4]),
            (&[1, 3, 4, 5], &[1], &[1, 3, 4, 5]),
            (&[1, 2, 1, 3, 1, 2], &[2, 1, 3, 2, 1], &[1, 2, 2, 3, 2, 2]),
            (&[4, 1], &[1], &[4, 1]),
            (&[1], &[1], &[1]),
        ];
        for &(sa, sb, so) in cases {
            let a = rng.vec(sa.iter().product());
            // Away from zero, for division.
            let b: Vec<f32> = rng
                .vec(sb.iter().product())
                .iter()
                .map(|v| v + 2.0)
                .collect();
            for op in [BinOp::Add, BinOp::Sub, BinOp::Mul, BinOp::Div] {
                let mut y = vec![f32::NAN; so.iter().product()];
                binary(Par::serial(), op, &a, sa, &b, sb, &mut y, so);
                let want = broadcast_ref(op, &a, sa, &b, sb, so);
                assert_close(&y, &want, 1e-6, &format!("{op:?} {sa:?} {sb:?}"));
            }
        }
    }

    #[test]
    fn batch_norm_and_activation() {
        let mut rng = Rng::new(42);
        let (c, hw) = (5, 37);
        let x = rng.vec(2 * c * hw);
        let (g, b, m) = (rng.vec(c), rng.vec(c), rng.vec(c));
        let v: Vec<f32> = rng.vec(c).iter().map(|v| v.abs() + 0.1).collect();
        let mut y = vec![0.0; x.len()];
        batch_norm(Par::serial(), &x, &mut y, c, hw, &g, &b, &m, &v, 1e-3);
        let want: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, &xv)| {
                let ch = (i / hw) % c;
                (xv as f64 - m[ch] as f64) * g[ch] as f64 / (v[ch] as f64 + 1e-3).sqrt()
                    + b[ch] as f64
            })
            .collect();
        assert_close(&y, &want, 1e-5, "batch_norm");
        for isa in Isa::available() {
            for act in [
                Act::Swish,
                Act::HardSwish,
                Act::Clip {
                    min: -0.5,
                    max: 0.25,
                },
            ] {
                ::effdet_runtime::with_isa!(isa, I => activation::<I>(Par::serial(), &x, &mut y, act));
                let want: Vec<f64> = x.iter().map(|&v| act.apply(v) as f64).collect();
                assert_close(&y, &want, 1e-5, &format!("{isa:?} {act:?}"));
            }
        }
    }

    #[test]
    fn pools_resize_pad() {
        let mut rng = Rng::new(43);
        let (c, h, w) = (3, 7, 6);
        let x = rng.vec(c * h * w);
        let at = |ch: usize, iy: isize, ix: isize| -> Option<f64> {
            (iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w)
                .then(|| x[(ch * h + iy as usize) * w + ix as usize] as f64)
        };
        let mut avg = vec![0.0; x.len()];
        global_avg_pool(Par::serial(), &x, &mut avg[..c], c, h * w);
        for ch in 0..c {
            let m = x[ch * h * w..(ch + 1) * h * w]
                .iter()
                .map(|&v| v as f64)
                .sum::<f64>()
                / (h * w) as f64;
            assert_close(&avg[ch..ch + 1], &[m], 1e-7, "global_avg_pool");
        }
        let kinds = [
            PoolKind::Max,
            PoolKind::Avg {
                count_include_pad: false,
            },
            PoolKind::Avg {
                count_include_pad: true,
            },
        ];
        for kind in kinds {
            for &(k, s, p) in &[
                ([3, 3], [2, 2], [0, 0, 1, 1]),
                ([3, 2], [1, 2], [1, 1, 1, 1]),
                ([2, 2], [2, 2], [0, 0, 0, 0]),
            ] {
                let oh = (h + p[0] + p[2] - k[0]) / s[0] + 1;
                let ow = (w + p[1] + p[3] - k[1]) / s[1] + 1;
                let mut y = vec![f32::NAN; c * oh * ow];
                pool2d(Par::serial(), kind, &x, &mut y, c, h, w, k, s, p);
                let mut want = Vec::new();
                for ch in 0..c {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let (mut mx, mut sum, mut n, mut framed) =
                                (f64::NEG_INFINITY, 0.0, 0, 0);
                            for ky in 0..k[0] {
                                for kx in 0..k[1] {
                                    let iy = (oy * s[0] + ky) as isize - p[0] as isize;
                                    let ix = (ox * s[1] + kx) as isize - p[1] as isize;
                                    if iy < (h + p[2]) as isize && ix < (w + p[3]) as isize {
                                        framed += 1;
                                    }
                                    if let Some(v) = at(ch, iy, ix) {
                                        mx = mx.max(v);
                                        sum += v;
                                        n += 1;
                                    }
                                }
                            }
                            want.push(match kind {
                                PoolKind::Max => mx,
                                PoolKind::Avg {
                                    count_include_pad: false,
                                } => sum / n as f64,
                                PoolKind::Avg {
                                    count_include_pad: true,
                                } => sum / framed as f64,
                            });
                        }
                    }
                }
                assert_close(&y, &want, 1e-6, &format!("{kind:?} {k:?} {s:?} {p:?}"));
            }
        }
        for &(oh, ow) in &[(5, 9), (14, 12), (3, 2), (7, 6)] {
            let mut y = vec![f32::NAN; c * oh * ow];
            resize_nearest(Par::serial(), &x, &mut y, c, h, w, oh, ow);
            let mut want = Vec::new();
            for ch in 0..c {
                for oy in 0..oh {
                    for ox in 0..ow {
                        want.push(at(ch, (oy * h / oh) as isize, (ox * w / ow) as isize).unwrap());
                    }
                }
            }
            assert_close(&y, &want, 0.0, &format!("resize {oh}x{ow}"));
        }
        let p = [1, 0, 2, 3];
        let (oh, ow) = (h + 3, w + 3);
        let mut y = vec![f32::NAN; c * oh * ow];
        pad(Par::serial(), &x, &mut y, c, h, w, p, -2.5);
        let mut want = Vec::new();
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    want.push(at(ch, oy as isize - 1, ox as isize).unwrap_or(-2.5));
                }
            }
        }
        assert_close(&y, &want, 0.0, "pad");
        let mut y = vec![f32::NAN; 2 * 3 * 2];
        pad(Par::serial(), &[], &mut y, 2, 0, 2, [1, 0, 2, 0], 4.0);
        assert_eq!(y, vec![4.0; 12]);
    }

    #[test]
    fn weighted_sums() {
        let mut rng = Rng::new(44);
        let xs: Vec<Vec<f32>> = (0..3).map(|_| rng.vec(50)).collect();
        let inputs: Vec<&[f32]> = xs.iter().map(|v| &v[..]).collect();
        let raw = [1.0f32, -2.0, 3.0];
        let cases = [
            (
                FusionMethod::FastAttention { eps: 1e-4 },
                vec![1.0 / 4.0001, 0.0, 3.0 / 4.0001],
            ),
            (FusionMethod::Softmax, {
                let e: Vec<f64> = raw.iter().map(|&v| (v as f64 - 3.0).exp()).collect();
                let s: f64 = e.iter().sum();
                e.iter().map(|v| v / s).collect()
            }),
            (FusionMethod::Sum, vec![1.0, 1.0, 1.0]),
        ];
        for (method, k) in cases {
            let mut y = vec![f32::NAN; 50];
            weighted_sum(
                Par::serial(),
                method,
                if method == FusionMethod::Sum {
                    &[]
                } else {
                    &raw
                },
                &inputs,
                &mut y,
            );
            let want: Vec<f64> = (0..50)
                .map(|i| (0..3).map(|j| k[j] * xs[j][i] as f64).sum())
                .collect();
            assert_close(&y, &want, 1e-5, &format!("{method:?}"));
        }
    }

    #[test]
    fn transposes_that_swap_two_blocks_take_the_tiled_path() {
        assert_eq!(
            as_batched_2d(&[1, 810, 64, 64], &[0, 2, 3, 1]),
            Some((1, 810, 4096))
        );
        assert_eq!(
            as_batched_2d(&[1, 512, 512, 3], &[0, 3, 1, 2]),
            Some((1, 262144, 3))
        );
        assert_eq!(
            as_batched_2d(&[2, 3, 4, 5], &[0, 2, 3, 1]),
            Some((2, 3, 20))
        );
        assert_eq!(as_batched_2d(&[2, 3], &[1, 0]), Some((1, 2, 3)));
        assert_eq!(as_batched_2d(&[2, 3, 4], &[0, 2, 1]), Some((2, 3, 4)));
        // Three blocks, or a reversal: the general path.
        assert_eq!(as_batched_2d(&[2, 3, 4], &[2, 1, 0]), None);
        assert_eq!(
            as_batched_2d(&[2, 3, 4, 5], &[0, 3, 1, 2]),
            Some((2, 12, 5))
        );
        assert_eq!(as_batched_2d(&[2, 3, 4, 5], &[1, 3, 0, 2]), None);
        assert_eq!(as_batched_2d(&[2, 3, 4], &[0, 1, 2]), None);
        // Against index arithmetic, shapes around the tile size.
        for (shape, perm) in [
            (vec![1, 70, 5, 9], vec![0, 2, 3, 1]),
            (vec![3, 33, 1, 40], vec![0, 3, 1, 2]),
            (vec![2, 1, 65, 31], vec![0, 1, 3, 2]),
            (vec![1, 9, 7, 3], vec![0, 3, 1, 2]),
            (vec![1, 5, 40, 7], vec![0, 2, 3, 1]),
            // Several tiles with partial tiles on both edges, and exact ones.
            (vec![1, 130, 9, 15], vec![0, 2, 3, 1]),
            (vec![2, 64, 8, 8], vec![0, 2, 3, 1]),
        ] {
            let n: usize = shape.iter().product();
            let x: Vec<f32> = (0..n).map(|v| v as f32).collect();
            let mut fast = vec![0.0; n];
            transpose(&x, &shape, &perm, &mut fast);
            let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
            let mut idx = [0usize; 4];
            for (i, &v) in fast.iter().enumerate() {
                let mut rem = i;
                for d in (0..4).rev() {
                    idx[perm[d]] = rem % out[d];
                    rem /= out[d];
                }
                let src = ((idx[0] * shape[1] + idx[1]) * shape[2] + idx[2]) * shape[3] + idx[3];
                assert_eq!(v, x[src], "{shape:?} {perm:?} at {i}");
            }
        }
    }

    #[test]
    fn layout_ops() {
        // Transpose [2, 3] → [3, 2].
        let x: Vec<f32> = (0..6).map(|v| v as f32).collect();
        let mut y = vec![0.0; 6];
        transpose(&x, &[2, 3], &[1, 0], &mut y);
        assert_eq!(y, [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        // NCHW → NHWC on a 4-D tensor, against index arithmetic.
        let shape = [2, 3, 4, 5];
        let x: Vec<f32> = (0..120).map(|v| v as f32).collect();
        let mut y = vec![0.0; 120];
        transpose(&x, &shape, &[0, 2, 3, 1], &mut y);
        for n in 0..2 {
            for c in 0..3 {
                for h in 0..4 {
                    for w in 0..5 {
                        assert_eq!(
                            y[((n * 4 + h) * 5 + w) * 3 + c],
                            x[((n * 3 + c) * 4 + h) * 5 + w]
                        );
                    }
                }
            }
        }
        // Concat [2, 1] and [2, 2] along 1.
        let mut y = vec![0.0; 6];
        concat(
            &[(&[1.0, 2.0], &[2, 1]), (&[3.0, 4.0, 5.0, 6.0], &[2, 2])],
            1,
            &mut y,
        );
        assert_eq!(y, [1.0, 3.0, 4.0, 2.0, 5.0, 6.0]);
        // Reductions over [2, 3] = [[1, 2, 3], [4, 5, 6]].
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut y = vec![0.0; 3];
        reduce(ReduceKind::Sum, &x, &[2, 3], &[0], &mut y);
        assert_eq!(y, [5.0, 7.0, 9.0]);
        let mut y = vec![0.0; 2];
        reduce(ReduceKind::Sum, &x, &[2, 3], &[1], &mut y);
        assert_eq!(y, [6.0, 15.0]);
        let mut y = vec![0.0; 1];
        reduce(ReduceKind::Mean, &x, &[2, 3], &[0, 1], &mut y);
        assert_eq!(y, [3.5]);
        // Softmax along axis 0: each column is softmax(a, a + 3).
        let mut y = vec![0.0; 6];
        softmax(&x, &[2, 3], 0, &mut y);
        let lo = 1.0 / (1.0 + 3f64.exp());
        assert_close(
            &y,
            &[lo, lo, lo, 1.0 - lo, 1.0 - lo, 1.0 - lo],
            1e-6,
            "softmax",
        );
        let mut y = vec![0.0; 6];
        softmax(&x, &[2, 3], 1, &mut y);
        let e: Vec<f64> = [0.0f64, 1.0, 2.0].iter().map(|v| v.exp()).collect();
        let s: f64 = e.iter().sum();
        let row: Vec<f64> = e.iter().map(|v| v / s).collect();
        assert_close(&y, &[row.clone(), row].concat(), 1e-6, "softmax axis 1");
    }

    /// Every op that splits over threads gives the serial result bit for bit, on sizes
    /// large enough to be split (uneven plane counts and lengths included).
    #[test]
    fn thread_splits_match_serial_bit_for_bit() {
        let pool = ::effdet_runtime::kernels::Pool::new(3);
        // Above the split threshold (64K element operations) for every op.
        let (c, h, w) = (37, 61, 67);
        let n = c * h * w;
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 1013) as f32 * 1e-3 - 0.5)
            .collect();
        let b: Vec<f32> = (0..n)
            .map(|i| ((i * 104_729) % 997) as f32 * 1e-3)
            .collect();
        let per_c: Vec<f32> = (0..c).map(|i| 0.5 + i as f32 * 0.01).collect();
        let shape = [1, c, h, w];
        type Op<'a> = Box<dyn Fn(Par, &mut [f32]) + 'a>;
        let ops: Vec<(&str, usize, Op)> = vec![
            (
                "batch_norm",
                n,
                Box::new(|p, y| {
                    batch_norm(p, &x, y, c, h * w, &per_c, &per_c, &per_c, &per_c, 1e-3)
                }),
            ),
            (
                "activation",
                n,
                Box::new(
                    |p, y| ::effdet_runtime::with_isa!(Isa::detect(), I => activation::<I>(p, &x, y, Act::Swish)),
                ),
            ),
            (
                "binary same",
                n,
                Box::new(|p, y| binary(p, BinOp::Div, &x, &shape, &b, &shape, y, &shape)),
            ),
            (
                "binary per channel",
                n,
                Box::new(|p, y| {
                    binary(p, BinOp::Mul, &x, &shape, &per_c, &[1, c, 1, 1], y, &shape)
                }),
            ),
            (
                "binary per channel, swapped",
                n,
                Box::new(|p, y| {
                    binary(p, BinOp::Sub, &per_c, &[1, c, 1, 1], &x, &shape, y, &shape)
                }),
            ),
            (
                "global_avg_pool",
                c,
                Box::new(|p, y| global_avg_pool(p, &x, y, c, h * w)),
            ),
            (
                "max pool",
                c * 31 * 34,
                Box::new(|p, y| {
                    pool2d(
                        p,
                        PoolKind::Max,
                        &x,
                        y,
                        c,
                        h,
                        w,
                        [3, 3],
                        [2, 2],
                        [1, 1, 1, 1],
                    )
                }),
            ),
            (
                "resize",
                c * 122 * 134,
                Box::new(|p, y| resize_nearest(p, &x, y, c, h, w, 122, 134)),
            ),
            (
                "pad",
                c * 64 * 70,
                Box::new(|p, y| pad(p, &x, y, c, h, w, [1, 2, 2, 1], -1.0)),
            ),
            (
                "weighted_sum",
                n,
                Box::new(|p, y| {
                    weighted_sum(
                        p,
                        FusionMethod::FastAttention { eps: 1e-4 },
                        &[0.3, 1.2],
                        &[&x, &b],
                        y,
                    )
                }),
            ),
        ];
        for (name, len, op) in ops {
            let mut serial = vec![f32::NAN; len];
            op(Par::serial(), &mut serial);
            let mut split = vec![f32::NAN; len];
            op(pool.par(), &mut split);
            assert!(
                serial.iter().all(|v| !v.is_nan()),
                "{name}: serial left NaN"
            );
            assert!(
                serial
                    .iter()
                    .zip(&split)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{name}: 3 threads differ from 1"
            );
        }
    }
}
