//! PyTorch checkpoints as weights (`--weights X.pth`, `Build::weights`, `compile_model`): the
//! fixture's legacy-container `state_dict` and its ZIP training checkpoint (EMA weights under
//! `state_dict_ema` with `module.` prefixes, perturbed float16 weights under `state_dict`, an
//! `argparse.Namespace` under `args`) bind exactly like `weights.safetensors` and reproduce
//! the fixture outputs; corrupted copies made here are one-line errors, never panics.
//!
//! The checkpoints are read from `../shared/fixtures/`, never copied into the repository; a
//! missing fixture fails the tests.

#[path = "../../tests/compare.rs"]
mod compare;

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::process::Output;

use effdet_compiler::compile::{self, BuildRequest, WeightsChoice};
use effdet_compiler::model::{self, LoadOptions};
use effdet_compiler::passes::PassSet;
use effdet_compiler::weights;

mod common;
use common::{effdetc, root, stderr};

/// A fixture file; a missing one fails the test (it must not pass silently).
fn fixture(name: &str) -> PathBuf {
    let path = root()
        .join("../shared/fixtures/tf_efficientdet_d0")
        .join(name);
    assert!(
        path.is_file(),
        "golden fixture missing at {} (see ../shared/fixtures/README.md)",
        path.display()
    );
    path
}

fn run_d0(weights: &Path, out: &Path) -> Output {
    effdetc(&[
        "run",
        "specs/d0.yaml",
        "--weights",
        weights.to_str().unwrap(),
        "--input",
        fixture("input.npy").to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
    ])
}

fn d0() -> effdet_compiler::ir::Graph {
    model::load(&root().join("specs/d0.yaml"), &LoadOptions::default())
        .expect("specs/d0.yaml loads")
        .graph
}

/// The bound parameters as (name, bit patterns), for exact comparison.
fn bound(path: &Path) -> (Vec<(String, Vec<u32>)>, Vec<String>) {
    let mut g = d0();
    let mut lines = Vec::new();
    weights::bind_file(&mut g, path, &mut |l| lines.push(l.to_string()))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let params = g
        .params
        .iter()
        .map(|p| {
            let data = p.data.as_ref().expect("every parameter is bound");
            (p.name.clone(), data.iter().map(|v| v.to_bits()).collect())
        })
        .collect();
    (params, lines)
}

#[test]
fn both_checkpoints_bind_exactly_like_the_safetensors() {
    let (reference, lines) = bound(&fixture("weights.safetensors"));
    assert!(lines.is_empty(), "{lines:?}");
    assert!(reference.len() > 600, "{}", reference.len());

    let (legacy, lines) = bound(&fixture("weights_legacy.pth"));
    assert!(legacy == reference, "weights_legacy.pth binds other values");
    assert!(
        lines.is_empty(),
        "a bare state_dict needs no choice: {lines:?}"
    );

    let (train, lines) = bound(&fixture("checkpoint_train.pth"));
    assert!(
        train == reference,
        "checkpoint_train.pth binds other values (the non-EMA `state_dict`?)"
    );
    let text = lines.join("\n");
    assert!(
        text.contains("using the checkpoint's `state_dict_ema`"),
        "{text}"
    );
    assert!(text.contains("EMA"), "{text}");
    for skipped in ["args", "epoch", "optimizer", "metric", "state_dict,"] {
        assert!(
            text.contains(skipped),
            "`{skipped}` not reported skipped: {text}"
        );
    }
    assert!(text.contains("stripped the prefix `module.`"), "{text}");
}

/// max |ours − ref| ≤ 1e-4 · max(1, max |ref − mean(ref)|) per output, and no NaN.
fn assert_matches_fixture_outputs(out: &Path, what: &str) {
    for head in ["class", "box"] {
        for level in 3..=7 {
            let name = format!("{head}_P{level}.npy");
            let (shape, ours) = read_npy(&out.join(&name));
            let (ref_shape, reference) = read_npy(&fixture(&name));
            assert_eq!(shape, ref_shape, "{what}: {name} shape");
            assert!(
                ours.iter().all(|v| v.is_finite()),
                "{what}: {name} holds NaN or infinity"
            );
            compare::within(&format!("{what}: {name}"), &ours, &reference, 1.0)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

fn read_npy(path: &Path) -> (Vec<u64>, Vec<f32>) {
    let f = npyz::NpyFile::new(std::fs::File::open(path).unwrap()).unwrap();
    let shape = f.shape().to_vec();
    (shape, f.into_vec().unwrap())
}

#[test]
fn run_reproduces_the_fixture_outputs_from_both_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["weights_legacy.pth", "checkpoint_train.pth"] {
        let out = dir.path().join(name.replace('.', "_"));
        let o = run_d0(&fixture(name), &out);
        let err = stderr(&o);
        assert!(o.status.success(), "{name}: {err}");
        if name == "checkpoint_train.pth" {
            assert!(
                err.contains("effdetc: ")
                    && err
                        .contains("checkpoint_train.pth: using the checkpoint's `state_dict_ema`"),
                "the chosen entry is not reported: {err}"
            );
        }
        assert_matches_fixture_outputs(&out, name);
    }
}

#[test]
fn compile_and_build_accept_a_checkpoint() {
    let request = |weights: PathBuf| BuildRequest {
        model: root().join("specs/d0.yaml"),
        weights: WeightsChoice::File(weights),
        out_dir: None,
        name: None,
        passes: PassSet::all(),
        input_shape: None,
        batch: None,
        limits: Default::default(),
        embed_limit: 64 << 20,
        detect_spec: None,
        c_api: false,
        python: false,
        tuning: Default::default(),
    };
    let packed = |w: &str| {
        let mut lines = Vec::new();
        let c = compile::compile_model(&request(fixture(w)), &mut |l| lines.push(l.to_string()))
            .unwrap_or_else(|e| panic!("{w}: {e}"));
        (c.weights, lines)
    };
    let (reference, _) = packed("weights.safetensors");
    let (train, lines) = packed("checkpoint_train.pth");
    assert!(train == reference, "packed weights differ");
    assert!(
        lines.iter().any(|l| l.contains("`state_dict_ema`")),
        "{lines:?}"
    );

    // The build-script API, as a build.rs calls it (paths absolute here).
    let out = tempfile::tempdir().unwrap();
    let emitted = effdet_compiler::Build::new(root().join("specs/d0.yaml"))
        .weights(fixture("weights_legacy.pth"))
        .module("d0")
        .cargo_metadata(false)
        .emit(out.path())
        .unwrap_or_else(|e| panic!("{e:?}"));
    let blob = std::fs::read(&emitted.weights).unwrap();
    let floats: Vec<f32> = blob
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert!(floats == reference, "Build's weights.bin differs");
    assert!(std::fs::read_to_string(&emitted.module)
        .unwrap()
        .contains("pub struct Model"));
}

/// Runs D0 on `path` expecting a one-line error naming it (no panic, no output).
fn fails_cleanly(path: &Path, expect: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run_d0(path, &out);
    let err = stderr(&o);
    assert!(!o.status.success(), "{}: accepted: {err}", path.display());
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        !err.contains("panicked"),
        "{}: panic: {err}",
        path.display()
    );
    let error_lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("effdetc: "))
        .collect();
    assert!(
        error_lines.len() == 1 && error_lines[0].starts_with("error: "),
        "{}: not a one-line error: {err}",
        path.display()
    );
    assert!(
        error_lines[0].contains(path.to_str().unwrap()),
        "the error does not name the file: {err}"
    );
    assert!(
        error_lines[0].contains(expect),
        "expected `{expect}`: {err}"
    );
    assert!(!out.exists(), "output written on error");
    err
}

/// A copy of the checkpoint ZIP keeping only the entries `keep` accepts.
fn zip_without(src: &Path, keep: impl Fn(&str) -> bool) -> Vec<u8> {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(src).unwrap()).unwrap();
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for i in 0..archive.len() {
        let f = archive.by_index_raw(i).unwrap();
        if keep(&f.name().unwrap()) {
            w.raw_copy_file(f).unwrap();
        }
    }
    w.finish().unwrap().into_inner()
}

/// A ZIP checkpoint as `torch.save` lays it out, with `pickle` as `data.pkl` and `storages`
/// under `data/`.
fn zip_checkpoint(pickle: &[u8], storages: &[(&str, &[u8])]) -> Vec<u8> {
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let mut entries: Vec<(String, &[u8])> = vec![
        ("archive/data.pkl".into(), pickle),
        ("archive/byteorder".into(), b"little"),
        ("archive/version".into(), b"3\n"),
    ];
    for (key, bytes) in storages {
        entries.push((format!("archive/data/{key}"), bytes));
    }
    for (name, bytes) in entries {
        w.start_file(name, opts).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// A protocol-2 pickle of `{"state_dict": {"backbone.conv_stem.weight": <1-element float
/// tensor in storage "0">, <extra>}, "epoch": 1}`; `extra` is pickle ops for further
/// key/value pairs.
fn checkpoint_pickle(extra: &[u8]) -> Vec<u8> {
    let mut p = b"\x80\x02}(".to_vec();
    p.extend(s("epoch"));
    p.extend(b"K\x01");
    p.extend(s("state_dict"));
    p.extend(b"}(");
    p.extend(s("backbone.conv_stem.weight"));
    p.extend(one_float_tensor());
    p.extend_from_slice(extra);
    p.extend(b"uu.");
    p
}

/// Pickle ops pushing a string (`BINUNICODE`).
fn s(text: &str) -> Vec<u8> {
    let mut v = vec![b'X'];
    v.extend_from_slice(&(text.len() as u32).to_le_bytes());
    v.extend_from_slice(text.as_bytes());
    v
}

/// Pickle ops pushing a 1-element float tensor in storage "0", as `torch.save` writes it.
fn one_float_tensor() -> Vec<u8> {
    let mut p = b"ctorch._utils\n_rebuild_tensor_v2\n((".to_vec();
    p.extend(s("storage"));
    p.extend(b"ctorch\nFloatStorage\n");
    p.extend(s("0"));
    p.extend(s("cpu"));
    p.extend(b"K\x01tQK\x00K\x01\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtR");
    p
}

#[test]
fn an_ordered_dict_state_dict_with_metadata_counts_as_tensors_only() {
    // `model.state_dict()` is an OrderedDict whose `_metadata` attribute (torch's per-module
    // version table) is pickled as BUILD state; released checkpoints carry it.
    let mut p = b"\x80\x02ccollections\nOrderedDict\n)R(".to_vec();
    p.extend(s("backbone.conv_stem.weight"));
    p.extend(one_float_tensor());
    p.extend(b"u}(");
    p.extend(s("_metadata"));
    p.extend(b"ccollections\nOrderedDict\n)R(");
    p.extend(s(""));
    p.extend(b"}(");
    p.extend(s("version"));
    p.extend(b"K\x01uuub.");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ordered.pth");
    std::fs::write(&path, zip_checkpoint(&p, &[("0", &1.5f32.to_le_bytes())])).unwrap();
    let o = run_d0(&path, &dir.path().join("out"));
    let err = stderr(&o);
    assert!(!o.status.success() && !err.contains("panicked"), "{err}");
    assert!(!err.contains("only tensors"), "{err}");
    assert!(
        err.contains("wrong shape backbone.conv_stem.weight: expected [32, 3, 3, 3], found [1]"),
        "{err}"
    );
}

#[test]
fn corrupted_checkpoints_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let zip_bytes = std::fs::read(fixture("checkpoint_train.pth")).unwrap();
    let legacy_bytes = std::fs::read(fixture("weights_legacy.pth")).unwrap();

    fails_cleanly(
        &write("empty.pth", b""),
        "not a readable PyTorch checkpoint",
    );
    fails_cleanly(
        &write("text.pth", b"this is not a checkpoint at all\n"),
        "not a readable PyTorch checkpoint",
    );
    fails_cleanly(
        &write("notes.txt", b"this is not a checkpoint at all\n"),
        "not a weights file: neither safetensors nor a PyTorch checkpoint",
    );
    fails_cleanly(
        &write("truncated_zip.pth", &zip_bytes[..zip_bytes.len() / 2]),
        "not a readable PyTorch checkpoint",
    );
    fails_cleanly(
        &write(
            "truncated_legacy.pth",
            &legacy_bytes[..legacy_bytes.len() / 2],
        ),
        "PyTorch checkpoint",
    );
    fails_cleanly(
        &write("truncated_legacy_pickle.pth", &legacy_bytes[..4096]),
        "not a readable PyTorch checkpoint",
    );
    // Bytes flipped in the pickle of either container, and across a ZIP's storages (each
    // has a CRC-32; the legacy container has no checksum, so flipped weights there are
    // only caught where they break the structure).
    let flip = |bytes: &[u8], at: &[usize]| {
        let mut b = bytes.to_vec();
        for &i in at {
            for v in &mut b[i..i + 8] {
                *v ^= 0xA5;
            }
        }
        b
    };
    fails_cleanly(
        &write(
            "flipped_zip_pickle.pth",
            &flip(&zip_bytes, &[200, 5_000, 60_000]),
        ),
        "PyTorch checkpoint",
    );
    fails_cleanly(
        &write(
            "flipped_legacy_pickle.pth",
            &flip(&legacy_bytes, &[40, 3_000, 30_000]),
        ),
        "",
    );
    let every_mib: Vec<usize> = (1..zip_bytes.len() >> 20).map(|m| m << 20).collect();
    fails_cleanly(
        &write("flipped_zip_storages.pth", &flip(&zip_bytes, &every_mib)),
        "PyTorch checkpoint",
    );
    // The pickle references storages the archive no longer holds.
    let gapped = zip_without(&fixture("checkpoint_train.pth"), |name| {
        let storage = name
            .rsplit_once("/data/")
            .and_then(|(_, n)| n.parse::<usize>().ok());
        storage.is_none_or(|n| n % 7 != 3)
    });
    fails_cleanly(&write("missing_storage.pth", &gapped), "PyTorch checkpoint");
    let one_float = 1.5f32.to_le_bytes();
    // The chosen state_dict holds a non-tensor next to a tensor.
    let mut extra = vec![b'X'];
    extra.extend_from_slice(&(7u32).to_le_bytes());
    extra.extend_from_slice(b"n_iters");
    extra.extend_from_slice(b"K\x03");
    let err = fails_cleanly(
        &write(
            "non_tensor.pth",
            &zip_checkpoint(&checkpoint_pickle(&extra), &[("0", &one_float)]),
        ),
        "must hold only tensors",
    );
    assert!(err.contains("`n_iters` (an int)"), "{err}");
    assert!(err.contains("under `state_dict`"), "{err}");
    // A well-formed checkpoint with the wrong tensors: the safetensors mismatch report.
    let o = run_d0(
        &write(
            "wrong_tensors.pth",
            &zip_checkpoint(&checkpoint_pickle(b""), &[("0", &one_float)]),
        ),
        &dir.path().join("out"),
    );
    let err = stderr(&o);
    assert!(!o.status.success() && !err.contains("panicked"), "{err}");
    assert!(err.contains("the weights do not match the model"), "{err}");
    assert!(
        err.contains("wrong shape backbone.conv_stem.weight: expected [32, 3, 3, 3], found [1]"),
        "{err}"
    );
    assert!(err.contains("missing     backbone.bn1.weight"), "{err}");
}

#[test]
fn a_checkpoint_holding_no_state_dict_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    // `model` holds an int, not a dict of tensors.
    let mut p = b"\x80\x02}(X\x05\x00\x00\x00modelK\x07X\x05\x00\x00\x00epochK\x01u.".to_vec();
    let path = dir.path().join("no_state_dict.pth");
    std::fs::write(&path, zip_checkpoint(&p, &[])).unwrap();
    fails_cleanly(&path, "its `model` entry holds an int, not a state_dict");
    // A list at the root.
    p = b"\x80\x02]q\x00.".to_vec();
    std::fs::write(&path, zip_checkpoint(&p, &[])).unwrap();
    fails_cleanly(&path, "not a dict");
}
