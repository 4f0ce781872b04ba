//! Real exporter graphs (tests/onnx/models, made by tests/onnx/make_models.py: TorchScript at
//! opsets 13 and 17, torch.export at 18, Lite0, PyTorch-native D0) import and reproduce ONNX
//! Runtime's outputs within the fixture tolerance.

mod onnx_common;

use std::path::{Path, PathBuf};

fn models_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/onnx/models"))
}

/// What `params` means for ONNX: the elements of the float initializers some node reads.
fn float_initializer_elements(path: &Path) -> u64 {
    use prost::Message;
    let bytes = std::fs::read(path).unwrap();
    let m = effdet_compiler::onnx::proto::ModelProto::decode(&bytes[..]).unwrap();
    let g = m.graph.unwrap();
    let read: std::collections::HashSet<&str> = g
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(|s| s.as_str()))
        .collect();
    g.initializer
        .iter()
        .filter(|t| t.data_type() == 1 && read.contains(t.name()))
        .map(|t| t.dims.iter().product::<i64>() as u64)
        .sum()
}

/// The conv multiply-accumulates of the spec `specs/<variant>.yaml`.
fn spec_macs(variant: &str) -> u64 {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../specs"))
        .join(format!("{variant}.yaml"));
    let model = effdet_compiler::model::load(&path, &Default::default()).expect("spec");
    model.graph.macs()
}

fn opts(
    input_shape: Option<&[usize]>,
    batch: Option<usize>,
) -> effdet_compiler::onnx::ImportOptions<'_> {
    effdet_compiler::onnx::ImportOptions {
        input_shape,
        batch,
        ..Default::default()
    }
}

/// Imports `dir/name.onnx`, runs it on `name.input.npy` and compares with `name.<out>.npy`;
/// a missing model fails.
fn check(dir: &Path, name: &str) {
    let path = dir.join(format!("{name}.onnx"));
    assert!(path.exists(), "{}: missing", path.display());
    let input = onnx_common::read_npy(&dir.join(format!("{name}.input.npy")));
    // The reference input's batch: a model with a symbolic batch axis is imported for it
    // (`--batch N`); a fixed batch must equal it.
    let batch = input.shape[0];
    let g = effdet_compiler::onnx::import_with(&path, &opts(None, Some(batch)))
        .unwrap_or_else(|e| panic!("{name}: import failed: {e}"));
    assert_eq!(g.outputs.len(), 10, "{name}: outputs");
    assert_eq!(
        g.param_count(),
        float_initializer_elements(&path),
        "{name}: params"
    );
    onnx_common::check_outputs(&g, input, dir, &format!("{name}."));
}

#[test]
fn torchscript_opset13_d0() {
    check(&models_dir(), "tf_d0_ts13");
}

#[test]
fn torchscript_opset17_d0() {
    check(&models_dir(), "tf_d0_ts17");
}

#[test]
fn torch_export_opset18_d0() {
    check(&models_dir(), "tf_d0_export18");
}

#[test]
fn torchscript_opset17_lite0() {
    check(&models_dir(), "tf_lite0_ts17");
}

#[test]
fn torchscript_opset17_pytorch_native_d0() {
    check(&models_dir(), "pt_d0_ts17");
}

/// A TorchScript export with a symbolic batch axis (`N`), checked at batch 2; without
/// `--batch` the error says how to set it, and a batch that contradicts the graph or
/// `--input-shape` is refused.
#[test]
fn torchscript_opset17_symbolic_batch() {
    let dir = models_dir();
    check(&dir, "tf_d0_ts17_batch");
    let path = dir.join("tf_d0_ts17_batch.onnx");
    let g = effdet_compiler::onnx::import_with(&path, &opts(None, Some(3))).expect("batch 3");
    assert_eq!(g.input_shape(), Some(&[3, 3, 128, 128][..]));
    for (_, out) in &g.outputs {
        assert_eq!(g.node(*out).shape[0], 3, "every output has the batch first");
    }
    let err = |shape: Option<&[usize]>, batch: Option<usize>, model: &str| {
        effdet_compiler::onnx::import_with(&dir.join(model), &opts(shape, batch))
            .unwrap_err()
            .to_string()
    };
    let e = err(None, None, "tf_d0_ts17_batch.onnx");
    assert!(e.contains("--batch N"), "{e}");
    let e = err(Some(&[1, 3, 128, 128]), Some(2), "tf_d0_ts17_batch.onnx");
    assert!(
        e.contains("--input-shape 1,3,128,128 and --batch 2 disagree"),
        "{e}"
    );
    let e = err(None, Some(2), "tf_d0_ts17.onnx");
    assert!(
        e.contains("fixed batch of 1") && e.contains("--batch 2"),
        "{e}"
    );
    // `--input-shape` with the batch in it works as before.
    let g =
        effdet_compiler::onnx::import_with(&path, &opts(Some(&[2, 3, 128, 128]), Some(2))).unwrap();
    assert_eq!(g.input_shape(), Some(&[2, 3, 128, 128][..]));
}

/// Every other model in the directory (new exporter variants need no code here).
#[test]
fn any_other_checked_in_model() {
    let known = [
        "tf_d0_ts13",
        "tf_d0_ts17",
        "tf_d0_export18",
        "tf_lite0_ts17",
        "pt_d0_ts17",
        "tf_d0_ts17_batch",
    ];
    let entries = std::fs::read_dir(models_dir()).expect("tests/onnx/models");
    for e in entries.flatten() {
        let p = e.path();
        let Some(stem) = p.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if p.extension().is_some_and(|x| x == "onnx") && !known.contains(&stem) {
            check(&models_dir(), stem);
        }
    }
}

/// The full-size models of `make_models.py --big` (not in the repository), or every
/// `NAME.onnx` with `NAME.input.npy` and `NAME.<output>.npy` in `$EFFDET_ONNX_DIR`: run with
/// `cargo test -p effdet-compiler --test onnx_models -- --ignored`.
#[test]
#[ignore = "needs /tmp/onnx-big from tests/onnx/make_models.py --big, or $EFFDET_ONNX_DIR"]
fn full_size_models() {
    let dir = PathBuf::from(std::env::var("EFFDET_ONNX_DIR").unwrap_or("/tmp/onnx-big".into()));
    // Full-size exports report the same conv MACs as the spec of their variant (the
    // PyTorch-native D0's symmetric padding gives the same output sizes as TF 'same').
    for (name, variant) in [
        ("tf_d1_ts17", "d1"),
        ("tf_lite0_ts17", "lite0"),
        ("pt_d0_ts17", "d0"),
        ("tf_d0_export18", "d0"),
    ] {
        let path = dir.join(format!("{name}.onnx"));
        if path.exists() {
            let g = effdet_compiler::onnx::import(&path, None).expect("import");
            assert_eq!(g.macs(), spec_macs(variant), "{name}: macs");
        }
    }
    let mut ran = 0;
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            let stem = p.file_stem()?.to_str()?.to_string();
            p.extension().is_some_and(|x| x == "onnx").then_some(stem)
        })
        .collect();
    names.sort();
    for name in names {
        check(&dir, &name);
        ran += 1;
    }
    assert!(ran > 0, "no model in {}", dir.display());
}
