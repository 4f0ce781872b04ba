//! `effdetc build`: model → passes → plan → generated crate on disk.

use std::path::{Path, PathBuf};

use crate::codegen::{self, CrateOptions, Header};
use crate::model::{self, LoadOptions, Source};
use crate::passes::{self, PassSet};
use crate::plan::Plan;
use crate::weights;

/// Where a compiled model's weights come from.
#[derive(Clone, Debug)]
pub enum WeightsChoice {
    /// A safetensors `state_dict` (specs).
    File(PathBuf),
    /// Deterministic random values from this seed (benchmarks and compile tests only).
    Random(u64),
    /// The model file carries them (ONNX).
    Model,
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
    pub embed_limit: usize,
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
    progress(&format!("loading {}", req.model.display()));
    let mut m = model::load(
        &req.model,
        &LoadOptions {
            input_shape: req.input_shape.clone(),
        },
    )?;
    for w in &m.warnings {
        progress(&format!("warning: {}: {w}", req.model.display()));
    }
    match (&m.source, &req.weights) {
        (Source::Spec { .. }, WeightsChoice::File(path)) => weights::bind_safetensors(&mut m.graph, path)?,
        (Source::Spec { .. }, WeightsChoice::Random(seed)) => {
            progress(&format!("random weights (seed {seed}): for benchmarks and compile tests, not detection"));
            weights::bind_random(&mut m.graph, *seed)
        }
        (Source::Spec { .. }, WeightsChoice::Model) => {
            return Err(format!(
                "{}: a spec has no weights: give --weights FILE.safetensors, or --random-weights SEED for benchmarks",
                req.model.display()
            )
            .into())
        }
        (Source::Onnx, WeightsChoice::Model) => {}
        (Source::Onnx, _) => {
            return Err(format!(
                "{}: an ONNX model carries its own weights; --weights and --random-weights are for specs",
                req.model.display()
            )
            .into())
        }
    }
    let fused = !req.passes.is_empty();
    let report = passes::run(&mut m.graph, &req.passes)?;
    progress(&format!("passes: {} rewrites", report.total()));
    let plan = Plan::build(&m.graph)?;
    let blob = plan.pack_weights(&m.graph)?;
    progress(&format!(
        "planned {} kernel calls; arena {:.1} MiB, packed weights {:.1} MiB",
        plan.steps.len(),
        plan.arena_bytes() as f64 / (1 << 20) as f64,
        4.0 * plan.weights_len as f64 / (1 << 20) as f64
    ));
    // The file name only: generated source must not depend on where the compiler ran.
    let source = req.model.file_name().map_or_else(
        || req.model.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let files = codegen::crate_files(
        &plan,
        &blob,
        &CrateOptions {
            name: &name,
            header: Header {
                model: &m.graph.name,
                source: &source,
                fused,
            },
            embed_limit: req.embed_limit,
            runtime_version: env!("CARGO_PKG_VERSION"),
        },
    )?;
    codegen::write_crate(&dir, &files)
        .map_err(|e| format!("{}: cannot write the crate: {e}", dir.display()))?;
    progress(&format!("wrote {} to {}", name, dir.display()));
    Ok(Built {
        dir,
        name,
        steps: plan.steps.len(),
        arena_bytes: plan.arena_bytes(),
        weight_bytes: 4 * plan.weights_len as u64,
        rewrites: report.total(),
    })
}
