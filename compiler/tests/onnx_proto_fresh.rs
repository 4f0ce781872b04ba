//! The checked-in ONNX protobuf types must be exactly what the vendored schema generates.

#[allow(dead_code)]
#[path = "../examples/regen_onnx_proto.rs"]
mod regen;

#[test]
fn checked_in_proto_types_are_fresh() {
    let tmp = std::env::temp_dir().join(format!("effdet-onnx-proto-fresh-{}", std::process::id()));
    let generated = regen::generate(&tmp).expect("generate from proto/onnx.proto");
    let fresh = std::fs::read_to_string(&generated).expect("read generated file");
    let _ = std::fs::remove_dir_all(&tmp);
    let checked_in = std::fs::read_to_string(regen::crate_dir().join("src/onnx/proto.rs"))
        .expect("read src/onnx/proto.rs");
    assert!(
        fresh == checked_in,
        "src/onnx/proto.rs is stale: run `cargo run -p effdet-compiler --example regen_onnx_proto`"
    );
}
