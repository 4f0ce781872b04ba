//! Helpers shared by the ONNX integration tests: npy reading and the fixture tolerance.

use std::path::Path;

use effdet_compiler::interp::Tensor;

/// Reads an f32 `.npy` file.
pub fn read_npy(path: &Path) -> Tensor {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).expect("npy header");
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    Tensor::new(shape, npy.into_vec::<f32>().expect("f32 data"))
}

/// The tolerance: `1e-4 · max(1, max |ref − mean(ref)|)`.
pub fn tolerance(reference: &[f32]) -> f32 {
    let mean = reference.iter().map(|&v| v as f64).sum::<f64>() / reference.len().max(1) as f64;
    let spread = reference
        .iter()
        .map(|&v| (v as f64 - mean).abs())
        .fold(0.0, f64::max);
    (1e-4 * spread.max(1.0)) as f32
}

/// Max |ours − ref| of one output, after checking the shapes agree.
pub fn max_error(name: &str, ours: &Tensor, reference: &Tensor) -> f32 {
    assert_eq!(ours.shape, reference.shape, "{name}: shape");
    ours.data
        .iter()
        .zip(&reference.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

/// Runs `graph` on `input` and checks every output against `dir/<prefix><output>.npy`;
/// returns `(name, max error, tolerance)` per output.
pub fn check_outputs(
    graph: &effdet_compiler::ir::Graph,
    input: Tensor,
    dir: &Path,
    prefix: &str,
) -> Vec<(String, f32, f32)> {
    let outputs = effdet_compiler::interp::run(graph, &[input]).expect("run");
    let mut report = Vec::new();
    for (name, ours) in &outputs {
        let reference = read_npy(&dir.join(format!("{prefix}{name}.npy")));
        let err = max_error(name, ours, &reference);
        let tol = tolerance(&reference.data);
        eprintln!("{prefix}{name}: max error {err:.3e} (tolerance {tol:.1e})");
        report.push((name.clone(), err, tol));
    }
    for (name, err, tol) in &report {
        assert!(
            err <= tol,
            "{prefix}{name}: max error {err} > tolerance {tol}"
        );
    }
    report
}
