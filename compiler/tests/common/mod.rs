//! What the integration tests share: the repository root and the `effdetc` binary run
//! from there, as a user runs it from a checkout.

// Each test binary uses its own subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `effdetc args…`, run from the repository root.
pub fn effdetc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_effdetc"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("effdetc runs")
}

/// A run's standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
