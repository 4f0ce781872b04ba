//! The intermediate representation every front end lowers into and every later stage reads.
//!
//! A [`Graph`] is a petgraph DAG of typed [`Op`]s with statically known shapes and a table of
//! named parameters. It is deliberately free of anything about code generation.

pub mod graph;
pub mod op;

pub use graph::{Graph, Node, NodeId, Param, ParamId, ParamRole, ShapeError};
pub use op::{
    tf_same_pad, Activation, BatchNorm, BinaryOp, Conv2d, Fuse, FusionMethod, Op, Pads, Pool2d,
    PoolKind, ReduceKind, Sampling, SqueezeExcite,
};
