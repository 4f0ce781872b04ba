//! `effdetc inspect` with the fusion passes: `ops_fused`, `--passes`, `--no-fuse`.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

mod common;
use common::effdetc;

fn inspect_json(args: &[&str]) -> Value {
    let o = effdetc(&[&["inspect", "--json"], args].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("inspect --json prints JSON")
}

fn fixture_onnx() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/tf_efficientdet_d0/model.onnx")
}

/// What D0 becomes, from the spec (no weights needed) and from the fixture's ONNX export.
#[test]
fn ops_fused_of_d0() {
    let want = json!({
        "conv": 102, "depthwise_conv": 80, "fused_sum": 24, "input": 1, "max_pool": 2,
        "squeeze_excite": 16
    });
    let j = inspect_json(&["specs/d0.yaml"]);
    assert_eq!(j["ops_fused"], want);
    // The rest of the report is the unfused graph's.
    assert_eq!(j["ops"]["batch_norm"], 108);
    assert_eq!(j["nodes"], 532);
    let onnx = fixture_onnx();
    let j = inspect_json(&[onnx.to_str().unwrap()]);
    assert_eq!(j["ops_fused"], want);
}

#[test]
fn passes_and_no_fuse_select_what_runs() {
    let j = inspect_json(&["specs/d0.yaml", "--no-fuse"]);
    assert_eq!(j["ops_fused"], j["ops"]);
    // BN folding alone; then with activation fusion, only the BiFPN's activations are left
    // (they follow a weighted sum, which only fuse_bifpn turns into a fusable op).
    let j = inspect_json(&["specs/d0.yaml", "--passes", "fold_bn"]);
    assert_eq!(j["ops_fused"].get("batch_norm"), None);
    assert_eq!(j["ops_fused"]["swish"], 102);
    let j = inspect_json(&["specs/d0.yaml", "--passes", "fold_bn,fuse_activation"]);
    assert_eq!(j["ops_fused"]["swish"], 24);
    assert_eq!(j["ops_fused"].get("sigmoid"), None);

    let o = effdetc(&["inspect", "specs/d0.yaml", "--passes", "fold_bn,fuse_all"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("error: unknown pass `fuse_all`; the passes are: fold_constants,"),
        "{err}"
    );
    let o = effdetc(&[
        "inspect",
        "specs/d0.yaml",
        "--passes",
        "fold_bn",
        "--no-fuse",
    ]);
    assert!(!o.status.success());
}

#[test]
fn text_report_shows_both_counts() {
    let o = effdetc(&["inspect", "specs/d0.yaml"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("ops                 unfused   fused\n"),
        "{text}"
    );
    assert!(
        text.contains("\n  batch_norm            108       0\n"),
        "{text}"
    );
    assert!(
        text.contains("\n  squeeze_excite          0      16\n"),
        "{text}"
    );
}
