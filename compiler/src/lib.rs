//! effdet's model compiler: a YAML compound-scaling spec or an ONNX graph goes in, an IR with
//! static shapes comes out, and (later) fusion passes and a code generator turn that into a
//! specialized Rust crate. See `ARCHITECTURE.md` at the repository root for the data flow.
//!
//! Entry points: [`model::load`] reads a spec or ONNX file into an [`ir::Graph`];
//! [`weights::bind_safetensors`] binds a `state_dict`; [`interp::run`] executes the graph.

pub mod build_api;
pub mod codegen;
pub mod compile;
pub mod detection;
pub mod interp;
pub mod ir;
pub mod model;
pub mod npy;
pub mod onnx;
pub mod passes;
pub mod plan;
pub mod report;
pub mod spec;
pub mod weights;

pub use build_api::{Build, BuildError, Emitted};
