//! `effdetc build --tune` and `--tuning FILE` through the real binary: the choices land in
//! `tuning.json` and in the generated calls, the same file gives the same crate byte for
//! byte, and a bad file is a clear error that writes nothing. (That tuned blockings
//! compute the same bits is the runtime's `tunings_change_no_bits`; that a tuned crate
//! builds and matches the untuned one is `golden_crates`'s `tuned_crate_matches_untuned`.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{effdetc, stderr};

/// Every file of a crate directory, by relative path.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

fn build(out: &Path, extra: &[&str]) -> Output {
    let out = out.to_str().unwrap();
    let mut args = vec![
        "build",
        "specs/d0.yaml",
        "--random-weights",
        "0",
        "--name",
        "effdet-d0-tuned",
        "-o",
        out,
    ];
    args.extend_from_slice(extra);
    effdetc(&args)
}

fn text(files: &BTreeMap<PathBuf, Vec<u8>>, name: &str) -> String {
    String::from_utf8(files[Path::new(name)].clone()).unwrap()
}

#[test]
fn tune_writes_its_choices_and_the_file_rebuilds_the_same_crate() {
    let tmp = tempfile::tempdir().unwrap();
    let tuned = tmp.path().join("tuned");
    let o = build(&tuned, &["--tune"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("tuning 1×1 conv 1/") && err.contains("the fixed rule"),
        "{err}"
    );
    let a = files(&tuned);
    let json: serde_json::Value = serde_json::from_slice(&a[Path::new("tuning.json")]).unwrap();
    let entries = json["conv1x1"].as_array().unwrap();
    assert!(
        entries.len() >= 20,
        "D0 has more distinct 1×1 conv shapes: {json}"
    );
    for e in entries {
        assert!(
            e["block"].as_u64().unwrap() > 0 && e["tuned_us"].as_f64().unwrap() > 0.0,
            "{e}"
        );
        assert!(e["tuned_us"].as_f64() <= e["default_us"].as_f64(), "{e}");
    }
    // The file again, without timing: the same crate, byte for byte.
    let again = tmp.path().join("again");
    let file = tuned.join("tuning.json");
    let o = build(&again, &["--tuning", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("tuning 1×1 conv"), "{}", stderr(&o));
    assert!(
        a == files(&again),
        "--tuning tuning.json gave another crate"
    );
}

#[test]
fn a_tuning_file_sets_the_blocking_of_its_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    // D0's 40 → 240 expand conv at 64² and its 1152 → 192 project at 16²; a shape D0 does
    // not have is ignored.
    let file = tmp.path().join("mine.json");
    let entry = |cin: usize, cout: usize, hw: usize, block: usize| {
        format!(
            "{{\"cin\": {cin}, \"cout\": {cout}, \"hw\": {hw}, \"block\": {block}, \"pack_x\": false, \
             \"tile\": \"8x2\", \"default_us\": 2.0, \"tuned_us\": 1.0}}"
        )
    };
    let text_in = format!(
        "{{\"isa\": \"Avx512\", \"conv1x1\": [{}, {}, {}]}}",
        entry(40, 240, 4096, 256),
        entry(1152, 192, 256, 128),
        entry(7, 7, 7, 7)
    );
    std::fs::write(&file, &text_in).unwrap();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    for dir in [&one, &two] {
        let o = build(dir, &["--tuning", file.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let a = files(&one);
    assert!(
        a == files(&two),
        "the same tuning file gave two different crates"
    );
    let model = text(&a, "src/model.rs");
    // Tuned calls pass their blocking as their `TUNE` constant; the others `UNTUNED`.
    let flat: String = model.split_whitespace().collect();
    for want in [
        "k::conv1x1::tuned(Isa::Avx512,256,false,k::conv1x1::Tile::R8V2",
        "k::conv1x1::tuned(Isa::Avx512,128,false,k::conv1x1::Tile::R8V2",
    ] {
        assert!(flat.contains(want), "no `{want}` in the generated model");
    }
    assert!(flat.contains("{k::conv1x1::UNTUNED}"));
    // The crate keeps the file (normalized), which rebuilds it.
    let kept: serde_json::Value = serde_json::from_slice(&a[Path::new("tuning.json")]).unwrap();
    let given: serde_json::Value = serde_json::from_str(&text_in).unwrap();
    assert_eq!(kept, given);
    // Without a tuning the crate has neither.
    let plain = tmp.path().join("plain");
    assert!(build(&plain, &[]).status.success());
    let p = files(&plain);
    assert!(!p.contains_key(Path::new("tuning.json")));
    assert!(!text(&p, "src/model.rs").contains("k::conv1x1::tuned("));
}

#[test]
fn bad_tuning_files_are_clear_errors_that_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.json");
    let out = tmp.path().join("out");
    for (text, want) in [
        ("{\"isa\": \"Avx512\",\n \"conv1x1\": [", "line 2 column"),
        ("{\"isa\": \"Avx512\", \"conv1x1\": [{\"cin\": 1, \"cout\": 1, \"hw\": 1, \"block\": 1, \"pack_x\": true, \"tile\": \"9x9\", \"default_us\": 1, \"tuned_us\": 1}]}", "tile `9x9`"),
        ("{\"isa\": \"Mmx\", \"conv1x1\": []}", "isa `Mmx`"),
    ] {
        std::fs::write(&bad, text).unwrap();
        let o = build(&out, &["--tuning", bad.to_str().unwrap()]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("bad.json") && err.contains(want) && !err.contains("panicked"), "{err}");
        assert!(!out.exists(), "a failed build wrote {}", out.display());
    }
    let missing = tmp.path().join("missing.json");
    let o = build(&out, &["--tuning", missing.to_str().unwrap()]);
    assert!(
        stderr(&o).contains("missing.json") && stderr(&o).contains("cannot read"),
        "{}",
        stderr(&o)
    );
    // --tune and --tuning together: refused by the argument parser.
    let o = build(&out, &["--tune", "--tuning", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!out.exists());
}
