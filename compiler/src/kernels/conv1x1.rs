//! 1×1 convolution (pointwise, a GEMM `y = W·x`), with bias, activation and residual fused
//! into the epilogue. 89% of EfficientDet-D0's multiply-adds run here.
//!
//! # Layout and tiling
//! * `x`: `[cin][hw]`, `y` and `residual`: `[cout][hw]` (NCHW planes, batch 1). The spatial
//!   dimension is the vector dimension.
//! * Weights are packed by [`pack`] into panels of [`MR`] = 8 output channels, each
//!   `[cin][MR]` (the last panel zero-padded), so one K step of a panel is 8 consecutive
//!   floats.
//! * Register tile, AVX-512 (32 zmm): 8 output channels (a panel) × 2 zmm = 32 pixels, 16
//!   accumulators (4 channels × 4 zmm, kept for the micro-benchmark, loads twice as much x).
//!   AVX2 (16 ymm): 4 channels × 2 ymm, or 8 channels × 1 ymm for cin ≥ 512 (8 accumulators:
//!   4×3 needs all 16 registers and LLVM then spills an accumulator into the loop-carried
//!   chain, halving the speed). The whole K (cin) loop accumulates in registers: per K step,
//!   V pixel vectors are loaded and R weights broadcast from the panel. The accumulators
//!   start at the bias; activation and residual are applied in registers before the single
//!   store.
//! * Pixels not filling a tile (any `hw`, down to 1) are one tile of 1..=V vectors whose last
//!   is masked (`_mm512_maskz_loadu_ps` / `_mm512_mask_storeu_ps`; `_mm256_maskload_ps` /
//!   `_mm256_maskstore_ps` on AVX2). Padded output channels of the last panel are computed
//!   (zero weights) but never stored; a last panel of ≤ 4 channels runs one half only.
//! * Blocking: the output channels are split into one chunk of panels per thread (the unit of
//!   [`Par::for_each_chunk`], so each thread writes whole channel planes and reads x once).
//!   Within a chunk, pixels are cut into blocks whose slice of x (`cin × block` floats,
//!   ≤ 256 KB) stays in L2 while every panel of the chunk sweeps it, one panel across the
//!   whole block before the next.
//! * Each pixel block of x is first copied to a per-thread buffer with a padded stride
//!   ([`Plan::pack_x`]): power-of-two planes (a row stride that is a multiple of 1 KB) put
//!   every row a tile reads into the same few cache sets, and in a model, where x comes from
//!   L3, the contiguous block is read faster by every panel than the rows of a whole plane
//!   (10–25% per conv on an Intel Xeon, at any plane size).
//!
//! The accumulation order (bias, then k = 0, 1, …, cin−1 with one rounding per fused
//! multiply-add) is the same for every tile, block and thread split, so results do not
//! depend on the thread count. The portable path rounds the product and the sum separately.
//!
//! # Speed (Zen 4, one core, AVX-512; `examples/bench_conv1x1.rs`)
//! 53–58 G multiply-adds/s (90–98% of the 58.7 peak) on D0's shapes with Cin or Cout ≥ 112
//! without activation, 49–57 with swish. Small K is bound by the epilogue (swish costs about
//! 9 FMA-pipe cycles per 16 outputs, against K cycles for the sums: 16→96 reaches ~30 with
//! swish) and, on large planes, by the output stores (16→96 at 256² writes 25 MB).

use ::effdet_runtime::kernels::act::{apply_portable, code};
use ::effdet_runtime::kernels::simd::require;
use ::effdet_runtime::kernels::{dim, Act, Isa, Par};
use ::effdet_runtime::model::prelude::*;
use ::effdet_runtime::per_thread;

/// Output channels per packed weight panel.
pub const MR: usize = 8;

/// f32 length of the packed weights of a `[cout, cin]` 1×1 conv.
pub fn packed_len(cout: usize, cin: usize) -> usize {
    cout.div_ceil(MR) * MR * cin
}

/// Packs row-major `[cout][cin]` weights into the kernel's layout (panels of MR output
/// channels, each `[cin][MR]`, the last panel zero-padded). Run by the compiler at build time.
///
/// # Panics
/// If `w.len() != cout · cin`.
pub fn pack(w: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    assert_eq!(
        Some(w.len()),
        cout.checked_mul(cin),
        "conv1x1::pack: w has {} floats, expected cout·cin = {cout}·{cin}",
        w.len()
    );
    let mut out = vec![0.0f32; packed_len(cout, cin)];
    for (co, row) in w.chunks_exact(cin.max(1)).enumerate().take(cout) {
        let panel = &mut out[(co / MR) * MR * cin..][..MR * cin];
        for (ci, &v) in row.iter().enumerate() {
            panel[ci * MR + co % MR] = v;
        }
    }
    out
}

/// `y[co][p] = act(Σ_ci w[co][ci]·x[ci][p] + bias[co]) + residual[co][p]`, for `p < hw`.
/// x: `[cin][hw]`, y and residual: `[cout][hw]`, NCHW planes (one image). `w` packed by
/// [`pack`]. [`conv1x1_batch`] with a batch of one.
#[allow(clippy::too_many_arguments)]
pub fn conv1x1(
    isa: Isa,
    par: Par,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    y: &mut [f32],
    cin: usize,
    cout: usize,
    hw: usize,
    act: Act,
) {
    conv1x1_batch(isa, par, x, w, bias, residual, y, 1, cin, cout, hw, act);
}

/// [`conv1x1`] over a batch of `n` images: x `[n][cin][hw]`, y and residual `[n][cout][hw]`.
///
/// `bias` is either empty (no bias) or has `cout` values. `isa` must be one this CPU runs
/// ([`Isa::detect`] / [`Isa::available`]). Threads split the output channels (whole panels
/// of [`MR`] channels); each thread runs its channels for every image in turn, so its
/// panels of `w` come from memory once per call, not once per image. With few output
/// channels on a wide plane they split the pixels instead ([`Plan::pixel_parts`]). Each image's result
/// is bit-identical to a batch of one, whatever `par`.
///
/// # Panics
/// Once at entry, with a message naming the argument, if a slice length does not match the
/// shape (`x.len() != n·cin·hw`, `w.len() != packed_len(cout, cin)`, `bias` neither empty
/// nor `cout` long, `residual` or `y` not `n·cout·hw` long), or if `isa` is not supported by
/// this CPU. Nothing is checked per element after that.
#[allow(clippy::too_many_arguments)]
pub fn conv1x1_batch(
    isa: Isa,
    par: Par,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    y: &mut [f32],
    n: usize,
    cin: usize,
    cout: usize,
    hw: usize,
    act: Act,
) {
    ::effdet_runtime::with_isa!(isa, I => batch::<{ code::ANY }, 0, 0, 0, 0, UNTUNED, I>(
        None, par, x, None, w, bias, residual, y, n, cin, cout, hw, act,
    ));
}

/// [`conv1x1_batch`] compiled for one call of a generated model: activation code `A`
/// (`effdet_runtime::kernels::act::code`; `act` must be its activation, any with
/// `code::ANY`), the shape `N` images of `CIN` → `COUT` channels on planes of `HW` pixels,
/// the blocking `TUNE` ([`UNTUNED`]: the fixed cache model's, or [`tuned`]'s where the
/// running CPU takes the instruction set it was timed with), and instruction set `I`
/// (`effdet_runtime::kernels::isa_code`). One instance per shape: its loop trip counts,
/// pixel block, copy and register tile are constants (inline `const` blocks), and only the
/// split among threads is chosen at run time.
///
/// # Panics
/// As [`conv1x1_batch`]; and if `act` is not the activation of `A` or this CPU does not
/// run `I`.
#[allow(clippy::too_many_arguments)]
pub fn conv1x1_batch_fixed<
    const A: u8,
    const N: usize,
    const CIN: usize,
    const COUT: usize,
    const HW: usize,
    const TUNE: u64,
    const I: u8,
>(
    par: Par,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    y: &mut [f32],
    act: Act,
) {
    batch::<A, N, CIN, COUT, HW, TUNE, I>(
        None, par, x, None, w, bias, residual, y, N, CIN, COUT, HW, act,
    );
}

/// [`conv1x1_batch_fixed`] and [`conv1x1_batch_gated_fixed`] with each dimension a
/// constant (non-zero const parameter) or given at run time (0), and the plan's blocking
/// `TUNE`'s, or else `tuning`'s where it applies.
#[allow(clippy::too_many_arguments)]
fn batch<
    const A: u8,
    const N: usize,
    const CIN: usize,
    const COUT: usize,
    const HW: usize,
    const TUNE: u64,
    const I: u8,
>(
    tuning: Option<&Tuning>,
    par: Par,
    x: &[f32],
    gates: Option<&[f32]>,
    w: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    y: &mut [f32],
    n: usize,
    cin: usize,
    cout: usize,
    hw: usize,
    act: Act,
) {
    // An instance's blocking is `TUNE`'s (`run_group`): a run-time tuning is for the
    // run-time entry points only.
    debug_assert!(tuning.is_none() || CIN == 0 || HW == 0);
    let act = act.fixed::<A>();
    let (n, cin, cout, hw) = sizes::<N, CIN, COUT, HW>(n, cin, cout, hw);
    check_args::<I>(x, w, bias, residual, y, n, cin, cout, hw);
    if let Some(g) = gates {
        assert_eq!(
            Some(g.len()),
            n.checked_mul(cin),
            "conv1x1: gates have {} values, expected n·cin = {n}·{cin}",
            g.len()
        );
    }
    let isa = Isa::of(I);
    let plan = Plan::new(isa, cin, cout, hw, par.threads()).maybe_tuned(isa, tuning);
    run_batch::<A, N, CIN, COUT, HW, TUNE, I>(
        par, x, gates, w, bias, residual, y, n, cin, cout, hw, act, plan,
    );
}

/// A call's sizes (images, input and output channels, pixels per plane): each the instance's
/// constant where it has one, else the argument ([`dim`]).
#[inline(always)]
fn sizes<const N: usize, const CIN: usize, const COUT: usize, const HW: usize>(
    n: usize,
    cin: usize,
    cout: usize,
    hw: usize,
) -> (usize, usize, usize, usize) {
    (
        dim::<N>(n),
        dim::<CIN>(cin),
        dim::<COUT>(cout),
        dim::<HW>(hw),
    )
}

/// No tuning: a generated call's `TUNE` when it takes the fixed cache model's blocking
/// ([`Plan::new`]).
pub const UNTUNED: u64 = 0;

/// A [`Tuning`] as a generated call's `TUNE` const parameter (`effdetc build --tune` bakes
/// one into each call it timed): instruction set, pixel block (< 2³²: a larger one is a
/// compile error in a const argument), copy, tile.
pub const fn tuned(isa: Isa, block: usize, pack_x: bool, tile: Tile) -> u64 {
    assert!(
        block <= u32::MAX as usize,
        "conv1x1: a tuned block is below 2³²"
    );
    1 << 63 | (isa.code() as u64) << 48 | (tile as u64) << 40 | (pack_x as u64) << 32 | block as u64
}

impl Tuning {
    /// The tuning a `TUNE` constant holds ([`tuned`]), or none ([`UNTUNED`]).
    pub const fn of(tune: u64) -> Option<Tuning> {
        if tune >> 63 == 0 {
            return None;
        }
        Some(Tuning {
            isa: Isa::of((tune >> 48) as u8),
            block: tune as u32 as usize,
            pack_x: (tune >> 32) as u8 & 1 == 1,
            tile: match (tune >> 40) as u8 {
                1 => Tile::R8V1,
                2 => Tile::R4V2,
                _ => Tile::R8V2,
            },
        })
    }
}

/// A blocking `effdetc build --tune` measured as the fastest for one conv shape on the
/// building machine. It applies where the running CPU takes the instruction set it was
/// timed with ([`Tuning::isa`]); elsewhere the kernel plans as without it. Every blocking
/// computes the same values bit for bit (the accumulation order does not depend on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// The instruction set the choice was timed with.
    pub isa: Isa,
    /// Pixels per block ([`Plan::block`]).
    pub block: usize,
    /// Copy each block of x first ([`Plan::pack_x`]).
    pub pack_x: bool,
    /// The register tile ([`Plan::tile`]; only AVX2 has a choice).
    pub tile: Tile,
}

impl Plan {
    /// This plan with `t`'s choices if `isa` is the one `t` was timed with.
    pub const fn tuned(mut self, isa: Isa, t: &Tuning) -> Plan {
        if isa.code() == t.isa.code() {
            self.block = if t.block == 0 { 1 } else { t.block };
            self.pack_x = t.pack_x;
            self.tile = t.tile;
        }
        self
    }

    /// [`Plan::tuned`] by `t` if there is one.
    fn maybe_tuned(self, isa: Isa, t: Option<&Tuning>) -> Plan {
        match t {
            Some(t) => self.tuned(isa, t),
            None => self,
        }
    }
}

/// [`conv1x1_batch`] with the blocking of a [`Tuning`] (where it applies).
///
/// # Panics
/// As [`conv1x1_batch`].
#[allow(clippy::too_many_arguments)]
pub fn conv1x1_batch_tuned(
    tuning: &Tuning,
    isa: Isa,
    par: Par,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    y: &mut [f32],
    n: usize,
    cin: usize,
    cout: usize,
    hw: usize,
    act: Act,
) {
    ::effdet_runtime::with_isa!(isa, I => batch::<{ code::ANY }, 0, 0, 0, 0, UNTUNED, I>(
        Some(tuning), par, x, None, w, bias, residual, y, n, cin, cout, hw, act,
    ));
}

/// [`conv1x1_batch`] writing its output channels-last: `y[i][p][co]` (NHWC, `[n][hw][cout]`)
/// instead of `[n][cout][hw]`, for a conv whose only reader is an NCHW → NHWC transpose (a
/// TensorFlow export's head outputs). No residual.
///
/// Why not the NCHW kernel and a transpose: a head output is large (810 × 64² floats,
/// 13 MB), so its round trip through memory and the transpose's second pass cost ~1 ms per
/// level. Here each block of pixels is computed by the same register tiles into a
/// per-thread buffer that stays in L2, and transposed from there into place. Threads split
/// the pixels (each writes whole `[cout]` rows); every value is bit-identical to
/// [`conv1x1_batch`]'s, whatever the thread count.
///
/// # Panics
/// As [`conv1x1_batch`].
#[allow(clippy::too_many_arguments)]
pub fn conv1x1_batch_nhwc(
    isa: Isa,
    par: Par,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    y: &mut [f32],
    n: usize,
    cin: usize,
    cout: usize,
    hw: usize,
    act: Act,
) {
    ::effdet_runtime::with_isa!(isa, I => {
        nhwc::<{ code::ANY }, 0, 0, 0, 0, I>(par, x, w, bias, y, n, cin, cout, hw, act)
    });
}

/// [`conv1x1_batch_nhwc`] compiled for one call of a generated model: activation code `A`,
/// shape `N`, `CIN`, `COUT`, `HW` and instruction set `I` (as [`conv1x1_batch_fixed`]).
///
/// # Panics
/// As [`conv1x1_batch_nhwc`]; and if `act` is not the activation of `A` or this CPU does
/// not run `I`.
pub fn conv1x1_batch_nhwc_fixed<
    const A: u8,
    const N: usize,
    const CIN: usize,
    const COUT: usize,
    const HW: usize,
    const I: u8,
>(
    par: Par,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    y: &mut [f32],
    act: Act,
) {
    nhwc::<A, N, CIN, COUT, HW, I>(par, x, w, bias, y, N, CIN, COUT, HW, act);
}

/// [`conv1x1_batch_nhwc_fixed`] with each dimension constant or given at run time (0).
#[allow(clippy::too_many_arguments)]
fn nhwc<
    const A: u8,
    const N: usize,
    const CIN: usize,
    const COUT: usize,
    const HW: usize,
    const I: u8,
>(
    par: Par,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    y: &mut [f32],
    n: usize,
    cin: usize,
    cout: usize,
    hw: usize,
    act: Act,
) {
    let (n, cin, cout, hw) = sizes::<N, CIN, COUT, HW>(n, cin, cout, hw);
    let act = act.fixed::<A>();
    check_args::<I>(x, w, bias, None, y, n, cin, cout, hw);
    if n == 0 || cout == 0 || hw == 0 {
        return;
    }
    let plan = Plan::fixed(Isa::of(I), cin, hw, UNTUNED);
    // Pixels per block: the block's output (cout × block floats, ≤ 256 KB) stays in L2 until
    // it is transposed; whole 64-pixel tiles, and no more than the x block of the plan.
    let block = ((64 * 1024 / cout) / 64 * 64).clamp(64, plan.block.max(64));
    let work = n
        .saturating_mul(cout)
        .saturating_mul(cin)
        .saturating_mul(hw);
    par.for_each_chunk_of_images(y, n, block * cout, work, |i, image, yc| {
        let (_, cin, cout, hw) = sizes::<N, CIN, COUT, HW>(n, cin, cout, hw);
        let x = &x[image * cin * hw..][..cin * hw];
        let p0 = i * block;
        let len = yc.len() / cout;
        OUT_SCRATCH.with_borrow_mut(|tmp| {
            if tmp.len() < cout * len {
                tmp.resize(cout * len, 0.0);
            }
            let tmp = &mut tmp[..cout * len];
            // The block as NCHW planes of `len` pixels, then transposed into place.
            run_group::<A, CIN, HW, UNTUNED, I>(
                plan,
                x,
                None,
                w,
                bias,
                None,
                tmp,
                cin,
                hw,
                p0,
                len,
                (len, 0),
                act,
            );
            super::generic::transpose_2d(tmp, cout, len, yc);
        });
    });
}

/// [`conv1x1_batch`] of `x` with its input channels scaled by `gates` (`[n][cin]`, a
/// squeeze-excite's gates):
/// `y[co][p] = act(Σ_ci w[co][ci]·(gates[ci]·x[ci][p]) + bias[co]) + residual[co][p]`.
/// The gates scale each block of x as the kernel copies it for its tiles (a copy it makes
/// anyway), instead of scaling the `cin × hw` feature map in memory: bit for bit the
/// squeeze-excite's scaled map through [`conv1x1_batch`], for one multiply per copied
/// float. (Folding them into a copy of the weights instead cost `cout × cin` products per
/// image on the calling thread alone, and rounded differently from the unfused model; D0,
/// whose 12 project convs are gated, measured the same speed both ways.)
///
/// # Panics
/// As [`conv1x1_batch`], and if `gates` does not hold `n·cin` values.
#[allow(clippy::too_many_arguments)]
pub fn conv1x1_batch_gated(
    isa: Isa,
    par: Par,
    x: &[f32],
    gates: &[f32],
    w: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    y: &mut [f32],
    n: usize,
    cin: usize,
    cout: usize,
    hw: usize,
    act: Act,
) {
    ::effdet_runtime::with_isa!(isa, I => batch::<{ code::ANY }, 0, 0, 0, 0, UNTUNED, I>(
        None, par, x, Some(gates), w, bias, residual, y, n, cin, cout, hw, act,
    ));
}

/// [`conv1x1_batch_gated`] compiled for one call of a generated model: activation code
/// `A`, shape `N`, `CIN`, `COUT`, `HW`, blocking `TUNE` and instruction set `I` (as
/// [`conv1x1_batch_fixed`]).
///
/// # Panics
/// As [`conv1x1_batch_gated`]; and if `act` is not the activation of `A` or this CPU does
/// not run `I`.
#[allow(clippy::too_many_arguments)]
pub fn conv1x1_batch_gated_fixed<
    const A: u8,
    const N: usize,
    const CIN: usize,
    const COUT: usize,
    const HW: usize,
    const TUNE: u64,
    const I: u8,
>(
    par: Par,
    x: &[f32],
    gates: &[f32],
    w: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    y: &mut [f32],
    act: Act,
) {
    batch::<A, N, CIN, COUT, HW, TUNE, I>(
        None,
        par,
        x,
        Some(gates),
        w,
        bias,
        residual,
        y,
        N,
        CIN,
        COUT,
        HW,
        act,
    );
}

/// [`conv1x1_batch_gated`] with the blocking of a [`Tuning`] (where it applies).
///
/// # Panics
/// As [`conv1x1_batch_gated`].
#[allow(clippy::too_many_arguments)]
pub fn conv1x1_batch_gated_tuned(
    tuning: &Tuning,
    isa: Isa,
    par: Par,
    x: &[f32],
    gates: &[f32],
    w: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    y: &mut [f32],
    n: usize,
    cin: usize,
    cout: usize,
    hw: usize,
    act: Act,
) {
    ::effdet_runtime::with_isa!(isa, I => batch::<{ code::ANY }, 0, 0, 0, 0, UNTUNED, I>(
        Some(tuning), par, x, Some(gates), w, bias, residual, y, n, cin, cout, hw, act,
    ));
}

/// How a call is blocked (chosen by [`Plan::new`]; public for the micro-benchmark only).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Register tile.
    pub tile: Tile,
    /// Pixels per block (a multiple of 64, or ≥ hw for one block).
    pub block: usize,
    /// Panels per chunk of output channels (the unit threads split).
    pub group: usize,
    /// Threads split the pixels into this many parts instead of the channels, when > 1.
    pub pixel_parts: usize,
    /// Copy each pixel block of x into a scratch buffer with a padded row stride first.
    /// Planes whose stride is a multiple of 1 KB map every row of a tile to the same few
    /// cache sets (4K aliasing); the copy costs one pass over x per call.
    pub pack_x: bool,
}

/// Register tile shapes (rows of output channels × pixel vectors).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tile {
    /// 8 channels × 2 vectors (AVX-512: 8×32 pixels; NEON: 8×8).
    R8V2 = 0,
    /// AVX2: 8 channels × 1 ymm.
    R8V1 = 1,
    /// AVX2: 4 channels × 2 ymm.
    R4V2 = 2,
}
// Tried and removed (each instantiation costs build time): 4×4 on AVX-512 and NEON (faster
// with hot caches, 2–3% slower in the models), AVX2 4×3 and 2×4 (never faster than 4×2 or
// 8×1), and non-temporal stores of the output (no change on the 13 MB class-head output).

impl Plan {
    /// The blocking for a shape (measured on Zen 4, see `examples/bench_conv1x1.rs`).
    pub fn new(isa: Isa, cin: usize, cout: usize, hw: usize, threads: usize) -> Plan {
        // One chunk of output channels per thread: each reads x from memory once.
        let panels = cout.div_ceil(MR);
        let group = panels.div_ceil(threads.max(1)).max(1);
        // Few output channels, or many input channels per output channel, on a wide
        // plane: split by channels, every thread would copy and read all of x for a few
        // panels (a 144 → 24 conv at 80² ran at 0.90× its one-thread time on two threads,
        // 0.54× split by pixels; 672 → 112 at 20²: 0.62×, 0.57×). Otherwise channels:
        // a thread's output channels are then the ones the next (depthwise) op reads on
        // that thread, from its own L2 (64 → 64 at 20² ran 10–30% slower split by pixels).
        // Parts of ≥ 8 vectors, so the masked tail stays small.
        let few = panels < 4 * threads || cin >= 4 * cout;
        let pixel_parts = if threads > 1 && few && hw / threads >= 128 {
            threads
        } else {
            1
        };
        Plan {
            group,
            pixel_parts,
            ..Plan::fixed(isa, cin, hw, UNTUNED)
        }
    }

    /// The blocking of a call's thread's part ([`Plan::tile`], [`Plan::block`],
    /// [`Plan::pack_x`]; `group` and `pixel_parts` 1): the fixed cache model's for `cin`
    /// input channels on planes of `hw` pixels, or `tune`'s ([`tuned`]) if it was timed
    /// with `isa`. A `const fn`, which a generated call's instance evaluates at compile time.
    pub const fn fixed(isa: Isa, cin: usize, hw: usize, tune: u64) -> Plan {
        let plan = Plan::untuned(isa, cin, hw);
        match Tuning::of(tune) {
            Some(t) => plan.tuned(isa, &t),
            None => plan,
        }
    }

    /// [`Plan::fixed`] without a tuning: the fixed cache model's blocking.
    const fn untuned(isa: Isa, cin: usize, hw: usize) -> Plan {
        // Pixel block: the block's slice of x (cin × block floats) stays within ~256 KB of
        // L2 while every panel of the chunk sweeps it.
        let budget = 64 * 1024; // floats
        let block = budget / if cin == 0 { 1 } else { cin };
        let block = if block < 64 { 64 } else { block / 64 * 64 };
        let tile = match isa {
            // AVX2: 8×1 loads half as much x per FMA as 4×2, 15–20% faster once K is large,
            // 5–10% slower below.
            Isa::Avx2 if cin >= 512 => Tile::R8V1,
            Isa::Avx2 => Tile::R4V2,
            // NEON (32 registers, 4 lanes): 8 channels × 2 vectors.
            Isa::Neon => Tile::R8V2,
            // AVX-512: 8×2 loads half as much x per FMA as 4×4. With hot caches 4×4 was a
            // little faster wherever the plane fills it, but in the models (x from L2/L3)
            // 8×2 is 2–3% faster (D0 and Lite0, Intel Xeon), and it wastes fewer lanes on
            // small planes (P6/P7 of the BiFPN).
            _ => Tile::R8V2,
        };
        Plan {
            tile,
            block: if block >= hw { hw } else { block },
            group: 1,
            pixel_parts: 1,
            // Always copy. Planes whose row stride is a multiple of 1 KB put every row a
            // tile reads into the same few cache sets (AVX2's narrow tiles ran 3× slower
            // on 64² planes without the copy); and in a model, where x arrives from L3 and
            // the panels re-read it, a contiguous padded block is read faster than rows of
            // a whole plane at any stride. With hot caches (the micro-benchmark) the copy
            // is within ±10% except 1.7–2.3× faster for 672→112 and 480→80 at 32²; in the
            // models, on an Intel Xeon, it made nearly every 1×1 conv faster: D0 75.6 →
            // 67.3 ms, Lite0 (40², 20², 10² planes) 27.4 → 23.6 ms with AVX-512 and 39.5 →
            // 34.8 ms with AVX2 (measured with per-op timers in the generated code).
            pack_x: true,
        }
    }
}

/// [`conv1x1`] with an explicit blocking (for the micro-benchmark).
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub fn conv1x1_planned(
    isa: Isa,
    par: Par,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    y: &mut [f32],
    cin: usize,
    cout: usize,
    hw: usize,
    act: Act,
    plan: Plan,
) {
    ::effdet_runtime::with_isa!(isa, I => {
        check_args::<I>(x, w, bias, residual, y, 1, cin, cout, hw);
        run_batch::<{ code::ANY }, 0, 0, 0, 0, UNTUNED, I>(
            par, x, None, w, bias, residual, y, 1, cin, cout, hw, act, plan,
        )
    });
}

/// The thread split of a call whose arguments were checked, `plan`'s, with its dimensions
/// constant or given at run time (as [`batch`]).
#[allow(clippy::too_many_arguments)]
fn run_batch<
    const A: u8,
    const N: usize,
    const CIN: usize,
    const COUT: usize,
    const HW: usize,
    const TUNE: u64,
    const I: u8,
>(
    par: Par,
    x: &[f32],
    gates: Option<&[f32]>,
    w: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    y: &mut [f32],
    n: usize,
    cin: usize,
    cout: usize,
    hw: usize,
    act: Act,
    plan: Plan,
) {
    if n == 0 || cout == 0 || hw == 0 {
        return;
    }
    let group = plan.group.max(1);
    let work = n
        .saturating_mul(cout)
        .saturating_mul(cin)
        .saturating_mul(hw);
    if plan.pixel_parts > 1 {
        // Each part: its pixels of every output channel into a per-thread buffer, then its
        // columns of y (plus the residual: the same `act(acc) + r` the tiles compute).
        let len = hw.div_ceil(plan.pixel_parts).next_multiple_of(16);
        par.for_each_column_part(y, hw, len, work, |_, cols| {
            let (n, cin, cout, hw) = sizes::<N, CIN, COUT, HW>(n, cin, cout, hw);
            let (first, count) = (cols.start(), cols.len());
            if count == 0 {
                return;
            }
            OUT_SCRATCH.with_borrow_mut(|tmp| {
                if tmp.len() < cout * count {
                    tmp.resize(cout * count, 0.0);
                }
                let tmp = &mut tmp[..cout * count];
                for image in 0..n {
                    let xi = &x[image * cin * hw..][..cin * hw];
                    let gi = gates.map(|g| &g[image * cin..][..cin]);
                    run_group::<A, CIN, HW, TUNE, I>(
                        plan,
                        xi,
                        gi,
                        w,
                        bias,
                        None,
                        tmp,
                        cin,
                        hw,
                        first,
                        count,
                        (count, 0),
                        act,
                    );
                    for (co, src) in tmp.chunks_exact(count).enumerate() {
                        let row = image * cout + co;
                        let dst = cols.row(row);
                        match residual {
                            Some(r) => {
                                let r = &r[row * hw + first..][..count];
                                for ((d, &s), &r) in dst.iter_mut().zip(src).zip(r) {
                                    *d = s + r;
                                }
                            }
                            None => dst.copy_from_slice(src),
                        }
                    }
                }
            });
        });
        return;
    }
    par.for_each_chunk_of_images(y, n, group * MR * hw, work, |i, image, yc| {
        let (_, cin, cout, hw) = sizes::<N, CIN, COUT, HW>(n, cin, cout, hw);
        let row0 = i * group * MR;
        let rows = yc.len() / hw;
        let x = &x[image * cin * hw..][..cin * hw];
        let res = residual.map(|r| &r[(image * cout + row0) * hw..][..rows * hw]);
        let w = &w[row0 * cin..][..rows.div_ceil(MR) * MR * cin];
        let bias = if bias.is_empty() {
            bias
        } else {
            &bias[row0..][..rows]
        };
        let g = gates.map(|g| &g[image * cin..][..cin]);
        run_group::<A, CIN, HW, TUNE, I>(
            plan,
            x,
            g,
            w,
            bias,
            res,
            yc,
            cin,
            hw,
            0,
            hw,
            (hw, 0),
            act,
        );
    });
}

/// Output channels `[r0, r0 + rows)` of a 1×1 conv (`r0` a multiple of [`MR`]) for the
/// pixels `first..first + count` of x (`[cin][hw]`), into `y`: `rows` rows of `ys` floats,
/// at columns `y0..y0 + count` (`(ys, y0)` = `(count, 0)`: planes of `count` pixels),
/// plus `res` (laid out as `y`) if given. `w` holds those channels' packed panels (from
/// panel `r0 / MR` on), `bias` their values or nothing. One thread; x is read in place (no
/// padded copy of its blocks: the caller gives it a row stride `hw` that is not a multiple
/// of 1 KB). For kernels that run a 1×1 conv band by band inside
/// their own loop ([`super::mbconv`], [`super::separable`]); each output value is
/// the one [`conv1x1`] computes (the accumulation order does not depend on the blocking).
///
/// # Panics
/// If the slices are too short for these sizes, or this CPU does not run `I`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv1x1_pixels<const A: u8, const CIN: usize, const I: u8>(
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    res: Option<&[f32]>,
    y: &mut [f32],
    cin: usize,
    hw: usize,
    first: usize,
    count: usize,
    (ys, y0): (usize, usize),
    act: Act,
) {
    require::<I>("conv1x1");
    assert!(
        CIN == 0 || CIN == cin,
        "conv1x1: compiled for cin {CIN}, called with {cin}"
    );
    if count == 0 || y.is_empty() {
        return;
    }
    let rows = y.len() / ys.max(1);
    assert!(
        y.len() == rows * ys
            && y0 + count <= ys
            && x.len() >= ::effdet_runtime::kernels::size("conv1x1", &[cin, hw])
            && first + count <= hw
            && w.len() >= packed_len(rows, cin)
            && (bias.is_empty() || bias.len() >= rows)
            && res.is_none_or(|r| r.len() == y.len()),
        "conv1x1: pixel range {first}+{count} of {hw}, {rows} rows: slices too short"
    );
    let plan = Plan {
        // The caller lays x out for the tiles (a band with a padded row stride).
        pack_x: false,
        ..Plan::fixed(Isa::of(I), cin, count, UNTUNED)
    };
    let bias = if bias.is_empty() { bias } else { &bias[..rows] };
    run_group::<A, CIN, 0, UNTUNED, I>(
        plan,
        x,
        None,
        &w[..packed_len(rows, cin)],
        bias,
        res,
        y,
        cin,
        hw,
        first,
        count,
        (ys, y0),
        act,
    );
}

/// The argument checks of [`conv1x1_batch`] (see its `# Panics`).
#[allow(clippy::too_many_arguments)]
fn check_args<const I: u8>(
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    y: &[f32],
    n: usize,
    cin: usize,
    cout: usize,
    hw: usize,
) {
    let xlen = n.checked_mul(cin).and_then(|v| v.checked_mul(hw));
    let ylen = n.checked_mul(cout).and_then(|v| v.checked_mul(hw));
    assert_eq!(
        Some(x.len()),
        xlen,
        "conv1x1: x has {} floats, expected n·cin·hw = {n}·{cin}·{hw}",
        x.len()
    );
    assert_eq!(
        Some(y.len()),
        ylen,
        "conv1x1: y has {} floats, expected n·cout·hw = {n}·{cout}·{hw}",
        y.len()
    );
    assert_eq!(
        w.len(),
        packed_len(cout, cin),
        "conv1x1: packed w has {} floats, expected packed_len(cout = {cout}, cin = {cin})",
        w.len()
    );
    assert!(
        bias.is_empty() || bias.len() == cout,
        "conv1x1: bias has {} values, expected 0 or cout = {cout}",
        bias.len()
    );
    if let Some(r) = residual {
        assert_eq!(
            Some(r.len()),
            ylen,
            "conv1x1: residual has {} floats, expected n·cout·hw = {n}·{cout}·{hw}",
            r.len()
        );
    }
    require::<I>("conv1x1");
}

/// One chunk: `rows` output channels starting at a panel boundary (`y` holds exactly
/// them, `w` their panels, `bias` and `res` their values or nothing), for the pixels
/// `first..first + count` of x's `hw`; `y` (and `res`) hold them in rows of `ys` floats,
/// at columns `y0..y0 + count` (`(ys, y0)`: `(count, 0)` for planes of `count` pixels; all
/// of them: `first` 0, `count` hw). `gates` (`cin` values, or none) scale x's channels as
/// its blocks are copied (which the plan must do).
///
/// With `CIN` and `HW` non-zero (a generated call's instance), `cin` and `hw` are those
/// constants and the blocking is [`Plan::fixed`]'s for them and `TUNE`, computed at compile
/// time; else `plan`'s. Gated calls always copy x.
#[allow(clippy::too_many_arguments)]
fn run_group<const A: u8, const CIN: usize, const HW: usize, const TUNE: u64, const I: u8>(
    plan: Plan,
    x: &[f32],
    gates: Option<&[f32]>,
    w: &[f32],
    bias: &[f32],
    res: Option<&[f32]>,
    y: &mut [f32],
    cin: usize,
    hw: usize,
    first: usize,
    count: usize,
    (ys, y0): (usize, usize),
    act: Act,
) {
    let (cin, hw) = (dim::<CIN>(cin), dim::<HW>(hw));
    let plan = if const { CIN != 0 && HW != 0 } {
        const { Plan::fixed(Isa::of(I), CIN, HW, TUNE) }
    } else {
        plan
    };
    // The gates scale each block of x as it is copied for the tiles.
    let pack_x = plan.pack_x || gates.is_some();
    let rows = y.len() / ys;
    let panels = rows.div_ceil(MR);
    let block = plan.block.max(1);
    // Pixel `first + q` of x is output column `y0 + q`: x is taken from `first` on and
    // starts at column `y0` (its `x0`), so the tiles index both with the same column.
    assert!(
        first + count <= hw && y0 + count <= ys && y.len() == rows * ys,
        "conv1x1: pixels {first}+{count} of {hw} into columns {y0}.. of {ys}"
    );
    assert!(
        gates.is_none_or(|g| g.len() >= cin),
        "conv1x1: {cin} gates expected"
    );
    let x = &x[first..];
    // x's row stride; `hw` from here on is y's.
    let (hw_x, hw) = (hw, ys);
    SCRATCH.with_borrow_mut(|scratch| {
        let mut q = 0;
        while q < count {
            let (len, p0) = (block.min(count - q), y0 + q);
            // x as the tiles read it: the plane itself, or this block copied to `scratch`
            // with a stride of len rounded up to 16, plus 16 (rows 64 bytes apart in the
            // cache sets), from a 64-byte boundary (no row splits cache lines). The buffer
            // only grows, and is not cleared: the ld − len pad columns are never read (the
            // tiles mask them off).
            let (xb, xs, x0) = if pack_x {
                let ld = len.next_multiple_of(16) + 16;
                if scratch.len() < cin * ld + 16 {
                    scratch.resize(cin * ld + 16, 0.0);
                }
                let at = scratch.as_ptr().align_offset(64).min(16);
                let xb = &mut scratch[at..at + cin * ld];
                for (k, dst) in xb.chunks_exact_mut(ld).enumerate() {
                    let src = &x[k * hw_x + q..][..len];
                    match gates {
                        // The gated input is what a squeeze-excite writes (`x · gate`,
                        // rounded), so the conv gives its bits.
                        Some(g) => {
                            for (d, &v) in dst[..len].iter_mut().zip(src) {
                                *d = v * g[k];
                            }
                        }
                        None => dst[..len].copy_from_slice(src),
                    }
                }
                (&xb[..], ld, p0)
            } else {
                (x, hw_x, y0)
            };
            for pi in 0..panels {
                let r0 = pi * MR;
                let prow = (rows - r0).min(MR);
                let mut b = [0.0f32; MR];
                if !bias.is_empty() {
                    b[..prow].copy_from_slice(&bias[r0..r0 + prow]);
                }
                let wp = &w[r0 * cin..][..MR * cin];
                let yp = &mut y[r0 * hw..][..prow * hw];
                let rp = res.map(|r| &r[r0 * hw..][..prow * hw]);
                let panel = Panel {
                    x: xb,
                    xs,
                    x0,
                    w: wp,
                    bias: b,
                    res: rp,
                    cin,
                    hw,
                    rows: prow,
                    act,
                };
                match Isa::of(I) {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => {
                        // SAFETY: the entry point checked that this CPU runs `I`
                        // (`require`): AVX-512F+FMA,
                        // and the panel's slices have the lengths `panel_512` requires
                        // (x: (cin−1)·xs + p0 + len − x0, as x starts at `first` and
                        // first + count ≤ hw_x was asserted; w: MR·cin; y and res: rows·hw,
                        // hw being y's row stride), with x0 ≤ p0 and p0 + len ≤ y0 + count
                        // ≤ hw (asserted).
                        unsafe { tiles::x86::panel_512::<A>(&panel, yp, p0, len) }
                    }
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => {
                        // SAFETY: as above, for AVX2+FMA.
                        unsafe { tiles::x86::panel_256::<A>(&panel, yp, p0, len, plan.tile) }
                    }
                    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
                    Isa::Neon => {
                        // SAFETY: as above (NEON is part of every aarch64 CPU).
                        unsafe { tiles::neon::panel_neon::<A>(&panel, yp, p0, len) }
                    }
                    _ => panel_scalar(&panel, yp, p0, len),
                }
            }
            q += len;
        }
    });
}

per_thread! {
    /// Per-thread buffer for packed blocks of x (see [`Plan::pack_x`]).
    static SCRATCH: Vec<f32> = Vec::new();
}
per_thread! {
    /// Per-thread buffer for a block of [`conv1x1_batch_nhwc`]'s output before its transpose,
    /// or a pixel part's output before it goes to its columns ([`Plan::pixel_parts`]).
    static OUT_SCRATCH: Vec<f32> = Vec::new();
}

/// One panel of MR output channels (of which `rows` are real).
struct Panel<'a> {
    /// `[cin][xs]`: pixel `p` of input channel `k` is `x[k·xs + p − x0]`.
    x: &'a [f32],
    /// Row stride of `x`.
    xs: usize,
    /// The pixel index of column 0 of `x`.
    x0: usize,
    /// `[cin][MR]`.
    w: &'a [f32],
    bias: [f32; MR],
    /// `[rows][hw]`.
    res: Option<&'a [f32]>,
    cin: usize,
    hw: usize,
    rows: usize,
    act: Act,
}

/// Portable path: tiles of 4 channels (half a panel) × 8 pixels, fixed-size loops that
/// LLVM vectorizes for the baseline target and keeps in registers (8 SSE accumulators).
fn panel_scalar(a: &Panel, y: &mut [f32], p0: usize, len: usize) {
    const W: usize = 8;
    const R: usize = 4;
    let (hw, xs) = (a.hw, a.xs);
    let mut p = p0;
    while p < p0 + len {
        let n = W.min(p0 + len - p);
        for r0 in (0..a.rows).step_by(R) {
            let mut acc = [[0.0f32; W]; R];
            for (row, &b) in acc.iter_mut().zip(&a.bias[r0..]) {
                *row = [b; W];
            }
            for k in 0..a.cin {
                let xrow = &a.x[k * xs + p - a.x0..][..n];
                let mut xv = [0.0f32; W];
                if n == W {
                    xv = xrow.try_into().unwrap();
                } else {
                    for (d, &v) in xv.iter_mut().zip(xrow) {
                        *d = v;
                    }
                }
                let ws: &[f32; R] = a.w[k * MR + r0..][..R].try_into().unwrap();
                for (row, &wv) in acc.iter_mut().zip(ws) {
                    for (acc, &xv) in row.iter_mut().zip(&xv) {
                        *acc += wv * xv;
                    }
                }
            }
            for (r, row) in acc.iter_mut().enumerate().take(a.rows - r0) {
                apply_portable(a.act, row);
                let off = (r0 + r) * hw + p;
                let out = &mut y[off..][..n];
                out.copy_from_slice(&row[..n]);
                if let Some(res) = a.res {
                    for (o, &v) in out.iter_mut().zip(&res[off..][..n]) {
                        *o += v;
                    }
                }
            }
        }
        p += n;
    }
}

/// The register-tiled micro-kernel, generic over the vector type, and its instances per ISA.
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "aarch64", target_feature = "neon")
))]
mod tiles {
    use super::{Panel, MR};
    use ::effdet_runtime::kernels::Act;

    /// The vector operations the tile needs, for `__m512` (AVX-512F), `__m256` (AVX2) and
    /// `float32x4_t` (NEON).
    /// All `unsafe`: pointer ones access `LANES` floats (the masked ones only the lanes in
    /// the mask), and they must run inside a matching target-feature context.
    pub(super) trait Vec: Copy {
        const LANES: usize;
        type Mask: Copy;
        unsafe fn splat(v: f32) -> Self;
        unsafe fn load(p: *const f32) -> Self;
        unsafe fn load_m(p: *const f32, m: Self::Mask) -> Self;
        unsafe fn store(p: *mut f32, v: Self);
        unsafe fn store_m(p: *mut f32, m: Self::Mask, v: Self);
        /// The mask selecting the first `n` (1..=LANES) lanes.
        unsafe fn mask(n: usize) -> Self::Mask;
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
        unsafe fn add(a: Self, b: Self) -> Self;
        /// A hint to fetch the cache line at `p` (any address: a prefetch never faults).
        #[inline(always)]
        fn prefetch(_p: *const f32) {}
        unsafe fn swish(v: Self) -> Self;
        /// [`Vec::swish`] of each vector, interleaved where the ISA has a version for it.
        #[inline(always)]
        unsafe fn swish_each(v: &mut [Self]) {
            for x in v {
                // SAFETY: forwarded contract.
                *x = unsafe { Self::swish(*x) };
            }
        }
        /// `sigmoid` of each vector, interleaved where the ISA has a version for it.
        #[inline(always)]
        unsafe fn sigmoid_each(v: &mut [Self]) {
            for x in v {
                // SAFETY: forwarded contract.
                *x = unsafe { Self::act(Act::Sigmoid, *x) };
            }
        }
        unsafe fn act(act: Act, v: Self) -> Self;
    }

    /// How far ahead (floats) the K loop prefetches its weights: 1 KB, ~32 K steps.
    const PF_W: usize = 256;

    /// Epilogue kinds the tile is compiled for: no activation, swish, sigmoid (the class
    /// head of a TensorFlow export), ReLU6 (the Lite models), any other (through a copy of
    /// the accumulators and a match per vector: ~4% slower on Lite0 than ReLU6 inline).
    pub(super) const E_NONE: u8 = 0;
    pub(super) const E_SWISH: u8 = 1;
    pub(super) const E_ANY: u8 = 2;
    pub(super) const E_SIGMOID: u8 = 3;
    pub(super) const E_RELU6: u8 = 4;

    /// One panel in tiles of R channels (R = 4: the two half panels in turn) × V vectors,
    /// then the pixels left over in one masked tile of 1..=V vectors.
    ///
    /// # Safety
    /// Target-feature context of `S`; see `panel_512`.
    #[inline(always)]
    pub(super) unsafe fn panel<S: Vec, const R: usize, const V: usize, const E: u8>(
        a: &Panel,
        y: &mut [f32],
        p0: usize,
        len: usize,
    ) {
        let (end, l) = (p0 + len, S::LANES);
        let y = y.as_mut_ptr();
        // SAFETY (for every kern call below): tiles read x[k][p..p+l·V] (masked past `end`),
        // w[k][row0..row0+R] with row0 + R ≤ MR, and touch y/res rows < rows, pixels < end:
        // all within the lengths the caller guarantees.
        unsafe {
            let mut row0 = 0;
            while row0 < a.rows {
                let mut p = p0;
                while p + l * V <= end {
                    kern::<S, R, V, false, E>(a, y, row0, p, S::mask(l));
                    p += l * V;
                }
                let rem = end - p;
                if rem > 0 {
                    let m = S::mask(rem - (rem - 1) / l * l);
                    match rem.div_ceil(l) {
                        1 => kern::<S, R, 1, true, E>(a, y, row0, p, m),
                        2 if V > 2 => kern::<S, R, 2, true, E>(a, y, row0, p, m),
                        3 if V > 3 => kern::<S, R, 3, true, E>(a, y, row0, p, m),
                        _ => kern::<S, R, V, true, E>(a, y, row0, p, m),
                    }
                }
                row0 += R;
            }
        }
    }

    /// R output channels (`row0..row0+R` of the panel) × V vectors of pixels from `p`;
    /// with MASKED, the last vector holds only the lanes in `mask`. E: epilogue kind.
    ///
    /// # Safety
    /// Target-feature context of `S`; pointer ranges as documented in `panel_512`.
    #[inline(always)]
    unsafe fn kern<S: Vec, const R: usize, const V: usize, const MASKED: bool, const E: u8>(
        a: &Panel,
        y: *mut f32,
        row0: usize,
        p: usize,
        mask: S::Mask,
    ) {
        let (hw, xs, l) = (a.hw, a.xs, S::LANES);
        // SAFETY: pointer ranges as documented in `panel_512`.
        unsafe {
            let mut acc = [[S::splat(0.0); V]; R];
            for (r, row) in acc.iter_mut().enumerate() {
                *row = [S::splat(a.bias[row0 + r]); V];
            }
            // wrapping_add: after the last K step the pointers may point past the slices.
            let mut xp = a.x.as_ptr().wrapping_add(p - a.x0);
            let mut wp = a.w.as_ptr().wrapping_add(row0);
            for _ in 0..a.cin {
                S::prefetch(wp.wrapping_add(PF_W));
                let mut xv = [S::splat(0.0); V];
                for (v, xv) in xv.iter_mut().enumerate() {
                    *xv = if MASKED && v == V - 1 {
                        S::load_m(xp.add(l * v), mask)
                    } else {
                        S::load(xp.add(l * v))
                    };
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let wv = S::splat(*wp.add(r));
                    for (acc, &xv) in row.iter_mut().zip(&xv) {
                        *acc = S::fma(wv, xv, *acc);
                    }
                }
                xp = xp.wrapping_add(xs);
                wp = wp.wrapping_add(MR);
            }
            // Every loop touching `acc` must unroll fully (constant trip counts and
            // indices), or LLVM keeps it in memory during the K loop too. With a heavy
            // activation the epilogue loop does not unroll, so it runs on a copy.
            let mut out = if E == E_ANY {
                core::hint::black_box(acc)
            } else {
                acc
            };
            match E {
                E_SWISH => S::swish_each(out.as_flattened_mut()),
                E_SIGMOID => S::sigmoid_each(out.as_flattened_mut()),
                _ => {}
            }
            let rows = a.rows - row0;
            for (r, row) in out.iter().enumerate() {
                if r >= rows {
                    break;
                }
                let off = (row0 + r) * hw + p;
                let yp = y.add(off);
                let rp = a.res.map(|res| res.as_ptr().add(off));
                for (v, &val) in row.iter().enumerate() {
                    let mut val = match E {
                        E_NONE => val,
                        E_SWISH | E_SIGMOID => val,
                        E_RELU6 => S::act(Act::Relu6, val),
                        _ => S::act(a.act, val),
                    };
                    let last = MASKED && v == V - 1;
                    if let Some(rp) = rp {
                        let res = if last {
                            S::load_m(rp.add(l * v), mask)
                        } else {
                            S::load(rp.add(l * v))
                        };
                        val = S::add(val, res);
                    }
                    if last {
                        S::store_m(yp.add(l * v), mask, val);
                    } else {
                        S::store(yp.add(l * v), val);
                    }
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    pub(super) mod x86 {
        use super::super::{Panel, Tile};
        use super::{panel, Vec, E_ANY, E_NONE, E_RELU6, E_SIGMOID, E_SWISH};
        use ::effdet_runtime::kernels::act::code;
        use ::effdet_runtime::kernels::act::{avx2 as act256, avx512 as act512};
        use ::effdet_runtime::kernels::Act;
        use core::arch::x86_64::*;

        impl Vec for __m512 {
            #[inline(always)]
            fn prefetch(p: *const f32) {
                // SAFETY: a prefetch reads nothing and cannot fault, whatever the address.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
            }
            const LANES: usize = 16;
            type Mask = __mmask16;
            #[inline(always)]
            unsafe fn splat(v: f32) -> Self {
                _mm512_set1_ps(v)
            }
            #[inline(always)]
            unsafe fn load(p: *const f32) -> Self {
                // SAFETY: forwarded contract.
                unsafe { _mm512_loadu_ps(p) }
            }
            #[inline(always)]
            unsafe fn load_m(p: *const f32, m: __mmask16) -> Self {
                // SAFETY: forwarded contract (masked-off lanes are not accessed).
                unsafe { _mm512_maskz_loadu_ps(m, p) }
            }
            #[inline(always)]
            unsafe fn store(p: *mut f32, v: Self) {
                // SAFETY: forwarded contract.
                unsafe { _mm512_storeu_ps(p, v) }
            }
            #[inline(always)]
            unsafe fn store_m(p: *mut f32, m: __mmask16, v: Self) {
                // SAFETY: forwarded contract (masked-off lanes are not accessed).
                unsafe { _mm512_mask_storeu_ps(p, m, v) }
            }
            #[inline(always)]
            unsafe fn mask(n: usize) -> __mmask16 {
                ((1u32 << n) - 1) as __mmask16
            }
            #[inline(always)]
            unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
                _mm512_fmadd_ps(a, b, c)
            }
            #[inline(always)]
            unsafe fn add(a: Self, b: Self) -> Self {
                _mm512_add_ps(a, b)
            }
            #[inline(always)]
            unsafe fn swish(v: Self) -> Self {
                // SAFETY: forwarded contract.
                unsafe { act512::swish(v) }
            }
            #[inline(always)]
            unsafe fn act(act: Act, v: Self) -> Self {
                // SAFETY: forwarded contract.
                unsafe { act512::apply(act, v) }
            }
        }

        impl Vec for __m256 {
            #[inline(always)]
            fn prefetch(p: *const f32) {
                // SAFETY: a prefetch reads nothing and cannot fault, whatever the address.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
            }
            const LANES: usize = 8;
            type Mask = __m256i;
            #[inline(always)]
            unsafe fn splat(v: f32) -> Self {
                _mm256_set1_ps(v)
            }
            #[inline(always)]
            unsafe fn load(p: *const f32) -> Self {
                // SAFETY: forwarded contract.
                unsafe { _mm256_loadu_ps(p) }
            }
            #[inline(always)]
            unsafe fn load_m(p: *const f32, m: __m256i) -> Self {
                // SAFETY: forwarded contract (masked-off lanes are not accessed).
                unsafe { _mm256_maskload_ps(p, m) }
            }
            #[inline(always)]
            unsafe fn store(p: *mut f32, v: Self) {
                // SAFETY: forwarded contract.
                unsafe { _mm256_storeu_ps(p, v) }
            }
            #[inline(always)]
            unsafe fn store_m(p: *mut f32, m: __m256i, v: Self) {
                // SAFETY: forwarded contract (masked-off lanes are not accessed).
                unsafe { _mm256_maskstore_ps(p, m, v) }
            }
            #[inline(always)]
            unsafe fn mask(n: usize) -> __m256i {
                // SAFETY: forwarded contract.
                unsafe { act256::first_lanes(n) }
            }
            #[inline(always)]
            unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
                _mm256_fmadd_ps(a, b, c)
            }
            #[inline(always)]
            unsafe fn add(a: Self, b: Self) -> Self {
                _mm256_add_ps(a, b)
            }
            #[inline(always)]
            unsafe fn swish(v: Self) -> Self {
                // SAFETY: forwarded contract.
                unsafe { act256::swish(v) }
            }
            #[inline(always)]
            unsafe fn swish_each(v: &mut [Self]) {
                // SAFETY: forwarded contract.
                unsafe { act256::swish_each(v) }
            }
            #[inline(always)]
            unsafe fn sigmoid_each(v: &mut [Self]) {
                // SAFETY: forwarded contract.
                unsafe { act256::sigmoid_each(v) }
            }
            #[inline(always)]
            unsafe fn act(act: Act, v: Self) -> Self {
                // SAFETY: forwarded contract.
                unsafe { act256::apply(act, v) }
            }
        }

        /// Pixels `[p0, p0 + len)` of one panel, AVX-512.
        ///
        /// # Safety
        /// The CPU supports AVX-512F and FMA; `a.x.len() ≥ (cin−1)·xs + p0 + len − x0` with
        /// `x0 ≤ p0`, `a.w.len() ≥ MR·cin`,
        /// `y.len()` (and `a.res`'s) `≥ rows·hw` with `rows ≤ MR`, and `p0 + len ≤ hw`.
        #[target_feature(enable = "avx512f,fma")]
        pub(in super::super) unsafe fn panel_512<const A: u8>(
            a: &Panel,
            y: &mut [f32],
            p0: usize,
            len: usize,
        ) {
            // SAFETY: forwarded contract; the const parameters only select code.
            unsafe {
                match A {
                    code::NONE => panel::<__m512, 8, 2, E_NONE>(a, y, p0, len),
                    code::SWISH => panel::<__m512, 8, 2, E_SWISH>(a, y, p0, len),
                    code::RELU6 => panel::<__m512, 8, 2, E_RELU6>(a, y, p0, len),
                    code::SIGMOID => panel::<__m512, 8, 2, E_ANY>(a, y, p0, len),
                    _ => match a.act {
                        Act::None => panel::<__m512, 8, 2, E_NONE>(a, y, p0, len),
                        Act::Swish => panel::<__m512, 8, 2, E_SWISH>(a, y, p0, len),
                        Act::Relu6 => panel::<__m512, 8, 2, E_RELU6>(a, y, p0, len),
                        _ => panel::<__m512, 8, 2, E_ANY>(a, y, p0, len),
                    },
                }
            }
        }

        /// Pixels `[p0, p0 + len)` of one panel, AVX2.
        ///
        /// # Safety
        /// The CPU supports AVX2 and FMA; otherwise as `panel_512`.
        #[target_feature(enable = "avx2,fma")]
        pub(in super::super) unsafe fn panel_256<const A: u8>(
            a: &Panel,
            y: &mut [f32],
            p0: usize,
            len: usize,
            tile: Tile,
        ) {
            // SAFETY: forwarded contract; the const parameters only select code.
            unsafe {
                let wide = tile == Tile::R8V1;
                match A {
                    code::NONE if wide => panel::<__m256, 8, 1, E_NONE>(a, y, p0, len),
                    code::NONE => panel::<__m256, 4, 2, E_NONE>(a, y, p0, len),
                    code::SWISH if wide => panel::<__m256, 8, 1, E_SWISH>(a, y, p0, len),
                    code::SWISH => panel::<__m256, 4, 2, E_SWISH>(a, y, p0, len),
                    code::RELU6 if wide => panel::<__m256, 8, 1, E_ANY>(a, y, p0, len),
                    code::RELU6 => panel::<__m256, 4, 2, E_RELU6>(a, y, p0, len),
                    code::SIGMOID if wide => panel::<__m256, 8, 1, E_SIGMOID>(a, y, p0, len),
                    code::SIGMOID => panel::<__m256, 4, 2, E_SIGMOID>(a, y, p0, len),
                    _ => match (tile, a.act) {
                        (Tile::R8V1, Act::None) => panel::<__m256, 8, 1, E_NONE>(a, y, p0, len),
                        (Tile::R8V1, Act::Swish) => panel::<__m256, 8, 1, E_SWISH>(a, y, p0, len),
                        (Tile::R8V1, Act::Sigmoid) => {
                            panel::<__m256, 8, 1, E_SIGMOID>(a, y, p0, len)
                        }
                        (Tile::R8V1, _) => panel::<__m256, 8, 1, E_ANY>(a, y, p0, len),
                        (_, Act::None) => panel::<__m256, 4, 2, E_NONE>(a, y, p0, len),
                        (_, Act::Swish) => panel::<__m256, 4, 2, E_SWISH>(a, y, p0, len),
                        (_, Act::Relu6) => panel::<__m256, 4, 2, E_RELU6>(a, y, p0, len),
                        (_, Act::Sigmoid) => panel::<__m256, 4, 2, E_SIGMOID>(a, y, p0, len),
                        (_, _) => panel::<__m256, 4, 2, E_ANY>(a, y, p0, len),
                    },
                }
            }
        }
    }

    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    pub(super) mod neon {
        use super::super::Panel;
        use super::{panel, Vec, E_ANY, E_NONE, E_RELU6, E_SIGMOID, E_SWISH};
        use ::effdet_runtime::kernels::act::code;
        use ::effdet_runtime::kernels::act::neon as act128;
        use ::effdet_runtime::kernels::simd::Vf32;
        use ::effdet_runtime::kernels::Act;
        use core::arch::aarch64::*;

        // NEON has no masked loads and stores: the "mask" is the lane count, and partial
        // vectors are `Vf32`'s (a stack copy). The arithmetic intrinsics are safe calls (NEON is
        // part of the aarch64 target); only the pointer ones need the caller's guarantee.
        impl Vec for float32x4_t {
            const LANES: usize = 4;
            type Mask = usize;
            #[inline(always)]
            unsafe fn splat(v: f32) -> Self {
                // SAFETY: NEON is enabled for this target (the module is compiled only then).
                unsafe { vdupq_n_f32(v) }
            }
            #[inline(always)]
            unsafe fn load(p: *const f32) -> Self {
                // SAFETY: forwarded contract.
                unsafe { vld1q_f32(p) }
            }
            #[inline(always)]
            unsafe fn load_m(p: *const f32, n: usize) -> Self {
                // SAFETY: forwarded contract: the first n ≤ 4 floats at `p` are readable
                // (`load_n` takes n < 4).
                unsafe {
                    match n {
                        4 => vld1q_f32(p),
                        _ => <Self as Vf32>::load_n(p, n, 0.0),
                    }
                }
            }
            #[inline(always)]
            unsafe fn store(p: *mut f32, v: Self) {
                // SAFETY: forwarded contract.
                unsafe { vst1q_f32(p, v) }
            }
            #[inline(always)]
            unsafe fn store_m(p: *mut f32, n: usize, v: Self) {
                // SAFETY: forwarded contract: the first n ≤ 4 floats at `p` are writable
                // (`store_n` takes n < 4).
                unsafe {
                    match n {
                        4 => vst1q_f32(p, v),
                        _ => <Self as Vf32>::store_n(p, v, n),
                    }
                }
            }
            #[inline(always)]
            unsafe fn mask(n: usize) -> usize {
                n
            }
            #[inline(always)]
            unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
                // SAFETY: NEON is enabled for this target (the module is compiled only then).
                unsafe { vfmaq_f32(c, a, b) }
            }
            #[inline(always)]
            unsafe fn add(a: Self, b: Self) -> Self {
                // SAFETY: NEON is enabled for this target (the module is compiled only then).
                unsafe { vaddq_f32(a, b) }
            }
            #[inline(always)]
            unsafe fn swish(v: Self) -> Self {
                act128::swish(v)
            }
            #[inline(always)]
            unsafe fn act(act: Act, v: Self) -> Self {
                act128::apply(act, v)
            }
        }

        /// Pixels `[p0, p0 + len)` of one panel, NEON (32 registers: 8 channels × 2 vectors,
        /// 16 accumulators).
        ///
        /// # Safety
        /// As `panel_512`, without the CPU condition.
        pub(in super::super) unsafe fn panel_neon<const A: u8>(
            a: &Panel,
            y: &mut [f32],
            p0: usize,
            len: usize,
        ) {
            // SAFETY: forwarded contract; the const parameters only select code.
            unsafe {
                match A {
                    code::NONE => panel::<float32x4_t, 8, 2, E_NONE>(a, y, p0, len),
                    code::SWISH => panel::<float32x4_t, 8, 2, E_SWISH>(a, y, p0, len),
                    code::RELU6 => panel::<float32x4_t, 8, 2, E_RELU6>(a, y, p0, len),
                    code::SIGMOID => panel::<float32x4_t, 8, 2, E_SIGMOID>(a, y, p0, len),
                    _ => match a.act {
                        Act::None => panel::<float32x4_t, 8, 2, E_NONE>(a, y, p0, len),
                        Act::Swish => panel::<float32x4_t, 8, 2, E_SWISH>(a, y, p0, len),
                        Act::Relu6 => panel::<float32x4_t, 8, 2, E_RELU6>(a, y, p0, len),
                        Act::Sigmoid => panel::<float32x4_t, 8, 2, E_SIGMOID>(a, y, p0, len),
                        _ => panel::<float32x4_t, 8, 2, E_ANY>(a, y, p0, len),
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::effdet_runtime::kernels::Pool;

    /// Small deterministic generator (xorshift), values in [−1, 1).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
        fn vec(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| self.next()).collect()
        }
    }

    fn act_f64(act: Act, v: f64) -> f64 {
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        match act {
            Act::Swish => v * sig(v),
            Act::Sigmoid => sig(v),
            a => a.apply(v as f32) as f64,
        }
    }

    const ACTS: [Act; 8] = [
        Act::None,
        Act::Relu,
        Act::Relu6,
        Act::Swish,
        Act::Sigmoid,
        Act::Clip {
            min: -0.5,
            max: 0.75,
        },
        Act::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        },
        Act::HardSwish,
    ];

    /// The per-shape entry points of generated calls (shape and blocking constants, one
    /// activation) compute what the run-time ones compute, bit for bit, with and without a
    /// tuning, for every activation and instruction set; a call whose activation is not
    /// the instance's panics.
    #[test]
    fn fixed_entry_points_match_the_run_time_ones() {
        const N: usize = 2;
        const CIN: usize = 24;
        // 300 pixels: two threads split the pixels of the 40-channel convs (few panels),
        // the output channels of the 520-channel ones.
        const HW: usize = 300;
        /// x, gates, packed w, bias.
        type Args<'a> = (&'a [f32], &'a [f32], &'a [f32], &'a [f32]);
        fn fixed<const A: u8, const COUT: usize, const TUNE: u64, const I: u8>(
            par: Par,
            (x, gates, w, b): Args,
            act: Act,
        ) -> [Vec<f32>; 3] {
            let mut y = vec![f32::NAN; N * COUT * HW];
            let (mut yg, mut yt) = (y.clone(), y.clone());
            conv1x1_batch_fixed::<A, N, CIN, COUT, HW, TUNE, I>(par, x, w, b, None, &mut y, act);
            conv1x1_batch_gated_fixed::<A, N, CIN, COUT, HW, TUNE, I>(
                par, x, gates, w, b, None, &mut yg, act,
            );
            conv1x1_batch_nhwc_fixed::<A, N, CIN, COUT, HW, I>(par, x, w, b, &mut yt, act);
            [y, yg, yt]
        }
        fn each_act<const COUT: usize, const TUNE: u64, const I: u8>(
            par: Par,
            a: Args,
            act: Act,
        ) -> [Vec<f32>; 3] {
            match act.code() {
                code::NONE => fixed::<{ code::NONE }, COUT, TUNE, I>(par, a, act),
                code::SWISH => fixed::<{ code::SWISH }, COUT, TUNE, I>(par, a, act),
                code::RELU6 => fixed::<{ code::RELU6 }, COUT, TUNE, I>(par, a, act),
                _ => fixed::<{ code::SIGMOID }, COUT, TUNE, I>(par, a, act),
            }
        }
        fn run_time(
            isa: Isa,
            t: Option<Tuning>,
            (x, gates, w, b): Args,
            cout: usize,
            act: Act,
        ) -> [Vec<f32>; 3] {
            let mut y = vec![f32::NAN; N * cout * HW];
            let (mut yg, mut yt) = (y.clone(), y.clone());
            let par = Par::serial();
            let (n, cin, hw) = (N, CIN, HW);
            match t {
                Some(t) => {
                    conv1x1_batch_tuned(&t, isa, par, x, w, b, None, &mut y, n, cin, cout, hw, act);
                    conv1x1_batch_gated_tuned(
                        &t, isa, par, x, gates, w, b, None, &mut yg, n, cin, cout, hw, act,
                    );
                }
                None => {
                    conv1x1_batch(isa, par, x, w, b, None, &mut y, n, cin, cout, hw, act);
                    conv1x1_batch_gated(
                        isa, par, x, gates, w, b, None, &mut yg, n, cin, cout, hw, act,
                    );
                }
            }
            conv1x1_batch_nhwc(isa, par, x, w, b, &mut yt, n, cin, cout, hw, act);
            [y, yg, yt]
        }
        fn check<const COUT: usize>(rng: &mut Rng, x: &[f32], gates: &[f32], par: Par) {
            let w = pack(&rng.vec(COUT * CIN), COUT, CIN);
            let b = rng.vec(COUT);
            let a = (x, gates, &w[..], &b[..]);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            for isa in Isa::available() {
                for act in [Act::None, Act::Swish, Act::Relu6, Act::Sigmoid] {
                    let tuning = |tile| Tuning {
                        isa,
                        block: 64,
                        pack_x: false,
                        tile,
                    };
                    let runs = ::effdet_runtime::with_isa!(isa, I => [
                        (None, each_act::<COUT, UNTUNED, I>(par, a, act)),
                        (
                            Some(tuning(Tile::R8V2)),
                            each_act::<COUT, { tuned(Isa::of(I), 64, false, Tile::R8V2) }, I>(par, a, act),
                        ),
                        (
                            Some(tuning(Tile::R8V1)),
                            each_act::<COUT, { tuned(Isa::of(I), 64, false, Tile::R8V1) }, I>(par, a, act),
                        ),
                        (
                            Some(tuning(Tile::R4V2)),
                            each_act::<COUT, { tuned(Isa::of(I), 64, false, Tile::R4V2) }, I>(par, a, act),
                        ),
                    ]);
                    for (t, got) in runs {
                        let want = run_time(isa, t, a, COUT, act);
                        for (g, w) in got.iter().zip(&want) {
                            assert!(w.iter().all(|v| v.is_finite()));
                            assert!(bits(g) == bits(w), "{isa:?} {t:?} {act:?} cout {COUT}");
                        }
                    }
                }
            }
        }
        let mut rng = Rng(0x5eed);
        let x = rng.vec(N * CIN * HW);
        let gates = rng.vec(N * CIN);
        for threads in [1, 2] {
            let pool = Pool::new(threads);
            check::<40>(&mut rng, &x, &gates, pool.par());
            check::<520>(&mut rng, &x, &gates, pool.par());
        }
        let w = pack(&rng.vec(8 * CIN), 8, CIN);
        let wrong = std::panic::catch_unwind(|| {
            fixed::<{ code::SWISH }, 8, UNTUNED, { ::effdet_runtime::kernels::isa_code::SCALAR }>(
                Par::serial(),
                (&x, &gates, &w, &[]),
                Act::Relu6,
            )
        });
        assert!(wrong.is_err(), "a swish kernel ran a ReLU6 call");
    }

    /// A call's compile-time blocking: the fixed cache model's where it has no tuning (as
    /// [`Plan::new`] chooses at run time), a tuning's choices where the instruction set is
    /// the one it was timed with, and the model's elsewhere.
    #[test]
    fn compile_time_blocking_is_the_plan_or_the_tuning() {
        let all = [Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Scalar];
        for isa in all {
            for (cin, hw) in [(16, 16384), (112, 400), (672, 100), (1280, 25), (0, 7)] {
                let run_time = Plan::new(isa, cin, 64, hw, 2);
                let fixed = Plan::fixed(isa, cin, hw, UNTUNED);
                assert_eq!(
                    (fixed.tile, fixed.block, fixed.pack_x),
                    (run_time.tile, run_time.block, run_time.pack_x),
                    "{isa:?} {cin} {hw}"
                );
                for tile in [Tile::R8V2, Tile::R8V1, Tile::R4V2] {
                    for (block, pack_x) in [(64, false), (4096, true), (0, true)] {
                        let t = Tuning {
                            isa,
                            block,
                            pack_x,
                            tile,
                        };
                        let want = run_time.tuned(isa, &t);
                        for other in all {
                            let got = Plan::fixed(other, cin, hw, tuned(isa, block, pack_x, tile));
                            let want = if other == isa {
                                want
                            } else {
                                Plan::fixed(other, cin, hw, UNTUNED)
                            };
                            assert_eq!(
                                (got.tile, got.block, got.pack_x),
                                (want.tile, want.block, want.pack_x),
                                "{isa:?} {other:?} {tile:?} {block} {pack_x}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Runs every ISA (and both tiles on AVX-512) on one shape against an f64 reference.
    #[allow(clippy::too_many_arguments)]
    fn check(
        rng: &mut Rng,
        cin: usize,
        cout: usize,
        hw: usize,
        with_bias: bool,
        with_res: bool,
        act: Act,
        threads: usize,
    ) {
        let x = rng.vec(cin * hw);
        let wt = rng.vec(cout * cin);
        let bias = if with_bias { rng.vec(cout) } else { vec![] };
        let res = with_res.then(|| rng.vec(cout * hw));
        let wp = pack(&wt, cout, cin);
        // Reference and a bound on the f32 rounding error: cin·ε·Σ|w·x|.
        let mut refy = vec![0.0f64; cout * hw];
        let mut mag = vec![0.0f64; cout * hw];
        for co in 0..cout {
            for p in 0..hw {
                let mut s = if with_bias { bias[co] as f64 } else { 0.0 };
                let mut m = s.abs();
                for ci in 0..cin {
                    let t = wt[co * cin + ci] as f64 * x[ci * hw + p] as f64;
                    s += t;
                    m += t.abs();
                }
                let mut v = act_f64(act, s);
                if let Some(r) = &res {
                    v += r[co * hw + p] as f64;
                }
                refy[co * hw + p] = v;
                mag[co * hw + p] = m;
            }
        }
        for isa in Isa::available() {
            let tiles: &[Tile] = match isa {
                Isa::Avx2 => &[Tile::R8V1, Tile::R4V2],
                _ => &[Tile::R8V2],
            };
            for &tile in tiles {
                for (block, pack_x) in [(hw, false), (64, true), (hw, true)] {
                    let mut plan = Plan::new(isa, cin, cout, hw, threads);
                    plan.tile = tile;
                    plan.block = block;
                    plan.pack_x = pack_x;
                    let mut ybuf = vec![f32::NAN; cout * hw + 16];
                    let off = ybuf.as_ptr().align_offset(64);
                    let y = &mut ybuf[off..][..cout * hw];
                    conv1x1_planned(
                        isa,
                        Pool::new(threads).par(),
                        &x,
                        &wp,
                        &bias,
                        res.as_deref(),
                        y,
                        cin,
                        cout,
                        hw,
                        act,
                        plan,
                    );
                    for i in 0..cout * hw {
                        let tol = 1e-6 * (cin as f64 + 4.0) * (mag[i] + 1.0) + 2e-6 * refy[i].abs();
                        let err = (y[i] as f64 - refy[i]).abs();
                        assert!(
                            err <= tol,
                            "{isa:?} {tile:?} block {block} pack {pack_x} cin {cin} cout {cout} hw {hw} \
                             bias {with_bias} res {with_res} {act:?}: y[{}][{}] = {} vs {} \
                             (err {err:e} > tol {tol:e})",
                            i / hw,
                            i % hw,
                            y[i],
                            refy[i]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn pack_layout() {
        let (cout, cin) = (MR + 3, 5);
        let w: Vec<f32> = (0..cout * cin).map(|i| i as f32 + 1.0).collect();
        let p = pack(&w, cout, cin);
        assert_eq!(p.len(), packed_len(cout, cin));
        assert_eq!(p.len(), 2 * MR * cin);
        for co in 0..2 * MR {
            for ci in 0..cin {
                let want = if co < cout { w[co * cin + ci] } else { 0.0 };
                assert_eq!(p[(co / MR) * MR * cin + ci * MR + co % MR], want);
            }
        }
    }

    #[test]
    fn small_shapes_all_acts() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut n = 0;
        for cin in (1..=37).step_by(2) {
            for cout in [1, 3, 4, 5, 7, 8, 9, 12, 16, 2 * MR + 3] {
                for hw in [1, 5, 9, 15, 16, 17, 24, 31, 33, 48, 63, 64, 65, 70] {
                    // Cycle through the epilogue variants rather than the full product.
                    let act = ACTS[n % ACTS.len()];
                    let (with_bias, with_res) = (n % 2 == 0, n % 3 == 0);
                    check(&mut rng, cin, cout, hw, with_bias, with_res, act, 1);
                    n += 1;
                }
            }
        }
    }

    #[test]
    fn every_hw_up_to_70() {
        let mut rng = Rng(12345);
        for hw in 1..=70 {
            for (i, act) in ACTS.iter().enumerate() {
                check(&mut rng, 7, 2 * MR + 3, hw, i % 2 == 0, i % 3 == 0, *act, 1);
            }
        }
    }

    #[test]
    fn every_cout() {
        let mut rng = Rng(777);
        for cout in 1..=2 * MR + 3 {
            for (with_bias, with_res) in
                [(false, false), (true, false), (false, true), (true, true)]
            {
                check(&mut rng, 13, cout, 37, with_bias, with_res, Act::Swish, 1);
            }
        }
    }

    #[test]
    fn large_planes() {
        let mut rng = Rng(4242);
        check(&mut rng, 19, 2 * MR + 3, 4096, true, true, Act::Swish, 1);
        check(&mut rng, 3, MR + 1, 65536, true, false, Act::Relu6, 2);
        check(&mut rng, 300, 20, 100, true, true, Act::Sigmoid, 2);
        // The extremes of the brief: K = 2000, 2000 output channels.
        check(&mut rng, 2000, 13, 37, true, false, Act::Swish, 1);
        check(&mut rng, 8, 2000, 20, true, true, Act::HardSwish, 2);
        // K ≥ 512 takes the 8×1 AVX2 tile: its swish and sigmoid epilogues.
        check(&mut rng, 600, 11, 50, true, true, Act::Sigmoid, 2);
        check(&mut rng, 520, 9, 41, true, false, Act::Swish, 1);
    }

    #[test]
    fn threads_give_identical_results() {
        let mut rng = Rng(99);
        for &(cin, cout, hw) in &[
            (16, 96, 1024),
            (64, 810, 64),
            (37, 2 * MR + 3, 333),
            (8, 1, 5000),
        ] {
            let x = rng.vec(cin * hw);
            let w = pack(&rng.vec(cout * cin), cout, cin);
            let b = rng.vec(cout);
            let r = rng.vec(cout * hw);
            for isa in Isa::available() {
                let mut outs = Vec::new();
                for threads in [1, 2, 3] {
                    let mut y = vec![0.0; cout * hw];
                    conv1x1(
                        isa,
                        Pool::new(threads).par(),
                        &x,
                        &w,
                        &b,
                        Some(&r),
                        &mut y,
                        cin,
                        cout,
                        hw,
                        Act::Swish,
                    );
                    outs.push(y);
                }
                assert!(
                    outs[0] == outs[1] && outs[0] == outs[2],
                    "{isa:?} {cin}→{cout}@{hw}"
                );
            }
        }
    }

    /// Every tuning (block, copy of x, tile; for this ISA or another) computes what the
    /// default plan computes, bit for bit, plain and gated.
    #[test]
    fn tunings_change_no_bits() {
        let mut rng = Rng(31);
        let (n, cin, cout, hw) = (2, 40, 2 * MR + 3, 300);
        let x = rng.vec(n * cin * hw);
        let gates = rng.vec(n * cin);
        let w = pack(&rng.vec(cout * cin), cout, cin);
        let b = rng.vec(cout);
        let r = rng.vec(n * cout * hw);
        for isa in Isa::available() {
            for threads in [1, 2] {
                let pool = Pool::new(threads);
                let mut want = vec![0.0; n * cout * hw];
                conv1x1_batch(
                    isa,
                    pool.par(),
                    &x,
                    &w,
                    &b,
                    Some(&r),
                    &mut want,
                    n,
                    cin,
                    cout,
                    hw,
                    Act::Swish,
                );
                let mut want_g = vec![0.0; n * cout * hw];
                conv1x1_batch_gated(
                    isa,
                    pool.par(),
                    &x,
                    &gates,
                    &w,
                    &b,
                    None,
                    &mut want_g,
                    n,
                    cin,
                    cout,
                    hw,
                    Act::None,
                );
                for (block, pack_x, tile) in [
                    (64, false, Tile::R8V1),
                    (128, true, Tile::R4V2),
                    (hw, true, Tile::R8V2),
                    (17, false, Tile::R8V2),
                ] {
                    for t_isa in [isa, Isa::Scalar] {
                        let t = Tuning {
                            isa: t_isa,
                            block,
                            pack_x,
                            tile,
                        };
                        let mut y = vec![f32::NAN; n * cout * hw];
                        conv1x1_batch_tuned(
                            &t,
                            isa,
                            pool.par(),
                            &x,
                            &w,
                            &b,
                            Some(&r),
                            &mut y,
                            n,
                            cin,
                            cout,
                            hw,
                            Act::Swish,
                        );
                        assert!(y == want, "{isa:?} {threads}T {t:?}");
                        conv1x1_batch_gated_tuned(
                            &t,
                            isa,
                            pool.par(),
                            &x,
                            &gates,
                            &w,
                            &b,
                            None,
                            &mut y,
                            n,
                            cin,
                            cout,
                            hw,
                            Act::None,
                        );
                        assert!(y == want_g, "gated {isa:?} {threads}T {t:?}");
                    }
                }
            }
        }
    }

    /// Threads splitting pixels ([`Plan::pixel_parts`]) give a batch of two, residual
    /// included, exactly what one thread gives image by image.
    #[test]
    fn pixel_parts_match_one_thread_per_image() {
        let mut rng = Rng(7);
        let (n, cin, cout, hw) = (2, 24, 2 * MR + 3, 1000);
        let x = rng.vec(n * cin * hw);
        let w = pack(&rng.vec(cout * cin), cout, cin);
        let b = rng.vec(cout);
        let r = rng.vec(n * cout * hw);
        for isa in Isa::available() {
            assert!(Plan::new(isa, cin, cout, hw, 2).pixel_parts == 2);
            let mut y = vec![f32::NAN; n * cout * hw];
            let pool = Pool::new(2);
            conv1x1_batch(
                isa,
                pool.par(),
                &x,
                &w,
                &b,
                Some(&r),
                &mut y,
                n,
                cin,
                cout,
                hw,
                Act::Relu6,
            );
            for i in 0..n {
                let mut want = vec![0.0; cout * hw];
                let at = i * cout * hw..(i + 1) * cout * hw;
                conv1x1(
                    isa,
                    Par::serial(),
                    &x[i * cin * hw..][..cin * hw],
                    &w,
                    &b,
                    Some(&r[at.clone()]),
                    &mut want,
                    cin,
                    cout,
                    hw,
                    Act::Relu6,
                );
                assert!(y[at] == want[..], "{isa:?} image {i}");
            }
        }
    }

    /// The gated conv gives, bit for bit, the plain conv of the input planes scaled by the
    /// gates (what a squeeze-excite writes): every ISA, 1–2 threads, batches, residuals.
    #[test]
    fn gated_conv_is_the_conv_of_the_gated_input_bit_for_bit() {
        let mut rng = Rng(57);
        for &(n, cin, cout, hw, res) in &[
            (1, 96, 24, 1024, false),
            (2, 40, 2 * MR + 3, 333, true),
            (1, 600, 11, 50, true),
        ] {
            let x = rng.vec(n * cin * hw);
            let gates: Vec<f32> = rng.vec(n * cin).iter().map(|g| g.abs()).collect();
            let w = pack(&rng.vec(cout * cin), cout, cin);
            let b = rng.vec(cout);
            let r = rng.vec(n * cout * hw);
            let r = res.then_some(&r[..]);
            let scaled: Vec<f32> = x
                .iter()
                .enumerate()
                .map(|(i, v)| v * gates[i / (cin * hw) * cin + i / hw % cin])
                .collect();
            for isa in Isa::available() {
                for threads in [1, 2] {
                    let pool = Pool::new(threads);
                    let mut want = vec![0.0; n * cout * hw];
                    conv1x1_batch(
                        isa,
                        pool.par(),
                        &scaled,
                        &w,
                        &b,
                        r,
                        &mut want,
                        n,
                        cin,
                        cout,
                        hw,
                        Act::Swish,
                    );
                    let mut got = vec![f32::NAN; n * cout * hw];
                    conv1x1_batch_gated(
                        isa,
                        pool.par(),
                        &x,
                        &gates,
                        &w,
                        &b,
                        r,
                        &mut got,
                        n,
                        cin,
                        cout,
                        hw,
                        Act::Swish,
                    );
                    for (i, (a, e)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            a.to_bits() == e.to_bits() && a.is_finite(),
                            "{isa:?} {threads}T n{n} {cin}→{cout}@{hw} [{i}]: {a} vs {e}"
                        );
                    }
                }
            }
        }
    }

    /// The channels-last variant writes exactly the transposed NCHW result: every ISA,
    /// 1–3 threads, batches, pixel counts that leave partial blocks and tiles.
    #[test]
    fn nhwc_output_is_the_nchw_output_transposed_bit_for_bit() {
        let mut rng = Rng(31);
        for &(n, cin, cout, hw) in &[
            (2, 16, 37, 333),
            (1, 64, 810, 200),
            (1, 7, 2 * MR + 3, 70),
            (3, 24, 36, 1100),
            (1, 5, 3, 1),
        ] {
            let x = rng.vec(n * cin * hw);
            let w = pack(&rng.vec(cout * cin), cout, cin);
            let b = rng.vec(cout);
            for isa in Isa::available() {
                let mut nchw = vec![f32::NAN; n * cout * hw];
                conv1x1_batch(
                    isa,
                    Pool::new(1).par(),
                    &x,
                    &w,
                    &b,
                    None,
                    &mut nchw,
                    n,
                    cin,
                    cout,
                    hw,
                    Act::Sigmoid,
                );
                for threads in [1, 2, 3] {
                    let mut nhwc = vec![f32::NAN; n * cout * hw];
                    conv1x1_batch_nhwc(
                        isa,
                        Pool::new(threads).par(),
                        &x,
                        &w,
                        &b,
                        &mut nhwc,
                        n,
                        cin,
                        cout,
                        hw,
                        Act::Sigmoid,
                    );
                    for i in 0..n {
                        for co in 0..cout {
                            for p in 0..hw {
                                let (a, e) = (
                                    nhwc[(i * hw + p) * cout + co],
                                    nchw[(i * cout + co) * hw + p],
                                );
                                assert!(
                                    a.to_bits() == e.to_bits(),
                                    "{isa:?} {threads}T n{n} {cin}→{cout}@{hw}: image {i} \
                                     channel {co} pixel {p}: {a} vs {e}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_batch_gives_each_image_the_single_image_result() {
        let mut rng = Rng(7);
        for &(n, cin, cout, hw) in &[(3, 16, 96, 1024), (4, 64, 40, 64), (2, 37, 2 * MR + 3, 333)] {
            let x = rng.vec(n * cin * hw);
            let w = pack(&rng.vec(cout * cin), cout, cin);
            let b = rng.vec(cout);
            let r = rng.vec(n * cout * hw);
            for isa in Isa::available() {
                for threads in [1, 2, 3] {
                    let pool = Pool::new(threads);
                    let mut batch = vec![f32::NAN; n * cout * hw];
                    conv1x1_batch(
                        isa,
                        pool.par(),
                        &x,
                        &w,
                        &b,
                        Some(&r),
                        &mut batch,
                        n,
                        cin,
                        cout,
                        hw,
                        Act::Swish,
                    );
                    for i in 0..n {
                        let mut one = vec![0.0; cout * hw];
                        let (xi, ri) = (
                            &x[i * cin * hw..][..cin * hw],
                            &r[i * cout * hw..][..cout * hw],
                        );
                        conv1x1(
                            isa,
                            pool.par(),
                            xi,
                            &w,
                            &b,
                            Some(ri),
                            &mut one,
                            cin,
                            cout,
                            hw,
                            Act::Swish,
                        );
                        assert!(
                            one == batch[i * cout * hw..][..cout * hw],
                            "{isa:?} {threads}T image {i} of {n}: {cin}→{cout}@{hw}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "expected n·cin·hw = 2·4·8")]
    fn a_batch_checks_its_lengths() {
        let w = pack(&[0.0; 12], 3, 4);
        let mut y = vec![0.0; 2 * 3 * 8];
        conv1x1_batch(
            Isa::Scalar,
            Par::serial(),
            &[0.0; 4 * 8],
            &w,
            &[],
            None,
            &mut y,
            2,
            4,
            3,
            8,
            Act::None,
        );
    }

    #[test]
    fn degenerate_shapes() {
        for isa in Isa::available() {
            // cin = 0: y = act(bias) + residual.
            let mut y = vec![0.0; 3 * 4];
            let r = vec![1.0; 3 * 4];
            conv1x1(
                isa,
                Par::serial(),
                &[],
                &[],
                &[1.0, -1.0, 2.0],
                Some(&r),
                &mut y,
                0,
                3,
                4,
                Act::Relu,
            );
            assert_eq!(
                y,
                [2.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0, 3.0, 3.0, 3.0, 3.0]
            );
            // hw = 0 and cout = 0: nothing to do.
            conv1x1(
                isa,
                Pool::new(2).par(),
                &[],
                &pack(&[1.0; 6], 3, 2),
                &[],
                None,
                &mut [],
                2,
                3,
                0,
                Act::None,
            );
            conv1x1(
                isa,
                Pool::new(2).par(),
                &[1.0; 8],
                &[],
                &[],
                None,
                &mut [],
                2,
                0,
                4,
                Act::None,
            );
        }
    }

    #[test]
    #[should_panic(expected = "conv1x1: x has 5 floats, expected n·cin·hw = 1·2·3")]
    fn bad_x_length_panics_clearly() {
        let w = pack(&[1.0; 4], 2, 2);
        let mut y = vec![0.0; 6];
        conv1x1(
            Isa::Scalar,
            Par::serial(),
            &[0.0; 5],
            &w,
            &[],
            None,
            &mut y,
            2,
            2,
            3,
            Act::None,
        );
    }

    #[test]
    #[should_panic(expected = "conv1x1: bias has 1 values")]
    fn bad_bias_length_panics_clearly() {
        let w = pack(&[1.0; 4], 2, 2);
        let mut y = vec![0.0; 6];
        conv1x1(
            Isa::Scalar,
            Par::serial(),
            &[0.0; 6],
            &w,
            &[1.0],
            None,
            &mut y,
            2,
            2,
            3,
            Act::None,
        );
    }

    #[test]
    #[should_panic(expected = "conv1x1: packed w has 4 floats")]
    fn unpacked_weights_panic_clearly() {
        let mut y = vec![0.0; 6];
        conv1x1(
            Isa::Scalar,
            Par::serial(),
            &[0.0; 6],
            &[1.0; 4],
            &[],
            None,
            &mut y,
            2,
            2,
            3,
            Act::None,
        );
    }
}
