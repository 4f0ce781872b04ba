//! Regenerates `compiler/src/codegen/lock/{base,python}.lock`: builds a small model's crate
//! without and with `--python` under the template name, resolves it with
//! `cargo generate-lockfile` (needs the crates.io index) and copies the result.
//!
//! `cargo run -p effdet-compiler --example regen_lockfiles`

use std::path::Path;
use std::process::Command;

use effdet_compiler::codegen::lockfile::TEMPLATE_NAME;
use effdet_compiler::compile::{self, BuildRequest, WeightsChoice};
use effdet_compiler::passes::PassSet;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir()?;
    for (file, python) in [("base.lock", false), ("python.lock", true)] {
        let dir = work.path().join(file);
        let req = BuildRequest {
            model: root.join("../tests/onnx/models/tf_d0_ts17.onnx"),
            weights: WeightsChoice::Model,
            out_dir: Some(dir.clone()),
            name: Some(TEMPLATE_NAME.into()),
            passes: PassSet::all(),
            input_shape: None,
            batch: None,
            limits: Default::default(),
            embed_limit: usize::MAX,
            detect_spec: None,
            c_api: false,
            python,
            tuning: Default::default(),
        };
        compile::build(&req, &mut |_| {})?;
        std::fs::remove_file(dir.join("Cargo.lock"))?;
        let status = Command::new(env!("CARGO"))
            .arg("generate-lockfile")
            .current_dir(&dir)
            .status()?;
        if !status.success() {
            return Err(format!("cargo generate-lockfile failed for {file}").into());
        }
        std::fs::copy(
            dir.join("Cargo.lock"),
            root.join("src/codegen/lock").join(file),
        )?;
        println!("wrote compiler/src/codegen/lock/{file}");
    }
    Ok(())
}
