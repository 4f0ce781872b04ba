//! Golden test: post-processing the reference D0 head outputs must reproduce the detections of
//! effdet's `DetBenchPredict` (`detections.npy`, see shared/fixtures/README.md).

use effdet_runtime::{postprocess, AnchorConfig, Anchors, DetectOptions, Detection};
use std::path::{Path, PathBuf};

const FIXTURE_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/fixtures/tf_efficientdet_d0"
);

/// Reference rows that must find a match (of 100).
const MIN_MATCHED: usize = 98;
const BOX_TOLERANCE: f32 = 1e-3;
const SCORE_TOLERANCE: f32 = 1e-5;

fn fixture_dir() -> PathBuf {
    let dir = Path::new(FIXTURE_DIR);
    assert!(
        dir.is_dir(),
        "golden fixtures not found at {FIXTURE_DIR}: this test needs the shared/ directory \
         beside the project checkout (see shared/fixtures/README.md); it does not pass without it"
    );
    dir.to_path_buf()
}

fn read_npy(name: &str) -> (Vec<u64>, Vec<f32>) {
    let path = fixture_dir().join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..])
        .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    let shape = npy.shape().to_vec();
    let data = npy
        .into_vec::<f32>()
        .unwrap_or_else(|e| panic!("decoding {}: {e}", path.display()));
    (shape, data)
}

fn matches(ours: &Detection, reference: &[f32]) -> bool {
    ours.class as f32 == reference[5]
        && (0..4).all(|k| (ours.bbox[k] - reference[k]).abs() <= BOX_TOLERANCE)
        && (ours.score - reference[4]).abs() <= SCORE_TOLERANCE
}

#[test]
fn d0_detections_match_effdet() {
    let anchors = Anchors::new(&AnchorConfig::efficientdet([512, 512], 4.0));
    let num_classes = 90;
    let a = anchors.num_anchors_per_location();

    let mut class_outputs = Vec::new();
    let mut box_outputs = Vec::new();
    for (i, level) in anchors.levels().iter().enumerate() {
        let [h, w] = level.feature_size.map(|s| s as u64);
        let (shape, data) = read_npy(&format!("class_P{}.npy", 3 + i));
        assert_eq!(
            shape,
            [1, (a * num_classes) as u64, h, w],
            "class_P{}",
            3 + i
        );
        class_outputs.push(data);
        let (shape, data) = read_npy(&format!("box_P{}.npy", 3 + i));
        assert_eq!(shape, [1, (a * 4) as u64, h, w], "box_P{}", 3 + i);
        box_outputs.push(data);
    }
    let class_refs: Vec<&[f32]> = class_outputs.iter().map(Vec::as_slice).collect();
    let box_refs: Vec<&[f32]> = box_outputs.iter().map(Vec::as_slice).collect();

    let (shape, reference) = read_npy("detections.npy");
    assert_eq!(shape, [100, 6]);

    let ours = postprocess(
        &anchors,
        num_classes,
        &class_refs,
        &box_refs,
        &DetectOptions::default(),
    );
    assert_eq!(ours.len(), 100, "effdet keeps 100 detections here");

    // Each of our rows may match one reference row only.
    let mut used = vec![false; ours.len()];
    let mut unmatched = Vec::new();
    for (r, row) in reference.chunks_exact(6).enumerate() {
        match (0..ours.len()).find(|&i| !used[i] && matches(&ours[i], row)) {
            Some(i) => used[i] = true,
            None => unmatched.push(r),
        }
    }
    let matched = 100 - unmatched.len();
    println!("matched {matched}/100 reference detections");
    for &r in &unmatched {
        println!(
            "unmatched reference row {r}: {:?}",
            &reference[r * 6..r * 6 + 6]
        );
    }
    assert!(
        matched >= MIN_MATCHED,
        "only {matched}/100 reference detections matched (need {MIN_MATCHED}); unmatched rows \
         {unmatched:?}"
    );
}
