//! The ways into effdet, each used by a crate of its own as a user would, on D0 with the
//! fixture weights, checked against the fixture outputs:
//!
//! * `tests/consumers/buildrs`: `effdet_compiler::Build` in build.rs + `include!`;
//! * `tests/consumers/macro`: `effdet_macros::model!`;
//! * `tests/consumers/standalone`: a path dependency on the crate `effdetc build --c-api`
//!   writes, whose static library a C program (`tests/consumers/c/main.c`) also links;
//!   `tests/consumers/threads` checks the same crate's thread pool (bit-identical outputs at
//!   1–3 threads, no allocation per forward, panics as `Error::Panic`, fork);
//!   `tests/consumers/nostd` is a `#![no_std] #![no_main]` program using the same model
//!   generated without the C ABI and built without `std` (its outputs against the fixture,
//!   its detections against the `std` crate's).
//!
//! The consumers are not workspace members; they build with `cargo build --release --offline`
//! into the target directory the generated-crate tests share (`target/generated-crates`), so
//! the runtime, the compiler (as a build dependency) and registry crates compile once. The
//! build-script and macro consumers are also built again unchanged (cargo must find them
//! fresh: nothing is regenerated) and after touching the spec (they must rebuild).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::SystemTime;

use effdet_compiler::compile::{self, BuildRequest, WeightsChoice};
use effdet_compiler::passes::PassSet;
use effdet_tests::{assert_close, fixture_dir, read_npy};

/// The tests touch `specs/d0.yaml`, which the other consumers read: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn target_dir() -> PathBuf {
    root().join("target/generated-crates")
}

fn consumer(name: &str) -> PathBuf {
    let dir = root().join("tests/consumers").join(name);
    // Resolve offline to the workspace's versions (the lock file is not checked in: cargo
    // prunes what the consumer does not use).
    let lock = dir.join("Cargo.lock");
    if !lock.exists() {
        std::fs::copy(root().join("Cargo.lock"), &lock).unwrap();
    }
    dir
}

/// Runs cargo on the crate in `dir`; returns stderr after checking success.
fn cargo(args: &[&str], dir: &Path) -> String {
    let out = Command::new(env!("CARGO"))
        .args(args)
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .expect("cargo runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "cargo {args:?} failed for {}:\n{stderr}",
        dir.display()
    );
    stderr
}

fn assert_no_warnings(stderr: &str, what: &str) {
    assert!(
        !stderr.lines().any(|l| l.starts_with("warning")),
        "{what}: warnings:\n{stderr}"
    );
}

/// Runs a built program; returns stdout after checking success.
fn run(program: &Path, args: &[&Path]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} failed:\n{stdout}\n{}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A consumer that checks the ten outputs itself prints one `ok <name>` line per output.
fn assert_ten_ok(stdout: &str) {
    let ok = stdout
        .lines()
        .filter(|l| {
            l.starts_with("ok ") && !l.starts_with("ok detect") && !l.starts_with("ok batch ")
        })
        .count();
    assert_eq!(ok, 10, "expected ten checked outputs:\n{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("ok detect: ")),
        "expected detections:\n{stdout}"
    );
}

/// The batch-2 module (`Build::batch`, `model!(batch = 2)`) checked its ten outputs.
fn assert_batch_ok(stdout: &str) {
    let ok = stdout
        .lines()
        .filter(|l| l.starts_with("ok batch "))
        .count();
    assert_eq!(ok, 10, "expected ten checked batch-2 outputs:\n{stdout}");
}

fn touch(path: &Path) {
    std::fs::File::options()
        .append(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now()))
        .unwrap_or_else(|e| panic!("touch {}: {e}", path.display()));
}

/// Builds unchanged: cargo must find everything fresh (no build script run, no rustc).
fn assert_fresh(dir: &Path, package: &str) {
    let stderr = cargo(&["build", "--release", "--offline", "-v"], dir);
    assert!(
        stderr.contains(&format!("Fresh {package}")) && !stderr.contains("Running"),
        "{package} rebuilt without a change:\n{stderr}"
    );
}

/// After touching the spec: the consumer must be rebuilt.
fn assert_rebuilt(dir: &Path, package: &str) {
    let stderr = cargo(&["build", "--release", "--offline", "-v"], dir);
    assert!(
        stderr.contains(&format!("Compiling {package}")),
        "{package} was not rebuilt after its spec changed:\n{stderr}"
    );
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

/// The newest `OUT_DIR/<file>` of `package`'s build script.
fn out_file(package: &str, file: &str) -> PathBuf {
    std::fs::read_dir(target_dir().join("release/build"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}-")))
        })
        .map(|p| p.join("out").join(file))
        .filter(|p| p.exists())
        .max_by_key(|p| modified(p))
        .unwrap_or_else(|| panic!("no OUT_DIR of {package} holds {file}"))
}

#[test]
fn build_script_consumer_matches_the_fixture_and_rebuilds_only_on_change() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture_dir("tf_efficientdet_d0");
    let dir = consumer("buildrs");
    let stderr = cargo(&["build", "--release", "--offline"], &dir);
    assert_no_warnings(&stderr, "consumer-buildrs");
    let bin = target_dir().join("release/consumer-buildrs");
    let stdout = run(&bin, &[&fx]);
    assert_ten_ok(&stdout);
    assert_batch_ok(&stdout);

    let module = out_file("consumer-buildrs", "d0.rs");
    let before = modified(&module);
    assert_fresh(&dir, "consumer-buildrs");
    assert_eq!(before, modified(&module), "d0.rs was rewritten");

    // rerun-if-changed: a touched spec reruns the build script, which leaves the module,
    // unchanged in content, alone; then all is fresh again.
    touch(&root().join("specs/d0.yaml"));
    assert_rebuilt(&dir, "consumer-buildrs");
    assert_eq!(
        before,
        modified(&module),
        "d0.rs rewritten with the same contents"
    );
    assert_fresh(&dir, "consumer-buildrs");
}

#[test]
fn macro_consumer_matches_the_fixture_and_rebuilds_only_on_change() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture_dir("tf_efficientdet_d0");
    let dir = consumer("macro");
    let stderr = cargo(&["build", "--release", "--offline"], &dir);
    assert_no_warnings(&stderr, "consumer-macro");
    let bin = target_dir().join("release/consumer-macro");
    let stdout = run(&bin, &[&fx]);
    assert_ten_ok(&stdout);
    assert_batch_ok(&stdout);

    assert_fresh(&dir, "consumer-macro");
    // The expansion `include_bytes!`s the spec: touching it re-expands the macro.
    touch(&root().join("specs/d0.yaml"));
    assert_rebuilt(&dir, "consumer-macro");
    assert_fresh(&dir, "consumer-macro");
}

/// `rustc -vV`'s host triple, for the cc crate outside a build script.
fn host() -> String {
    let out = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-vV")
        .output()
        .expect("rustc runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc -vV names the host")
}

fn c_compiler(cpp: bool) -> Option<Command> {
    let host = host();
    cc::Build::new()
        .cpp(cpp)
        .target(&host)
        .host(&host)
        .opt_level(1)
        .cargo_metadata(false)
        .cargo_warnings(false)
        .try_get_compiler()
        .ok()
        .map(|c| c.to_command())
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[cfg(target_os = "linux")]
#[test]
fn standalone_crate_and_its_c_abi_match_the_fixture() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture_dir("tf_efficientdet_d0");
    // Where tests/consumers/standalone/Cargo.toml expects it.
    let generated = root().join("target/consumer-crates/effdet-d0");
    let req = BuildRequest {
        model: root().join("specs/d0.yaml"),
        weights: WeightsChoice::File(fx.join("weights.safetensors")),
        out_dir: Some(generated.clone()),
        name: Some("effdet-d0".into()),
        passes: PassSet::all(),
        input_shape: None,
        batch: None,
        limits: Default::default(),
        embed_limit: effdet_compiler::codegen::DEFAULT_EMBED_LIMIT,
        detect_spec: None,
        c_api: true,
        python: false,
        tuning: Default::default(),
    };
    compile::build(&req, &mut |_| {}).unwrap_or_else(|e| panic!("effdetc build --c-api: {e}"));
    let lock = generated.join("Cargo.lock");
    std::fs::copy(root().join("Cargo.lock"), lock).unwrap();
    let stderr = cargo(&["build", "--release", "--offline", "--lib"], &generated);
    assert_no_warnings(&stderr, "effdet-d0 --c-api");
    let staticlib = target_dir().join("release/libeffdet_d0.a");
    assert!(staticlib.is_file(), "no {}", staticlib.display());

    // Rust: a crate depending on the generated one.
    let work = tempfile::tempdir().unwrap();
    let dir = consumer("standalone");
    let stderr = cargo(&["build", "--release", "--offline"], &dir);
    assert_no_warnings(&stderr, "consumer-standalone");
    let rust_dets = work.path().join("rust-detections.f32");
    let stdout = run(
        &target_dir().join("release/consumer-standalone"),
        &[&fx, &rust_dets],
    );
    assert_ten_ok(&stdout);

    // The same crate's threads: bit-identical outputs, no allocation per forward, panics
    // surfaced, moves between threads, fork.
    let dir = consumer("threads");
    let stderr = cargo(&["build", "--release", "--offline"], &dir);
    assert_no_warnings(&stderr, "consumer-threads");
    let stdout = run(&target_dir().join("release/consumer-threads"), &[&fx]);
    // Under load (reduced for CI; `consumer-threads FIXTURE_DIR load 2000` is the full run):
    // 4 threads with a model each, identical non-empty detections, flat resident set.
    let load = run(
        &target_dir().join("release/consumer-threads"),
        &[&fx, Path::new("load"), Path::new("120")],
    );
    assert!(
        load.lines()
            .any(|l| l == "ok load: identical non-empty detections per image, resident set flat"),
        "{load}"
    );
    for check in [
        "ok bit-identical at 1, 2 and 3 threads",
        "ok no allocation per forward at 1 and 2 threads",
        "ok panics surface as Error::Panic at 1 and 2 threads; the model stays usable",
        "ok moved between threads, thread count changed between forwards",
        "ok a forked child restarts the workers",
    ] {
        assert!(
            stdout.lines().any(|l| l == check),
            "missing `{check}`:\n{stdout}"
        );
    }

    // C: the static library and the header, from a C program.
    let include = generated.join("include");
    let program = work.path().join("c-consumer");
    let mut cc = c_compiler(false).expect("a C compiler");
    let out = cc
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(&include)
        .arg(root().join("tests/consumers/c/main.c"))
        .arg(&staticlib)
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&program)
        .output()
        .expect("the C compiler runs");
    assert!(
        out.status.success(),
        "compiling the C consumer failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outputs = work.path().join("c-outputs");
    std::fs::create_dir(&outputs).unwrap();
    let stdout = run(&program, &[&fx.join("input.npy"), &outputs]);
    assert!(stdout.lines().any(|l| l == "ok"), "{stdout}");
    for head in ["class", "box"] {
        for level in 3..=7 {
            let name = format!("{head}_P{level}");
            let (_, reference) = read_npy(&fx.join(format!("{name}.npy")));
            let ours = read_f32(&outputs.join(format!("{name}.f32")));
            assert_close(&format!("C {name}"), &ours, &reference);
        }
    }
    // The same detections through C as through Rust (same code, same thread count).
    let c_dets = read_f32(&outputs.join("detections.f32"));
    assert!(!c_dets.is_empty());
    assert_eq!(c_dets, read_f32(&rust_dets), "C and Rust detections differ");

    // The header is also valid C++ (a C++ compiler is required, as the C one is).
    {
        let mut cxx = c_compiler(true).expect("a C++ compiler (g++ or clang++)");
        let src = work.path().join("header.cpp");
        std::fs::write(
            &src,
            "#include \"effdet_d0.h\"\nint main() { effdet_d0_model *m = nullptr; return effdet_d0_create(&m); }\n",
        )
        .unwrap();
        let out = cxx
            .args(["-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-I"])
            .arg(&include)
            .arg(&src)
            .output()
            .expect("the C++ compiler runs");
        assert!(
            out.status.success(),
            "the header is not valid C++:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Without std: the same model, the library built with `default-features = false`, used
    // by a program without std.
    nostd_consumer_matches(&fx, &req, &read_f32(&rust_dets));
}

/// Generates the model of `req` without the C ABI (a `staticlib` needs `std`) into
/// `target/consumer-crates/effdet-d0-nostd`, builds its library without `std` (no
/// warnings) and the `#![no_std]` consumer (with AVX2+FMA as compile-time target features
/// when this CPU has them: without `std` that is how the instruction set is chosen), runs
/// it on the fixture input and checks its outputs against the fixture and its detections
/// against `std_dets` (the `std` crate's on the same image, `x1 y1 x2 y2 score class`
/// each).
fn nostd_consumer_matches(fx: &Path, req: &BuildRequest, std_dets: &[f32]) {
    let generated = root().join("target/consumer-crates/effdet-d0-nostd");
    let req = BuildRequest {
        out_dir: Some(generated.clone()),
        name: Some("effdet-d0-nostd".into()),
        c_api: false,
        ..req.clone()
    };
    compile::build(&req, &mut |_| {}).unwrap_or_else(|e| panic!("effdetc build: {e}"));
    std::fs::copy(root().join("Cargo.lock"), generated.join("Cargo.lock")).unwrap();
    let stderr = cargo(
        &[
            "build",
            "--release",
            "--offline",
            "--lib",
            "--no-default-features",
        ],
        &generated,
    );
    assert_no_warnings(&stderr, "effdet-d0-nostd without std");

    let dir = consumer("nostd");
    #[cfg(target_arch = "x86_64")]
    // The ISA the std crate detects here, so both run the same kernels and their outputs
    // and detections (ties among equal scores included) are bit for bit the same.
    let (flags, isa) = if std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("fma")
    {
        ("-C target-feature=+avx512f,+avx2,+fma", "Avx512")
    } else if std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
    {
        ("-C target-feature=+avx2,+fma", "Avx2")
    } else {
        ("", "Scalar")
    };
    #[cfg(not(target_arch = "x86_64"))]
    let (flags, isa) = (
        "",
        if cfg!(target_arch = "aarch64") {
            "Neon"
        } else {
            "Scalar"
        },
    );
    let out = Command::new(env!("CARGO"))
        .args(["build", "--release", "--offline", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target_dir())
        .env("RUSTFLAGS", flags)
        .output()
        .expect("cargo runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "consumer-nostd does not build:\n{stderr}"
    );
    assert_no_warnings(&stderr, "consumer-nostd");

    let (shape, input) = read_npy(&fx.join("input.npy"));
    assert_eq!(shape, [1, 3, 512, 512]);
    let mut child = Command::new(target_dir().join("release/consumer-nostd"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("consumer-nostd runs");
    let bytes: Vec<u8> = input.iter().flat_map(|v| v.to_le_bytes()).collect();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&bytes).expect("stdin of consumer-nostd");
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "consumer-nostd failed:\n{stderr}");
    for line in [
        format!("isa={isa}"),
        "ok from_bytes: bit-identical outputs".into(),
        "ok detect: ".into(),
        "ok from_bytes refuses short weights: ".into(),
    ] {
        assert!(
            stderr.lines().any(|l| l.starts_with(&line)),
            "consumer-nostd: no `{line}` in\n{stderr}"
        );
    }
    let values: Vec<f32> = out
        .stdout
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let mut at = 0;
    for head in ["class", "box"] {
        for level in 3..=7 {
            let name = format!("{head}_P{level}");
            let (_, reference) = read_npy(&fx.join(format!("{name}.npy")));
            let ours = values
                .get(at..at + reference.len())
                .unwrap_or_else(|| panic!("consumer-nostd: stdout ends before {name}"));
            assert_close(&format!("no_std {name}"), ours, &reference);
            at += reference.len();
        }
    }
    let count = out
        .stdout
        .get(4 * at..4 * at + 4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()));
    let dets = &values[at + 1..];
    assert_eq!(
        count,
        Some(dets.len() as u32 / 6),
        "consumer-nostd: detection count"
    );
    assert_eq!(
        dets.len(),
        std_dets.len(),
        "no_std vs std: detection counts differ"
    );
    for (i, (a, b)) in dets.chunks(6).zip(std_dets.chunks(6)).enumerate() {
        assert_eq!(a[5], b[5], "detection {i}: class {} vs {}", a[5], b[5]);
        for k in 0..4 {
            assert!(
                (a[k] - b[k]).abs() <= 1e-3,
                "detection {i}: box {a:?} vs {b:?}"
            );
        }
        assert!(
            (a[4] - b[4]).abs() <= 1e-5,
            "detection {i}: score {} vs {}",
            a[4],
            b[4]
        );
        assert!(a.iter().all(|v| v.is_finite()), "detection {i}: {a:?}");
    }
}
