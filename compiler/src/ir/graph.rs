//! The graph: typed ops on a petgraph, a parameter table, named inputs and outputs.

use std::collections::BTreeMap;
use std::sync::Arc;

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use super::op::Op;

/// A node of the graph (one op, one output tensor).
pub type NodeId = NodeIndex<u32>;

/// The largest tensor a graph may hold, in bytes (2^40: far beyond any variant, small
/// enough that every count derived from it fits in u64).
pub const MAX_TENSOR_BYTES: u64 = 1 << 40;

/// Bytes of an f32 tensor of `shape`, or `None` if that overflows `u64`.
pub fn tensor_bytes(shape: &[usize]) -> Option<u64> {
    shape
        .iter()
        .try_fold(4u64, |acc, &d| acc.checked_mul(d as u64))
}

/// An index into the graph's parameter table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub usize);

/// What a parameter is, which decides whether it counts as a learnable parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamRole {
    /// Trained (conv weights and biases, BN scale and shift, fusion weights).
    Learned,
    /// Statistics that are not trained (BN running mean and variance).
    Statistic,
    /// A constant of an imported graph that is not a learned tensor.
    Constant,
    /// A constant an importer computed from other tensors (folded shape arithmetic, weights
    /// passed through constant ops): its sources are counted, not it.
    Folded,
}

/// A named tensor the ops read: its shape is fixed when the graph is built, its values are
/// bound later (from a weights file, an ONNX initializer or a random generator).
#[derive(Clone, Debug)]
pub struct Param {
    /// The name under which weight files store it (effdet's `state_dict` key for specs).
    pub name: String,
    pub shape: Vec<usize>,
    pub role: ParamRole,
    pub data: Option<Arc<[f32]>>,
}

impl Param {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One op with the name of its output tensor and that tensor's shape.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub shape: Vec<usize>,
}

/// An op that does not fit its inputs, found while the graph is built.
#[derive(Debug, thiserror::Error)]
#[error("node `{node}` ({kind}): {message}")]
pub struct ShapeError {
    pub node: String,
    pub kind: &'static str,
    pub message: String,
}

/// The IR: a DAG of ops whose edges carry the input slot they feed.
///
/// Every node's output shape is inferred and checked when the node is added, so a built
/// graph is shape-correct by construction. Nothing here knows about code generation.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub name: String,
    pub graph: StableDiGraph<Node, usize>,
    pub params: Vec<Param>,
    pub inputs: Vec<NodeId>,
    /// Output name → producing node, in output order.
    pub outputs: Vec<(String, NodeId)>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Self {
        Graph {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Adds a parameter with a known shape and no data yet.
    pub fn add_param(
        &mut self,
        name: impl Into<String>,
        shape: &[usize],
        role: ParamRole,
    ) -> ParamId {
        self.params.push(Param {
            name: name.into(),
            shape: shape.to_vec(),
            role,
            data: None,
        });
        ParamId(self.params.len() - 1)
    }

    pub fn param(&self, id: ParamId) -> &Param {
        &self.params[id.0]
    }

    /// Bytes of the parameters' values (f32), or `None` on overflow.
    pub fn param_bytes(&self) -> Option<u64> {
        self.params
            .iter()
            .try_fold(0u64, |total, p| total.checked_add(tensor_bytes(&p.shape)?))
    }

    pub fn add_input(&mut self, name: impl Into<String>, shape: &[usize]) -> NodeId {
        let id = self.graph.add_node(Node {
            name: name.into(),
            op: Op::Input,
            shape: shape.to_vec(),
        });
        self.inputs.push(id);
        id
    }

    /// Adds an op fed by `inputs` (in slot order), inferring and checking its output shape.
    pub fn add(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: &[NodeId],
    ) -> Result<NodeId, ShapeError> {
        let name = name.into();
        let shape = {
            let shapes: Vec<&[usize]> = inputs
                .iter()
                .map(|&i| self.graph[i].shape.as_slice())
                .collect();
            let params = &self.params;
            op.infer_shape(&shapes, &|p| params[p.0].shape.clone())
        }
        .map_err(|message| ShapeError {
            node: name.clone(),
            kind: op.kind(),
            message,
        })?;
        // Every size and count later stages compute from a node is exact in u64: its bytes
        // and its multiply-accumulates (whose sum over the graph the budget checks).
        let fail = |message: String| ShapeError {
            node: name.clone(),
            kind: op.kind(),
            message,
        };
        if tensor_bytes(&shape).is_none_or(|b| b > MAX_TENSOR_BYTES) {
            return Err(fail(format!(
                "the output {shape:?} is larger than any tensor effdet handles (2^40 bytes)"
            )));
        }
        {
            let shapes: Vec<&[usize]> = inputs
                .iter()
                .map(|&i| self.graph[i].shape.as_slice())
                .collect();
            let params = &self.params;
            if op
                .macs(&shapes, &shape, &|p| params[p.0].shape.clone())
                .is_none_or(|m| m > MAX_TENSOR_BYTES * 1024)
            {
                return Err(fail(
                    "its multiply-accumulate count overflows (more than 2^50)".into(),
                ));
            }
        }
        let id = self.graph.add_node(Node { name, op, shape });
        for (slot, &input) in inputs.iter().enumerate() {
            self.graph.add_edge(input, id, slot);
        }
        Ok(id)
    }

    pub fn mark_output(&mut self, name: impl Into<String>, node: NodeId) {
        self.outputs.push((name.into(), node));
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.graph[id]
    }

    /// The inputs of a node in slot order.
    pub fn inputs_of(&self, id: NodeId) -> Vec<NodeId> {
        let mut edges: Vec<(usize, NodeId)> = self
            .graph
            .edges_directed(id, Direction::Incoming)
            .map(|e| (*e.weight(), e.source()))
            .collect();
        edges.sort_unstable();
        edges.into_iter().map(|(_, n)| n).collect()
    }

    /// Nodes in an order where every node follows its inputs; ties broken by insertion
    /// order, so the order is deterministic.
    pub fn topo_order(&self) -> Vec<NodeId> {
        let mut indegree: BTreeMap<NodeId, usize> = self
            .graph
            .node_indices()
            .map(|n| (n, self.graph.edges_directed(n, Direction::Incoming).count()))
            .collect();
        let mut ready: std::collections::BTreeSet<NodeId> = indegree
            .iter()
            .filter(|(_, &d)| d == 0)
            .map(|(&n, _)| n)
            .collect();
        let mut order = Vec::with_capacity(indegree.len());
        while let Some(n) = ready.pop_first() {
            order.push(n);
            for e in self.graph.edges_directed(n, Direction::Outgoing) {
                let d = indegree.get_mut(&e.target()).expect("edge to a live node");
                *d -= 1;
                if *d == 0 {
                    ready.insert(e.target());
                }
            }
        }
        order
    }

    /// Learnable parameter count: every `Learned` tensor that some op reads; for imported
    /// graphs, every `Constant` (the importer adds one per float initializer its nodes read,
    /// including those only constant folding consumed, so the count is the file's).
    pub fn param_count(&self) -> u64 {
        let mut used = vec![false; self.params.len()];
        for n in self.graph.node_weights() {
            for p in n.op.params() {
                used[p.0] = true;
            }
        }
        self.params
            .iter()
            .zip(used)
            .filter(|(p, used)| match p.role {
                ParamRole::Learned => *used,
                ParamRole::Constant => true,
                ParamRole::Statistic | ParamRole::Folded => false,
            })
            .map(|(p, _)| p.len() as u64)
            .sum()
    }

    /// Conv multiply-accumulates of one forward pass. Exact: every node's count is below
    /// 2^50 ([`Graph::add`] refuses more), so the sum of fewer than 2^14 nodes fits; beyond
    /// that, see [`Graph::try_macs`].
    pub fn macs(&self) -> u64 {
        self.try_macs().unwrap_or(u64::MAX)
    }

    /// Conv multiply-accumulates of one forward pass; `None` if the sum overflows `u64`
    /// (the resource budget refuses such a model before anything runs).
    pub fn try_macs(&self) -> Option<u64> {
        self.graph.node_indices().try_fold(0u64, |total, id| {
            let inputs = self.inputs_of(id);
            let shapes: Vec<&[usize]> = inputs
                .iter()
                .map(|&i| self.graph[i].shape.as_slice())
                .collect();
            let node = self.graph[id]
                .op
                .macs(&shapes, &self.graph[id].shape, &|p| {
                    self.params[p.0].shape.clone()
                })?;
            total.checked_add(node)
        })
    }

    /// Node count per op kind (graph inputs and constants included).
    pub fn op_counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for n in self.graph.node_weights() {
            *counts.entry(n.op.kind()).or_insert(0) += 1;
        }
        counts
    }

    /// The shape of the first graph input.
    pub fn input_shape(&self) -> Option<&[usize]> {
        self.inputs.first().map(|&i| self.graph[i].shape.as_slice())
    }

    /// Graphviz text: one box per op with its output shape, edges in slot order.
    pub fn to_dot(&self) -> String {
        let mut out = format!(
            "digraph \"{}\" {{\n  node [shape=box, fontname=\"monospace\"];\n",
            escape(&self.name)
        );
        for id in self.topo_order() {
            let n = &self.graph[id];
            out.push_str(&format!(
                "  n{} [label=\"{}\\n{}\\n{:?}\"];\n",
                id.index(),
                escape(&n.name),
                n.op.kind(),
                n.shape
            ));
            for (slot, src) in self.inputs_of(id).into_iter().enumerate() {
                out.push_str(&format!(
                    "  n{} -> n{} [label=\"{slot}\"];\n",
                    src.index(),
                    id.index()
                ));
            }
        }
        for (name, id) in &self.outputs {
            out.push_str(&format!(
                "  \"out_{0}\" [shape=ellipse, label=\"{0}\"];\n  n{1} -> \"out_{0}\";\n",
                escape(name),
                id.index()
            ));
        }
        out.push_str("}\n");
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::op::{Activation, Conv2d};

    #[test]
    fn shapes_are_inferred_and_checked() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", &[1, 3, 8, 8]);
        let w = g.add_param("w", &[4, 3, 3, 3], ParamRole::Learned);
        let conv = Conv2d {
            out_channels: 4,
            kernel: [3, 3],
            stride: [2, 2],
            dilation: [1, 1],
            pads: [0, 0, 1, 1],
            groups: 1,
            weight: w,
            bias: None,
            act: None,
        };
        let c = g.add("c", Op::Conv2d(conv.clone()), &[x]).unwrap();
        assert_eq!(g.node(c).shape, [1, 4, 4, 4]);
        let a = g.add("a", Op::Activation(Activation::Swish), &[c]).unwrap();
        assert_eq!(g.topo_order(), vec![x, c, a]);
        assert_eq!(g.param_count(), 108);
        assert_eq!(g.macs(), 16 * 4 * 27);
        // A 3-channel weight cannot read a 4-channel input.
        let err = g.add("bad", Op::Conv2d(conv), &[a]).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }
}
