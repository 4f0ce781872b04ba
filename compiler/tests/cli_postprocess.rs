//! `effdetc postprocess` against the reference implementation's detections.

use std::path::{Path, PathBuf};

mod common;
use common::effdetc;

fn fixtures() -> PathBuf {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/tf_efficientdet_d0");
    assert!(dir.is_dir(), "golden fixtures missing at {}", dir.display());
    dir
}

fn read_rows(path: &Path) -> (Vec<u64>, Vec<f32>) {
    let f = npyz::NpyFile::new(std::fs::File::open(path).unwrap()).unwrap();
    let shape = f.shape().to_vec();
    (shape, f.into_vec().unwrap())
}

#[test]
fn reproduces_the_reference_detections() {
    let fx = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("D.npy");
    let o = effdetc(&[
        "postprocess",
        "specs/d0.yaml",
        "--outputs-dir",
        fx.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (shape, ours) = read_rows(&out);
    let (_, reference) = read_rows(&fx.join("detections.npy"));
    assert_eq!(shape[1], 6);
    assert!(shape[0] <= 100);
    let ours: Vec<&[f32]> = ours.chunks(6).collect();
    let matched = reference
        .chunks(6)
        .filter(|r| {
            ours.iter().any(|o| {
                o[5] == r[5]
                    && (o[4] - r[4]).abs() <= 1e-5
                    && (0..4).all(|k| (o[k] - r[k]).abs() <= 1e-3)
            })
        })
        .count();
    assert!(
        matched == 100,
        "only {matched} of 100 reference rows matched"
    );

    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("--json prints JSON");
    let items = json.as_array().unwrap();
    assert_eq!(items.len(), ours.len());
    let first = &items[0];
    assert_eq!(first["bbox"].as_array().unwrap().len(), 4);
    assert!(first["score"].as_f64().unwrap() > 0.0);
    let class = first["class"].as_u64().unwrap();
    assert_eq!(class as f32, ours[0][5]);
    assert!(first["label"].is_string());
}

#[test]
fn score_threshold_and_bad_inputs() {
    let fx = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("D.npy");
    let o = effdetc(&[
        "postprocess",
        "specs/d0.yaml",
        "--outputs-dir",
        fx.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--score-threshold",
        "0.013646",
    ]);
    assert!(o.status.success());
    let (shape, rows) = read_rows(&out);
    assert!(shape[0] > 0 && shape[0] < 100, "the reference scores spread over 0.013644..0.013657: the threshold keeps only the top part");
    assert!(rows.chunks(6).all(|r| r[4] >= 0.013646));

    // An empty directory: names the missing file.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = effdetc(&[
        "postprocess",
        "specs/d0.yaml",
        "--outputs-dir",
        empty.to_str().unwrap(),
        "--out",
        "x.npy",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("class_P3.npy") && !err.contains("panicked"),
        "{err}"
    );
    // Outputs of another variant: the shape error names the file.
    let o = effdetc(&[
        "postprocess",
        "specs/d1.yaml",
        "--outputs-dir",
        fx.to_str().unwrap(),
        "--out",
        "x.npy",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("class_P3.npy: shape is [1, 810, 64, 64], the model takes [1, 810, 80, 80]"),
        "{err}"
    );
    assert!(!Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../x.npy")
        .exists());
}
