//! Golden tests of the fusion passes on whole models: the fused graph against the unfused one
//! and against the reference outputs, on the interpreter, plus the op histograms the passes
//! must reach.
//!
//! Tolerance, per output tensor: against the fixture and on its weights, effdet's rule
//! `max |ours − ref| ≤ 1e-4 · max(1, max |ref − mean(ref)|)`; on random weights, 1e-4
//! relative to the tensor's largest magnitude. Run with `--nocapture` to see the measured
//! errors.

#[path = "../../tests/compare.rs"]
mod compare;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use effdet_compiler::interp::{self, Tensor};
use effdet_compiler::ir::{Graph, Op};
use effdet_compiler::model::{self, LoadOptions};
use effdet_compiler::passes::{self, PassSet};
use effdet_compiler::{npy, onnx, spec, weights};

mod common;
use common::root;

fn fixture() -> PathBuf {
    root().join("../shared/fixtures/tf_efficientdet_d0")
}

fn load_spec(name: &str) -> Graph {
    let path = root().join("specs").join(name);
    model::load(&path, &LoadOptions::default()).unwrap().graph
}

/// A spec with its input size replaced (the big variants' structure at a size the
/// interpreter runs in seconds).
fn load_spec_at(name: &str, from: &str, to: &str) -> Graph {
    let path = root().join("specs").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{name} has no `{from}`");
    let loaded = spec::parse(&path, text.replace(from, to).as_bytes()).unwrap();
    let arch = spec::resolve::resolve(&loaded.spec);
    spec::lower::lower(&arch, 1).unwrap()
}

fn histogram(g: &Graph) -> BTreeMap<&'static str, usize> {
    g.op_counts()
}

fn fused(g: &Graph) -> Graph {
    let mut f = g.clone();
    let start = std::time::Instant::now();
    let report = passes::run(&mut f, &PassSet::all()).unwrap();
    assert!(report.converged, "{report:?}");
    eprintln!(
        "{}: {} rounds in {:.0} ms, {:?}",
        g.name,
        report.rounds,
        start.elapsed().as_secs_f64() * 1e3,
        report.rewrites
    );
    f
}

/// Deterministic weights with sane statistics: conv weights with variance `1/fan_in`, BN like
/// the fixture's (scale and variance around 1, small mean and shift), fusion weights in
/// (0.1, 2).
fn bind_random(g: &mut Graph, seed: u64) {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut uniform = move |lo: f32, hi: f32| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        lo + (hi - lo) * ((state >> 40) as f32 / (1u64 << 24) as f32)
    };
    let mut ranges: Vec<(f32, f32)> = vec![(-1.0, 1.0); g.params.len()];
    for n in g.graph.node_weights() {
        match &n.op {
            Op::Conv2d(c) => {
                let s = &g.params[c.weight.0].shape;
                let a = (3.0 / s[1..].iter().product::<usize>() as f32).sqrt();
                ranges[c.weight.0] = (-a, a);
                if let Some(b) = c.bias {
                    ranges[b.0] = (-0.1, 0.1);
                }
            }
            Op::BatchNorm(b) => {
                ranges[b.gamma.0] = (0.5, 1.5);
                ranges[b.beta.0] = (-0.1, 0.1);
                ranges[b.mean.0] = (-0.1, 0.1);
                ranges[b.var.0] = (0.5, 1.5);
            }
            Op::WeightedSum {
                weights: Some(w), ..
            } => ranges[w.0] = (0.1, 2.0),
            _ => {}
        }
    }
    for (p, (lo, hi)) in g.params.iter_mut().zip(ranges) {
        let v: Vec<f32> = (0..p.len()).map(|_| uniform(lo, hi)).collect();
        p.data = Some(Arc::from(v));
    }
}

fn input_for(g: &Graph, seed: u64) -> Tensor {
    let shape = g.input_shape().unwrap().to_vec();
    let mut state = seed | 1;
    let data = (0..shape.iter().product::<usize>())
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect();
    Tensor::new(shape, data)
}

/// How close two outputs must be.
#[derive(Clone, Copy)]
enum Tolerance {
    /// The fixtures' rule: `1e-4 · max(1, max |ref − mean(ref)|)`.
    Golden,
    /// `1e-4 · max |ref|`: for random weights, whose outputs need not be O(1).
    Relative,
}

/// `(max |a − b|, scale)`: the error and what the tolerance `1e-4 · scale` is taken from.
fn error(a: &[f32], b: &[f32], tol: Tolerance) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let scale = match tol {
        Tolerance::Golden => compare::spread(b) as f32,
        // NaN-proof too: a NaN in the reference makes the scale NaN and the check fail.
        Tolerance::Relative => b.iter().map(|v| v.abs()).fold(0f32, |m, v| {
            if v.is_nan() || m.is_nan() {
                f32::NAN
            } else {
                m.max(v)
            }
        }),
    };
    (compare::max_error(a, b) as f32, scale)
}

/// Asserts every output of `ours` is within `1e-4 · scale` of `reference` and prints the
/// largest `error / scale`.
fn compare(what: &str, ours: &[(String, Tensor)], reference: &[(String, Tensor)], tol: Tolerance) {
    assert_eq!(ours.len(), reference.len());
    let mut worst = 0f32;
    for ((name, t), (rname, r)) in ours.iter().zip(reference) {
        assert_eq!((name, &t.shape), (rname, &r.shape));
        let (err, scale) = error(&t.data, &r.data, tol);
        assert!(
            err <= 1e-4 * scale,
            "{what}: {name}: max error {err:e} > 1e-4 · {scale:e}"
        );
        worst = worst.max(err / scale);
    }
    eprintln!("{what}: max error / scale {worst:.2e} (limit 1e-4)");
}

fn reference_outputs(names: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    names
        .iter()
        .map(|(n, t)| {
            let r = npy::read_f32(&fixture().join(format!("{n}.npy")), &t.shape).unwrap();
            (n.clone(), r)
        })
        .collect()
}

fn fixture_input() -> Tensor {
    npy::read_f32(&fixture().join("input.npy"), &[1, 3, 512, 512]).unwrap()
}

/// D0 after all passes: no BN, activation, add, resize, pad or weighted sum left. Of the 134
/// dense convs, the 32 squeeze-excite convs went into the 16 `squeeze_excite`; the two
/// max pools that stay make P6 → P7 and P5 → P6 above the backbone, whose outputs several
/// BiFPN nodes read.
fn d0_fused_histogram() -> BTreeMap<&'static str, usize> {
    BTreeMap::from([
        ("conv", 102),
        ("depthwise_conv", 80),
        ("fused_sum", 24),
        ("input", 1),
        ("max_pool", 2),
        ("squeeze_excite", 16),
    ])
}

#[test]
fn d0_spec_fused_unfused_and_reference_agree() {
    let mut g = load_spec("d0.yaml");
    assert_eq!(
        histogram(&g),
        BTreeMap::from([
            ("add", 9),
            ("batch_norm", 108),
            ("conv", 134),
            ("depthwise_conv", 80),
            ("global_avg_pool", 16),
            ("input", 1),
            ("max_pool", 14),
            ("mul", 16),
            ("resize_nearest", 12),
            ("sigmoid", 16),
            ("swish", 102),
            ("weighted_sum", 24),
        ])
    );
    weights::bind_safetensors(&mut g, &fixture().join("weights.safetensors")).unwrap();
    let f = fused(&g);
    assert_eq!(histogram(&f), d0_fused_histogram());
    assert_eq!(
        f.macs(),
        g.macs(),
        "squeeze-excite MACs count as before fusion"
    );
    assert!(f.params.iter().all(|p| p.data.is_some()));

    let x = fixture_input();
    let unfused_out = interp::run(&g, std::slice::from_ref(&x)).unwrap();
    let fused_out = interp::run(&f, &[x]).unwrap();
    let reference = reference_outputs(&unfused_out);
    compare(
        "d0 spec unfused vs reference",
        &unfused_out,
        &reference,
        Tolerance::Golden,
    );
    compare(
        "d0 spec fused vs reference",
        &fused_out,
        &reference,
        Tolerance::Golden,
    );
    compare(
        "d0 spec fused vs unfused",
        &fused_out,
        &unfused_out,
        Tolerance::Golden,
    );
}

/// Every spec fuses without weights (what `inspect` does), to the same structure as with
/// weights, with nothing left that a pass should have taken.
#[test]
fn every_spec_fuses_structurally() {
    let mut names: Vec<_> = std::fs::read_dir(root().join("specs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    assert!(names.len() >= 15, "{names:?}");
    for name in names {
        let g = load_spec(&name);
        let f = fused(&g);
        let h = histogram(&f);
        for gone in [
            "batch_norm",
            "weighted_sum",
            "global_avg_pool",
            "add",
            "mul",
            "sigmoid",
            "swish",
            "relu6",
            "resize_nearest",
        ] {
            assert!(!h.contains_key(gone), "{name}: {gone} left in {h:?}");
        }
        assert_eq!(f.macs(), g.macs(), "{name}");
        assert_eq!(f.outputs.len(), g.outputs.len(), "{name}");
        if name == "d0.yaml" {
            assert_eq!(h, d0_fused_histogram());
        }
    }
}

/// Lite0 (relu6, no squeeze-excite, plain-sum fusion, a 3×3 P7 upsampled to 5×5) with random
/// weights.
#[test]
fn lite0_fused_matches_unfused() {
    let mut g = load_spec("lite0.yaml");
    bind_random(&mut g, 1);
    let f = fused(&g);
    let h = histogram(&f);
    assert!(
        !h.contains_key("squeeze_excite") && h["fused_sum"] == 24,
        "{h:?}"
    );
    let x = input_for(&g, 2);
    let a = interp::run(&g, std::slice::from_ref(&x)).unwrap();
    let b = interp::run(&f, &[x]).unwrap();
    compare("lite0 fused vs unfused", &b, &a, Tolerance::Relative);
}

/// D7x's structure (levels 3..8, 8 cells, plain-sum fusion, 5 head repeats) with random
/// weights, at 256×256 instead of 1536×1536 so the interpreter takes seconds.
#[test]
fn d7x_fused_matches_unfused() {
    let mut g = load_spec_at(
        "d7x.yaml",
        "image_size: [1536, 1536]",
        "image_size: [256, 256]",
    );
    bind_random(&mut g, 3);
    let f = fused(&g);
    let h = histogram(&f);
    assert_eq!(h["fused_sum"], 8 * 10, "{h:?}");
    assert_eq!(h["squeeze_excite"], g.op_counts()["global_avg_pool"]);
    let x = input_for(&g, 4);
    let a = interp::run(&g, std::slice::from_ref(&x)).unwrap();
    let b = interp::run(&f, &[x]).unwrap();
    assert_eq!(a.len(), 12);
    compare("d7x@256 fused vs unfused", &b, &a, Tolerance::Relative);
}

/// The fixture's ONNX export (BN pre-folded, constant pads, exported swish, the BiFPN as
/// scaled stack-and-sum): fused, it is the same graph as the fused spec, and it matches.
#[test]
fn d0_onnx_fused_unfused_and_reference_agree() {
    let g = onnx::import(&fixture().join("model.onnx"), None).unwrap();
    let f = fused(&g);
    assert_eq!(histogram(&f), d0_fused_histogram());
    assert_eq!(f.macs(), g.macs());
    let x = fixture_input();
    let unfused_out = interp::run(&g, std::slice::from_ref(&x)).unwrap();
    let fused_out = interp::run(&f, &[x]).unwrap();
    let reference = reference_outputs(&unfused_out);
    compare(
        "d0 onnx unfused vs reference",
        &unfused_out,
        &reference,
        Tolerance::Golden,
    );
    compare(
        "d0 onnx fused vs reference",
        &fused_out,
        &reference,
        Tolerance::Golden,
    );
    compare(
        "d0 onnx fused vs unfused",
        &fused_out,
        &unfused_out,
        Tolerance::Golden,
    );
}
