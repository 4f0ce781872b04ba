//! The proc-macro way into effdet (`effdet_macros::model!`).
//!
//! Not implemented yet: the macro needs the code generator, which does not exist yet.
//! Until then this crate holds its place in the workspace and exports nothing.
