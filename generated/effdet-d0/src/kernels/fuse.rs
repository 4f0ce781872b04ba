//! One BiFPN node's input fusion: `y = act(Σ_i coef[i] · sample_i(x_i))` in one pass.
//!
//! Each output row is built from one row per input: the input's own row (identity, or
//! nearest resampling to the same width), a row resampled into a small buffer (nearest
//! 2× by lane duplication, any other size by an index table; consecutive output rows that
//! read the same source row reuse it), or a max-pool row (vertical max of the window's
//! rows into a `−∞`-padded buffer, then the horizontal window max, de-interleaved for
//! stride 2). The weighted sum and the activation are then one vector loop.
//!
//! The buffers, column tables, per-input state and row pointers live in per-thread
//! `scratch` buffers: once a call has run on a thread, later calls there
//! allocate nothing, for any number of inputs.

use super::depthwise::{check_dims, out_len};
use ::effdet_runtime::kernels::act::code;
use ::effdet_runtime::kernels::scratch::{self, padded};
use ::effdet_runtime::kernels::simd::{require, usable, Vf32};
use ::effdet_runtime::kernels::{dim, size, Act, Isa, Par};
use ::effdet_runtime::specialize_act;

/// How one input of [`fuse`] is brought to the output's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sample {
    /// Already the output's size.
    Identity,
    /// Nearest-neighbour resize from an `h × w` input: output `(oy, ox)` reads input
    /// `(⌊oy·h/oh⌋, ⌊ox·w/ow⌋)`.
    Nearest {
        /// Input height.
        h: usize,
        /// Input width.
        w: usize,
    },
    /// Max-pool window over an `h × w` input; padded positions never win (as if −∞). Its
    /// output size must be the fusion's output size.
    MaxPool {
        /// Input height.
        h: usize,
        /// Input width.
        w: usize,
        /// Window `[height, width]`.
        kernel: [usize; 2],
        /// `[rows, columns]`.
        stride: [usize; 2],
        /// `[top, left, bottom, right]`.
        pads: [usize; 4],
    },
}

impl Sample {
    /// The input's `(height, width)` for an output of `oh × ow`.
    fn input_size(&self, oh: usize, ow: usize) -> (usize, usize) {
        match *self {
            Sample::Identity => (oh, ow),
            Sample::Nearest { h, w } | Sample::MaxPool { h, w, .. } => (h, w),
        }
    }
}

/// Fuses `inputs` into `y` (`[c][oh][ow]`): `y = act(Σ_i coef[i] · sample_i(x_i))`.
///
/// Each input is `[c][h_i][w_i]` with the size its [`Sample`] states (the output size for
/// `Identity`).
#[allow(clippy::too_many_arguments)]
pub fn fuse(
    isa: Isa,
    par: Par,
    inputs: &[(&[f32], Sample)],
    coef: &[f32],
    y: &mut [f32],
    c: usize,
    oh: usize,
    ow: usize,
    act: Act,
) {
    ::effdet_runtime::with_isa!(usable(isa), I => {
        fuse_fixed::<{ code::ANY }, 0, 0, 0, I>(par, inputs, coef, y, c, oh, ow, act)
    });
}

/// [`fuse`] compiled for activation code `A` (`effdet_runtime::kernels::act::code`) and
/// instruction set `I` (`effdet_runtime::kernels::isa_code`) only, as a generated model
/// calls it; `act` must be that code's activation (any with `code::ANY`). A generated call
/// also fixes its shape: `C`, `OH` and `OW` are `c`, `oh` and `ow` (0: given at run time).
///
/// # Panics
/// As [`fuse`]; and if `act` is not the activation of `A`, the sizes differ from the
/// constants, or this CPU does not run `I`.
#[allow(clippy::too_many_arguments)]
pub fn fuse_fixed<const A: u8, const C: usize, const OH: usize, const OW: usize, const I: u8>(
    par: Par,
    inputs: &[(&[f32], Sample)],
    coef: &[f32],
    y: &mut [f32],
    c: usize,
    oh: usize,
    ow: usize,
    act: Act,
) {
    check_dims("fuse", &[C, OH, OW], &[c, oh, ow]);
    let (c, oh, ow) = (dim::<C>(c), dim::<OH>(oh), dim::<OW>(ow));
    let act = act.fixed::<A>();
    check(inputs, coef, y.len(), c, oh, ow);
    require::<I>("fuse");
    let plane = oh * ow;
    if plane == 0 || c == 0 {
        return;
    }
    let y = &mut y[..c * plane];
    let group = c.div_ceil(par.threads());
    let work = c * plane * inputs.len().max(1) * 4;
    par.for_each_chunk(y, group * plane, work, |gi, yg| {
        // The sizes again, from the constants where the call has them.
        let (oh, ow) = (dim::<OH>(oh), dim::<OW>(ow));
        run_channels::<A, I>(Args {
            inputs,
            coef,
            y: yg,
            c0: gi * group,
            oh,
            ow,
            rows: (0, oh),
            act,
        })
    });
}

/// The checks of a fusion into `[c][oh][ow]` (`y_len` floats; see [`fuse`]).
///
/// # Panics
/// If a slice is too short, there are fewer coefficients than inputs, or a max pool does
/// not give the output's size.
pub(crate) fn check(
    inputs: &[(&[f32], Sample)],
    coef: &[f32],
    y_len: usize,
    c: usize,
    oh: usize,
    ow: usize,
) {
    let plane = size("fuse", &[oh, ow]);
    assert!(
        coef.len() >= inputs.len(),
        "fuse: {} coefficients for {} inputs",
        coef.len(),
        inputs.len()
    );
    assert!(y_len >= size("fuse", &[c, plane]), "fuse: output too short");
    for (i, (x, s)) in inputs.iter().enumerate() {
        let (h, w) = s.input_size(oh, ow);
        assert!(
            x.len() >= size("fuse", &[c, h, w]),
            "fuse: input {i} too short"
        );
        if let Sample::MaxPool {
            kernel,
            stride,
            pads,
            ..
        } = *s
        {
            let size = (
                out_len(h, pads[0], pads[2], kernel[0], stride[0]),
                out_len(w, pads[1], pads[3], kernel[1], stride[1]),
            );
            assert_eq!(size, (oh, ow), "fuse: input {i}'s max pool gives {size:?}");
        }
    }
}

/// The channels `a.c0 ..` of a fusion that `a.y` holds, on this thread, with the vector
/// type of instruction set `I`, which the caller checked this CPU runs (`require`); `a.act`
/// must be the activation of code `A`. The inputs were checked by [`check`].
pub(crate) fn run_channels<const A: u8, const I: u8>(a: Args) {
    match Isa::of(I) {
        // SAFETY: the caller checked that this CPU runs `I`: AVX-512F and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { run_avx512::<A>(a) },
        // SAFETY: the caller checked that this CPU runs `I`: AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { run_avx2::<A>(a) },
        // SAFETY: NEON is part of every aarch64 CPU.
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        Isa::Neon => unsafe {
            specialize_act!(A, a.act, act => run::<core::arch::aarch64::float32x4_t>(a, act))
        },
        _ => {
            let act = a.act;
            // SAFETY: the one-lane f32 path runs on any CPU.
            unsafe { run::<f32>(a, act) }
        }
    }
}

/// The channels `c0 ..` of an `oh × ow` output that `y` holds, rows `rows.0 .. rows.1` of
/// each (`(0, oh)`: whole planes).
pub(crate) struct Args<'a> {
    pub(crate) inputs: &'a [(&'a [f32], Sample)],
    pub(crate) coef: &'a [f32],
    pub(crate) y: &'a mut [f32],
    pub(crate) c0: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
    pub(crate) rows: (usize, usize),
    pub(crate) act: Act,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn run_avx512<const A: u8>(a: Args) {
    // SAFETY: this function only runs where AVX-512F is available.
    unsafe { specialize_act!(A, a.act, act => run::<core::arch::x86_64::__m512>(a, act)) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<const A: u8>(a: Args) {
    // SAFETY: this function only runs where AVX2 and FMA are available.
    unsafe { specialize_act!(A, a.act, act => run::<core::arch::x86_64::__m256>(a, act)) }
}

/// The scratch one input needs, by kind: a nearest row buffer (`wide` floats) and maybe a
/// column table (`ow` indices), or the three max-pool buffers (`vm`, `eo` if stride 2, and
/// `buf`).
#[derive(Clone, Copy)]
enum Need {
    None,
    Nearest { cols: bool },
    Pool { len: usize, eo: bool },
}

impl Need {
    /// What input `s` needs for rows of `ow` outputs in vectors of `l` lanes.
    fn of(s: Sample, ow: usize, l: usize) -> Need {
        let wide = ow.div_ceil(l) * l;
        match s {
            Sample::Identity => Need::None,
            Sample::Nearest { w, .. } if w == ow => Need::None,
            // Lane duplication needs two lanes or more.
            Sample::Nearest { w, .. } => Need::Nearest {
                cols: ow != 2 * w || l == 1,
            },
            Sample::MaxPool {
                w,
                kernel,
                stride,
                pads,
                ..
            } => {
                let kw = kernel[1];
                let need = match stride[1] {
                    1 => wide + kw - 1,
                    2 => 2 * (wide + (kw - 1) / 2),
                    s => (ow - 1) * s + kw,
                };
                Need::Pool {
                    len: (pads[1] + w + pads[3]).max(need).div_ceil(2 * l) * 2 * l,
                    eo: stride[1] == 2,
                }
            }
        }
    }

    /// Floats of the `f32` scratch buffer (each part padded to keep the next aligned).
    fn floats(self, wide: usize) -> usize {
        match self {
            Need::None => 0,
            Need::Nearest { .. } => padded::<f32>(wide),
            Need::Pool { len, eo } => padded::<f32>(len) * (1 + eo as usize) + padded::<f32>(wide),
        }
    }

    /// Indices of the `usize` scratch buffer.
    fn indices(self, ow: usize) -> usize {
        match self {
            Need::Nearest { cols: true } => padded::<usize>(ow),
            _ => 0,
        }
    }
}

/// Per-input row state, pointing into the call's scratch buffers (disjoint regions, laid
/// out by [`run`] from [`Need`]).
#[derive(Clone, Copy, Debug)]
enum Source {
    /// Rows are read in place.
    Direct,
    /// Nearest resampling into `buf` (`wide` floats); `cols` (`ow` indices, or null when
    /// the width is exactly doubled) maps output to input columns; `last` is the source row
    /// `buf` holds.
    Nearest {
        buf: *mut f32,
        cols: *const usize,
        last: Option<usize>,
    },
    /// Max pooling: `vm` (`len` floats) holds the vertical max with `−∞` pads, `eo` (`len`
    /// floats; null unless stride 2) its even/odd split, `buf` (`wide`) the pooled row.
    Pool {
        vm: *mut f32,
        eo: *mut f32,
        buf: *mut f32,
        len: usize,
    },
}

scratch::elem!(Source, Source::Direct);

/// The scratch state of one call: each input's [`Source`], the buffers they point into,
/// and the row pointer table.
struct State {
    sources: scratch::Buf<Source>,
    rows: scratch::Buf<*const f32>,
    /// Kept alive (and not touched) while the sources point into them.
    _floats: scratch::Buf<f32>,
    _indices: scratch::Buf<usize>,
}

/// Takes the scratch buffers for `inputs` (rows of `ow` outputs in vectors of `l` lanes),
/// cuts them into each input's parts, in input order, and sets their initial contents:
/// column tables, `−∞` pads of the vertical max, zeros elsewhere. Out of line: it keeps
/// the kernel's hot function small.
#[inline(never)]
fn prepare(inputs: &[(&[f32], Sample)], ow: usize, l: usize) -> State {
    let wide = ow.div_ceil(l) * l;
    let (mut floats, mut indices) = (0, 0);
    for (_, s) in inputs {
        let need = Need::of(*s, ow, l);
        floats += need.floats(wide);
        indices += need.indices(ow);
    }
    let mut fbuf = scratch::take::<f32>(floats);
    let mut ubuf = scratch::take::<usize>(indices);
    let mut sources = scratch::take::<Source>(inputs.len());
    let (mut fs, mut us): (&mut [f32], &mut [usize]) = (&mut fbuf, &mut ubuf);
    for (src, (_, s)) in sources.iter_mut().zip(inputs) {
        let mut part = |len: usize, fill: f32| {
            let (p, rest) = core::mem::take(&mut fs).split_at_mut(padded::<f32>(len));
            fs = rest;
            p[..len].fill(fill);
            p.as_mut_ptr()
        };
        *src = match (Need::of(*s, ow, l), *s) {
            (Need::Nearest { cols }, Sample::Nearest { w, .. }) => Source::Nearest {
                buf: part(wide, 0.0),
                cols: match cols {
                    true => {
                        let (t, rest) = core::mem::take(&mut us).split_at_mut(padded::<usize>(ow));
                        us = rest;
                        for (ox, c) in t[..ow].iter_mut().enumerate() {
                            *c = ox * w / ow;
                        }
                        t.as_ptr()
                    }
                    false => core::ptr::null(),
                },
                last: None,
            },
            (Need::Pool { len, eo }, _) => Source::Pool {
                vm: part(len, f32::NEG_INFINITY),
                eo: match eo {
                    true => part(len, 0.0),
                    false => core::ptr::null_mut(),
                },
                buf: part(wide, 0.0),
                len,
            },
            _ => Source::Direct,
        };
    }
    State {
        sources,
        rows: scratch::take::<*const f32>(inputs.len()),
        _floats: fbuf,
        _indices: ubuf,
    }
}

/// # Safety
/// The CPU must support `V`'s instructions; the slices have the sizes [`fuse`] checks.
#[inline(always)]
unsafe fn run<V: Vf32>(a: Args, act: Act) {
    let (oh, ow, (r0, r1)) = (a.oh, a.ow, a.rows);
    let band = (r1 - r0) * ow;
    if band == 0 {
        return;
    }
    let n = a.inputs.len();
    // The sources point into the state's buffers, which nothing else touches until the
    // state is dropped at the end.
    let mut state = prepare(a.inputs, ow, V::LANES);
    let sources: &mut [Source] = &mut state.sources;
    let rows: &mut [*const f32] = &mut state.rows;
    let nch = a.y.len() / band;
    for ch in a.c0..a.c0 + nch {
        for src in sources.iter_mut() {
            if let Source::Nearest { last, .. } = src {
                *last = None;
            }
        }
        for oy in r0..r1 {
            for (i, ((x, s), src)) in a.inputs.iter().zip(sources.iter_mut()).enumerate() {
                let (h, w) = s.input_size(oh, ow);
                let plane = &x[ch * h * w..(ch + 1) * h * w];
                // SAFETY: the CPU supports V (caller); `src` was built above for `s`.
                rows[i] = unsafe { source_row::<V>(plane, *s, src, oy, oh, ow) };
            }
            let out = &mut a.y[(ch - a.c0) * band + (oy - r0) * ow..][..ow];
            // SAFETY: every row pointer covers `ow` floats: an input row of width ow, or a
            // buffer of `wide` floats.
            // Not on AVX2 (8 lanes): with 16 vector registers, the epilogue's constants and
            // the kept coefficients do not all fit (measured 5–8% slower there; 5–15% faster
            // on AVX-512 and the portable path).
            unsafe {
                match (n, V::LANES) {
                    (2, 16 | 1) => weighted_row_n::<V, 2>(rows, a.coef, out, act),
                    (3, 16 | 1) => weighted_row_n::<V, 3>(rows, a.coef, out, act),
                    _ => weighted_row::<V>(rows, a.coef, out, act),
                }
            }
        }
    }
}

/// Output row `oy`'s values of one input (`ow` floats at the returned pointer).
///
/// # Safety
/// The CPU must support `V`'s instructions; `src` was built for `s` by [`run`], and its
/// buffers are live and referenced by nothing else during the call.
#[inline(always)]
unsafe fn source_row<V: Vf32>(
    plane: &[f32],
    s: Sample,
    src: &mut Source,
    oy: usize,
    oh: usize,
    ow: usize,
) -> *const f32 {
    let l = V::LANES;
    let wide = ow.div_ceil(l) * l;
    match (s, src) {
        (Sample::Identity, _) => plane[oy * ow..].as_ptr(),
        (Sample::Nearest { h, w }, Source::Direct) => plane[(oy * h / oh) * w..].as_ptr(),
        (Sample::Nearest { h, w }, Source::Nearest { buf, cols, last }) => {
            let iy = oy * h / oh;
            if *last != Some(iy) {
                *last = Some(iy);
                let row = &plane[iy * w..(iy + 1) * w];
                if !cols.is_null() {
                    // SAFETY: `buf` holds `wide` floats and `cols` `ow` indices (caller).
                    let (buf, cols) = unsafe {
                        (
                            core::slice::from_raw_parts_mut(*buf, wide),
                            core::slice::from_raw_parts(*cols, ow),
                        )
                    };
                    for (o, &ix) in buf.iter_mut().zip(cols) {
                        *o = row[ix];
                    }
                } else {
                    // ow = 2w: output column ox reads input column ox / 2.
                    let (p, b) = (row.as_ptr(), *buf);
                    let mut j = 0;
                    while 2 * j < ow {
                        let n = (w - j).min(l);
                        // SAFETY: reads row[j .. j + n] (n ≤ w − j), writes buf[2j .. 2j + l]
                        // within its `wide` ≥ ow rounded up to l floats.
                        unsafe {
                            let v = if n == l {
                                V::load(p.add(j))
                            } else {
                                V::load_n(p.add(j), n, 0.0)
                            };
                            V::store(b.add(2 * j), V::dup_low(v));
                        }
                        j += l.div_ceil(2);
                    }
                }
            }
            *buf
        }
        (
            Sample::MaxPool {
                h,
                w,
                kernel,
                stride,
                pads,
            },
            &mut Source::Pool { vm, eo, buf, len },
        ) => {
            // SAFETY: `vm` and `eo` (unless null) hold `len` floats, `buf` `wide` (caller).
            let (vm, eo, b) = unsafe {
                (
                    core::slice::from_raw_parts_mut(vm, len),
                    match eo.is_null() {
                        true => &mut [][..],
                        false => core::slice::from_raw_parts_mut(eo, len),
                    },
                    core::slice::from_raw_parts_mut(buf, wide),
                )
            };
            // SAFETY: forwarded from the caller.
            unsafe { pool_row::<V>(plane, h, w, kernel, stride, pads, oy, ow, vm, eo, b) };
            buf
        }
        _ => unreachable!("source built for its sampling"),
    }
}

/// One max-pooled output row into `buf`.
///
/// # Safety
/// The CPU must support `V`'s instructions; `vm`, `eo` and `buf` are sized by [`run`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn pool_row<V: Vf32>(
    plane: &[f32],
    h: usize,
    w: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    pads: [usize; 4],
    oy: usize,
    ow: usize,
    vm: &mut [f32],
    eo: &mut [f32],
    buf: &mut [f32],
) {
    let l = V::LANES;
    let [kh, kw] = kernel;
    let left = pads[1];
    // Vertical max of the window's rows that lie inside the input.
    let y0 = (oy * stride[0]).saturating_sub(pads[0]);
    let y1 = (oy * stride[0] + kh).saturating_sub(pads[0]).min(h);
    let dst = &mut vm[left..left + w];
    if y0 >= y1 {
        dst.fill(f32::NEG_INFINITY);
    } else {
        let rows = &plane[y0 * w..y1 * w];
        let (d, r, n_rows) = (dst.as_mut_ptr(), rows.as_ptr(), y1 - y0);
        let mut j = 0;
        while j < w {
            let n = (w - j).min(l);
            // SAFETY: reads n ≤ w − j floats at column j of each of the n_rows rows of
            // `rows`, writes n floats at j of `dst` (w floats).
            unsafe {
                if n == l {
                    let mut m = V::load(r.add(j));
                    for k in 1..n_rows {
                        m = V::max(m, V::load(r.add(k * w + j)));
                    }
                    V::store(d.add(j), m);
                } else {
                    let mut m = V::load_n(r.add(j), n, 0.0);
                    for k in 1..n_rows {
                        m = V::max(m, V::load_n(r.add(k * w + j), n, 0.0));
                    }
                    V::store_n(d.add(j), m, n);
                }
            }
            j += l;
        }
    }
    // Horizontal window max.
    let (v, b) = (vm.as_ptr(), buf.as_mut_ptr());
    match stride[1] {
        1 => {
            let mut j = 0;
            while j < ow {
                // SAFETY: loads reach vm[j + l − 1 + kw − 1] < wide + kw − 1 ≤ vm.len();
                // the store writes buf[j .. j + l] ⊂ buf[.. wide].
                unsafe {
                    let mut m = V::load(v.add(j));
                    for kx in 1..kw {
                        m = V::max(m, V::load(v.add(j + kx)));
                    }
                    V::store(b.add(j), m);
                }
                j += l;
            }
        }
        2 => {
            let half = vm.len() / 2;
            let e = eo.as_mut_ptr();
            let mut j = 0;
            while j < half {
                // SAFETY: vm and eo have 2·half floats, half a multiple of l.
                unsafe {
                    let (ev, od) =
                        V::deinterleave(V::load(v.add(2 * j)), V::load(v.add(2 * j + l)));
                    V::store(e.add(j), ev);
                    V::store(e.add(half + j), od);
                }
                j += l;
            }
            let mut j = 0;
            while j < ow {
                // SAFETY: loads reach half-column j + l − 1 + (kw − 1)/2 < half (sizing in
                // `run`); the store writes buf[j .. j + l] ⊂ buf[.. wide].
                unsafe {
                    let mut m = V::load(e.add(j));
                    for kx in 1..kw {
                        m = V::max(m, V::load(e.add((kx & 1) * half + j + kx / 2)));
                    }
                    V::store(b.add(j), m);
                }
                j += l;
            }
        }
        s => {
            for (ox, o) in buf.iter_mut().enumerate().take(ow) {
                *o = vm[ox * s..ox * s + kw]
                    .iter()
                    .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            }
        }
    }
}

/// [`weighted_row`] for exactly `N` inputs (a BiFPN node has 2 or 3): the row pointers and
/// the broadcast coefficients stay in registers across the row (given enough registers).
/// Same operations, same order, same results.
///
/// # Safety
/// As [`weighted_row`], with `rows.len() == N ≤ coef.len()`.
#[inline(always)]
unsafe fn weighted_row_n<V: Vf32, const N: usize>(
    rows: &[*const f32],
    coef: &[f32],
    out: &mut [f32],
    act: Act,
) {
    let rows: &[*const f32; N] = rows.try_into().expect("fuse: N row pointers");
    let (ow, l, o) = (out.len(), V::LANES, out.as_mut_ptr());
    // SAFETY: the CPU supports V (caller).
    let mut k = unsafe { [V::splat(0.0); N] };
    for (k, &c) in k.iter_mut().zip(&coef[..N]) {
        // SAFETY: as above.
        *k = unsafe { V::splat(c) };
    }
    let mut j = 0;
    // Four vectors at a time, their activations interleaved (`act_each`); the same sums
    // in the same order as the one-vector loop below, which takes the rest.
    while j + 4 * l <= ow {
        // SAFETY: reads and writes 4·l ≤ ow − j floats at j.
        unsafe {
            let mut acc = [V::splat(0.0); 4];
            for (&r, &k) in rows.iter().zip(&k) {
                for (u, a) in acc.iter_mut().enumerate() {
                    *a = V::fma(V::load(r.add(j + u * l)), k, *a);
                }
            }
            V::act_each(&mut acc, act);
            for (u, &a) in acc.iter().enumerate() {
                V::store(o.add(j + u * l), a);
            }
        }
        j += 4 * l;
    }
    while j < ow {
        let n = (ow - j).min(l);
        // SAFETY: reads and writes n ≤ ow − j floats at j.
        unsafe {
            let mut acc = V::splat(0.0);
            for (&r, &k) in rows.iter().zip(&k) {
                let v = if n == l {
                    V::load(r.add(j))
                } else {
                    V::load_n(r.add(j), n, 0.0)
                };
                acc = V::fma(v, k, acc);
            }
            let acc = V::act(acc, act);
            if n == l {
                V::store(o.add(j), acc);
            } else {
                V::store_n(o.add(j), acc, n);
            }
        }
        j += l;
    }
}

/// `out = act(Σ_i coef[i] · rows[i][..ow])`.
///
/// # Safety
/// The CPU must support `V`'s instructions; each row pointer covers `out.len()` floats.
#[inline(always)]
unsafe fn weighted_row<V: Vf32>(rows: &[*const f32], coef: &[f32], out: &mut [f32], act: Act) {
    let (ow, l, o) = (out.len(), V::LANES, out.as_mut_ptr());
    let mut j = 0;
    // Four vectors at a time with their activations interleaved (`act_each`): one at a time,
    // the swish's dependent chain left the FMA pipes idle (AVX2: ~2× slower rows). The
    // coefficients are broadcast from memory per use, so only the accumulators need
    // registers. Same sums in the same order as the one-vector loop, which takes the rest.
    while j + 4 * l <= ow {
        // SAFETY: reads and writes 4·l ≤ ow − j floats at j.
        unsafe {
            let mut acc = [V::splat(0.0); 4];
            for (&r, &k) in rows.iter().zip(coef) {
                let k = V::splat(k);
                for (u, a) in acc.iter_mut().enumerate() {
                    *a = V::fma(V::load(r.add(j + u * l)), k, *a);
                }
            }
            V::act_each(&mut acc, act);
            for (u, &a) in acc.iter().enumerate() {
                V::store(o.add(j + u * l), a);
            }
        }
        j += 4 * l;
    }
    while j < ow {
        let n = (ow - j).min(l);
        // SAFETY: reads and writes n ≤ ow − j floats at j.
        unsafe {
            let mut acc = V::splat(0.0);
            for (&r, &k) in rows.iter().zip(coef) {
                let v = if n == l {
                    V::load(r.add(j))
                } else {
                    V::load_n(r.add(j), n, 0.0)
                };
                acc = V::fma(v, V::splat(k), acc);
            }
            let acc = V::act(acc, act);
            if n == l {
                V::store(o.add(j), acc);
            } else {
                V::store_n(o.add(j), acc, n);
            }
        }
        j += l;
    }
}

