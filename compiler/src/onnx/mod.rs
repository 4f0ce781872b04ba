//! The ONNX front end: reads an ONNX model, as real exporters write it, into the IR.
//!
//! Layout, one concern per file:
//! - [`proto`]: the protobuf types, generated from the vendored `proto/onnx.proto` (see
//!   `examples/regen_onnx_proto.rs`);
//! - `load`: bytes to `ModelProto`, tensors (raw, typed, external data) to constants;
//! - `tensor` and `fold`: constant tensors and the folding of shape arithmetic;
//! - `ops`: the table of supported ops and how each becomes IR;
//! - `import`: the graph-level driver (structure checks, input shapes, pruning);
//! - `error`: [`OnnxError`].
//!
//! Every shape is static: the input shape comes from the graph or the caller, every other
//! shape is inferred by the IR (declared output shapes are ignored, exporters get them wrong),
//! and everything computed from shapes folds to constants. The README's "ONNX models" section lists the ops.

mod error;
mod fold;
mod import;
mod load;
mod ops;
#[allow(clippy::all)]
#[rustfmt::skip]
pub mod proto;
mod tensor;

use std::path::Path;

pub use error::OnnxError;

use crate::ir::Graph;

/// The lowest default-domain opset accepted: the first with `Resize`'s coordinate modes and
/// `Pad`/`Clip` taking their arguments as inputs.
pub const MIN_OPSET: i64 = 11;
/// The highest default-domain opset accepted. 19–21 changed none of the supported ops'
/// float semantics (they added types and modes, which are checked where they are read).
pub const MAX_OPSET: i64 = 21;

/// Imports the ONNX model at `path`; `input_shape` overrides the graph's declared input shape
/// (of its first input) and is required when that shape has symbolic dims.
pub fn import(path: &Path, input_shape: Option<&[usize]>) -> Result<Graph, OnnxError> {
    import_with(
        path,
        &ImportOptions {
            input_shape,
            ..Default::default()
        },
    )
}

/// How to import: the input's shape and batch, and the budget constant folding keeps to.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions<'a> {
    /// Overrides the first input's declared shape (`--input-shape`).
    pub input_shape: Option<&'a [usize]>,
    /// Sets the first input's symbolic batch dimension (`--batch`); a fixed batch, or an
    /// `input_shape` batch, other than it is an error.
    pub batch: Option<usize>,
    /// The memory budget; constant folding holds at most a sixteenth of it at once.
    pub limits: crate::budget::Limits,
}

/// [`import`] with every option.
pub fn import_with(path: &Path, options: &ImportOptions) -> Result<Graph, OnnxError> {
    let bytes = std::fs::read(path).map_err(|source| OnnxError::Io {
        file: path.display().to_string(),
        source,
    })?;
    import_bytes_with(&bytes, path, options)
}

/// Imports a model from its bytes. `origin` names the file in errors, and its directory is
/// where external-data files are looked up.
pub fn import_bytes(
    bytes: &[u8],
    origin: &Path,
    input_shape: Option<&[usize]>,
) -> Result<Graph, OnnxError> {
    import_bytes_with(
        bytes,
        origin,
        &ImportOptions {
            input_shape,
            ..Default::default()
        },
    )
}

/// [`import_bytes`] with every option.
pub fn import_bytes_with(
    bytes: &[u8],
    origin: &Path,
    options: &ImportOptions,
) -> Result<Graph, OnnxError> {
    let file = origin.display().to_string();
    let model = load::decode_model(bytes).map_err(|reason| OnnxError::NotOnnx {
        file: file.clone(),
        reason,
    })?;
    let dir = origin.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.or(Some(Path::new(".")));
    import::import_model(
        model,
        &import::Source {
            file: &file,
            dir: load::DataDir(dir),
            input_shape: options.input_shape,
            batch: options.batch,
            max_folded: options.limits.max_memory / 16,
        },
    )
}

/// The op types the importer supports (default ONNX domain), sorted.
pub fn supported_ops() -> Vec<&'static str> {
    ops::supported()
}
