//! `compare-outputs OURS_DIR REFERENCE_DIR`: compares every `.npy` of the reference directory
//! that `OURS_DIR` also names (a generated binary's `run --out-dir`) with the golden tests'
//! rule (`tests/compare.rs`). For outputs produced where a Rust test cannot run them, e.g. the
//! aarch64 crate under qemu (`tests/aarch64.sh`). Exits non-zero on any mismatch, on a
//! missing output, and when nothing was compared.

use std::path::Path;
use std::process::ExitCode;

use effdet_tests::{read_npy, within};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [ours, reference] = args.as_slice() else {
        eprintln!("usage: compare-outputs OURS_DIR REFERENCE_DIR");
        return ExitCode::FAILURE;
    };
    let (ours, reference) = (Path::new(ours), Path::new(reference));
    let mut compared = 0;
    let mut failed = false;
    for head in ["class", "box"] {
        for level in 3..=7 {
            let name = format!("{head}_P{level}.npy");
            let ref_path = reference.join(&name);
            if !ref_path.is_file() {
                continue;
            }
            let our_path = ours.join(&name);
            if !our_path.is_file() {
                eprintln!("{}: missing", our_path.display());
                failed = true;
                continue;
            }
            let (our_shape, a) = read_npy(&our_path);
            let (ref_shape, b) = read_npy(&ref_path);
            compared += 1;
            if our_shape != ref_shape {
                eprintln!("{name}: shape {our_shape:?}, the reference has {ref_shape:?}");
                failed = true;
                continue;
            }
            match within(&name, &a, &b, 1.0) {
                Ok((err, tol)) => println!("{name}: max error {err:.3e} (tolerance {tol:.3e})"),
                Err(message) => {
                    eprintln!("{message}");
                    failed = true;
                }
            }
        }
    }
    if compared == 0 {
        eprintln!(
            "{}: no class_P*/box_P* .npy to compare",
            reference.display()
        );
        failed = true;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        println!("{compared} outputs within tolerance");
        ExitCode::SUCCESS
    }
}
