//! Shared helpers of the end-to-end golden tests: fixture paths, `.npy` reading and the
//! tolerance the issues state, `max |ours − ref| ≤ 1e-4 · max(1, max |ref − mean(ref)|)`.

use std::path::{Path, PathBuf};

/// The golden data of one reference model; fails loudly when CI lacks it.
pub fn fixture_dir(model: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures")
        .join(model);
    assert!(dir.is_dir(), "golden fixtures missing at {}", dir.display());
    dir
}

/// Reads an f32 `.npy` file: (shape, data).
pub fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(std::io::BufReader::new(file)).expect("valid .npy");
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    (shape, npy.into_vec().expect("f32 data"))
}

/// Writes an f32 `.npy` file.
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) {
    use npyz::WriterBuilder;
    assert_eq!(
        shape.iter().product::<usize>(),
        data.len(),
        "{}",
        path.display()
    );
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let file = std::io::BufWriter::new(std::fs::File::create(path).expect("create .npy"));
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(file)
        .begin_nd()
        .expect("npy header");
    w.extend(data.iter().copied()).expect("npy data");
    w.finish().expect("npy written");
}

#[path = "compare.rs"]
mod compare;
pub use compare::{max_error, spread, tolerance, within};

/// Asserts `ours` matches `reference` within [`tolerance`]; returns the error.
pub fn assert_close(name: &str, ours: &[f32], reference: &[f32]) -> f64 {
    let err = max_error(ours, reference);
    let tol = tolerance(reference);
    assert!(
        err <= tol,
        "{name}: max error {err:e} exceeds tolerance {tol:e}"
    );
    err
}

#[cfg(test)]
mod tests {
    #[test]
    #[should_panic(expected = "exceeds tolerance")]
    fn an_all_nan_output_fails() {
        super::assert_close("nan", &[f32::NAN; 4], &[0.0; 4]);
    }

    #[test]
    #[should_panic(expected = "exceeds tolerance")]
    fn a_nan_reference_fails() {
        super::assert_close("nan", &[0.0; 4], &[0.0, f32::NAN, 0.0, 0.0]);
    }
}
