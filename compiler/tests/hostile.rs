//! Hostile inputs through the real `effdetc`: each gets a one-line error and exit 1, leaves
//! no output behind, and is refused within 2 s and 1 GiB of resident memory (the children's
//! peak, `getrusage(RUSAGE_CHILDREN)`), before anything large is allocated or run.
//!
//! Everything here runs in this one test binary, whose only children are these effdetc
//! runs, so the children's peak resident set is theirs.

mod onnx_common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use onnx_common::build::{ints, model, node, value};
use prost::Message;

mod common;
use common::root;

/// The largest resident set of any child waited for so far, in bytes.
fn children_peak_rss() -> u64 {
    // SAFETY: getrusage writes one `rusage` into the zeroed struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(rc, 0, "getrusage");
    usage.ru_maxrss as u64 * 1024 // Linux reports KiB
}

/// Runs effdetc with `args`; checks exit 1, a one-line `error: ` message containing each
/// of `expect`, no panic, under 2 s, and that `out` (if any) was not created.
fn refused(args: &[&str], expect: &[&str], out: Option<&Path>) {
    let start = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_effdetc"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("effdetc runs");
    let took = start.elapsed();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{args:?}: {stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{args:?}: one error line:\n{stderr}");
    assert_eq!(
        errors[0].lines().count(),
        1,
        "{args:?}: the error is one line:\n{stderr}"
    );
    for e in expect {
        assert!(errors[0].contains(e), "{args:?}: `{e}` not in\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert!(took < Duration::from_secs(2), "{args:?} took {took:?}");
    if let Some(out) = out {
        assert!(!out.exists(), "{args:?} left {}", out.display());
    }
}

/// `specs/d0.yaml` with one line replaced.
fn d0_with(dir: &Path, from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(root().join("specs/d0.yaml")).unwrap();
    assert!(text.contains(from), "d0.yaml has `{from}`");
    let path = dir.join(format!("hostile{}.yaml", text.len() + to.len()));
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    path.to_str().unwrap().to_string()
}

/// An ONNX model that sums eight `ConstantOfShape` of `elements` floats each into its input.
fn constant_bomb(elements: i64) -> Vec<u8> {
    let mut nodes: Vec<_> = (0..8)
        .map(|i| {
            node(
                "ConstantOfShape",
                &format!("c{i}"),
                &["n"],
                &[&format!("v{i}")],
            )
        })
        .collect();
    let names: Vec<String> = (0..8).map(|i| format!("v{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    nodes.push(node("Sum", "sum", &refs, &["s"]));
    nodes.push(node("Add", "add", &["x", "s"], &["y"]));
    model(
        17,
        nodes,
        vec![ints("n", &[1], &[elements])],
        vec![value("x", &["1"])],
        &["y"],
    )
    .encode_to_vec()
}

#[test]
fn hostile_inputs_are_refused_quickly_within_a_gibibyte() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let outp = out.to_str().unwrap();

    // The spec rows: each number has a range; the error points at its line and column.
    for (from, to, expect) in [
        (
            "depth_coefficient: 1.0",
            "depth_coefficient: 1e9",
            "backbone.depth_coefficient 1000000000 is out of range",
        ),
        (
            "width_coefficient: 1.0",
            "width_coefficient: 1e300",
            "backbone.width_coefficient",
        ),
        (
            "image_size: [512, 512]",
            "image_size: [4000000000, 4000000000]",
            "input.image_size",
        ),
        (
            "num_filters: 64",
            "num_filters: 4000000",
            "num_filters 4000000 is out of range",
        ),
        (
            "cell_repeats: 3",
            "cell_repeats: 100000",
            "fpn.cell_repeats 100000 is out of range",
        ),
    ] {
        let spec = d0_with(dir.path(), from, to);
        refused(&["inspect", &spec], &[&spec, expect], None);
        refused(
            &["build", &spec, "--random-weights", "0", "-o", outp],
            &[expect],
            Some(&out),
        );
    }
    // Inside every range, but over the budget: the error says what the model would need.
    let big = d0_with(
        dir.path(),
        "image_size: [512, 512]",
        "image_size: [8192, 8192]",
    );
    let big = {
        let text = std::fs::read_to_string(&big).unwrap();
        let p = dir.path().join("big.yaml");
        std::fs::write(
            &p,
            text.replacen("width_coefficient: 1.0", "width_coefficient: 8.0", 1)
                .replacen("depth_coefficient: 1.0", "depth_coefficient: 8.0", 1),
        )
        .unwrap();
        p.to_str().unwrap().to_string()
    };
    refused(
        &["inspect", &big],
        &["parameters of", "would need", "--max-memory-mib"],
        None,
    );
    refused(
        &["inspect", &big, "--max-memory-mib", "100000"],
        &["one forward pass", "would need", "--max-gmacs"],
        None,
    );
    refused(
        &[
            "run",
            "specs/d0.yaml",
            "--batch",
            "1024",
            "--input",
            "in.npy",
            "--out-dir",
            outp,
        ],
        &["would need", "over the budget", "--max-gmacs"],
        Some(&out),
    );
    refused(
        &[
            "run",
            "specs/d0.yaml",
            "--max-memory-mib",
            "16",
            "--input",
            "in.npy",
            "--out-dir",
            outp,
        ],
        &["reference interpreter would need", "--max-memory-mib"],
        Some(&out),
    );
    refused(
        &[
            "build",
            "specs/d0.yaml",
            "--random-weights",
            "0",
            "--max-memory-mib",
            "12",
            "-o",
            outp,
        ],
        &["would need", "--max-memory-mib"],
        Some(&out),
    );
    // A YAML alias bomb (each level doubles the last).
    let mut bomb = String::from("a0: &a0 [x, x]\n");
    for i in 1..40 {
        bomb += &format!("a{i}: &a{i} [*a{}, *a{}]\n", i - 1, i - 1);
    }
    let bomb_path = dir.path().join("bomb.yaml");
    std::fs::write(&bomb_path, bomb).unwrap();
    refused(
        &["inspect", bomb_path.to_str().unwrap()],
        &["bomb.yaml"],
        None,
    );

    // The ONNX row: eight ConstantOfShape of 2^27 floats, summed (617 bytes of protobuf).
    let onnx = dir.path().join("bomb.onnx");
    std::fs::write(&onnx, constant_bomb(1 << 27)).unwrap();
    let onnx = onnx.to_str().unwrap();
    refused(&["inspect", onnx], &[onnx, "c0"], None);
    refused(&["build", onnx, "-o", outp], &[onnx], Some(&out));
    // Under the per-tensor cap, over the folding budget: 2^25 floats (128 MiB) each.
    let onnx = dir.path().join("fold.onnx");
    std::fs::write(&onnx, constant_bomb(1 << 25)).unwrap();
    refused(
        &["inspect", onnx.to_str().unwrap()],
        &["constant folding would hold", "--max-memory-mib"],
        None,
    );

    let peak = children_peak_rss();
    assert!(peak < 1 << 30, "a child peaked at {} MiB", peak >> 20);
    eprintln!("children's peak resident set: {} MiB", peak >> 20);
}
