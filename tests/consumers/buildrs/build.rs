fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Paths are relative to this crate's directory; the golden fixture lives beside the
    // repository, in shared/.
    effdet_compiler::Build::new("../../../specs/d0.yaml")
        .weights("../../../../shared/fixtures/tf_efficientdet_d0/weights.safetensors")
        .module("d0")
        .emit(std::env::var("OUT_DIR")?)?;
    Ok(())
}
