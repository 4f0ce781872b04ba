//! Small graph-surgery helpers the passes share: who reads a value, rewiring, removing what
//! became dead, deriving parameters.

use std::sync::Arc;

use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::ir::{Activation, Graph, NodeId, Op, ParamId, ParamRole};

/// The nodes reading `id`, with the slot they read it in (one entry per edge).
pub fn consumers(g: &Graph, id: NodeId) -> Vec<(NodeId, usize)> {
    let mut c: Vec<(NodeId, usize)> = g
        .graph
        .edges_directed(id, Direction::Outgoing)
        .map(|e| (e.target(), *e.weight()))
        .collect();
    c.sort_unstable();
    c
}

pub fn is_output(g: &Graph, id: NodeId) -> bool {
    g.outputs.iter().any(|(_, o)| *o == id)
}

/// The one node reading `id` through exactly one edge, when `id` is not a graph output:
/// the condition for absorbing `id` into that reader.
pub fn single_consumer(g: &Graph, id: NodeId) -> Option<NodeId> {
    match consumers(g, id).as_slice() {
        [(c, _)] if !is_output(g, id) => Some(*c),
        _ => None,
    }
}

/// True when `id` is only read once, by `reader`.
pub fn only_feeds(g: &Graph, id: NodeId, reader: NodeId) -> bool {
    single_consumer(g, id) == Some(reader)
}

/// Replaces the inputs of `id` by `inputs`, in slot order.
pub fn set_inputs(g: &mut Graph, id: NodeId, inputs: &[NodeId]) {
    let old: Vec<_> = g
        .graph
        .edges_directed(id, Direction::Incoming)
        .map(|e| e.id())
        .collect();
    for e in old {
        g.graph.remove_edge(e);
    }
    for (slot, &i) in inputs.iter().enumerate() {
        g.graph.add_edge(i, id, slot);
    }
}

/// Makes every reader of `old` (and every output naming it) read `new` instead.
pub fn replace_uses(g: &mut Graph, old: NodeId, new: NodeId) {
    let edges: Vec<_> = g
        .graph
        .edges_directed(old, Direction::Outgoing)
        .map(|e| (e.id(), e.target(), *e.weight()))
        .collect();
    for (e, target, slot) in edges {
        g.graph.remove_edge(e);
        g.graph.add_edge(new, target, slot);
    }
    for (_, o) in &mut g.outputs {
        if *o == old {
            *o = new;
        }
    }
}

/// Removes `id` if nothing reads it and it is neither an output nor a graph input, then does
/// the same for the nodes it read. Returns how many nodes were removed.
pub fn remove_if_dead(g: &mut Graph, id: NodeId) -> usize {
    if !g.graph.contains_node(id)
        || matches!(g.node(id).op, Op::Input)
        || is_output(g, id)
        || g.graph
            .edges_directed(id, Direction::Outgoing)
            .next()
            .is_some()
    {
        return 0;
    }
    let inputs = g.inputs_of(id);
    g.graph.remove_node(id);
    1 + inputs
        .into_iter()
        .map(|i| remove_if_dead(g, i))
        .sum::<usize>()
}

/// Re-infers the shape of `id` from its op and its inputs' shapes, after a pass changed
/// either. A failure leaves the shape as it was; `verify` then names the node.
pub fn refresh_shape(g: &mut Graph, id: NodeId) {
    let shapes: Vec<Vec<usize>> = g
        .inputs_of(id)
        .into_iter()
        .map(|i| g.node(i).shape.clone())
        .collect();
    let shapes: Vec<&[usize]> = shapes.iter().map(Vec::as_slice).collect();
    let params = &g.params;
    if let Ok(shape) = g
        .node(id)
        .op
        .infer_shape(&shapes, &|p| params[p.0].shape.clone())
    {
        g.graph[id].shape = shape;
    }
}

/// Removes `gone` after moving its readers to `survivor`: the usual end of a fusion where
/// `survivor` now computes what `gone` did.
pub fn absorb(g: &mut Graph, gone: NodeId, survivor: NodeId) {
    replace_uses(g, gone, survivor);
    remove_if_dead(g, gone);
}

pub fn data(g: &Graph, p: ParamId) -> Option<&[f32]> {
    g.param(p).data.as_deref()
}

/// The role of parameters a pass computes from others (folded weights, fusion coefficients,
/// folded constants). `Folded`, not `Constant`: their sources are what a parameter count
/// counts (`Constant` counts even unused, as an ONNX file's initializers).
pub const DERIVED: ParamRole = ParamRole::Folded;

/// Adds a parameter a pass derived (role [`DERIVED`]). Its name is `name`, made unique with
/// a `#k` suffix if a parameter already has it, so that the table never holds two entries
/// of one name.
pub fn add_param(g: &mut Graph, name: String, shape: &[usize], data: Option<Vec<f32>>) -> ParamId {
    let taken = |n: &str| g.params.iter().any(|p| p.name == n);
    let mut unique = name.clone();
    let mut k = 2;
    while taken(&unique) {
        unique = format!("{name}#{k}");
        k += 1;
    }
    let id = g.add_param(unique, shape, DERIVED);
    if let Some(d) = data {
        debug_assert_eq!(d.len(), g.param(id).len());
        g.params[id.0].data = Some(Arc::from(d));
    }
    id
}

/// How many nodes read parameter `p`.
pub fn param_users(g: &Graph, p: ParamId) -> usize {
    g.graph
        .node_weights()
        .filter(|n| n.op.params().contains(&p))
        .count()
}

/// Applies `f` to every parameter id an op holds (the same set as [`Op::params`]).
pub fn map_params(op: &mut Op, mut f: impl FnMut(ParamId) -> ParamId) {
    match op {
        Op::Constant(p) => *p = f(*p),
        Op::Conv2d(c) => {
            c.weight = f(c.weight);
            c.bias = c.bias.map(&mut f);
        }
        Op::BatchNorm(b) => {
            b.gamma = f(b.gamma);
            b.beta = f(b.beta);
            b.mean = f(b.mean);
            b.var = f(b.var);
        }
        Op::WeightedSum { weights, .. } => *weights = weights.map(&mut f),
        Op::SqueezeExcite(se) => {
            se.reduce_weight = f(se.reduce_weight);
            se.reduce_bias = f(se.reduce_bias);
            se.expand_weight = f(se.expand_weight);
            se.expand_bias = f(se.expand_bias);
        }
        Op::Fuse(fu) => fu.coefficients = f(fu.coefficients),
        Op::Input
        | Op::Activation(_)
        | Op::Binary(_)
        | Op::GlobalAvgPool
        | Op::Pool2d(_)
        | Op::ResizeNearest { .. }
        | Op::Pad { .. }
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Concat { .. }
        | Op::Reduce { .. }
        | Op::Softmax { .. } => {}
    }
}

/// If `id` is a one-element constant: `Some(value)`, the value being `None` when unbound.
pub fn scalar_constant(g: &Graph, id: NodeId) -> Option<Option<f32>> {
    match g.node(id).op {
        Op::Constant(p) if g.param(p).len() == 1 => Some(data(g, p).map(|d| d[0])),
        _ => None,
    }
}

/// The canonical name of an activation: `Clip` to `[0, 6]` is `Relu6`, to `[0, ∞)` `Relu`,
/// so kernels and counts see the functions they know.
pub fn canonical(a: Activation) -> Activation {
    match a {
        Activation::Clip { min, max } if min == 0.0 && max == 6.0 => Activation::Relu6,
        Activation::Clip { min, max } if min == 0.0 && max == f32::INFINITY => Activation::Relu,
        a => a,
    }
}
