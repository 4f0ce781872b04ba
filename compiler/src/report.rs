//! What `effdetc inspect` reports about a model.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::ir::Graph;
use crate::plan::Plan;

/// A model's summary; serialized as the `inspect --json` object.
#[derive(Debug, Serialize)]
pub struct Report {
    pub name: String,
    /// `[N, C, H, W]`.
    pub input_shape: Vec<usize>,
    /// Learnable parameters (specs) or float initializer elements used (ONNX).
    pub params: u64,
    /// Conv multiply-accumulates of one forward pass.
    pub macs: u64,
    /// Node count per op kind.
    pub ops: BTreeMap<&'static str, usize>,
    /// Node count per op kind after the fusion passes (equal to `ops` until
    /// [`Report::with_fused`] sets it, and with `--no-fuse`).
    pub ops_fused: BTreeMap<&'static str, usize>,
    pub nodes: usize,
    /// Bytes of the planned arena of the fused graph (`None` when it cannot be planned).
    pub arena_bytes: Option<u64>,
    /// Bytes of all intermediates of the unfused graph: what a runtime without a memory
    /// plan would allocate.
    pub naive_bytes: u64,
    /// The reference interpreter's peak (`effdetc run`), checked against the memory budget.
    pub interpreter_peak_bytes: Option<u64>,
    /// Output name → shape, in output order.
    pub outputs: Vec<(String, Vec<usize>)>,
}

impl Report {
    pub fn of(graph: &Graph) -> Report {
        let ops = graph.op_counts();
        Report {
            name: graph.name.clone(),
            input_shape: graph
                .input_shape()
                .map(<[usize]>::to_vec)
                .unwrap_or_default(),
            params: graph.param_count(),
            macs: graph.macs(),
            ops_fused: ops.clone(),
            ops,
            nodes: graph.graph.node_count(),
            arena_bytes: Plan::build(graph).ok().map(|p| p.arena_bytes()),
            naive_bytes: Plan::naive_bytes(graph),
            interpreter_peak_bytes: crate::budget::interpreter_peak(graph),
            outputs: graph
                .outputs
                .iter()
                .map(|(n, id)| (n.clone(), graph.node(*id).shape.clone()))
                .collect(),
        }
    }

    /// Takes `ops_fused` from `fused`, the same model after the passes; everything else stays
    /// the unfused graph's.
    pub fn with_fused(mut self, fused: &Graph) -> Report {
        self.ops_fused = fused.op_counts();
        self.arena_bytes = Plan::build(fused).ok().map(|p| p.arena_bytes());
        self
    }

    pub fn to_json(&self) -> String {
        let outputs: serde_json::Map<String, serde_json::Value> = self
            .outputs
            .iter()
            .map(|(n, s)| (n.clone(), serde_json::json!(s)))
            .collect();
        let value = serde_json::json!({
            "name": self.name,
            "input_shape": self.input_shape,
            "params": self.params,
            "macs": self.macs,
            "ops": self.ops,
            "ops_fused": self.ops_fused,
            "nodes": self.nodes,
            "arena_bytes": self.arena_bytes,
            "naive_bytes": self.naive_bytes,
            "interpreter_peak_bytes": self.interpreter_peak_bytes,
            "outputs": outputs,
        });
        serde_json::to_string_pretty(&value).unwrap_or_default()
    }

    pub fn to_text(&self) -> String {
        let mut s = format!(
            "model        {}\ninput        {:?}\nparams       {}\nconv MACs    {} ({:.2} G)\nnodes        {}\narena        {} bytes (unplanned: {})\nops                 unfused   fused\n",
            self.name,
            self.input_shape,
            thousands(self.params),
            thousands(self.macs),
            self.macs as f64 / 1e9,
            self.nodes,
            self.arena_bytes.map_or_else(|| "-".to_string(), thousands),
            thousands(self.naive_bytes),
        );
        let kinds: std::collections::BTreeSet<_> =
            self.ops.keys().chain(self.ops_fused.keys()).collect();
        for kind in kinds {
            let (n, f) = (
                self.ops.get(kind).copied().unwrap_or(0),
                self.ops_fused.get(kind).copied().unwrap_or(0),
            );
            s.push_str(&format!("  {kind:<18}{n:>7}{f:>8}\n"));
        }
        s.push_str("outputs\n");
        for (name, shape) in &self.outputs {
            s.push_str(&format!("  {name:<18}{shape:?}\n"));
        }
        s
    }
}

/// `3880067` → `3,880,067`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_separators() {
        assert_eq!(super::thousands(3_880_067), "3,880,067");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(1000), "1,000");
    }
}
