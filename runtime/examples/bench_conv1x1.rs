//! Micro-benchmark of the 1×1 convolution kernel on EfficientDet-D0's shapes.
//!
//! ```text
//! cargo run --release -p effdet-runtime --example bench_conv1x1 -- [options]
//!   --isa avx512|avx2|scalar|all   (default: all available)
//!   --threads N                    (default 1)
//!   --samples N                    (default 31; the median is reported)
//!   --tile r8v2|r4v4 --block N --group N   (override the kernel's plan)
//!   --res                          (also add a residual)
//!   --shape CIN,COUT,HW            (instead of the D0 list; repeatable)
//! ```
//!
//! Each sample times enough back-to-back calls to last ≥ 2 ms (hot caches, as in a model
//! where the producer just wrote `x`); the table shows the median GMAC/s of the samples and
//! the spread (min–max) so noise from other processes on the machine is visible.

use effdet_runtime::kernels::conv1x1::{self, Plan, Tile};
use effdet_runtime::kernels::{Act, Isa, Par};
use std::time::Instant;

/// D0 (512×512) 1×1 convolutions: (cin, cout, hw).
const D0: &[(usize, usize, usize)] = &[
    (16, 96, 256 * 256),
    (24, 144, 128 * 128),
    (40, 240, 64 * 64),
    (80, 480, 32 * 32),
    (112, 672, 32 * 32),
    (192, 1152, 16 * 16),
    (1152, 192, 16 * 16),
    (320, 64, 16 * 16),
    (64, 64, 64 * 64),
    (64, 810, 64 * 64),
    (64, 36, 64 * 64),
];

/// One core's fp32 FMA peak here: 16 lanes × ~3.67 GHz.
const PEAK: f64 = 58.7;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut isas = Isa::available();
    let mut threads = 1;
    let mut samples = 31;
    let mut tile = None;
    let mut block = None;
    let mut group = None;
    let mut with_res = false;
    let mut shapes = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let val = |i: usize| {
            args.get(i + 1)
                .unwrap_or_else(|| panic!("{} needs a value", args[i]))
        };
        match args[i].as_str() {
            "--isa" => {
                isas = match val(i).as_str() {
                    "avx512" => vec![Isa::Avx512],
                    "avx2" => vec![Isa::Avx2],
                    "scalar" => vec![Isa::Scalar],
                    "all" => Isa::available(),
                    s => panic!("unknown isa {s}"),
                };
                isas.retain(|i| Isa::available().contains(i));
            }
            "--threads" => threads = val(i).parse().expect("--threads N"),
            "--samples" => samples = val(i).parse().expect("--samples N"),
            "--tile" => {
                tile = Some(match val(i).as_str() {
                    "r8v2" => Tile::R8V2,
                    "r4v4" => Tile::R4V4,
                    s => panic!("unknown tile {s}"),
                })
            }
            "--block" => block = Some(val(i).parse().expect("--block N")),
            "--group" => group = Some(val(i).parse().expect("--group N")),
            "--shape" => {
                let v: Vec<usize> = val(i)
                    .split(',')
                    .map(|s| s.parse().expect("--shape CIN,COUT,HW"))
                    .collect();
                assert_eq!(v.len(), 3, "--shape CIN,COUT,HW");
                shapes.push((v[0], v[1], v[2]));
            }
            "--res" => {
                with_res = true;
                i -= 1;
            }
            s => panic!("unknown argument {s}"),
        }
        i += 2;
    }
    if shapes.is_empty() {
        shapes = D0.to_vec();
    }
    samples = samples.max(1);

    println!(
        "conv1x1, {threads} thread(s), median of {samples} samples, GMAC/s (peak ~{PEAK} per core){}",
        if with_res { ", with residual" } else { "" }
    );
    print!("{:<22}", "cin→cout @ hw");
    for isa in &isas {
        for act in ["none", "swish"] {
            print!(" {:>20}", format!("{isa:?} {act}"));
        }
    }
    println!();
    for &(cin, cout, hw) in &shapes {
        let side = (hw as f64).sqrt() as usize;
        let name = if side * side == hw {
            format!("{cin}→{cout} @ {side}²")
        } else {
            format!("{cin}→{cout} @ {hw}")
        };
        print!("{name:<22}");
        let x: Vec<f32> = (0..cin * hw)
            .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
            .collect();
        let w: Vec<f32> = (0..cout * cin)
            .map(|i| ((i * 104_729) % 997) as f32 * 1e-3 - 0.5)
            .collect();
        let wp = conv1x1::pack(&w, cout, cin);
        let bias: Vec<f32> = (0..cout).map(|i| i as f32 * 1e-3).collect();
        let res = with_res.then(|| vec![0.25f32; cout * hw]);
        let mut y = vec![0.0f32; cout * hw];
        let macs = (cin * cout * hw) as f64;
        for &isa in &isas {
            for act in [Act::None, Act::Swish] {
                let mut plan = Plan::new(isa, cin, cout, hw, threads);
                if let Some(t) = tile {
                    plan.tile = t;
                }
                if let Some(b) = block {
                    plan.block = b;
                }
                if let Some(g) = group {
                    plan.group = g;
                }
                let mut run = || {
                    conv1x1::conv1x1_planned(
                        isa,
                        Par::new(threads),
                        &x,
                        &wp,
                        &bias,
                        res.as_deref(),
                        &mut y,
                        cin,
                        cout,
                        hw,
                        act,
                        plan,
                    )
                };
                // Warm up, and size a sample to ≥ 2 ms.
                let t = Instant::now();
                run();
                run();
                let once = t.elapsed().as_secs_f64() / 2.0;
                let reps = ((2e-3 / once).ceil() as usize).max(1);
                let mut rates: Vec<f64> = (0..samples)
                    .map(|_| {
                        let t = Instant::now();
                        for _ in 0..reps {
                            run();
                        }
                        macs * reps as f64 / t.elapsed().as_secs_f64() / 1e9
                    })
                    .collect();
                rates.sort_by(f64::total_cmp);
                let med = rates[rates.len() / 2];
                print!(
                    " {:>20}",
                    format!("{med:5.1} ({:.0}–{:.0})", rates[0], rates[rates.len() - 1])
                );
            }
        }
        std::hint::black_box(&y);
        println!();
    }
}
