//! Bad inputs get clear errors, never panics: truncated and non-ONNX files, dangling names,
//! cycles, initializers whose data does not fit their shape, unsupported ops (all listed at
//! once), unknown input dims. Models are built in code with the prost types.

mod onnx_common;

use std::path::Path;

use effdet_compiler::onnx::{import, import_bytes, OnnxError};
use onnx_common::build::{self, bytes, floats, model, node, value};

fn import_model(
    m: &effdet_compiler::onnx::proto::ModelProto,
) -> Result<effdet_compiler::ir::Graph, OnnxError> {
    import_bytes(&bytes(m), Path::new("mem/model.onnx"), None)
}

fn relu_model(
    nodes: Vec<effdet_compiler::onnx::proto::NodeProto>,
) -> effdet_compiler::onnx::proto::ModelProto {
    model(
        17,
        nodes,
        vec![],
        vec![value("x", &["1", "2", "4", "4"])],
        &["y"],
    )
}

#[test]
fn small_exporter_style_net_imports_to_the_idiomatic_ir() {
    let g = import_model(&build::small_net()).expect("import");
    let counts = g.op_counts();
    // Shape arithmetic folded away; idioms mapped onto the IR's ops.
    for kind in [
        "pad",
        "conv",
        "sigmoid",
        "mul",
        "global_avg_pool",
        "max_pool",
        "resize_nearest",
        "weighted_sum",
    ] {
        assert!(counts.contains_key(kind), "{kind} missing: {counts:?}");
    }
    for kind in ["concat", "reshape", "reduce_sum", "reduce_mean"] {
        assert!(!counts.contains_key(kind), "{kind} left: {counts:?}");
    }
    let pad = g
        .graph
        .node_weights()
        .find(|n| n.op.kind() == "pad")
        .expect("pad");
    // TF 'same' for 16 → 8 with a 3×3 kernel: the odd pixel after.
    assert_eq!(
        pad.op,
        effdet_compiler::ir::Op::Pad {
            pads: [0, 0, 1, 1],
            value: 0.0
        }
    );
    assert_eq!(g.node(g.outputs[0].1).shape, [1, 4, 8, 8]);
    // Every float initializer a node reads counts, folded or not: the conv's 108 + 4, the
    // stride used in the pad arithmetic, both pad values.
    assert_eq!(g.param_count(), 115);
}

#[test]
fn truncated_file_is_rejected() {
    let full = bytes(&build::small_net());
    for cut in [1, full.len() / 3, full.len() / 2, full.len() - 1] {
        let err = import_bytes(&full[..cut], Path::new("cut.onnx"), None).unwrap_err();
        assert!(
            matches!(
                err,
                OnnxError::NotOnnx { .. } | OnnxError::Model { .. } | OnnxError::Dangling { .. }
            ),
            "cut at {cut}: {err}"
        );
        assert!(err.to_string().starts_with("cut.onnx: "), "{err}");
    }
    // Through a real file too.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truncated.onnx");
    std::fs::write(&path, &full[..full.len() / 2]).unwrap();
    let err = import(&path, None).unwrap_err().to_string();
    assert!(
        err.contains("truncated.onnx") && err.contains("not a valid ONNX model"),
        "{err}"
    );
}

#[test]
fn non_onnx_bytes_are_rejected() {
    for junk in [
        &b""[..],
        b"hello, this is a text file and not a model\n",
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",
        b"version: 1\nname: d0\n",
    ] {
        let err = import_bytes(junk, Path::new("junk.bin"), None).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("junk.bin: "), "{msg}");
        assert!(matches!(err, OnnxError::NotOnnx { .. }), "{msg}");
    }
    let missing = import(Path::new("/nonexistent/m.onnx"), None).unwrap_err();
    assert!(matches!(missing, OnnxError::Io { .. }), "{missing}");
}

#[test]
fn dangling_input_names_the_node_and_value() {
    let m = relu_model(vec![
        node("Relu", "first", &["x"], &["a"]),
        node("Add", "adder", &["a", "nowhere"], &["y"]),
    ]);
    let err = import_model(&m).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, OnnxError::Dangling { .. }), "{msg}");
    assert!(
        msg.contains("`adder`") && msg.contains("`nowhere`"),
        "{msg}"
    );
}

#[test]
fn cycle_is_reported_with_its_nodes() {
    let m = relu_model(vec![
        node("Add", "a", &["x", "c"], &["b_in"]),
        node("Relu", "b", &["b_in"], &["c"]),
        node("Relu", "out", &["c"], &["y"]),
    ]);
    let err = import_model(&m).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, OnnxError::Cycle { .. }), "{msg}");
    assert!(msg.contains('a') && msg.contains('b'), "{msg}");
}

#[test]
fn initializer_data_must_match_its_shape() {
    let mut m = build::small_net();
    let g = m.graph.as_mut().unwrap();
    let w = g.initializer.iter_mut().find(|t| t.name() == "w").unwrap();
    w.float_data.truncate(100);
    let err = import_model(&m).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, OnnxError::Tensor { .. }), "{msg}");
    assert!(
        msg.contains("`w`") && msg.contains("[4, 3, 3, 3]") && msg.contains("100"),
        "{msg}"
    );
    // Raw bytes of the wrong length, too.
    let mut m = build::small_net();
    let g = m.graph.as_mut().unwrap();
    let b = g.initializer.iter_mut().find(|t| t.name() == "b").unwrap();
    b.float_data.clear();
    b.raw_data = Some(vec![0; 15]);
    let msg = import_model(&m).unwrap_err().to_string();
    assert!(msg.contains("`b`") && msg.contains("16 bytes"), "{msg}");
}

#[test]
fn unsupported_ops_are_all_listed_at_once() {
    let mut nms = node("NonMaxSuppression", "nms_1", &["x"], &["n1"]);
    nms.domain = Some(String::new());
    let mut fused = node("FusedConv", "fc", &["x"], &["f"]);
    fused.domain = Some("com.microsoft".into());
    let m = relu_model(vec![
        node("Relu", "ok", &["x"], &["r"]),
        nms,
        node("TopK", "topk", &["r"], &["t"]),
        node("NonMaxSuppression", "nms_2", &["r"], &["n2"]),
        fused,
        node("Relu", "y_node", &["r"], &["y"]),
    ]);
    let err = import_model(&m).unwrap_err();
    let msg = err.to_string();
    let OnnxError::Unsupported { opset, ops, .. } = &err else {
        panic!("{msg}");
    };
    assert_eq!(*opset, 17);
    let names: Vec<&str> = ops.iter().map(|(op, _)| op.as_str()).collect();
    assert_eq!(
        names,
        ["NonMaxSuppression", "TopK", "com.microsoft.FusedConv"]
    );
    assert_eq!(ops[0].1, ["nms_1", "nms_2"]);
    assert!(
        msg.contains("opset 17")
            && msg.contains("nms_2")
            && msg.contains("topk")
            && msg.contains("fc"),
        "{msg}"
    );
}

#[test]
fn unknown_input_dims_tell_how_to_set_them() {
    let mut m = build::small_net();
    m.graph.as_mut().unwrap().input[0] = value("x", &["batch", "3", "height", "width"]);
    let msg = import_model(&m).unwrap_err().to_string();
    assert!(
        msg.contains("`x`") && msg.contains("--input-shape") && msg.contains("height"),
        "{msg}"
    );
    let g =
        import_bytes(&bytes(&m), Path::new("m.onnx"), Some(&[1, 3, 16, 16])).expect("with shape");
    assert_eq!(g.input_shape(), Some(&[1, 3, 16, 16][..]));
    // A shape that contradicts a static dim is refused.
    let msg = import_bytes(&bytes(&m), Path::new("m.onnx"), Some(&[1, 4, 16, 16]))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("1,4,16,16"), "{msg}");
}

#[test]
fn other_structural_errors_are_clear() {
    // Two nodes writing one value.
    let m = relu_model(vec![
        node("Relu", "one", &["x"], &["y"]),
        node("Sigmoid", "two", &["x"], &["y"]),
    ]);
    let msg = import_model(&m).unwrap_err().to_string();
    assert!(
        msg.contains("`y`") && msg.contains("one") && msg.contains("two"),
        "{msg}"
    );
    // Opset out of range.
    let mut m = relu_model(vec![node("Relu", "r", &["x"], &["y"])]);
    m.opset_import[0].version = Some(9);
    let msg = import_model(&m).unwrap_err().to_string();
    assert!(msg.contains("opset 9"), "{msg}");
    // An output nothing produces.
    let m = relu_model(vec![node("Relu", "r", &["x"], &["z"])]);
    let msg = import_model(&m).unwrap_err().to_string();
    assert!(msg.contains("output `y`"), "{msg}");
}

#[test]
fn unsupported_attribute_values_name_the_node() {
    // Reflect padding.
    let pad = build::with_str(
        node("Pad", "reflect_pad", &["x", "p"], &["y"]),
        "mode",
        "reflect",
    );
    let m = model(
        17,
        vec![pad],
        vec![build::ints("p", &[8], &[0, 0, 1, 1, 0, 0, 1, 1])],
        vec![value("x", &["1", "2", "4", "4"])],
        &["y"],
    );
    let msg = import_model(&m).unwrap_err().to_string();
    assert!(
        msg.contains("`reflect_pad` (Pad)") && msg.contains("reflect"),
        "{msg}"
    );
    // align_corners with nearest_mode floor does not read floor(dst·in/out) (with the
    // default rounding it does, for 2x upsampling, and imports).
    let r = build::with_str(
        node("Resize", "up", &["x", "", "", "s"], &["y"]),
        "coordinate_transformation_mode",
        "align_corners",
    );
    let r = build::with_str(r, "nearest_mode", "floor");
    let m = model(
        17,
        vec![r],
        vec![build::ints("s", &[4], &[1, 2, 16, 16])],
        vec![value("x", &["1", "2", "8", "8"])],
        &["y"],
    );
    let msg = import_model(&m).unwrap_err().to_string();
    assert!(
        msg.contains("`up` (Resize)") && msg.contains("align_corners"),
        "{msg}"
    );
    // Linear resize.
    let r = build::with_str(
        node("Resize", "lin", &["x", "", "", "s"], &["y"]),
        "mode",
        "linear",
    );
    let m = model(
        17,
        vec![r],
        vec![build::ints("s", &[4], &[1, 2, 8, 8])],
        vec![value("x", &["1", "2", "4", "4"])],
        &["y"],
    );
    let msg = import_model(&m).unwrap_err().to_string();
    assert!(msg.contains("linear"), "{msg}");
    // A conv whose weights come from runtime data.
    let m = model(
        17,
        vec![node("Conv", "c", &["x", "x"], &["y"])],
        vec![],
        vec![value("x", &["1", "2", "4", "4"])],
        &["y"],
    );
    let msg = import_model(&m).unwrap_err().to_string();
    assert!(
        msg.contains("`c` (Conv)") && msg.contains("constant"),
        "{msg}"
    );
    let _ = floats; // (used by other tests through the builders)
}
