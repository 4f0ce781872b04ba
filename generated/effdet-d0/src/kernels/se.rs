//! Squeeze-excite in place: `x[c] *= sigmoid(expand(act(reduce(mean(x)))))[c]`.
//!
//! Four short vectorized passes: the channel means, the `r × c` reduce matrix-vector
//! product (with its activation), the `c × r` expand product and sigmoid, and the channel
//! scale of `x`. Only the first and the last touch the feature map: those two are split
//! over the threads by channel groups (each channel's mean and scale do not depend on the
//! split, so outputs are the same at every thread count).

use ::effdet_runtime::kernels::simd::{require, Vf32};
use ::effdet_runtime::kernels::{Act, Isa, Par};

/// Squeeze-excite on `x` (`[c][hw]`) in place.
///
/// `reduce_w`: `[r][c]`, `reduce_b`: `[r]` (`r` is `reduce_b.len()`), `expand_w`: `[c][r]`,
/// `expand_b`: `[c]`; `act` is the activation after the reduce product. `scratch` holds at
/// least `c + r` floats (its contents are overwritten). Compiled for instruction set `I`
/// (`effdet_runtime::kernels::isa_code`).
///
/// # Panics
/// If the slices are too short, or this CPU does not run `I`.
#[allow(clippy::too_many_arguments)]
pub fn squeeze_excite<const I: u8>(
    par: Par,
    x: &mut [f32],
    c: usize,
    hw: usize,
    reduce_w: &[f32],
    reduce_b: &[f32],
    expand_w: &[f32],
    expand_b: &[f32],
    act: Act,
    scratch: &mut [f32],
) {
    let r = reduce_b.len();
    let len = c.checked_mul(hw).expect("squeeze_excite: c·hw overflows");
    assert!(x.len() >= len, "squeeze_excite: input too short");
    check_weights(c, r, reduce_w, expand_w, expand_b);
    assert!(
        scratch.len() >= c + r,
        "squeeze_excite: scratch needs c + r = {} floats",
        c + r
    );
    require::<I>("squeeze_excite");
    if c == 0 || hw == 0 {
        return;
    }
    let x = &mut x[..len];
    let (gate, rest) = scratch.split_at_mut(c);
    let hidden = &mut rest[..r];
    // Channel groups, one per thread: the means and the scale touch the whole map.
    let group = c.div_ceil(par.threads());
    {
        let x: &[f32] = x;
        par.for_each_chunk(gate, group, len, |gi, g| {
            let c0 = gi * group;
            means::<I>(&x[c0 * hw..(c0 + g.len()) * hw], g, hw);
        });
    }
    excite::<I>(gate, hidden, reduce_w, reduce_b, expand_w, expand_b, act);
    let gate: &[f32] = gate;
    par.for_each_chunk(x, group * hw, len, |gi, xc| {
        let c0 = gi * group;
        scale::<I>(xc, &gate[c0..c0 + xc.len() / hw], hw);
    });
}

/// The gates of [`squeeze_excite`] without applying them: `gates[c]` =
/// `sigmoid(expand(act(reduce(mean(x)))))[c]` for `x` (`[c][hw]`, read only). For a
/// squeeze-excite whose only reader is a 1×1 conv, which scales its input by them as it
/// copies it ([`super::conv1x1::conv1x1_batch_gated`]): the feature map is then read once,
/// not read twice and written once. `scratch` holds at least `r` floats.
///
/// # Panics
/// As [`squeeze_excite`].
#[allow(clippy::too_many_arguments)]
pub fn squeeze_excite_gates<const I: u8>(
    par: Par,
    x: &[f32],
    c: usize,
    hw: usize,
    reduce_w: &[f32],
    reduce_b: &[f32],
    expand_w: &[f32],
    expand_b: &[f32],
    act: Act,
    scratch: &mut [f32],
    gates: &mut [f32],
) {
    let len = c.checked_mul(hw).expect("squeeze_excite: c·hw overflows");
    assert!(x.len() >= len, "squeeze_excite: input too short");
    check_weights(c, reduce_b.len(), reduce_w, expand_w, expand_b);
    assert!(
        gates.len() >= c,
        "squeeze_excite: gates need c = {c} floats"
    );
    require::<I>("squeeze_excite");
    let x = &x[..len];
    let gate = &mut gates[..c];
    let group = c.div_ceil(par.threads());
    if hw == 0 {
        gate.fill(0.0);
    } else {
        par.for_each_chunk(gate, group, len, |gi, g| {
            let c0 = gi * group;
            means::<I>(&x[c0 * hw..(c0 + g.len()) * hw], g, hw);
        });
    }
    excite_in_place::<I>(gate, reduce_w, reduce_b, expand_w, expand_b, act, scratch);
}

/// The reduce and expand weights' sizes for `c` channels and `r` hidden units.
fn check_weights(c: usize, r: usize, reduce_w: &[f32], expand_w: &[f32], expand_b: &[f32]) {
    assert!(
        reduce_w.len() >= ::effdet_runtime::kernels::size("squeeze_excite", &[r, c]),
        "squeeze_excite: reduce weights too short"
    );
    assert!(
        expand_w.len() >= ::effdet_runtime::kernels::size("squeeze_excite", &[c, r])
            && expand_b.len() >= c,
        "squeeze_excite: expand weights too short"
    );
}

/// The gates from the channel means in `gate` (`c` = its length), in place; `scratch`
/// holds at least `r` floats. The tail of both gates-only entry points (which checked that
/// this CPU runs `I`).
#[allow(clippy::too_many_arguments)]
fn excite_in_place<const I: u8>(
    gate: &mut [f32],
    reduce_w: &[f32],
    reduce_b: &[f32],
    expand_w: &[f32],
    expand_b: &[f32],
    act: Act,
    scratch: &mut [f32],
) {
    let r = reduce_b.len();
    assert!(
        scratch.len() >= r,
        "squeeze_excite: scratch needs r = {r} floats"
    );
    if gate.is_empty() {
        return;
    }
    excite::<I>(
        gate,
        &mut scratch[..r],
        reduce_w,
        reduce_b,
        expand_w,
        expand_b,
        act,
    );
}

/// The means of the planes of `x` (`means.len()` planes of `hw`) into `means`, by the code
/// [`squeeze_excite_gates`] takes them with (instruction set `I`).
pub(crate) fn plane_means<const I: u8>(x: &[f32], out: &mut [f32], hw: usize) {
    assert!(
        x.len() >= out.len() * hw,
        "squeeze_excite: planes too short"
    );
    require::<I>("squeeze_excite");
    means::<I>(x, out, hw);
}

/// [`squeeze_excite_gates`] from the channel means already taken (by
/// [`super::depthwise::depthwise_pooled`], which produced the feature map): `gates[..c]`
/// = `sigmoid(expand(act(reduce(means))))`, `c = means.len()`. Equal bit for bit to
/// [`squeeze_excite_gates`] on that map. `scratch` holds at least `r` floats.
///
/// # Panics
/// As [`squeeze_excite`].
#[allow(clippy::too_many_arguments)]
pub fn squeeze_excite_gates_from_means<const I: u8>(
    means: &[f32],
    reduce_w: &[f32],
    reduce_b: &[f32],
    expand_w: &[f32],
    expand_b: &[f32],
    act: Act,
    scratch: &mut [f32],
    gates: &mut [f32],
) {
    let c = means.len();
    check_weights(c, reduce_b.len(), reduce_w, expand_w, expand_b);
    assert!(
        gates.len() >= c,
        "squeeze_excite: gates need c = {c} floats"
    );
    let gate = &mut gates[..c];
    require::<I>("squeeze_excite");
    gate.copy_from_slice(means);
    excite_in_place::<I>(gate, reduce_w, reduce_b, expand_w, expand_b, act, scratch);
}

/// Defines `$name::<I>(args…)`, which runs `$generic::<V>(args…)` with the vector type of
/// instruction set `I` (which the caller checked this CPU runs, with `require`) in a
/// `#[target_feature]` context.
macro_rules! dispatch {
    ($(#[$doc:meta])* $name:ident => $generic:ident($($arg:ident: $ty:ty),*)) => {
        $(#[$doc])*
        #[allow(clippy::too_many_arguments)]
        fn $name<const I: u8>($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,fma")]
            unsafe fn avx512($($arg: $ty),*) {
                // SAFETY: this function only runs where AVX-512F is available.
                unsafe { $generic::<core::arch::x86_64::__m512>($($arg),*) }
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) {
                // SAFETY: this function only runs where AVX2 and FMA are available.
                unsafe { $generic::<core::arch::x86_64::__m256>($($arg),*) }
            }
            match Isa::of(I) {
                // SAFETY: the caller checked that this CPU runs `I` (`require`).
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => unsafe { avx512($($arg),*) },
                // SAFETY: as above.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { avx2($($arg),*) },
                // SAFETY: NEON is part of every aarch64 CPU.
                #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
                Isa::Neon => unsafe { $generic::<core::arch::aarch64::float32x4_t>($($arg),*) },
                // SAFETY: the one-lane f32 path runs on any CPU.
                _ => unsafe { $generic::<f32>($($arg),*) },
            }
        }
    };
}

dispatch!(
    /// `gate[j]` = the mean of plane `j` of `x`.
    means => means_v(x: &[f32], gate: &mut [f32], hw: usize)
);
dispatch!(
    /// The reduce and expand products and the sigmoid, from the means in `gate` to the
    /// gates in `gate`.
    excite => excite_v(
        gate: &mut [f32],
        hidden: &mut [f32],
        reduce_w: &[f32],
        reduce_b: &[f32],
        expand_w: &[f32],
        expand_b: &[f32],
        act: Act
    )
);
dispatch!(
    /// Plane `j` of `x` times `gate[j]`.
    scale => scale_v(x: &mut [f32], gate: &[f32], hw: usize)
);

/// # Safety
/// The CPU must support `V`'s instructions; `x` holds `gate.len()` planes of `hw`.
#[inline(always)]
pub(crate) unsafe fn means_v<V: Vf32>(x: &[f32], gate: &mut [f32], hw: usize) {
    let inv = 1.0 / hw as f32;
    for (ch, m) in gate.iter_mut().enumerate() {
        // SAFETY: the CPU supports V (caller).
        *m = unsafe { sum::<V>(&x[ch * hw..(ch + 1) * hw]) } * inv;
    }
}

/// # Safety
/// The CPU must support `V`'s instructions; the weights have the sizes
/// [`squeeze_excite`] checks for `c = gate.len()`, `r = hidden.len()`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn excite_v<V: Vf32>(
    gate: &mut [f32],
    hidden: &mut [f32],
    reduce_w: &[f32],
    reduce_b: &[f32],
    expand_w: &[f32],
    expand_b: &[f32],
    act: Act,
) {
    let (c, r) = (gate.len(), hidden.len());
    // SAFETY (whole body): the CPU supports V (caller); every slice passed is in bounds.
    unsafe {
        for (j, v) in hidden.iter_mut().enumerate() {
            *v = act.apply(reduce_b[j] + dot::<V>(&reduce_w[j * c..(j + 1) * c], gate));
        }
        for (i, g) in gate.iter_mut().enumerate() {
            *g = expand_b[i] + dot::<V>(&expand_w[i * r..(i + 1) * r], hidden);
        }
        map::<V>(gate, |v| V::act(v, Act::Sigmoid));
    }
}

/// # Safety
/// The CPU must support `V`'s instructions; `x` holds `gate.len()` planes of `hw`.
#[inline(always)]
unsafe fn scale_v<V: Vf32>(x: &mut [f32], gate: &[f32], hw: usize) {
    for (ch, &g) in gate.iter().enumerate() {
        let gv = V::splat(g);
        // SAFETY: the CPU supports V (caller).
        unsafe { map::<V>(&mut x[ch * hw..(ch + 1) * hw], |v| V::mul(v, gv)) };
    }
}

/// The sum of `x`.
///
/// # Safety
/// The CPU must support `V`'s instructions.
#[inline(always)]
pub(crate) unsafe fn sum<V: Vf32>(x: &[f32]) -> f32 {
    let (n, l, p) = (x.len(), V::LANES, x.as_ptr());
    // SAFETY: every load reads within x[..n] (whole vectors, then a masked tail).
    unsafe {
        let mut acc = [V::splat(0.0); 4];
        let mut i = 0;
        while i + 4 * l <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                *a = V::add(*a, V::load(p.add(i + k * l)));
            }
            i += 4 * l;
        }
        while i + l <= n {
            acc[0] = V::add(acc[0], V::load(p.add(i)));
            i += l;
        }
        if i < n {
            acc[1] = V::add(acc[1], V::load_n(p.add(i), n - i, 0.0));
        }
        V::sum(V::add(V::add(acc[0], acc[1]), V::add(acc[2], acc[3])))
    }
}

/// `Σ a[i]·b[i]` over `a.len()` (≤ `b.len()`) terms.
///
/// # Safety
/// The CPU must support `V`'s instructions.
#[inline(always)]
unsafe fn dot<V: Vf32>(a: &[f32], b: &[f32]) -> f32 {
    let (n, l) = (a.len(), V::LANES);
    assert!(b.len() >= n);
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    // SAFETY: every load reads within a[..n] and b[..n].
    unsafe {
        let mut acc = [V::splat(0.0); 2];
        let mut i = 0;
        while i + 2 * l <= n {
            acc[0] = V::fma(V::load(pa.add(i)), V::load(pb.add(i)), acc[0]);
            acc[1] = V::fma(V::load(pa.add(i + l)), V::load(pb.add(i + l)), acc[1]);
            i += 2 * l;
        }
        while i + l <= n {
            acc[0] = V::fma(V::load(pa.add(i)), V::load(pb.add(i)), acc[0]);
            i += l;
        }
        if i < n {
            let k = n - i;
            acc[1] = V::fma(
                V::load_n(pa.add(i), k, 0.0),
                V::load_n(pb.add(i), k, 0.0),
                acc[1],
            );
        }
        V::sum(V::add(acc[0], acc[1]))
    }
}

/// `x[i] = f(x[i])` in vectors.
///
/// # Safety
/// The CPU must support `V`'s instructions.
#[inline(always)]
pub(crate) unsafe fn map<V: Vf32>(x: &mut [f32], f: impl Fn(V) -> V) {
    let (n, l, p) = (x.len(), V::LANES, x.as_mut_ptr());
    // SAFETY: every access is within x[..n] (whole vectors, then a masked tail).
    unsafe {
        let mut i = 0;
        while i + 2 * l <= n {
            let (a, b) = (f(V::load(p.add(i))), f(V::load(p.add(i + l))));
            V::store(p.add(i), a);
            V::store(p.add(i + l), b);
            i += 2 * l;
        }
        if i + l <= n {
            V::store(p.add(i), f(V::load(p.add(i))));
            i += l;
        }
        if i < n {
            V::store_n(p.add(i), f(V::load_n(p.add(i), n - i, 0.0)), n - i);
        }
    }
}

