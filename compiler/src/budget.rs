//! The resource budget: how much memory and arithmetic a model may ask for, checked before
//! anything that large is allocated or run.
//!
//! One budget covers specs and ONNX files alike. Memory bounds, each on its own: the tensors
//! constant folding holds at once (ONNX), the parameters, the reference interpreter's peak
//! (`effdetc run`), the planned arena and the packed weights (`effdetc build`). Arithmetic
//! bounds the conv multiply-accumulates of one forward pass (the batch included). The
//! defaults hold every shipped spec and real export, D7x at 1536×1536 included, with room to
//! spare; `--max-memory-mib` / `--max-gmacs` (and `Build::max_memory_mib`,
//! `model!(max_memory_mib = ...)`) raise them. An error says what the model would need.

use crate::ir::graph::tensor_bytes;
use crate::ir::{Graph, NodeId, Op};
use std::collections::HashMap;

/// Default memory bound: D7x (1536×1536) needs 864 MiB for the interpreter, 540 MiB of arena
/// and 309 MiB of parameters; batches multiply the first two.
pub const DEFAULT_MAX_MEMORY_MIB: u64 = 4096;
/// Default arithmetic bound: D7x runs 408 G multiply-accumulates per image.
pub const DEFAULT_MAX_GMACS: u64 = 2000;
/// The most bytes constant folding keeps at once, whatever `--max-memory-mib` says: folded
/// values of real exports are shape arithmetic and the odd reshaped weight (a few MiB), so
/// this only stops files that build huge constants.
pub const MAX_FOLDED_BYTES: u64 = 256 << 20;

/// The bounds a compilation or a run works within.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes, for each memory quantity on its own.
    pub max_memory: u64,
    /// Conv multiply-accumulates of one forward pass.
    pub max_macs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_memory: DEFAULT_MAX_MEMORY_MIB << 20,
            max_macs: DEFAULT_MAX_GMACS * 1_000_000_000,
        }
    }
}

impl Limits {
    /// The defaults with either bound replaced (MiB, G multiply-accumulates), checked.
    pub fn with(max_memory_mib: Option<u64>, max_gmacs: Option<u64>) -> Result<Limits, String> {
        let d = Limits::default();
        let max_memory = match max_memory_mib {
            None => d.max_memory,
            Some(m) => m
                .checked_mul(1 << 20)
                .filter(|&b| b > 0)
                .ok_or_else(|| format!("--max-memory-mib {m} is out of range (1..=2^44)"))?,
        };
        let max_macs = match max_gmacs {
            None => d.max_macs,
            Some(g) => g
                .checked_mul(1_000_000_000)
                .filter(|&m| m > 0)
                .ok_or_else(|| format!("--max-gmacs {g} is out of range (1..=18446744073)"))?,
        };
        Ok(Limits {
            max_memory,
            max_macs,
        })
    }
}

/// A quantity over its bound.
#[derive(Debug, thiserror::Error)]
#[error("{what} would need {}, over the budget of {} (raise it with {flag})", human(*.need, *.unit), human(*.limit, *.unit))]
pub struct BudgetError {
    pub what: String,
    /// `u64::MAX` when the amount overflows.
    pub need: u64,
    pub limit: u64,
    pub unit: Unit,
    pub flag: &'static str,
}

/// What a [`BudgetError`] counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Macs,
}

fn human(n: u64, unit: Unit) -> String {
    if n == u64::MAX {
        return "more than 2^64".into();
    }
    match unit {
        Unit::Bytes => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        Unit::Macs => format!("{:.1} G multiply-accumulates", n as f64 / 1e9),
    }
}

fn memory(what: String, need: Option<u64>, limits: &Limits) -> Result<(), BudgetError> {
    let need = need.unwrap_or(u64::MAX);
    if need <= limits.max_memory {
        return Ok(());
    }
    Err(BudgetError {
        what,
        need,
        limit: limits.max_memory,
        unit: Unit::Bytes,
        flag: "--max-memory-mib",
    })
}

/// What every command checks right after loading: the parameters' bytes and the forward
/// pass's multiply-accumulates.
pub fn check_model(graph: &Graph, limits: &Limits) -> Result<(), BudgetError> {
    memory(
        format!("the parameters of `{}`", graph.name),
        graph.param_bytes(),
        limits,
    )?;
    let macs = graph.try_macs().unwrap_or(u64::MAX);
    if macs > limits.max_macs {
        return Err(BudgetError {
            what: format!("one forward pass of `{}`", graph.name),
            need: macs,
            limit: limits.max_macs,
            unit: Unit::Macs,
            flag: "--max-gmacs",
        });
    }
    Ok(())
}

/// What `effdetc run` checks before interpreting: the interpreter's peak.
pub fn check_run(graph: &Graph, limits: &Limits) -> Result<(), BudgetError> {
    memory(
        format!("running `{}` on the reference interpreter", graph.name),
        interpreter_peak(graph),
        limits,
    )
}

/// What `effdetc build` checks after planning: the arena and the packed weights.
pub fn check_plan(plan: &crate::plan::Plan, limits: &Limits) -> Result<(), BudgetError> {
    let bytes = |floats: usize| (floats as u64).checked_mul(4);
    memory(
        format!("the arena of `{}`", plan.name),
        bytes(plan.arena_len),
        limits,
    )?;
    memory(
        format!("the packed weights of `{}`", plan.name),
        bytes(plan.weights_len),
        limits,
    )
}

/// The most bytes the reference interpreter holds at once (values are dropped after their
/// last use, as [`crate::interp::run`] does; parameters not included), `None` on overflow.
pub fn interpreter_peak(graph: &Graph) -> Option<u64> {
    let order = graph.topo_order();
    let mut uses: HashMap<NodeId, usize> = HashMap::new();
    for &id in &order {
        for i in graph.inputs_of(id) {
            *uses.entry(i).or_default() += 1;
        }
    }
    for (_, id) in &graph.outputs {
        *uses.entry(*id).or_default() += 1;
    }
    let size = |id: NodeId| tensor_bytes(&graph.node(id).shape);
    let mut live = 0u64;
    for &id in &graph.inputs {
        live = live.checked_add(size(id)?)?;
    }
    let mut peak = live;
    for &id in &order {
        if matches!(graph.node(id).op, Op::Input) {
            continue;
        }
        // The output exists while the inputs are still held.
        live = live.checked_add(size(id)?)?;
        peak = peak.max(live);
        for i in graph.inputs_of(id) {
            if let Some(left) = uses.get_mut(&i) {
                *left -= 1;
                if *left == 0 {
                    live -= size(i)?;
                }
            }
        }
    }
    Some(peak)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_is_needed_and_how_to_raise_it() {
        let limits = Limits::with(Some(1), Some(1)).unwrap();
        let e = memory("the arena of `x`".into(), Some(3 << 20), &limits).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the arena of `x` would need 3.0 MiB, over the budget of 1.0 MiB (raise it with --max-memory-mib)"
        );
        let e = memory("y".into(), None, &limits).unwrap_err();
        assert!(e.to_string().contains("more than 2^64"), "{e}");
        assert!(Limits::with(Some(u64::MAX), None).is_err());
        assert!(Limits::with(None, Some(0)).is_err());
    }

    #[test]
    fn interpreter_peak_counts_live_values_only() {
        use crate::ir::{Activation, Op};
        let mut g = Graph::new("t");
        let x = g.add_input("x", &[1, 4, 8, 8]); // 1 KiB
        let a = g.add("a", Op::Activation(Activation::Relu), &[x]).unwrap();
        let b = g.add("b", Op::Activation(Activation::Relu), &[a]).unwrap();
        g.mark_output("b", b);
        // x and a, then a and b: two tensors at once.
        assert_eq!(interpreter_peak(&g), Some(2 * 1024));
    }
}
