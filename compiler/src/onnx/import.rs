//! The graph-level driver: checks the model's structure (opset, supported ops, dangling
//! names, cycles), decodes initializers, fixes the input shapes, then walks the nodes in
//! dependency order handing each to its handler in [`super::ops`], and finally keeps only
//! what the outputs need.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use petgraph::Direction;

use super::error::OnnxError;
use super::load::{decode_tensor, DataDir, MAX_ELEMENTS};
use super::proto::{
    tensor_shape_proto::dimension::Value as Dim, type_proto, GraphProto, ModelProto, NodeProto,
};
use super::tensor::Const;
use super::{ops, MAX_OPSET, MIN_OPSET};
use crate::interp::{self, Tensor};
use crate::ir::{Graph, NodeId, Op, ParamId, ParamRole};

/// What an ONNX value name stands for during import.
#[derive(Clone, Debug)]
pub enum Value {
    /// Known at import time (initializers, `Constant`s, folded shape arithmetic).
    Const(Const),
    /// Computed at run time by an IR node.
    Node(NodeId),
}

/// The state shared by all node handlers: the IR being built and the caches that make every
/// ONNX value become at most one parameter and one `Constant` node.
pub struct Cx {
    pub g: Graph,
    pub opset: i64,
    params: HashMap<String, ParamId>,
    const_nodes: HashMap<String, NodeId>,
    /// Names of the float initializers: their parameters count in `param_count`, those of
    /// folded values do not.
    float_inits: HashSet<String>,
}

impl Cx {
    /// The shape of a value.
    pub fn shape<'a>(&'a self, v: &'a Value) -> &'a [usize] {
        match v {
            Value::Const(c) => &c.shape,
            Value::Node(id) => &self.g.node(*id).shape,
        }
    }

    /// Adds an IR node; shape errors become the node's error message.
    /// Every IR tensor is capped at `MAX_ELEMENTS`, so hostile sizes fail here rather than
    /// overflow a MAC count or an allocation later.
    pub fn add(&mut self, name: &str, op: Op, inputs: &[NodeId]) -> Result<NodeId, String> {
        let id = self
            .g
            .add(name, op, inputs)
            .map_err(|e| format!("{}: {}", e.kind, e.message))?;
        if let Err(e) = super::load::checked_numel(&self.g.node(id).shape) {
            self.g.graph.remove_node(id);
            return Err(e);
        }
        Ok(id)
    }

    /// The parameter holding constant value `name`: created once per value, so a weight
    /// read by two ops counts once in `param_count`.
    pub fn param(&mut self, name: &str, c: &Const) -> Result<ParamId, String> {
        if let Some(&p) = self.params.get(name) {
            return Ok(p);
        }
        let data = c.to_f32().ok_or_else(|| {
            format!(
                "`{name}` is a {:?} tensor where a float tensor is needed",
                c.dtype
            )
        })?;
        let role = if self.float_inits.contains(name) {
            ParamRole::Constant
        } else {
            ParamRole::Folded
        };
        let id = self.g.add_param(name, &c.shape, role);
        self.g.params[id.0].data = Some(data);
        self.params.insert(name.to_string(), id);
        Ok(id)
    }

    /// The IR node producing value `name`: runtime values as they are, constants as one
    /// shared `Constant` node.
    pub fn node_of(&mut self, name: &str, v: &Value) -> Result<NodeId, String> {
        match v {
            Value::Node(id) => Ok(*id),
            Value::Const(c) => {
                if let Some(&id) = self.const_nodes.get(name) {
                    return Ok(id);
                }
                let p = self.param(name, c)?;
                let id = self.add(name, Op::Constant(p), &[])?;
                self.const_nodes.insert(name.to_string(), id);
                Ok(id)
            }
        }
    }

    /// Emits `op` over named inputs. When every input is a constant, the op is evaluated now
    /// by the reference interpreter instead (a constant subgraph never reaches the IR).
    pub fn emit(&mut self, out: &str, op: Op, inputs: &[(&str, &Value)]) -> Result<Value, String> {
        let consts: Option<Vec<&Const>> = inputs
            .iter()
            .map(|(_, v)| match v {
                Value::Const(c) => Some(c),
                Value::Node(_) => None,
            })
            .collect();
        if let Some(consts) = consts {
            return eval_const(op, &consts).map(Value::Const);
        }
        let ids = inputs
            .iter()
            .map(|(name, v)| self.node_of(name, v))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Value::Node(self.add(out, op, &ids)?))
    }
}

/// Evaluates one IR op on constant float inputs with the interpreter.
fn eval_const(op: Op, inputs: &[&Const]) -> Result<Const, String> {
    let mut g = Graph::new("fold");
    let mut ids = Vec::new();
    for (i, c) in inputs.iter().enumerate() {
        let data = c
            .to_f32()
            .ok_or_else(|| format!("input {i} is a {:?} tensor; this op needs floats", c.dtype))?;
        let p = g.add_param(format!("c{i}"), &c.shape, ParamRole::Constant);
        g.params[p.0].data = Some(data);
        ids.push(
            g.add(format!("c{i}"), Op::Constant(p), &[])
                .map_err(|e| e.message)?,
        );
    }
    let out = g
        .add("out", op, &ids)
        .map_err(|e| format!("{}: {}", e.kind, e.message))?;
    super::load::checked_numel(&g.node(out).shape)?;
    g.mark_output("out", out);
    let mut res = interp::run(&g, &[]).map_err(|e| e.to_string())?;
    let Tensor { shape, data } = res.pop().ok_or("no output")?.1;
    Ok(Const::f32(shape, data))
}

/// A node being imported, with its inputs resolved.
pub struct NodeView<'a> {
    pub proto: &'a NodeProto,
    /// One entry per declared input; `None` for an omitted optional input (`""`).
    pub inputs: Vec<Option<Value>>,
}

/// Where a graph input's shape comes from.
pub struct Source<'a> {
    pub file: &'a str,
    pub dir: DataDir<'a>,
    pub input_shape: Option<&'a [usize]>,
    /// `--batch`: the first input's batch dimension.
    pub batch: Option<usize>,
    /// The most bytes of folded constants held at once.
    pub max_folded: u64,
}

/// The ONNX opset of the default domain.
fn default_opset(model: &ModelProto) -> Option<i64> {
    model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain(), "" | "ai.onnx"))
        .map(|o| o.version())
}

/// The name a node is reported under: its own, or its first output's when it has none.
pub fn node_label(n: &NodeProto) -> String {
    match n.name() {
        "" => format!("<unnamed, output `{}`>", n.output.first().map_or("", |s| s)),
        s => s.to_string(),
    }
}

pub fn import_model(mut model: ModelProto, src: &Source) -> Result<Graph, OnnxError> {
    let file = src.file.to_string();
    let model_err = |problem: String| OnnxError::Model {
        file: file.clone(),
        problem,
    };
    let opset = default_opset(&model)
        .ok_or_else(|| model_err("the model imports no opset of the default ONNX domain".into()))?;
    if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
        return Err(model_err(format!(
            "opset {opset} is not supported (supported: {MIN_OPSET} to {MAX_OPSET}); \
             re-export with an opset in that range"
        )));
    }
    let mut graph = model.graph.take().unwrap_or_default();
    check_supported(&graph, &file, opset)?;
    if !graph.sparse_initializer.is_empty() {
        return Err(model_err("sparse initializers are not supported".into()));
    }
    let order = topo_order(&graph, &file)?;

    let mut cx = Cx {
        g: Graph::new(match graph.name() {
            "" => "onnx",
            s => s,
        }),
        opset,
        params: HashMap::new(),
        const_nodes: HashMap::new(),
        float_inits: HashSet::new(),
    };
    let mut values: HashMap<String, Value> = HashMap::new();
    for t in &mut graph.initializer {
        let name = t.name().to_string();
        let c = decode_tensor(t, src.dir).map_err(|problem| OnnxError::Tensor {
            file: file.clone(),
            name: name.clone(),
            problem,
        })?;
        if c.dtype.is_float() {
            cx.float_inits.insert(name.clone());
        }
        values.insert(name, Value::Const(c));
    }
    add_inputs(&mut cx, &graph, &mut values, src)?;
    // Values are dropped after their last reader; folded constants (not initializers)
    // count against the folding budget while they live.
    let mut readers: HashMap<String, usize> = HashMap::new();
    for n in &graph.node {
        for name in n.input.iter().filter(|n| !n.is_empty()) {
            *readers.entry(name.clone()).or_default() += 1;
        }
    }
    for out in &graph.output {
        *readers.entry(out.name().to_string()).or_default() += 1;
    }
    let mut folded: HashMap<String, u64> = HashMap::new();
    let mut folded_live = 0u64;

    // Outputs a handler does not compute (MaxPool indices, Dropout masks), with their node.
    let mut missing: HashMap<String, (String, String)> = HashMap::new();
    for i in order {
        let proto = &graph.node[i];
        let node_err = |problem: String| OnnxError::Node {
            file: file.clone(),
            node: node_label(proto),
            op: proto.op_type().to_string(),
            problem,
        };
        let mut inputs = Vec::with_capacity(proto.input.len());
        for name in &proto.input {
            if name.is_empty() {
                inputs.push(None);
            } else if let Some(v) = values.get(name) {
                if let (Value::Const(c), true) = (v, cx.float_inits.contains(name)) {
                    // `params` counts every float initializer a node reads, folded or not.
                    cx.param(name, c).map_err(&node_err)?;
                }
                inputs.push(Some(v.clone()));
            } else if let Some((node, op)) = missing.get(name) {
                return Err(node_err(format!(
                    "reads `{name}`, an output of `{node}` ({op}) that is not supported"
                )));
            } else {
                return Err(node_err(format!("reads `{name}`, which has no value")));
            }
        }
        let view = NodeView { proto, inputs };
        let handler =
            ops::handler(proto.op_type()).ok_or_else(|| node_err("unsupported".into()))?;
        let outs = handler(&mut cx, &view).map_err(node_err)?;
        drop(view);
        for name in proto.input.iter().filter(|n| !n.is_empty()) {
            if let Some(left) = readers.get_mut(name) {
                *left = left.saturating_sub(1);
                if *left == 0 {
                    values.remove(name);
                    folded_live -= folded.remove(name).unwrap_or(0);
                }
            }
        }
        for (k, name) in proto.output.iter().enumerate() {
            if name.is_empty() {
                continue;
            }
            match outs.get(k) {
                Some(v) => {
                    if let Value::Const(c) = v {
                        let bytes = c.bytes();
                        folded_live += bytes;
                        if folded_live > src.max_folded {
                            return Err(node_err(format!(
                                "constant folding would hold {:.1} MiB at once, over its budget of {:.1} MiB \
                                 (a sixteenth of --max-memory-mib)",
                                folded_live as f64 / (1u64 << 20) as f64,
                                src.max_folded as f64 / (1u64 << 20) as f64
                            )));
                        }
                        folded.insert(name.clone(), bytes);
                    }
                    values.insert(name.clone(), v.clone());
                }
                None => {
                    missing.insert(
                        name.clone(),
                        (node_label(proto), proto.op_type().to_string()),
                    );
                }
            }
        }
    }

    for out in &graph.output {
        let name = out.name().to_string();
        let out_err = |problem: String| OnnxError::Output {
            file: file.clone(),
            output: name.clone(),
            problem,
        };
        let v = match values.get(&name) {
            Some(v) => v.clone(),
            None => match missing.get(&name) {
                Some((node, op)) => {
                    return Err(out_err(format!(
                        "it is an output of `{node}` ({op}) that is not supported"
                    )))
                }
                None => return Err(out_err("no node, initializer or input produces it".into())),
            },
        };
        let id = cx.node_of(&name, &v).map_err(out_err)?;
        cx.g.mark_output(name, id);
    }
    let mut g = cx.g;
    prune(&mut g);
    Ok(g)
}

/// Fails with every op type the importer has no handler for, with its nodes.
fn check_supported(graph: &GraphProto, file: &str, opset: i64) -> Result<(), OnnxError> {
    let mut bad: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in &graph.node {
        let default_domain = matches!(n.domain(), "" | "ai.onnx");
        if !default_domain || ops::handler(n.op_type()).is_none() {
            let op = if default_domain {
                n.op_type().to_string()
            } else {
                format!("{}.{}", n.domain(), n.op_type())
            };
            bad.entry(op).or_default().push(node_label(n));
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    Err(OnnxError::Unsupported {
        file: file.to_string(),
        opset,
        ops: bad.into_iter().collect(),
    })
}

/// Orders the nodes so each follows the producers of its inputs (exporters usually write
/// them in order, but the format does not promise it); finds dangling names and cycles.
fn topo_order(graph: &GraphProto, file: &str) -> Result<Vec<usize>, OnnxError> {
    // Value name → who produces it (None: graph input or initializer).
    let mut producer: HashMap<&str, Option<usize>> = HashMap::new();
    for name in graph
        .input
        .iter()
        .map(|i| i.name())
        .chain(graph.initializer.iter().map(|t| t.name()))
    {
        producer.insert(name, None);
    }
    for (i, n) in graph.node.iter().enumerate() {
        for out in n.output.iter().filter(|o| !o.is_empty()) {
            if let Some(prev) = producer.insert(out, Some(i)) {
                let first = match prev {
                    Some(p) => format!("node `{}`", node_label(&graph.node[p])),
                    None => "a graph input or initializer".to_string(),
                };
                return Err(OnnxError::Duplicate {
                    file: file.to_string(),
                    value: out.clone(),
                    first,
                    second: format!("node `{}`", node_label(n)),
                });
            }
        }
    }
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); graph.node.len()];
    let mut pending = vec![0usize; graph.node.len()];
    for (i, n) in graph.node.iter().enumerate() {
        let mut deps = HashSet::new();
        for input in n.input.iter().filter(|s| !s.is_empty()) {
            match producer.get(input.as_str()) {
                Some(Some(p)) => {
                    deps.insert(*p);
                }
                Some(None) => {}
                None => {
                    return Err(OnnxError::Dangling {
                        file: file.to_string(),
                        node: node_label(n),
                        op: n.op_type().to_string(),
                        value: input.clone(),
                    })
                }
            }
        }
        pending[i] = deps.len();
        for d in deps {
            users[d].push(i);
        }
    }
    let mut ready: VecDeque<usize> = (0..graph.node.len()).filter(|&i| pending[i] == 0).collect();
    let mut order = Vec::with_capacity(graph.node.len());
    while let Some(i) = ready.pop_front() {
        order.push(i);
        for &u in &users[i] {
            pending[u] -= 1;
            if pending[u] == 0 {
                ready.push_back(u);
            }
        }
    }
    if order.len() < graph.node.len() {
        let nodes = (0..graph.node.len())
            .filter(|&i| pending[i] > 0)
            .take(20)
            .map(|i| node_label(&graph.node[i]))
            .collect();
        return Err(OnnxError::Cycle {
            file: file.to_string(),
            nodes,
        });
    }
    Ok(order)
}

/// The largest dimension a graph input may have; keeps later size arithmetic far from
/// overflow.
const MAX_INPUT_DIM: usize = 1 << 20;

/// Adds the graph inputs that are not initializers, with static shapes: the declared shape,
/// or `--input-shape` for the first one.
fn add_inputs(
    cx: &mut Cx,
    graph: &GraphProto,
    values: &mut HashMap<String, Value>,
    src: &Source,
) -> Result<(), OnnxError> {
    let mut first = true;
    for input in &graph.input {
        let name = input.name();
        if values.contains_key(name) {
            continue; // An initializer listed as an input (IR < 4): a constant.
        }
        let err = |problem: String| OnnxError::Input {
            file: src.file.to_string(),
            input: name.to_string(),
            problem,
        };
        let tensor = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(type_proto::Value::TensorType(t)) => t,
            _ => return Err(err("is not a tensor".into())),
        };
        if tensor.elem_type() != 1 {
            return Err(err(format!(
                "has element type code {}; only float32 inputs are supported",
                tensor.elem_type()
            )));
        }
        let declared: Option<Vec<Option<i64>>> = tensor.shape.as_ref().map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(Dim::DimValue(v)) if v > 0 => Some(v),
                    _ => None,
                })
                .collect()
        });
        let labels: Vec<String> = tensor.shape.as_ref().map_or(Vec::new(), |s| {
            s.dim
                .iter()
                .map(|d| match &d.value {
                    Some(Dim::DimValue(v)) => v.to_string(),
                    Some(Dim::DimParam(p)) if !p.is_empty() => p.clone(),
                    _ => "?".into(),
                })
                .collect()
        });
        // `--batch N` fills a symbolic batch dimension; a fixed one (declared, or given by
        // `--input-shape`) must agree with it.
        let mut declared = declared;
        if let (true, Some(n)) = (first, src.batch) {
            if let Some(given) = src.input_shape {
                if given.first() != Some(&n) {
                    return Err(err(format!(
                        "--input-shape {} and --batch {n} disagree on the batch dimension",
                        join(given)
                    )));
                }
            }
            if let Some(decl) = declared.as_mut().filter(|d| !d.is_empty()) {
                match decl[0] {
                    Some(b) if b as usize != n => {
                        return Err(err(format!(
                            "is declared [{}] with a fixed batch of {b}; --batch {n} needs a \
                             symbolic batch dimension (re-export with a dynamic axis 0)",
                            labels.join(", ")
                        )))
                    }
                    _ => decl[0] = Some(n as i64),
                }
            }
        }
        let shape: Vec<usize> = match (first, src.input_shape) {
            (true, Some(given)) => {
                if let Some(decl) = &declared {
                    let conflict = decl.len() != given.len()
                        || decl
                            .iter()
                            .zip(given)
                            .any(|(d, &g)| d.is_some_and(|d| d as usize != g));
                    if conflict {
                        return Err(err(format!(
                            "is declared [{}]; --input-shape {} does not fit it",
                            labels.join(", "),
                            join(given)
                        )));
                    }
                }
                given.to_vec()
            }
            _ => {
                let decl = declared.ok_or_else(|| {
                    err("has no declared shape; set it with --input-shape N,C,H,W \
                         (e.g. --input-shape 1,3,512,512)"
                        .into())
                })?;
                let unknown: Vec<usize> = (0..decl.len()).filter(|&i| decl[i].is_none()).collect();
                if !unknown.is_empty() {
                    let example: Vec<usize> = decl
                        .iter()
                        .enumerate()
                        .map(|(i, d)| d.map_or(if i == 0 { 1 } else { 512 }, |v| v as usize))
                        .collect();
                    let how = if first && unknown == [0] {
                        format!(
                            "set the batch with --batch N (e.g. --batch 1), or the whole shape with --input-shape, e.g. --input-shape {}",
                            join(&example)
                        )
                    } else if first {
                        format!(
                            "set the input shape with --input-shape, e.g. --input-shape {}",
                            join(&example)
                        )
                    } else {
                        "only the first input's shape can be set with --input-shape; \
                         re-export with static shapes"
                            .to_string()
                    };
                    return Err(err(format!(
                        "dimension(s) {unknown:?} of [{}] are unknown; {how}",
                        labels.join(", ")
                    )));
                }
                decl.into_iter().map(|d| d.unwrap_or(0) as usize).collect()
            }
        };
        if shape.iter().any(|&d| d == 0 || d > MAX_INPUT_DIM)
            || super::load::checked_numel(&shape).is_err()
        {
            return Err(err(format!(
                "shape [{}] is not usable (every dim must be 1..={MAX_INPUT_DIM}, at most {MAX_ELEMENTS} elements)",
                join(&shape)
            )));
        }
        let id = cx.g.add_input(name, &shape);
        values.insert(name.to_string(), Value::Node(id));
        first = false;
    }
    Ok(())
}

fn join(v: &[usize]) -> String {
    v.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Removes every node no output depends on (folded-away shape computations, the pieces of
/// a matched pattern), keeping the graph inputs.
fn prune(g: &mut Graph) {
    let mut live: HashSet<NodeId> = g.inputs.iter().copied().collect();
    let mut stack: Vec<NodeId> = g.outputs.iter().map(|(_, id)| *id).collect();
    while let Some(id) = stack.pop() {
        if live.insert(id) {
            stack.extend(g.graph.neighbors_directed(id, Direction::Incoming));
        }
    }
    let dead: Vec<NodeId> = g
        .graph
        .node_indices()
        .filter(|n| !live.contains(n))
        .collect();
    for id in dead {
        g.graph.remove_node(id);
    }
}
