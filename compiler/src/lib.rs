//! effdet's model compiler: a YAML compound-scaling spec or an ONNX graph goes in, an IR with
//! static shapes comes out, and fusion passes and a code generator turn that into specialized
//! Rust. See `ARCHITECTURE.md` at the repository root for the data flow.
//!
//! # From a build script
//!
//! [`Build`] compiles a model into `$OUT_DIR` for `include!` (the generated code calls
//! `effdet-runtime`, so the crate depends on it too):
//!
//! ```no_run
//! // build.rs; Cargo.toml: effdet-compiler in [build-dependencies], effdet-runtime in [dependencies]
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     effdet_compiler::Build::new("specs/d0.yaml")
//!         .weights("weights/d0.safetensors") // or a PyTorch checkpoint (.pth)
//!         .module("d0")
//!         .emit(std::env::var("OUT_DIR")?)?;
//!     Ok(())
//! }
//! // src/main.rs: mod d0 { include!(concat!(env!("OUT_DIR"), "/d0.rs")); }
//! ```
//!
//! Paths are relative to the crate's directory; `emit` prints `cargo:rerun-if-changed` for the
//! model and weights and returns a [`BuildError`] that prints as a readable message.
//!
//! # As a library
//!
//! [`model::load`] reads a spec or ONNX file into an [`ir::Graph`];
//! [`weights::bind_file`] binds a `state_dict` (safetensors or a PyTorch checkpoint);
//! [`interp::run`] executes the graph;
//! [`compile::compile_model`] runs the whole pipeline (load, weights, passes, plan, packed
//! weights) that `effdetc build`, [`Build`] and `effdet_macros::model!` share, and
//! [`codegen`] prints the result.

pub mod budget;
pub mod build_api;
pub mod codegen;
pub mod compile;
pub mod detection;
pub mod interp;
pub mod ir;
pub mod kernels;
pub mod model;
pub mod npy;
pub mod onnx;
pub mod passes;
pub mod plan;
pub mod progress;
pub mod report;
pub mod spec;
pub mod tune;
pub mod weights;

pub use build_api::{Build, BuildError, Emitted};
