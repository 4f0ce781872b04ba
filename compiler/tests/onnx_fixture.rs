//! Golden test: the fixture's ONNX export (TorchScript exporter, opset 17, BN folded,
//! constant Pad nodes) imports and reproduces the reference PyTorch outputs.

mod onnx_common;

use std::path::PathBuf;

fn fixture() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/tf_efficientdet_d0"
    ))
}

#[test]
fn fixture_model_matches_reference_outputs() {
    let dir = fixture();
    let g = effdet_compiler::onnx::import(&dir.join("model.onnx"), None).expect("import");
    // The spec's D0 conv multiply-accumulates (fixture README).
    assert_eq!(g.macs(), 2_492_331_520);
    // Float initializer elements the nodes read (BN is folded into the convs).
    assert_eq!(g.param_count(), 3_952_542);
    let names: Vec<&str> = g.outputs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "class_P3", "class_P4", "class_P5", "class_P6", "class_P7", "box_P3", "box_P4",
            "box_P5", "box_P6", "box_P7"
        ]
    );
    let counts = g.op_counts();
    // Exporter idioms became the IR's own ops.
    assert_eq!(counts.get("global_avg_pool"), Some(&16));
    assert_eq!(counts.get("weighted_sum"), Some(&24));
    assert_eq!(counts.get("max_pool"), Some(&14));
    assert_eq!(counts.get("resize_nearest"), Some(&12));
    assert!(!counts.contains_key("concat") && !counts.contains_key("reshape"));
    let input = onnx_common::read_npy(&dir.join("input.npy"));
    onnx_common::check_outputs(&g, input, &dir, "");
}

#[test]
fn input_shape_override_must_fit_static_dims() {
    let path = fixture().join("model.onnx");
    let same = effdet_compiler::onnx::import(&path, Some(&[1, 3, 512, 512]));
    assert!(same.is_ok());
    let err = effdet_compiler::onnx::import(&path, Some(&[1, 3, 640, 640])).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("`input`") && msg.contains("1,3,640,640"),
        "{msg}"
    );
}
