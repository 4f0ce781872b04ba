//! Micro-benchmark of the fused separable conv (`separable::depthwise_pointwise_fixed`)
//! against its two kernels one after the other (depthwise, then the 1×1 conv), on the
//! heads' and BiFPN's shapes of D0, Lite0 and D3, samples of the two interleaved so both
//! see the same noise.
//!
//! `cargo run --release -p effdet-compiler --example bench_separable [-- SAMPLES [THREADS]]`
//!
//! Prints per shape the median time of each (ms) and the median of the fused/separate
//! ratios.

use std::time::Instant;

use effdet_compiler::kernels::conv1x1::{conv1x1, pack};
use effdet_compiler::kernels::depthwise::{depthwise, route};
use effdet_compiler::kernels::separable::depthwise_pointwise_fixed;
use effdet_runtime::kernels::act::code;
use effdet_runtime::kernels::{Act, Isa, Pool};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let samples: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(31);
    let threads: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let pool = Pool::new(threads);
    let isa = Isa::detect();
    println!(
        "separable conv (3×3 depthwise → 1×1), {isa:?}, {threads} thread(s), median of {samples}"
    );
    println!("| c → cout @ plane | separate ms | fused ms | fused / separate |");
    println!("|---|---:|---:|---:|");
    // (c, cout, h = w): D0 P3/P4, Lite0 P3, D3 P3/P4 heads, a class predict conv.
    for (c, cout, hw) in [
        (64, 64, 64),
        (64, 64, 32),
        (64, 64, 40),
        (160, 160, 112),
        (160, 160, 56),
        (64, 810, 64),
    ] {
        let n = c * hw * hw;
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let wd: Vec<f32> = (0..c * 9).map(|i| (i % 9) as f32 / 9.0 - 0.4).collect();
        let bd = vec![0.01; c];
        let wp = pack(
            &(0..c * cout)
                .map(|i| ((i * 31) % 97) as f32 / 970.0 - 0.05)
                .collect::<Vec<_>>(),
            cout,
            c,
        );
        let bp = vec![0.02; cout];
        let mut d = vec![0.0; n];
        let mut y = vec![0.0; cout * hw * hw];
        let pads = [1; 4];
        let r = route(
            c,
            effdet_compiler::kernels::separable::band_rows(c, hw, hw),
            hw,
            3,
            1,
        );
        let separate = |y: &mut [f32], d: &mut [f32]| {
            depthwise(
                isa,
                pool.par(),
                &x,
                &wd,
                &bd,
                d,
                c,
                hw,
                hw,
                3,
                1,
                pads,
                Act::None,
            );
            conv1x1(
                isa,
                pool.par(),
                d,
                &wp,
                &bp,
                None,
                y,
                c,
                cout,
                hw * hw,
                Act::Swish,
            );
        };
        let fused = |y: &mut [f32]| {
            macro_rules! with_route {
                ($($r:expr),*) => {
                    match r {
                        $(x_ if x_ == $r => ::effdet_runtime::with_isa!(isa, I => depthwise_pointwise_fixed::<
                                3, 1, { code::NONE }, { code::SWISH }, { $r }, 0, 0, 0, 0, 0, I,
                            >(
                                pool.par(), &x, &wd, &bd, Act::None, &wp, &bp, Act::Swish, None, y,
                            c, cout, hw, hw, 3, 1, pads,
                        )),)*
                        _ => ::effdet_runtime::with_isa!(isa, I => depthwise_pointwise_fixed::<
                                3, 1, { code::NONE }, { code::SWISH }, { route::AUTO }, 0, 0, 0, 0, 0, I,
                            >(
                                pool.par(), &x, &wd, &bd, Act::None, &wp, &bp, Act::Swish, None, y,
                            c, cout, hw, hw, 3, 1, pads,
                        )),
                    }
                };
            }
            with_route!(
                route::ROWS,
                route::TALL_512 | route::TALL_NEON,
                route::TALL_NEON
            )
        };
        for _ in 0..3 {
            separate(&mut y, &mut d);
            fused(&mut y);
        }
        let (mut a, mut b, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..samples {
            let t = Instant::now();
            separate(&mut y, &mut d);
            let ta = t.elapsed().as_secs_f64();
            let t = Instant::now();
            fused(&mut y);
            let tb = t.elapsed().as_secs_f64();
            assert!(y.iter().all(|v| v.is_finite()));
            a.push(ta);
            b.push(tb);
            ratio.push(tb / ta);
        }
        println!(
            "| {c} → {cout} @ {hw}² | {:.3} | {:.3} | {:.2} |",
            median(&mut a) * 1e3,
            median(&mut b) * 1e3,
            median(&mut ratio)
        );
    }
}
