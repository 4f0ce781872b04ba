//! Micro-benchmark of the 1×1 convolution kernel on EfficientDet-D0's shapes.
//!
//! ```text
//! cargo run --release -p effdet-compiler --example bench_conv1x1 -- [options]
//!   --isa avx512|avx2|scalar|all   (default: all available)
//!   --threads N                    (default 1)
//!   --samples N                    (default 31; the median is reported)
//!   --tile r8v1|r4v2 (AVX2; AVX-512 and NEON have 8×2 only) --block N --group N
//!   --pack on|off                  (override the kernel's plan)
//!   --ab tile|pack                 (A/B: the plan as is vs. with that setting changed,
//!                                   samples interleaved so both see the same noise)
//!   --res                          (also add a residual)
//!   --consume                      (read the output after each call, as the next layer
//!                                   would; the time includes that read)
//!   --shape CIN,COUT,HW            (instead of the D0 list; repeatable)
//!   --acts                         (instead: activation throughput, `apply_slice` in L1)
//! ```
//!
//! Each sample times enough back-to-back calls to last ≥ 2 ms (hot caches, as in a model
//! where the producer just wrote `x`); the table shows the median GMAC/s of the samples and
//! their range (min–max), so noise from other processes on the machine is visible.

use effdet_compiler::kernels::conv1x1::{self, Plan, Tile};
use effdet_runtime::kernels::{Act, Isa, Pool};
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

#[derive(Default)]
struct Opts {
    isas: Vec<Isa>,
    threads: usize,
    samples: usize,
    tile: Option<Tile>,
    block: Option<usize>,
    group: Option<usize>,
    pack: Option<bool>,
    ab: Option<String>,
    with_res: bool,
    consume: bool,
    acts: bool,
    shapes: Vec<(usize, usize, usize)>,
}

fn parse() -> Opts {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut o = Opts {
        isas: Isa::available(),
        threads: 1,
        samples: 31,
        ..Opts::default()
    };
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        let mut val = || {
            i += 1;
            args.get(i)
                .unwrap_or_else(|| panic!("{flag} needs a value"))
                .as_str()
        };
        match flag {
            "--isa" => {
                o.isas = match val() {
                    "avx512" => vec![Isa::Avx512],
                    "avx2" => vec![Isa::Avx2],
                    "scalar" => vec![Isa::Scalar],
                    "all" => Isa::available(),
                    s => panic!("unknown isa {s}"),
                };
                o.isas.retain(|i| Isa::available().contains(i));
            }
            "--threads" => o.threads = val().parse().expect("--threads N"),
            "--samples" => o.samples = val().parse().expect("--samples N"),
            "--tile" => {
                o.tile = Some(match val() {
                    "r8v2" => Tile::R8V2,
                    "r8v1" => Tile::R8V1,
                    "r4v2" => Tile::R4V2,
                    s => panic!("unknown tile {s}"),
                })
            }
            "--block" => o.block = Some(val().parse().expect("--block N")),
            "--group" => o.group = Some(val().parse().expect("--group N")),
            "--pack" => o.pack = Some(val() == "on"),
            "--ab" => o.ab = Some(val().to_string()),
            "--shape" => {
                let v: Vec<usize> = val()
                    .split(',')
                    .map(|s| s.parse().expect("--shape CIN,COUT,HW"))
                    .collect();
                assert_eq!(v.len(), 3, "--shape CIN,COUT,HW");
                o.shapes.push((v[0], v[1], v[2]));
            }
            "--consume" => o.consume = true,
            "--res" => o.with_res = true,
            "--acts" => o.acts = true,
            s => panic!("unknown argument {s}"),
        }
        i += 1;
    }
    if o.shapes.is_empty() {
        o.shapes = D0.to_vec();
    }
    o.samples = o.samples.max(1);
    o
}

/// The plan for a shape with the command line's overrides.
fn plan(o: &Opts, isa: Isa, cin: usize, cout: usize, hw: usize) -> Plan {
    let mut p = Plan::new(isa, cin, cout, hw, o.threads);
    p.tile = o.tile.unwrap_or(p.tile);
    p.block = o.block.unwrap_or(p.block);
    p.group = o.group.unwrap_or(p.group);
    p.pack_x = o.pack.unwrap_or(p.pack_x);
    p
}

/// The A/B alternative of a plan.
fn alternative(isa: Isa, p: Plan, what: &str) -> Plan {
    let mut b = p;
    match what {
        "tile" => {
            b.tile = match (isa, p.tile) {
                (Isa::Avx2, Tile::R4V2) => Tile::R8V1,
                (Isa::Avx2, _) => Tile::R4V2,
                _ => panic!("--ab tile: only AVX2 has two tiles"),
            }
        }
        "pack" => b.pack_x = !p.pack_x,
        s => panic!("--ab {s}: expected tile or pack"),
    }
    b
}

/// `len` floats starting on a 64-byte boundary.
struct Aligned {
    buf: Vec<f32>,
    off: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let buf = vec![0.0f32; len + 16];
        let off = buf.as_ptr().align_offset(64);
        Aligned { buf, off, len }
    }
    fn get(&self) -> &[f32] {
        &self.buf[self.off..][..self.len]
    }
    fn get_mut(&mut self) -> &mut [f32] {
        &mut self.buf[self.off..][..self.len]
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Throughput of `apply_slice` on an L1-resident buffer, in elements per ns.
fn bench_acts(o: &Opts) {
    let acts = [
        Act::Relu,
        Act::Relu6,
        Act::HardSwish,
        Act::Sigmoid,
        Act::Swish,
    ];
    println!(
        "apply_slice on 4096 floats (L1), median of {} samples: elements/ns",
        o.samples
    );
    print!("{:<10}", "");
    for act in &acts {
        print!(" {:>10}", format!("{act:?}"));
    }
    println!();
    let src: Vec<f32> = (0..4096).map(|i| (i as f32 - 2048.0) * 0.01).collect();
    for &isa in &o.isas {
        print!("{:<10}", format!("{isa:?}"));
        for &act in &acts {
            let mut buf = src.clone();
            let reps = 200;
            let mut rates: Vec<f64> = (0..o.samples)
                .map(|_| {
                    let t = Instant::now();
                    for _ in 0..reps {
                        buf.copy_from_slice(&src);
                        effdet_compiler::kernels::activation::apply_slice(isa, act, &mut buf);
                    }
                    (reps * buf.len()) as f64 / t.elapsed().as_secs_f64() / 1e9
                })
                .collect();
            print!(" {:>10.2}", median(&mut rates));
        }
        println!();
    }
}

fn main() {
    let o = parse();
    let pool = Pool::new(o.threads);
    if o.acts {
        return bench_acts(&o);
    }
    println!(
        "conv1x1, {} thread(s), median of {} samples, GMAC/s (peak ~{PEAK} per core){}{}",
        o.threads,
        o.samples,
        if o.with_res { ", with residual" } else { "" },
        match &o.ab {
            Some(w) => format!("; A/B on {w}: A, B and the median of the B/A ratios"),
            None => String::new(),
        }
    );
    print!("{:<22}", "cin→cout @ hw");
    for isa in &o.isas {
        for act in ["none", "swish"] {
            print!(" {:>20}", format!("{isa:?} {act}"));
        }
    }
    println!();
    for &(cin, cout, hw) in &o.shapes {
        let side = (hw as f64).sqrt() as usize;
        let name = if side * side == hw {
            format!("{cin}→{cout} @ {side}²")
        } else {
            format!("{cin}→{cout} @ {hw}")
        };
        print!("{name:<22}");
        // Activations 64-byte aligned, as in the generated code's arena (a misaligned plane
        // splits every AVX-512 load over two cache lines).
        let mut xbuf = Aligned::new(cin * hw);
        for (i, v) in xbuf.get_mut().iter_mut().enumerate() {
            *v = ((i * 7919) % 1000) as f32 * 1e-3 - 0.5;
        }
        let x = xbuf.get();
        let w: Vec<f32> = (0..cout * cin)
            .map(|i| ((i * 104_729) % 997) as f32 * 1e-3 - 0.5)
            .collect();
        let wp = conv1x1::pack(&w, cout, cin);
        let bias: Vec<f32> = (0..cout).map(|i| i as f32 * 1e-3).collect();
        let mut rbuf = Aligned::new(if o.with_res { cout * hw } else { 0 });
        rbuf.get_mut().fill(0.25);
        let res = o.with_res.then(|| rbuf.get());
        let mut ybuf = Aligned::new(cout * hw);
        let y = ybuf.get_mut();
        let macs = (cin * cout * hw) as f64;
        for &isa in &o.isas {
            for act in [Act::None, Act::Swish] {
                let a = plan(&o, isa, cin, cout, hw);
                let mut plans = vec![a];
                if let Some(what) = &o.ab {
                    plans.push(alternative(isa, a, what));
                }
                let mut run = |p: Plan| {
                    conv1x1::conv1x1_planned(
                        isa,
                        pool.par(),
                        x,
                        &wp,
                        &bias,
                        res,
                        y,
                        cin,
                        cout,
                        hw,
                        act,
                        p,
                    );
                    if o.consume {
                        // The next layer reads the output once.
                        let mut acc = [0.0f32; 32];
                        for c in y.chunks_exact(32) {
                            for (a, v) in acc.iter_mut().zip(c) {
                                *a += v;
                            }
                        }
                        std::hint::black_box(acc);
                    }
                };
                // Warm up, and size a sample to ≥ 2 ms.
                let t = Instant::now();
                run(a);
                run(a);
                let once = t.elapsed().as_secs_f64() / 2.0;
                let reps = ((2e-3 / once).ceil() as usize).max(1);
                let mut rates = vec![Vec::new(); plans.len()];
                for _ in 0..o.samples {
                    for (p, r) in plans.iter().zip(&mut rates) {
                        let t = Instant::now();
                        for _ in 0..reps {
                            run(*p);
                        }
                        r.push(macs * reps as f64 / t.elapsed().as_secs_f64() / 1e9);
                    }
                }
                let cell = if plans.len() == 2 {
                    let mut ratio: Vec<f64> =
                        rates[1].iter().zip(&rates[0]).map(|(b, a)| b / a).collect();
                    format!(
                        "{:.0}/{:.0} {:.2}",
                        median(&mut rates[0]),
                        median(&mut rates[1]),
                        median(&mut ratio)
                    )
                } else {
                    let r = &mut rates[0];
                    let med = median(r);
                    format!("{med:5.1} ({:.0}–{:.0})", r[0], r[r.len() - 1])
                };
                print!(" {cell:>20}");
            }
        }
        std::hint::black_box(&y[0]);
        println!();
    }
}
