//! The ONNX front end: reads an ONNX model into the IR.
//!
//! Not implemented yet; [`import`] says so instead of guessing.

use std::path::Path;

use crate::ir::Graph;

/// Why an ONNX file could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("{path}: the ONNX front end is not implemented yet")]
    NotImplemented { path: String },
}

/// Imports the ONNX model at `path`; `input_shape` overrides the graph's declared input shape.
pub fn import(path: &Path, input_shape: Option<&[usize]>) -> Result<Graph, OnnxError> {
    let _ = input_shape;
    Err(OnnxError::NotImplemented {
        path: path.display().to_string(),
    })
}
