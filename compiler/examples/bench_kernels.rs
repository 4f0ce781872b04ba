//! Micro-benchmarks of the non-GEMM kernels on EfficientDet-D0's shapes (and Lite0's narrow
//! depthwise planes).
//!
//! `cargo run --release -p effdet-compiler --example bench_kernels [-- RUNS [FILTER [THREADS]]]`
//!
//! With `THREADS` > 1 the kernels run on a pool of that many threads: compare the wall
//! column with a 1-thread run (the CPU-time column then counts the calling thread only).
//!
//! Prints one Markdown table row per shape and instruction set: the median of `RUNS`
//! (default 30) timed runs after two warm-up runs, and the rate at that median (G
//! multiply-adds/s for convolutions, GB/s of input + output traffic for the memory-bound
//! ones). `FILTER` selects rows whose text contains it. On Linux the time is the calling
//! thread's CPU time (robust when the machine is shared: a preempted run does not count its
//! wait), elsewhere wall time; the wall-clock median is printed beside it.

use std::hint::black_box;
use std::time::Instant;

use effdet_compiler::kernels::dense::conv_dense;
use effdet_compiler::kernels::depthwise::depthwise;
use effdet_compiler::kernels::fuse::{fuse, Sample};
use effdet_compiler::kernels::se::squeeze_excite;
use effdet_runtime::kernels::{Act, Isa, Pool};

/// Deterministic values in [-1, 1).
fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            ((s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// This thread's CPU time in seconds (Linux), for timings that ignore preemption.
#[cfg(target_os = "linux")]
fn cpu_time() -> Option<f64> {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: clock_gettime writes one timespec (two 64-bit fields on x86-64/aarch64 Linux)
    // to a valid pointer.
    let ok = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0;
    ok.then_some(ts.sec as f64 + ts.nsec as f64 * 1e-9)
}

#[cfg(not(target_os = "linux"))]
fn cpu_time() -> Option<f64> {
    None
}

/// Medians of `runs` calls of `f` in seconds: (CPU time, or wall time without it; wall).
fn median(runs: usize, mut f: impl FnMut()) -> (f64, f64) {
    f();
    f();
    let (mut cpu, mut wall) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (c0, w0) = (cpu_time(), Instant::now());
        f();
        let w = w0.elapsed().as_secs_f64();
        wall.push(w);
        cpu.push(cpu_time().zip(c0).map_or(w, |(c1, c0)| c1 - c0));
    }
    let mid = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    (mid(&mut cpu), mid(&mut wall))
}

/// TF 'same' padding `(before, after)` of one dimension.
fn same(len: usize, k: usize, s: usize) -> (usize, usize) {
    let out = len.div_ceil(s);
    let total = ((out - 1) * s + k).saturating_sub(len);
    (total / 2, total - total / 2)
}

fn row(name: &str, isa: Isa, (secs, wall): (f64, f64), amount: f64, unit: &str) {
    println!(
        "| {name} | {isa:?} | {:.3} | {:.3} | {:.1} {unit} |",
        secs * 1e3,
        wall * 1e3,
        amount / secs / 1e9
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(30)
        .max(1);
    let filter = args.next().unwrap_or_default();
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let pool = Pool::new(threads);
    let par = pool.par();
    let isas = Isa::available();
    println!("| kernel | isa | median ms | wall ms | rate |");
    println!("|---|---|---|---|---|");

    // (channels, input size, kernel, stride) of D0's and Lite0's depthwise convs; TF 'same'
    // padding.
    let dw = [
        (96, 256, 3, 2),
        (144, 128, 3, 1),
        (240, 64, 5, 2),
        (480, 32, 3, 1),
        (672, 32, 5, 1),
        (1152, 16, 5, 1),
        (64, 64, 3, 1),
        // D0's other stride-2 depthwise convs.
        (144, 128, 5, 2),
        (240, 64, 3, 2),
        (672, 32, 5, 2),
        // Lite0's (320²) narrow planes: channel-vectorized with AVX-512 (`depthwise_lanes`).
        (480, 20, 3, 1),
        (672, 20, 5, 1),
        (672, 20, 5, 2),
        (1152, 10, 5, 1),
        (1152, 10, 3, 1),
    ];
    for &(c, n, k, s) in &dw {
        let name = format!("depthwise {c}ch {k}x{k} s{s} @{n}² swish");
        let (pt, pb) = same(n, k, s);
        let pads = [pt, pt, pb, pb];
        let on = (n + pt + pb - k) / s + 1;
        let x = data(c * n * n, 1);
        let w = data(c * k * k, 2);
        let b = data(c, 3);
        let mut y = vec![0.0; c * on * on];
        for &isa in &isas {
            if !format!("{name} {isa:?}").contains(&filter) {
                continue;
            }
            let t = median(runs, || {
                depthwise(
                    isa,
                    par,
                    black_box(&x),
                    &w,
                    &b,
                    &mut y,
                    c,
                    n,
                    n,
                    k,
                    s,
                    pads,
                    Act::Swish,
                );
                black_box(&mut y);
            });
            row(&name, isa, t, (c * on * on * k * k) as f64, "GMAC/s");
        }
    }

    // The stem: 3→32, 3×3, stride 2, 512² input, TF 'same' pads (0, 0, 1, 1).
    let (cin, cout, n) = (3, 32, 512);
    let x = data(cin * n * n, 4);
    let w = data(cout * cin * 9, 5);
    let b = data(cout, 6);
    let mut y = vec![0.0; cout * 256 * 256];
    let name = "stem 3→32 3x3 s2 @512² swish";
    for &isa in &isas {
        if !format!("{name} {isa:?}").contains(&filter) {
            continue;
        }
        let t = median(runs, || {
            let (k, s, p) = ([3, 3], [2, 2], [0, 0, 1, 1]);
            conv_dense(
                isa,
                par,
                black_box(&x),
                &w,
                &b,
                &mut y,
                cin,
                cout,
                n,
                n,
                k,
                s,
                p,
                Act::Swish,
            );
            black_box(&mut y);
        });
        row(name, isa, t, (cout * 256 * 256 * cin * 9) as f64, "GMAC/s");
    }

    // BiFPN nodes at 64 channels, 64²: bottom-up (two identities + 3×3 stride-2 max pool of
    // the 128² level) and top-down (identity + nearest 2× of the 32² level).
    let c = 64;
    let a = data(c * 64 * 64, 7);
    let b = data(c * 64 * 64, 8);
    let big = data(c * 128 * 128, 9);
    let small = data(c * 32 * 32, 10);
    let mut y = vec![0.0; c * 64 * 64];
    let pool = Sample::MaxPool {
        h: 128,
        w: 128,
        kernel: [3, 3],
        stride: [2, 2],
        pads: [0, 0, 1, 1],
    };
    type Node<'a> = (&'a str, Vec<(&'a [f32], Sample)>);
    let nodes: [Node; 2] = [
        (
            "fuse 3 in (id, id, maxpool 128²) 64ch @64² swish",
            vec![(&a, Sample::Identity), (&b, Sample::Identity), (&big, pool)],
        ),
        (
            "fuse 2 in (id, nearest 32²) 64ch @64² swish",
            vec![
                (&a, Sample::Identity),
                (&small, Sample::Nearest { h: 32, w: 32 }),
            ],
        ),
    ];
    for (name, inputs) in &nodes {
        let coef = [0.3, 0.5, 0.2];
        let bytes: usize = inputs.iter().map(|(x, _)| x.len()).sum::<usize>() + y.len();
        for &isa in &isas {
            if !format!("{name} {isa:?}").contains(&filter) {
                continue;
            }
            let t = median(runs, || {
                fuse(
                    isa,
                    par,
                    black_box(inputs),
                    &coef,
                    &mut y,
                    c,
                    64,
                    64,
                    Act::Swish,
                );
                black_box(&mut y);
            });
            row(name, isa, t, (bytes * 4) as f64, "GB/s");
        }
    }

    // Squeeze-excite in place (reads the map twice, writes it once).
    for &(c, n, r) in &[(96, 128, 4), (480, 32, 20), (1152, 16, 48)] {
        let name = format!("squeeze-excite {c}ch @{n}² r{r}");
        let mut x = data(c * n * n, 11);
        let (rw, rb) = (data(r * c, 12), data(r, 13));
        let (ew, eb) = (data(c * r, 14), data(c, 15));
        let mut scratch = vec![0.0; c + r];
        for &isa in &isas {
            if !format!("{name} {isa:?}").contains(&filter) {
                continue;
            }
            let t = median(runs, || {
                let x = black_box(&mut x[..]);
                ::effdet_runtime::with_isa!(isa, I => squeeze_excite::<I>(
                    par,
                    x,
                    c,
                    n * n,
                    &rw,
                    &rb,
                    &ew,
                    &eb,
                    Act::Swish,
                    &mut scratch,
                ));
            });
            row(&name, isa, t, (3 * c * n * n * 4) as f64, "GB/s");
        }
    }
}
