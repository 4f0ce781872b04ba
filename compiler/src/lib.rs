//! effdet's model compiler: a YAML compound-scaling spec or an ONNX graph goes in, an IR with
//! static shapes comes out, and (later) fusion passes and a code generator turn that into a
//! specialized Rust crate. See `ARCHITECTURE.md` at the repository root for the data flow.

pub mod interp;
pub mod ir;
