//! The build-script way in: compile a model from `build.rs` into `$OUT_DIR` and pull the
//! generated module in with `include!`.
//!
//! ```no_run
//! // build.rs
//! fn main() -> Result<(), effdet_compiler::BuildError> {
//!     effdet_compiler::Build::new("specs/d0.yaml")
//!         .weights("weights/d0.safetensors")
//!         .module("d0")
//!         .emit(std::env::var_os("OUT_DIR").unwrap())?;
//!     Ok(())
//! }
//! ```
//!
//! ```ignore
//! // src/main.rs (or lib.rs)
//! mod d0 {
//!     include!(concat!(env!("OUT_DIR"), "/d0.rs"));
//! }
//! let mut model = d0::Model::new();
//! ```
//!
//! The module is exactly the `src/model.rs` of the crate `effdetc build` writes (same passes,
//! plan and kernels), so it names `::effdet_runtime`: the consuming crate depends on
//! `effdet-runtime` (`[dependencies]`) and on `effdet-compiler` (`[build-dependencies]`).

use std::fmt;
use std::path::{Path, PathBuf};

use quote::quote;

use crate::codegen::{emit, WeightsSource, DEFAULT_EMBED_LIMIT};
use crate::compile::{self, BuildRequest, WeightsChoice};
use crate::passes::PassSet;

/// A model to compile from a build script: `Build::new(model)`, options, then
/// [`emit`](Build::emit).
///
/// Relative paths are relative to the consuming crate's directory (`CARGO_MANIFEST_DIR`,
/// which cargo sets for build scripts), not to the current directory of whoever runs cargo.
#[derive(Clone, Debug)]
#[must_use = "nothing is compiled until `emit` is called"]
pub struct Build {
    model: PathBuf,
    weights: Option<Weights>,
    module: Option<String>,
    passes: Passes,
    input_shape: Option<Vec<usize>>,
    batch: Option<usize>,
    max_memory_mib: Option<u64>,
    max_gmacs: Option<u64>,
    detect_spec: Option<PathBuf>,
    embed_limit: usize,
    cargo: bool,
}

#[derive(Clone, Debug)]
enum Weights {
    File(PathBuf),
    Random(u64),
}

#[derive(Clone, Debug)]
enum Passes {
    All,
    None,
    /// Parsed at `emit`, so a bad list is an error there rather than a panic here.
    List(String),
}

/// What [`Build::emit`] wrote.
#[derive(Clone, Debug)]
pub struct Emitted {
    /// `OUT_DIR/<module>.rs`, the file to `include!`.
    pub module: PathBuf,
    /// `OUT_DIR/<module>.weights.bin`, the packed weights the module embeds (or, above the
    /// embed limit, reads at run time).
    pub weights: PathBuf,
    /// Whether the weights are embedded in the module (`Model::new()` needs no file).
    pub embedded: bool,
    /// The model's name (`tf_efficientdet_d0`).
    pub model_name: String,
    /// Kernel calls per `forward`.
    pub steps: usize,
    /// Bytes of the planned arena.
    pub arena_bytes: u64,
    /// Bytes of the packed weights.
    pub weight_bytes: u64,
}

/// Why [`Build::emit`] failed: a message that names the file (and, for specs, the line and
/// column). `Debug` prints the same text as `Display`, so `fn main() -> Result<(), _>` in a
/// build script shows a readable error, not a struct dump.
#[derive(Clone, PartialEq, Eq)]
pub struct BuildError {
    message: String,
}

impl BuildError {
    fn new(message: impl Into<String>) -> Self {
        BuildError {
            message: message.into(),
        }
    }

    /// The message alone.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "effdet: {}", self.message)
    }
}

impl fmt::Debug for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for BuildError {}

impl Build {
    /// A model to compile: a YAML spec (`specs/d0.yaml`) or an ONNX file.
    pub fn new(model: impl AsRef<Path>) -> Build {
        Build {
            model: model.as_ref().to_path_buf(),
            weights: None,
            module: None,
            passes: Passes::All,
            input_shape: None,
            batch: None,
            max_memory_mib: None,
            max_gmacs: None,
            detect_spec: None,
            embed_limit: DEFAULT_EMBED_LIMIT,
            cargo: true,
        }
    }

    /// A `state_dict` with effdet's parameter names (specs; an ONNX file carries its own
    /// weights): a safetensors file or a PyTorch checkpoint (`.pth` / `.pt`, a bare
    /// `state_dict` or a training checkpoint holding one; see `weights::bind_checkpoint`).
    pub fn weights(mut self, path: impl AsRef<Path>) -> Build {
        self.weights = Some(Weights::File(path.as_ref().to_path_buf()));
        self
    }

    /// Deterministic random weights from `seed`, for benchmarks and compile tests (specs).
    pub fn random_weights(mut self, seed: u64) -> Build {
        self.weights = Some(Weights::Random(seed));
        self
    }

    /// The module's file name in `OUT_DIR` (`d0` writes `d0.rs` and `d0.weights.bin`); a Rust
    /// identifier. Default: the model's file stem (`specs/d0.yaml` → `d0`).
    pub fn module(mut self, name: impl Into<String>) -> Build {
        self.module = Some(name.into());
        self
    }

    /// Run no fusion pass (the unfused graph, op for op; for debugging).
    pub fn no_fuse(mut self) -> Build {
        self.passes = Passes::None;
        self
    }

    /// Run only these passes (comma-separated names, as `effdetc build --passes`).
    pub fn passes(mut self, list: impl Into<String>) -> Build {
        self.passes = Passes::List(list.into());
        self
    }

    /// The input shape `[N, C, H, W]` of an ONNX model whose graph leaves it open.
    pub fn input_shape(mut self, shape: impl Into<Vec<usize>>) -> Build {
        self.input_shape = Some(shape.into());
        self
    }

    /// Images per forward pass (1..=1024, default 1): the input becomes `[n, 3, H, W]`,
    /// every output `[n, ...]`, and the module gets `Model::detect_batch` (an ONNX model's
    /// symbolic batch dimension is set to `n`).
    pub fn batch(mut self, n: usize) -> Build {
        self.batch = Some(n);
        self
    }

    /// The memory budget in MiB (default 4096), as `effdetc --max-memory-mib`: a model whose
    /// parameters, arena or packed weights would need more is refused with a message saying
    /// how much it needs.
    pub fn max_memory_mib(mut self, mib: u64) -> Build {
        self.max_memory_mib = Some(mib);
        self
    }

    /// The budget of conv multiply-accumulates per forward pass, in G (default 2000), as
    /// `effdetc --max-gmacs`.
    pub fn max_gmacs(mut self, gmacs: u64) -> Build {
        self.max_gmacs = Some(gmacs);
        self
    }

    /// For an ONNX model: a spec whose anchors, classes, normalization and NMS settings give
    /// the module `Model::detect` (a spec model always has its own).
    pub fn detect_spec(mut self, path: impl AsRef<Path>) -> Build {
        self.detect_spec = Some(path.as_ref().to_path_buf());
        self
    }

    /// Embed packed weights up to this many MiB (default 64); larger ones are read by
    /// `Model::new()` at run time from `OUT_DIR`, so the binary only runs where it was built
    /// (use `Model::from_file` with a copy of `<module>.weights.bin` elsewhere).
    pub fn embed_limit_mib(mut self, mib: usize) -> Build {
        self.embed_limit = mib.saturating_mul(1 << 20);
        self
    }

    /// Whether to print `cargo:rerun-if-changed` and `cargo:warning` lines (default: yes; turn
    /// off when calling from anything but a build script).
    pub fn cargo_metadata(mut self, on: bool) -> Build {
        self.cargo = on;
        self
    }

    fn weights_path(&self) -> Option<&Path> {
        match &self.weights {
            Some(Weights::File(p)) => Some(p),
            _ => None,
        }
    }

    /// Compiles the model and writes `<out_dir>/<module>.rs` and
    /// `<out_dir>/<module>.weights.bin`. Files whose contents are unchanged are not rewritten.
    ///
    /// Prints `cargo:rerun-if-changed` for the model, the weights and the detect spec (so the
    /// build script reruns when they change, and only then) and the spec's warnings as
    /// `cargo:warning`. Like any `rerun-if-changed`, this replaces cargo's default of rerunning
    /// when any file of the package changes: a build script that reads other files prints
    /// their lines too. An ONNX model's external-data files are not tracked.
    pub fn emit(&self, out_dir: impl AsRef<Path>) -> Result<Emitted, BuildError> {
        let base = manifest_dir();
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let out_dir = resolve(out_dir.as_ref());
        let model = resolve(&self.model);
        let weights = match &self.weights {
            Some(Weights::File(p)) => Some(resolve(p)),
            _ => None,
        };
        let detect_spec = self.detect_spec.as_deref().map(resolve);
        if self.cargo {
            // Before compiling: a failed build is retried when an input is fixed.
            for p in [Some(&model), weights.as_ref(), detect_spec.as_ref()]
                .into_iter()
                .flatten()
            {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
        let module = match &self.module {
            Some(m) => m.clone(),
            None => default_module_name(&model),
        };
        check_module_name(&module)?;
        if !model.is_file() {
            return Err(BuildError::new(format!(
                "{}: no such model file (relative paths are relative to {})",
                model.display(),
                base.display()
            )));
        }
        let onnx = model
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
        let weights = match (&self.weights, weights) {
            (_, Some(path)) if !onnx => {
                if !path.is_file() {
                    return Err(BuildError::new(format!(
                        "{}: no such weights file (relative paths are relative to {})",
                        path.display(),
                        base.display()
                    )));
                }
                WeightsChoice::File(path)
            }
            (Some(Weights::Random(seed)), _) if !onnx => WeightsChoice::Random(*seed),
            (None, _) if onnx => WeightsChoice::Model,
            (Some(_), _) => {
                return Err(BuildError::new(format!(
                    "{}: an ONNX model carries its own weights; drop `.weights(..)` / `.random_weights(..)`",
                    model.display()
                )))
            }
            (None, _) => {
                return Err(BuildError::new(format!(
                    "{}: a spec has no weights: add `.weights(\"FILE.safetensors\")` or `.weights(\"FILE.pth\")` (a state_dict with effdet's parameter names), or `.random_weights(SEED)` for benchmarks",
                    model.display()
                )))
            }
        };
        let passes = match &self.passes {
            Passes::All => PassSet::all(),
            Passes::None => PassSet::none(),
            Passes::List(list) => {
                PassSet::parse(list).map_err(|e| BuildError::new(e.to_string()))?
            }
        };
        let req = BuildRequest {
            model: model.clone(),
            weights,
            out_dir: Some(out_dir.clone()),
            name: None,
            passes,
            input_shape: self.input_shape.clone(),
            batch: self.batch,
            limits: crate::budget::Limits::with(self.max_memory_mib, self.max_gmacs)
                .map_err(BuildError::new)?,
            embed_limit: self.embed_limit,
            detect_spec,
            c_api: false,
            python: false,
            tuning: Default::default(),
        };
        let cargo = self.cargo;
        let compiled = compile::compile_model(&req, &mut |line| {
            if let Some(w) = line.strip_prefix("warning: ") {
                if cargo {
                    println!("cargo:warning={}", w.replace('\n', " "));
                }
            }
            eprintln!("effdet: {line}");
        })
        .map_err(|e| {
            // Name the files as the build script wrote them, not as resolved.
            let mut message = e.message;
            for (written, resolved) in [
                (Some(self.model.as_path()), Some(req.model.as_path())),
                (self.weights_path(), req_weights(&req)),
                (self.detect_spec.as_deref(), req.detect_spec.as_deref()),
            ] {
                if let (Some(w), Some(r)) = (written, resolved) {
                    message = message.replace(&*r.to_string_lossy(), &w.to_string_lossy());
                }
            }
            BuildError::new(message)
        })?;

        let weights_file = format!("{module}.weights.bin");
        let weights_path = out_dir.join(&weights_file);
        // `env!("OUT_DIR")` keeps absolute paths of this machine out of the generated
        // source when writing into the consumer's own OUT_DIR (the usual case).
        let path_expr = if is_cargo_out_dir(&out_dir) {
            let file = format!("/{weights_file}");
            quote!(concat!(env!("OUT_DIR"), #file))
        } else {
            let abs = weights_path.to_string_lossy().into_owned();
            quote!(#abs)
        };
        let embedded = 4 * compiled.weights.len() <= self.embed_limit;
        let source = if embedded {
            WeightsSource::Embedded(path_expr)
        } else {
            WeightsSource::File(path_expr)
        };
        let module_text = emit::module(
            &compiled.plan,
            &source,
            &compiled.header(),
            emit::KernelSource::Inline,
        )
        .map_err(|e| BuildError::new(format!("{}: {e}", model.display())))?;
        // The items sit in an inner module so that a crate using part of the API gets no
        // dead-code warnings for the rest (`include!`d text cannot carry inner attributes).
        let text = format!(
            "// Written by effdet_compiler::Build (build.rs); rewritten when the model or weights change.\n\
             #[allow(dead_code, unused_imports)]\n\
             mod generated {{\n{module_text}}}\n\
             pub use self::generated::*;\n"
        );
        let bytes: Vec<u8> = compiled
            .weights
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let module_path = out_dir.join(format!("{module}.rs"));
        std::fs::create_dir_all(&out_dir)
            .map_err(|e| BuildError::new(format!("{}: {e}", out_dir.display())))?;
        write_if_changed(&weights_path, &bytes)?;
        write_if_changed(&module_path, text.as_bytes())?;
        Ok(Emitted {
            module: module_path,
            weights: weights_path,
            embedded,
            model_name: compiled.model.graph.name.clone(),
            steps: compiled.plan.steps.len(),
            arena_bytes: compiled.plan.arena_bytes(),
            weight_bytes: bytes.len() as u64,
        })
    }
}

fn req_weights(req: &BuildRequest) -> Option<&Path> {
    match &req.weights {
        WeightsChoice::File(p) => Some(p),
        _ => None,
    }
}

/// The consuming crate's directory (cargo sets it for build scripts and proc-macros), or the
/// current directory outside cargo.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_default()
}

/// Whether `dir` is the `OUT_DIR` cargo gave this build script (so the consuming crate's
/// `env!("OUT_DIR")` names it).
fn is_cargo_out_dir(dir: &Path) -> bool {
    let Some(out) = std::env::var_os("OUT_DIR") else {
        return false;
    };
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canon(Path::new(&out)) == canon(dir)
}

/// The model's file stem as an identifier: `specs/d0.yaml` → `d0`, `lite-0.onnx` → `lite_0`.
pub fn default_module_name(model: &Path) -> String {
    let stem = model
        .file_stem()
        .map_or("model".into(), |s| s.to_string_lossy().into_owned());
    let mut name: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        name.insert(0, '_');
    }
    name
}

fn check_module_name(name: &str) -> Result<(), BuildError> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(BuildError::new(format!(
            "module name `{name}` is not an identifier (ASCII letters, digits, `_`; not starting with a digit)"
        )))
    }
}

/// Writes `bytes` to `path` unless it already holds them, through a temporary file and a
/// rename (a concurrent reader never sees half a file). Leaving an unchanged file alone keeps
/// its mtime, so nothing downstream looks changed.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    let err = |e: std::io::Error| BuildError::new(format!("{}: cannot write: {e}", path.display()));
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names() {
        assert_eq!(default_module_name(Path::new("specs/d0.yaml")), "d0");
        assert_eq!(default_module_name(Path::new("x/lite-0.onnx")), "lite_0");
        assert_eq!(default_module_name(Path::new("7x.yaml")), "_7x");
        assert!(check_module_name("d0").is_ok());
        assert!(check_module_name("0d").is_err());
        assert!(check_module_name("d-0").is_err());
        assert!(check_module_name("").is_err());
    }

    #[test]
    fn errors_are_readable() {
        let dir = tempfile::tempdir().unwrap();
        let e = Build::new(dir.path().join("missing.yaml"))
            .random_weights(0)
            .cargo_metadata(false)
            .emit(dir.path())
            .unwrap_err();
        assert!(
            e.to_string().contains("missing.yaml: no such model file"),
            "{e}"
        );
        assert_eq!(format!("{e:?}"), e.to_string());
        let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/d0.yaml");
        let e = Build::new(&spec)
            .cargo_metadata(false)
            .emit(dir.path())
            .unwrap_err();
        assert!(e.to_string().contains("a spec has no weights"), "{e}");
        let e = Build::new(&spec)
            .random_weights(0)
            .module("d-0")
            .cargo_metadata(false)
            .emit(dir.path())
            .unwrap_err();
        assert!(e.to_string().contains("not an identifier"), "{e}");
        let e = Build::new(&spec)
            .random_weights(0)
            .passes("fold_bn,nope")
            .cargo_metadata(false)
            .emit(dir.path())
            .unwrap_err();
        assert!(e.to_string().contains("unknown pass `nope`"), "{e}");
        // Relative to CARGO_MANIFEST_DIR (compiler/), and named as written.
        let e = Build::new("../macros/tests/ui/bad_spec.yaml")
            .random_weights(0)
            .cargo_metadata(false)
            .emit(dir.path())
            .unwrap_err();
        assert!(
            e.to_string().starts_with(
                "effdet: ../macros/tests/ui/bad_spec.yaml:18:3: unknown field `cel_repeats`"
            ),
            "{e}"
        );
    }

    #[test]
    fn the_budget_is_settable_and_its_errors_say_what_is_needed() {
        let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/d0.yaml");
        let dir = tempfile::tempdir().unwrap();
        let e = Build::new(&spec)
            .random_weights(0)
            .max_memory_mib(4)
            .cargo_metadata(false)
            .emit(dir.path())
            .unwrap_err();
        assert!(
            e.to_string().contains("would need") && e.to_string().contains("--max-memory-mib"),
            "{e}"
        );
        let e = Build::new(&spec)
            .random_weights(0)
            .batch(1024)
            .cargo_metadata(false)
            .emit(dir.path())
            .unwrap_err();
        assert!(e.to_string().contains("--max-gmacs"), "{e}");
        let e = Build::new(&spec)
            .random_weights(0)
            .max_gmacs(0)
            .cargo_metadata(false)
            .emit(dir.path())
            .unwrap_err();
        assert!(
            e.to_string().contains("--max-gmacs 0 is out of range"),
            "{e}"
        );
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "nothing written"
        );
    }

    #[test]
    fn onnx_models_carry_their_weights() {
        let onnx = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/fixtures/tf_efficientdet_d0/model.onnx");
        let dir = tempfile::tempdir().unwrap();
        let e = Build::new(&onnx)
            .random_weights(0)
            .cargo_metadata(false)
            .emit(dir.path())
            .unwrap_err();
        assert!(e.to_string().contains("carries its own weights"), "{e}");
        let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/d0.yaml");
        let emitted = Build::new(&onnx)
            .detect_spec(&spec)
            .cargo_metadata(false)
            .emit(dir.path())
            .unwrap();
        assert_eq!(emitted.module, dir.path().join("model.rs"));
        let text = std::fs::read_to_string(&emitted.module).unwrap();
        assert!(text.contains("pub fn detect("));
    }

    #[test]
    fn emits_the_module_and_leaves_unchanged_files_alone() {
        let dir = tempfile::tempdir().unwrap();
        let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/d0.yaml");
        let build = Build::new(&spec)
            .random_weights(0)
            .module("d0")
            .cargo_metadata(false);
        let first = build.emit(dir.path()).unwrap();
        assert!(first.embedded);
        assert_eq!(first.module, dir.path().join("d0.rs"));
        let text = std::fs::read_to_string(&first.module).unwrap();
        // Not cargo's OUT_DIR: the module names the weights by absolute path.
        assert!(
            text.contains(&*first.weights.to_string_lossy()),
            "{}",
            &text[..2000]
        );
        assert_eq!(
            std::fs::metadata(&first.weights).unwrap().len(),
            first.weight_bytes
        );
        let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
        let before = (mtime(&first.module), mtime(&first.weights));
        std::thread::sleep(std::time::Duration::from_millis(20));
        let second = build.emit(dir.path()).unwrap();
        assert_eq!(before, (mtime(&second.module), mtime(&second.weights)));
    }
}
