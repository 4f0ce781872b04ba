//! Loading a model from either front end: a YAML spec or an ONNX file, by extension.

use std::path::{Path, PathBuf};

use crate::budget::{self, BudgetError, Limits};
use crate::ir::{Graph, ShapeError};
use crate::onnx::{self, OnnxError};
use crate::spec::{self, resolve::Arch, SpecError};

/// Which front end a model came through.
#[derive(Debug)]
pub enum Source {
    /// A compound-scaling spec: the graph has no weights until some are bound.
    Spec {
        spec: Box<spec::Spec>,
        arch: Box<Arch>,
    },
    /// An ONNX file: the graph carries its weights.
    Onnx,
}

/// A model in IR form plus what its front end knows about it.
#[derive(Debug)]
pub struct Model {
    pub path: PathBuf,
    pub graph: Graph,
    pub source: Source,
    /// Things that are allowed but probably mistakes, to show the user.
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    #[error("{path}: the spec builds an inconsistent graph: {source}")]
    Shape { path: PathBuf, source: ShapeError },
    #[error("{path}: unknown model format: expected a `.yaml`/`.yml` spec or an `.onnx` file")]
    UnknownFormat { path: PathBuf },
    #[error("{path}: --input-shape applies to ONNX models only; a spec sets `input.image_size`")]
    InputShapeForSpec { path: PathBuf },
    #[error("{path}: --batch {batch} is out of range: a batch holds 1..={MAX_BATCH} images")]
    BatchRange { path: PathBuf, batch: usize },
    #[error("{path}: {source}")]
    Budget { path: PathBuf, source: BudgetError },
}

/// Options that apply while loading.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Overrides an ONNX graph's input shape (`[N, C, H, W]`).
    pub input_shape: Option<Vec<usize>>,
    /// Images per forward pass (`--batch N`): a spec's input becomes `[N, 3, H, W]`; an ONNX
    /// graph's symbolic batch dimension becomes `N` (a fixed batch must equal it). `None`
    /// is a batch of one for a spec and the graph's own for ONNX.
    pub batch: Option<usize>,
    /// The resource budget the model must fit (see [`crate::budget`]).
    pub limits: Limits,
}

/// The largest `--batch`: enough for any CPU batch, small enough that no shape overflows.
pub const MAX_BATCH: usize = 1024;

/// Loads `path` through the front end its extension names.
/// Checks the model against `options.limits` (parameters, multiply-accumulates).
pub fn load(path: &Path, options: &LoadOptions) -> Result<Model, LoadError> {
    if let Some(batch) = options.batch {
        if !(1..=MAX_BATCH).contains(&batch) {
            return Err(LoadError::BatchRange {
                path: path.to_path_buf(),
                batch,
            });
        }
    }
    let model = load_unchecked(path, options)?;
    budget::check_model(&model.graph, &options.limits).map_err(|source| LoadError::Budget {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(model)
}

fn load_unchecked(path: &Path, options: &LoadOptions) -> Result<Model, LoadError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("yaml" | "yml") => {
            if options.input_shape.is_some() {
                return Err(LoadError::InputShapeForSpec {
                    path: path.to_path_buf(),
                });
            }
            let loaded = spec::load(path)?;
            let arch = spec::resolve::resolve(&loaded.spec);
            let graph =
                spec::lower::lower(&arch, options.batch.unwrap_or(1)).map_err(|source| {
                    LoadError::Shape {
                        path: path.to_path_buf(),
                        source,
                    }
                })?;
            Ok(Model {
                path: path.to_path_buf(),
                graph,
                source: Source::Spec {
                    spec: Box::new(loaded.spec),
                    arch: Box::new(arch),
                },
                warnings: loaded.warnings,
            })
        }
        Some("onnx") => Ok(Model {
            path: path.to_path_buf(),
            graph: onnx::import_with(
                path,
                &onnx::ImportOptions {
                    input_shape: options.input_shape.as_deref(),
                    batch: options.batch,
                    limits: options.limits,
                },
            )?,
            source: Source::Onnx,
            warnings: Vec::new(),
        }),
        _ => Err(LoadError::UnknownFormat {
            path: path.to_path_buf(),
        }),
    }
}
