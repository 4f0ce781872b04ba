//! `effdetc build`: model → passes → plan → generated crate on disk.

use std::path::{Path, PathBuf};

use crate::codegen::{self, CrateOptions, Header};
use crate::detection::DetectionSettings;
use crate::model::{self, LoadOptions, Source};
use crate::passes::{self, PassSet};
use crate::plan::Plan;
use crate::weights;
use effdet_runtime::HeadFormat;

/// Where a compiled model's weights come from.
#[derive(Clone, Debug)]
pub enum WeightsChoice {
    /// A `state_dict` (specs): a safetensors file or a PyTorch checkpoint (`.pth` / `.pt`).
    File(PathBuf),
    /// Deterministic random values from this seed (benchmarks and compile tests only).
    Random(u64),
    /// The model file carries them (ONNX).
    Model,
}

/// How the 1×1 convs are blocked (`tune.rs`).
#[derive(Clone, Debug, Default)]
pub enum TuningChoice {
    /// The runtime's fixed rule: the crate does not depend on the building machine.
    #[default]
    Fixed,
    /// Time the candidates on this machine (`--tune`).
    Tune,
    /// The choices of a `tuning.json` (`--tuning FILE`).
    File(PathBuf),
}

/// Everything `effdetc build` can be told.
#[derive(Clone, Debug)]
pub struct BuildRequest {
    pub model: PathBuf,
    pub weights: WeightsChoice,
    pub out_dir: Option<PathBuf>,
    pub name: Option<String>,
    pub passes: PassSet,
    pub input_shape: Option<Vec<usize>>,
    /// Images per forward pass (`--batch`); `None` is the model's own (1 for a spec).
    pub batch: Option<usize>,
    /// The resource budget (`--max-memory-mib`, `--max-gmacs`).
    pub limits: crate::budget::Limits,
    pub embed_limit: usize,
    /// For an ONNX model: the spec whose anchors, classes, normalization and NMS settings
    /// give the crate `Model::detect` (a spec model uses its own).
    pub detect_spec: Option<PathBuf>,
    /// Add the C ABI and header (`--c-api`); the crate is then also a static library.
    pub c_api: bool,
    /// Add the Python binding (`--python`): a PyO3 module and `pyproject.toml` for maturin.
    pub python: bool,
    /// `--tune` / `--tuning FILE`; with either the crate holds `tuning.json`.
    pub tuning: TuningChoice,
}

/// What was built.
#[derive(Clone, Debug)]
pub struct Built {
    pub dir: PathBuf,
    pub name: String,
    pub steps: usize,
    pub arena_bytes: u64,
    pub weight_bytes: u64,
    pub rewrites: usize,
}

/// `effdet-<file stem>`, lower-cased, characters outside `[a-z0-9_-]` replaced by `-`.
pub fn default_crate_name(model: &Path) -> String {
    let stem = model
        .file_stem()
        .map_or("model".into(), |s| s.to_string_lossy().into_owned());
    let clean: String = stem
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("effdet-{clean}")
}

/// A valid package name: ASCII letters, digits, `-`, `_`, starting with a letter.
fn check_name(name: &str) -> Result<(), String> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!("`{name}` is not a valid crate name (letters, digits, `-`, `_`; starting with a letter)"))
    }
}

/// Which input of a compilation an error is about, so a caller can point at it (the
/// proc-macro spans its `compile_error!` at that argument; the build-script API names it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// The spec or ONNX file (loading, passes, planning).
    Model,
    /// The weights (binding a `state_dict`, or a weights choice that does not fit the model).
    Weights,
}

/// A failed compilation: which input it is about, and a message that names the file.
#[derive(Debug)]
pub struct CompileError {
    pub input: Input,
    pub message: String,
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CompileError {}

fn fail(input: Input, e: impl std::fmt::Display) -> CompileError {
    CompileError {
        input,
        message: e.to_string(),
    }
}

/// A compiled model before any code is written: what every way in (`effdetc build`, the
/// build-script API, the proc-macro) shares, so they all emit the same code.
pub struct Compiled {
    /// The model after the passes; its `source` keeps the spec (detection settings).
    pub model: model::Model,
    pub plan: Plan,
    /// The packed weights blob (`weights.bin`), in plan order.
    pub weights: Vec<f32>,
    /// The model's file name only: generated source must not depend on where the compiler ran.
    pub source: String,
    pub fused: bool,
    pub rewrites: usize,
    /// Anchors, classes, normalization and NMS: the spec's own, or `--detect-spec`'s for an
    /// ONNX model; `None` gives a module with `forward` only.
    pub detection: Option<DetectionSettings>,
}

impl Compiled {
    /// The doc header of the generated module.
    pub fn header(&self) -> Header<'_> {
        Header {
            model: &self.model.graph.name,
            source: &self.source,
            fused: self.fused,
            detection: self.detection.as_ref(),
        }
    }
}

/// Loads `req.model`, binds its weights, runs the passes, plans and packs the weights, and
/// resolves the detection settings; `req.out_dir`, `req.name` and `req.embed_limit` are the
/// caller's (they say where and how code is written). `progress` receives one line per
/// stage (and the spec's warnings, as `warning: ...`).
pub fn compile_model(
    req: &BuildRequest,
    progress: &mut dyn FnMut(&str),
) -> Result<Compiled, CompileError> {
    let model_path = req.model.as_path();
    let (weights, passes) = (&req.weights, &req.passes);
    progress(&format!("loading {}", model_path.display()));
    let mut m = model::load(
        model_path,
        &LoadOptions {
            input_shape: req.input_shape.clone(),
            batch: req.batch,
            limits: req.limits,
        },
    )
    .map_err(|e| fail(Input::Model, e))?;
    let detection = match (&m.source, &req.detect_spec) {
        (Source::Spec { spec, .. }, None) => {
            let settings = DetectionSettings::from_spec(spec);
            if settings.format != HeadFormat::default() {
                return Err(fail(
                    Input::Model,
                    format!(
                        "{}: `postprocess.head_layout` / `class_output` describe an exported network's heads, but a spec's own network has one class (logits) and one box output per level: use this file as `--detect-spec` when building the ONNX export it describes",
                        model_path.display()
                    ),
                ));
            }
            Some(settings)
        }
        (Source::Spec { .. }, Some(_)) => {
            return Err(fail(
                Input::Model,
                format!(
                "{}: --detect-spec is for ONNX models; a spec carries its own detection settings",
                model_path.display()
            ),
            ))
        }
        (Source::Onnx, Some(path)) => {
            let loaded = crate::spec::load(path).map_err(|e| fail(Input::Model, e))?;
            Some(DetectionSettings::from_spec(&loaded.spec))
        }
        (Source::Onnx, None) => None,
    };
    for w in &m.warnings {
        progress(&format!("warning: {}: {w}", model_path.display()));
    }
    match (&m.source, weights) {
        (Source::Spec { .. }, WeightsChoice::File(path)) => {
            progress(&format!("reading weights {}", path.display()));
            weights::bind_file(&mut m.graph, path, progress).map_err(|e| fail(Input::Weights, e))?
        }
        (Source::Spec { .. }, WeightsChoice::Random(seed)) => {
            progress(&format!("random weights (seed {seed}): for benchmarks and compile tests, not detection"));
            weights::bind_random(&mut m.graph, *seed)
        }
        (Source::Spec { .. }, WeightsChoice::Model) => {
            return Err(fail(
                Input::Weights,
                format!(
                    "{}: a spec has no weights: give --weights FILE.safetensors or FILE.pth, or --random-weights SEED for benchmarks",
                    model_path.display()
                ),
            ))
        }
        (Source::Onnx, WeightsChoice::Model) => {}
        (Source::Onnx, _) => {
            return Err(fail(
                Input::Weights,
                format!(
                    "{}: an ONNX model carries its own weights; --weights and --random-weights are for specs",
                    model_path.display()
                ),
            ))
        }
    }
    let fused = !passes.is_empty();
    progress("running the passes");
    let report = passes::run(&mut m.graph, passes).map_err(|e| fail(Input::Model, e))?;
    progress(&format!("passes: {} rewrites; planning", report.total()));
    let plan = Plan::build(&m.graph).map_err(|e| fail(Input::Model, e))?;
    crate::budget::check_plan(&plan, &req.limits)
        .map_err(|e| fail(Input::Model, format!("{}: {e}", model_path.display())))?;
    let blob = plan
        .pack_weights(&m.graph)
        .map_err(|e| fail(Input::Model, e))?;
    progress(&format!(
        "planned {} kernel calls; arena {:.1} MiB, packed weights {:.1} MiB",
        plan.steps.len(),
        plan.arena_bytes() as f64 / (1 << 20) as f64,
        4.0 * plan.weights_len as f64 / (1 << 20) as f64
    ));
    let source = model_path.file_name().map_or_else(
        || model_path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok(Compiled {
        model: m,
        plan,
        weights: blob,
        source,
        fused,
        rewrites: report.total(),
        detection,
    })
}

/// Builds the crate `req` asks for; `progress` receives one line per stage.
pub fn build(
    req: &BuildRequest,
    progress: &mut dyn FnMut(&str),
) -> Result<Built, Box<dyn std::error::Error>> {
    let name = req
        .name
        .clone()
        .unwrap_or_else(|| default_crate_name(&req.model));
    check_name(&name)?;
    let dir = req
        .out_dir
        .clone()
        .unwrap_or_else(|| Path::new("generated").join(&name));
    // A tuning file is read before the model compiles, so a bad one fails fast.
    let file = match &req.tuning {
        TuningChoice::File(path) => Some(crate::tune::TuningFile::read(path)?),
        _ => None,
    };
    let mut c = compile_model(req, progress)?;
    let tuning = if let TuningChoice::Tune = req.tuning {
        let isa = effdet_runtime::kernels::Isa::detect();
        progress(&format!("tuning the 1×1 convs with {isa:?} on one thread"));
        Some(crate::tune::tune(&c.plan, isa, progress))
    } else {
        file
    };
    if let Some(t) = &tuning {
        let n = crate::tune::apply(&mut c.plan, t);
        progress(&format!(
            "tuning: {n} of the 1×1 convs take a blocking of their own ({})",
            t.isa
        ));
    }
    progress(&format!("writing {} to {}", name, dir.display()));
    let mut files = codegen::crate_files(
        &c.plan,
        &c.weights,
        &CrateOptions {
            name: &name,
            header: c.header(),
            embed_limit: req.embed_limit,
            runtime_version: env!("CARGO_PKG_VERSION"),
            c_api: req.c_api,
            python: req.python,
        },
    )?;
    if let Some(t) = &tuning {
        files
            .files
            .push(("tuning.json".into(), t.to_json().into_bytes()));
    }
    codegen::write_crate(&dir, &files)
        .map_err(|e| format!("{}: cannot write the crate: {e}", dir.display()))?;
    progress(&format!("wrote {} to {}", name, dir.display()));
    Ok(Built {
        dir,
        name,
        steps: c.plan.steps.len(),
        arena_bytes: c.plan.arena_bytes(),
        weight_bytes: 4 * c.plan.weights_len as u64,
        rewrites: c.rewrites,
    })
}
