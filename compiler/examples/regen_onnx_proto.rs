//! Regenerates `src/onnx/proto.rs` from the vendored `proto/onnx.proto` without a `protoc`
//! binary (protox parses the schema, prost-build writes the Rust types).
//!
//! Run: `cargo run -p effdet-compiler --example regen_onnx_proto`. The test
//! `tests/onnx_proto_fresh.rs` runs the same generation and fails when the checked-in file is
//! stale, so the schema and the types cannot drift apart.

use std::path::{Path, PathBuf};

/// The crate's root directory (where `proto/` and `src/` live).
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Generates the Rust types for `proto/onnx.proto` into `out_dir` and returns the generated
/// file's path.
pub fn generate(out_dir: &Path) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let proto_dir = crate_dir().join("proto");
    let fds = protox::compile(["onnx.proto"], [&proto_dir])?;
    std::fs::create_dir_all(out_dir)?;
    prost_build::Config::new()
        .out_dir(out_dir)
        // The schema's comments are prose with indented examples that rustdoc would run as
        // doctests; the schema file itself is the documentation.
        .disable_comments(["."])
        .compile_fds(fds)?;
    Ok(out_dir.join("onnx.rs"))
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = std::env::temp_dir().join(format!("effdet-regen-onnx-{}", std::process::id()));
    let generated = generate(&tmp)?;
    let target = crate_dir().join("src/onnx/proto.rs");
    std::fs::copy(&generated, &target)?;
    std::fs::remove_dir_all(&tmp)?;
    println!("wrote {}", target.display());
    Ok(())
}
