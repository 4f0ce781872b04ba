fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Paths are relative to this crate's directory; the golden fixture lives beside the
    // repository, in shared/.
    effdet_compiler::Build::new("../../../specs/d0.yaml")
        .weights("../../../../shared/fixtures/tf_efficientdet_d0/weights.safetensors")
        .module("d0")
        .emit(std::env::var("OUT_DIR")?)?;
    // A small ONNX export with a symbolic batch axis, compiled for two images per pass.
    effdet_compiler::Build::new("../../onnx/models/tf_d0_ts17_batch.onnx")
        .batch(2)
        .module("batch2")
        .emit(std::env::var("OUT_DIR")?)?;
    Ok(())
}
