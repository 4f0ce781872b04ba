//! `effdetc inspect` and `effdetc run` on specs, through the real binary: the reference
//! counts of every variant, and a clear error (file, place, problem; no panic, no partial
//! output) for every kind of bad input.

#[path = "../../tests/compare.rs"]
mod compare;

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{effdetc, root, stderr};

fn fixtures() -> PathBuf {
    let dir = root().join("../shared/fixtures/tf_efficientdet_d0");
    assert!(dir.is_dir(), "golden fixtures missing at {}", dir.display());
    dir
}

/// Runs effdetc expecting failure; returns stderr after checking it is an error, not a panic.
fn fails(args: &[&str]) -> String {
    let o = effdetc(args);
    let err = stderr(&o);
    assert!(
        !o.status.success(),
        "expected failure for {args:?}, stdout: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "panic for {args:?}: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

fn inspect_json(model: &str) -> serde_json::Value {
    let o = effdetc(&["inspect", model, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("inspect --json prints JSON")
}

#[test]
fn every_spec_reproduces_the_reference_parameter_count() {
    // ../shared/fixtures/README.md, effdet `tf_efficientdet_*` learnable parameters.
    let expected = [
        ("d0", 3_880_067u64, 512),
        ("d1", 6_625_898, 640),
        ("d2", 8_097_039, 768),
        ("d3", 12_032_296, 896),
        ("d4", 20_723_675, 1024),
        ("d5", 33_653_315, 1280),
        ("d6", 51_871_782, 1280),
        ("d7", 51_871_782, 1536),
        ("d7x", 77_147_166, 1536),
        ("lite0", 3_243_470, 320),
        ("lite1", 4_248_318, 384),
        ("lite2", 5_252_334, 448),
        ("lite3", 8_350_862, 512),
        ("lite3x", 9_280_862, 640),
        ("lite4", 15_130_894, 640),
    ];
    for (variant, params, size) in expected {
        let j = inspect_json(&format!("specs/{variant}.yaml"));
        assert_eq!(j["params"], params, "{variant}");
        assert_eq!(
            j["input_shape"],
            serde_json::json!([1, 3, size, size]),
            "{variant}"
        );
        assert!(j["name"].as_str().unwrap().ends_with(variant), "{variant}");
    }
}

#[test]
fn d0_report_has_macs_ops_and_outputs() {
    let j = inspect_json("specs/d0.yaml");
    let macs = j["macs"].as_u64().unwrap() as f64;
    assert!((macs / 2_492_331_520.0 - 1.0).abs() < 0.01, "macs {macs}");
    let ops = j["ops"].as_object().unwrap();
    // Stem 1; stage-1 block: depthwise + SE 2; 15 MBConv blocks: expand, depthwise, SE 3 each;
    // 3 cells × 8 BiFPN pre-activations; 2 heads × 3 repeats × 5 levels.
    assert_eq!(ops["swish"], 1 + 2 + 15 * 3 + 3 * 8 + 2 * 3 * 5, "{ops:?}");
    assert_eq!(ops["sigmoid"], 16);
    assert_eq!(ops["weighted_sum"], 24);
    assert_eq!(
        j["outputs"]["class_P3"],
        serde_json::json!([1, 810, 64, 64])
    );
    assert_eq!(j["outputs"]["box_P7"], serde_json::json!([1, 36, 4, 4]));
    let d7x = inspect_json("specs/d7x.yaml");
    assert_eq!(
        d7x["outputs"]["class_P8"],
        serde_json::json!([1, 810, 6, 6])
    );
    let lite0 = inspect_json("specs/lite0.yaml");
    assert_eq!(lite0["outputs"]["box_P7"], serde_json::json!([1, 36, 3, 3]));
}

#[test]
fn dot_output_names_ops_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let dot = dir.path().join("d0.dot");
    let o = effdetc(&["inspect", "specs/d0.yaml", "--dot", dot.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&dot).unwrap();
    assert!(text.starts_with("digraph"));
    assert!(
        text.contains("backbone.conv_stem\\nconv\\n[1, 32, 256, 256]"),
        "{}",
        &text[..400]
    );
    let human = String::from_utf8(o.stdout).unwrap();
    assert!(human.contains("3,880,067"), "{human}");
}

/// Writes `text` as a spec in a temp dir and returns (dir guard, path).
fn spec_file(text: &[u8]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, text).unwrap();
    (dir, path.to_str().unwrap().to_string())
}

fn d0_with(from: &str, to: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(root().join("specs/d0.yaml")).unwrap();
    assert!(text.contains(from), "{from}");
    text.replacen(from, to, 1).into_bytes()
}

#[test]
fn bad_specs_name_file_line_and_column() {
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (b"name: [unclosed\n".to_vec(), ":1:", ""),
        (d0_with("  cell_repeats: 3\n", "  cell_repeats: 3\n  cel_repeats: 4\n"), ":19:", "cel_repeats"),
        (d0_with("num_filters: 64\n  cell", "num_filters: sixty-four\n  cell"), ":17:", "sixty-four"),
        (d0_with("num_filters: 64\n  cell", "num_filters: -64\n  cell"), ":17:", "-64"),
        (d0_with("min_level: 3", "min_level: 8"), ":15:", "greater than fpn.max_level"),
        (
            d0_with("  depth_coefficient: 1.0\n", "  depth_coefficient: 1.0\n  stages:\n    - {kernel: 3, stride: 0, expand: 1, in: 32, out: 16, repeats: 1}\n"),
            ":15:",
            "backbone.stages[0].stride 0 is out of range: 1..=8",
        ),
        (d0_with("width_coefficient: 1.0", "width_coefficient: -1.0"), ":12:", "backbone.width_coefficient -1 is out of range: (0, 8]"),
    ];
    for (text, place, words) in cases {
        let (_dir, path) = spec_file(&text);
        let err = fails(&["inspect", &path]);
        assert!(
            err.contains(&format!("{path}{place}")),
            "expected `{path}{place}` in: {err}"
        );
        assert!(err.contains(words), "expected `{words}` in: {err}");
    }
}

#[test]
fn empty_binary_and_missing_specs_are_errors() {
    for (text, words) in [
        (&b""[..], "empty"),
        (&b"\x00\x01\x02\xff"[..], "binary"),
        (&b"\xff\xfe junk"[..], "UTF-8"),
    ] {
        let (_dir, path) = spec_file(text);
        let err = fails(&["inspect", &path]);
        assert!(err.contains(&path) && err.contains(words), "{err}");
    }
    let err = fails(&["inspect", "specs/nope.yaml"]);
    assert!(
        err.contains("specs/nope.yaml") && err.contains("cannot read"),
        "{err}"
    );
    let err = fails(&["inspect", "README.md"]);
    assert!(err.contains("unknown model format"), "{err}");
}

#[test]
fn rule_breaking_specs_warn_but_work() {
    let (_dir, path) = spec_file(&d0_with("  repeats: 3\n", "  repeats: 5\n"));
    let o = effdetc(&["inspect", &path, "--json"]);
    assert!(o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("warning:") && err.contains("3 + floor(phi/3) = 3"),
        "{err}"
    );
}

fn run_d0(weights: &Path, input: &Path, out: &Path) -> Output {
    effdetc(&[
        "run",
        "specs/d0.yaml",
        "--weights",
        weights.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
    ])
}

#[test]
fn weights_that_do_not_match_list_every_problem() {
    use safetensors::tensor::TensorView;
    let fx = fixtures();
    let bytes = std::fs::read(fx.join("weights.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Drop one tensor, give another the wrong shape, add a stray one.
    let mut tensors: Vec<(String, TensorView)> = Vec::new();
    for (name, t) in st.tensors() {
        match name.as_str() {
            "backbone.bn1.weight" => {}
            "class_net.predict.conv_pw.bias" => {
                let data = &t.data()[..4 * 800];
                tensors.push((
                    name.clone(),
                    TensorView::new(t.dtype(), vec![800], data).unwrap(),
                ));
            }
            _ => tensors.push((name.clone(), t)),
        }
    }
    let extra = [0u8; 8];
    tensors.push((
        "head.extra".into(),
        TensorView::new(safetensors::Dtype::F32, vec![2], &extra).unwrap(),
    ));
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, safetensors::serialize(tensors, None).unwrap()).unwrap();
    let out = dir.path().join("out");
    let o = run_d0(&bad, &fx.join("input.npy"), &out);
    let err = stderr(&o);
    assert!(!o.status.success() && !err.contains("panicked"), "{err}");
    assert!(err.contains(bad.to_str().unwrap()), "{err}");
    assert!(
        err.contains("missing     backbone.bn1.weight (expected [32])"),
        "{err}"
    );
    assert!(
        err.contains("wrong shape class_net.predict.conv_pw.bias: expected [810], found [800]"),
        "{err}"
    );
    assert!(err.contains("unexpected  head.extra (found [2])"), "{err}");
    assert!(!out.exists(), "no output on error");

    // Not a safetensors file at all.
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"definitely not tensors").unwrap();
    let err = stderr(&run_d0(&junk, &fx.join("input.npy"), &out));
    assert!(
        err.contains("junk.safetensors: not a safetensors file"),
        "{err}"
    );
    assert!(!out.exists());
}

fn write_npy<T: npyz::AutoSerialize + Copy>(path: &Path, shape: &[u64], data: &[T]) {
    use npyz::WriterBuilder;
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(std::fs::File::create(path).unwrap())
        .begin_nd()
        .unwrap();
    w.extend(data.iter().copied()).unwrap();
    w.finish().unwrap();
}

#[test]
fn inputs_of_the_wrong_shape_or_dtype_are_errors() {
    let fx = fixtures();
    let weights = fx.join("weights.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let small = dir.path().join("small.npy");
    write_npy(&small, &[1, 3, 8, 8], &[0f32; 192]);
    let err = stderr(&run_d0(&weights, &small, &out));
    assert!(
        err.contains("small.npy: shape is [1, 3, 8, 8], the model takes [1, 3, 512, 512]"),
        "{err}"
    );
    let doubles = dir.path().join("f64.npy");
    write_npy(&doubles, &[1, 3, 512, 512], &vec![0f64; 3 * 512 * 512]);
    let err = stderr(&run_d0(&weights, &doubles, &out));
    assert!(
        err.contains("f64.npy: dtype is <f8, expected little-endian float32"),
        "{err}"
    );
    let junk = dir.path().join("junk.npy");
    std::fs::write(&junk, b"\x93NUMPY garbage").unwrap();
    let err = stderr(&run_d0(&weights, &junk, &out));
    assert!(err.contains("junk.npy: not a valid .npy file"), "{err}");
    assert!(!out.exists(), "no output on error");
    let err = fails(&[
        "run",
        "specs/d0.yaml",
        "--input",
        small.to_str().unwrap(),
        "--out-dir",
        "x",
    ]);
    assert!(err.contains("--weights"), "{err}");
}

#[test]
fn run_reproduces_the_fixture_outputs() {
    let fx = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run_d0(&fx.join("weights.safetensors"), &fx.join("input.npy"), &out);
    assert!(o.status.success(), "{}", stderr(&o));
    for head in ["class", "box"] {
        for level in 3..=7 {
            let name = format!("{head}_P{level}.npy");
            let ours = read(&out.join(&name));
            let reference = read(&fx.join(&name));
            assert_eq!(ours.0, reference.0, "{name} shape");
            compare::within(&name, &ours.1, &reference.1, 1.0).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

#[test]
fn batch_flag_sets_the_batch_of_specs_and_symbolic_onnx_inputs() {
    // A spec: the input gets the batch, the conv MACs scale with it.
    let one = String::from_utf8(effdetc(&["inspect", "specs/d0.yaml", "--json"]).stdout).unwrap();
    let two = effdetc(&["inspect", "specs/d0.yaml", "--batch", "2", "--json"]);
    assert!(two.status.success(), "{}", stderr(&two));
    let (one, two): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&one).unwrap(),
        serde_json::from_slice(&two.stdout).unwrap(),
    );
    assert_eq!(two["input_shape"], serde_json::json!([2, 3, 512, 512]));
    assert_eq!(
        two["macs"].as_u64().unwrap(),
        2 * one["macs"].as_u64().unwrap()
    );
    // Out of range: refused before anything runs.
    for bad in ["0", "2000"] {
        let o = effdetc(&["inspect", "specs/d0.yaml", "--batch", bad]);
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("1..=1024"), "{}", stderr(&o));
    }
    // `run` on an input without the batch names the file and both shapes.
    let fx = fixtures();
    let input = fx.join("input.npy");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = effdetc(&[
        "run",
        "specs/d0.yaml",
        "--batch",
        "2",
        "--weights",
        fx.join("weights.safetensors").to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("error: ") && err.contains("input.npy") && err.contains("[2, 3, 512, 512]"),
        "{err}"
    );
    assert!(!out.exists(), "no partial output");
    // An ONNX export with a symbolic batch axis, run at batch 2 against ORT's outputs.
    let models = root().join("tests/onnx/models");
    let o = effdetc(&[
        "run",
        models.join("tf_d0_ts17_batch.onnx").to_str().unwrap(),
        "--batch",
        "2",
        "--input",
        models.join("tf_d0_ts17_batch.input.npy").to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for head in ["class", "box"] {
        for level in 3..=7 {
            let name = format!("{head}_P{level}");
            let ours = read(&out.join(format!("{name}.npy")));
            let reference = read(&models.join(format!("tf_d0_ts17_batch.{name}.npy")));
            assert_eq!(ours.0, reference.0, "{name} shape");
            assert_eq!(ours.0[0], 2, "{name}: the batch first");
            let err = compare::max_error(&ours.1, &reference.1);
            assert!(err <= 1e-4, "{name}: max error {err}");
        }
    }
}

fn read(path: &Path) -> (Vec<u64>, Vec<f32>) {
    let f = npyz::NpyFile::new(std::fs::File::open(path).unwrap()).unwrap();
    let shape = f.shape().to_vec();
    (shape, f.into_vec().unwrap())
}
