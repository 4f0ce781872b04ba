//! What can go wrong while importing an ONNX file. Every error names the file and, where there
//! is one, the node and the value, so that a user can find the spot with an ONNX viewer.

use std::fmt::Write as _;

/// Why an ONNX file could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("{file}: cannot read the file: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a protobuf `ModelProto` (a truncated download, a different format).
    #[error("{file}: not a valid ONNX model (truncated or not ONNX): {reason}")]
    NotOnnx { file: String, reason: String },
    #[error("{file}: {problem}")]
    Model { file: String, problem: String },
    /// Every op the importer cannot handle, found in one pass over the graph.
    #[error("{file}: unsupported ops (model opset {opset}):{}", list_ops(.ops))]
    Unsupported {
        file: String,
        opset: i64,
        /// Op type (prefixed with its domain when not the default one) → node names.
        ops: Vec<(String, Vec<String>)>,
    },
    #[error("{file}: node `{node}` ({op}) reads `{value}`, which no node, initializer or graph input produces")]
    Dangling {
        file: String,
        node: String,
        op: String,
        value: String,
    },
    #[error("{file}: the graph has a cycle; these nodes depend on each other: {}", .nodes.join(", "))]
    Cycle { file: String, nodes: Vec<String> },
    #[error("{file}: value `{value}` is produced twice (by {first} and by {second})")]
    Duplicate {
        file: String,
        value: String,
        first: String,
        second: String,
    },
    #[error("{file}: tensor `{name}`: {problem}")]
    Tensor {
        file: String,
        name: String,
        problem: String,
    },
    #[error("{file}: graph input `{input}`: {problem}")]
    Input {
        file: String,
        input: String,
        problem: String,
    },
    #[error("{file}: node `{node}` ({op}): {problem}")]
    Node {
        file: String,
        node: String,
        op: String,
        problem: String,
    },
    #[error("{file}: graph output `{output}`: {problem}")]
    Output {
        file: String,
        output: String,
        problem: String,
    },
}

fn list_ops(ops: &[(String, Vec<String>)]) -> String {
    let mut s = String::new();
    for (op, nodes) in ops {
        let _ = write!(
            s,
            "\n  {op} ({} node(s)): {}",
            nodes.len(),
            nodes.join(", ")
        );
    }
    s
}
