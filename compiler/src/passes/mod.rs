//! Graph rewrites between the front ends and code generation: folding and fusion.
//!
//! Every pass lives in its own file as `fn run(&mut Graph) -> Result<usize, PassError>`
//! returning how many rewrites it made, and is registered once in [`PASSES`] under its name.
//! [`run`] applies the enabled passes in registry order, again and again, until a whole round
//! rewrites nothing (a fixed point) or [`MAX_ROUNDS`] rounds have run.
//!
//! Rules every pass follows, so passes compose in any subset and order:
//! - **Exact rewrites only.** A fused graph computes what the unfused one did, up to float
//!   rounding of values folded at compile time; the interpreter is the judge (unit tests run
//!   each pass on small graphs before and after, the golden tests whole models).
//! - **Structure never depends on data.** A graph whose parameters are not bound yet (a spec
//!   inspected without weights) is rewritten exactly like a bound one; parameters a pass derives
//!   from unbound sources are created with the right shape and no data. So bind weights
//!   *before* running passes: derived parameters are computed when they are created, not
//!   later, and their names are not the ones a `state_dict` holds.
//! - **Detection at the anchor.** A fusion is found at the op whose output survives, or
//!   whose output the fused op replaces: `x·sigmoid(x)` at the `Mul`, BN at the conv it follows,
//!   squeeze-excite at the gating `Mul`, a BiFPN sum at its sum (or at the `Div` that
//!   normalizes it). The surviving node keeps its id and name; absorbed nodes are removed.
//! - **Only single-consumer intermediates are absorbed**, and never a graph output, so no value
//!   anyone else reads disappears.
//! - **Checked after every pass**: [`verify`] re-infers every node's shape and checks that the
//!   graph is still a DAG, so a buggy rewrite fails loudly, naming the pass, instead of
//!   producing wrong code.

mod eliminate_dead;
mod fold_bn;
mod fold_constants;
mod fold_pad;
mod fold_reshape;
mod fuse_activation;
mod fuse_bifpn;
mod fuse_residual;
mod fuse_se;
mod propagate_transpose;
mod rewrite;
#[cfg(test)]
pub(crate) mod testutil;

use std::fmt;

use petgraph::Direction;

use crate::ir::Graph;

/// A pass: rewrites the graph in place and returns how many rewrites it made.
pub type PassFn = fn(&mut Graph) -> Result<usize, PassError>;

/// Every pass, by name, in the order [`run`] applies them within a round.
///
/// The order only affects how many rounds the fixed point takes, not where it ends: pads and
/// BNs go into convs first so that activations find a bare conv to fuse into, activations
/// before layout propagation (which moves transposes past a whole `swish`, not half of
/// `x·sigmoid(x)`) and before residuals and squeeze-excite (which accepts its activations
/// fused or not), layout propagation and reshape folding before the fusions whose patterns
/// they uncover, dead-code elimination last.
pub const PASSES: &[(&str, PassFn)] = &[
    ("fold_constants", fold_constants::run),
    ("fold_pad", fold_pad::run),
    ("fold_bn", fold_bn::run),
    ("fuse_activation", fuse_activation::run),
    ("propagate_transpose", propagate_transpose::run),
    ("fold_reshape", fold_reshape::run),
    ("fuse_residual", fuse_residual::run),
    ("fuse_se", fuse_se::run),
    ("fuse_bifpn", fuse_bifpn::run),
    ("eliminate_dead", eliminate_dead::run),
];

/// Rounds [`run`] makes at most. Real models converge in 2–3 (a BiFPN sum becomes a `Fuse`
/// after the activation pass has run in that round, so its activation fuses in the next).
pub const MAX_ROUNDS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("unknown pass `{name}`; the passes are: {valid}")]
    UnknownPass { name: String, valid: String },
    /// A rewrite produced an inconsistent graph: a bug in the pass, reported instead of
    /// generating wrong code.
    #[error("pass `{pass}` left an inconsistent graph: {message}")]
    Invalid { pass: &'static str, message: String },
}

/// Which passes are enabled. [`run`] applies them in [`PASSES`] order whatever order they
/// were named in.
#[derive(Clone, PartialEq, Eq)]
pub struct PassSet {
    enabled: Vec<bool>,
}

impl PassSet {
    /// Every pass: what `effdetc` uses unless told otherwise.
    pub fn all() -> PassSet {
        PassSet {
            enabled: vec![true; PASSES.len()],
        }
    }

    /// No pass: the graph as the front end built it (`--no-fuse`).
    pub fn none() -> PassSet {
        PassSet {
            enabled: vec![false; PASSES.len()],
        }
    }

    /// A comma-separated list of pass names (`"fold_bn,fuse_activation"`); blanks around names
    /// and empty entries are ignored, so `""` is [`PassSet::none`]. An unknown name is an
    /// error listing the valid ones.
    pub fn parse(list: &str) -> Result<PassSet, PassError> {
        let mut set = PassSet::none();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match PASSES.iter().position(|(n, _)| *n == name) {
                Some(i) => set.enabled[i] = true,
                None => {
                    return Err(PassError::UnknownPass {
                        name: name.to_string(),
                        valid: names().collect::<Vec<_>>().join(", "),
                    })
                }
            }
        }
        Ok(set)
    }

    pub fn contains(&self, name: &str) -> bool {
        PASSES
            .iter()
            .zip(&self.enabled)
            .any(|((n, _), &on)| on && *n == name)
    }

    pub fn is_empty(&self) -> bool {
        !self.enabled.contains(&true)
    }

    /// The enabled passes' names, in the order they run.
    pub fn enabled(&self) -> impl Iterator<Item = &'static str> + '_ {
        PASSES
            .iter()
            .zip(&self.enabled)
            .filter(|(_, &on)| on)
            .map(|((n, _), _)| *n)
    }
}

impl Default for PassSet {
    fn default() -> Self {
        PassSet::all()
    }
}

impl fmt::Debug for PassSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.enabled()).finish()
    }
}

/// The names of all passes, in the order they run.
pub fn names() -> impl Iterator<Item = &'static str> {
    PASSES.iter().map(|(n, _)| *n)
}

/// What [`run`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassReport {
    /// Rewrites per enabled pass over all rounds, in run order.
    pub rewrites: Vec<(&'static str, usize)>,
    /// Rounds run, the last one (which rewrote nothing) included.
    pub rounds: usize,
    /// False when [`MAX_ROUNDS`] stopped the loop while passes were still rewriting. The graph
    /// is still correct (every pass is exact), just possibly not fully fused: a bug to report.
    pub converged: bool,
}

impl PassReport {
    pub fn total(&self) -> usize {
        self.rewrites.iter().map(|(_, n)| n).sum()
    }
}

/// Applies the passes of `set` to a fixed point (at most [`MAX_ROUNDS`] rounds), checking the
/// graph after every pass.
pub fn run(graph: &mut Graph, set: &PassSet) -> Result<PassReport, PassError> {
    let enabled: Vec<(&'static str, PassFn)> = PASSES
        .iter()
        .zip(&set.enabled)
        .filter(|(_, &on)| on)
        .map(|(p, _)| *p)
        .collect();
    let mut rewrites: Vec<(&'static str, usize)> = enabled.iter().map(|(n, _)| (*n, 0)).collect();
    let mut rounds = 0;
    let mut converged = enabled.is_empty();
    while !converged && rounds < MAX_ROUNDS {
        rounds += 1;
        let mut round = 0;
        for (i, (name, pass)) in enabled.iter().enumerate() {
            let n = pass(graph)?;
            verify(graph).map_err(|message| PassError::Invalid {
                pass: name,
                message,
            })?;
            rewrites[i].1 += n;
            round += n;
        }
        converged = round == 0;
    }
    Ok(PassReport {
        rewrites,
        rounds,
        converged,
    })
}

/// Checks what passes must preserve: every node's stored shape is what its op infers from its
/// inputs, input slots are `0..n` without gaps, the graph is acyclic, outputs and graph inputs
/// are live nodes and every parameter id is in the table.
pub fn verify(g: &Graph) -> Result<(), String> {
    let order = g.topo_order();
    if order.len() != g.graph.node_count() {
        return Err("the graph has a cycle".into());
    }
    let param_shape =
        |p: crate::ir::ParamId| g.params.get(p.0).map_or(Vec::new(), |p| p.shape.clone());
    for id in order {
        let node = g.node(id);
        for p in node.op.params() {
            if p.0 >= g.params.len() {
                return Err(format!(
                    "node `{}` reads parameter #{} of {}",
                    node.name,
                    p.0,
                    g.params.len()
                ));
            }
        }
        let mut slots: Vec<usize> = g
            .graph
            .edges_directed(id, Direction::Incoming)
            .map(|e| *e.weight())
            .collect();
        slots.sort_unstable();
        if slots.iter().enumerate().any(|(i, &s)| i != s) {
            return Err(format!("node `{}` has input slots {slots:?}", node.name));
        }
        if matches!(node.op, crate::ir::Op::Input) {
            continue;
        }
        let inputs = g.inputs_of(id);
        let shapes: Vec<&[usize]> = inputs.iter().map(|&i| g.node(i).shape.as_slice()).collect();
        match node.op.infer_shape(&shapes, &param_shape) {
            Ok(s) if s == node.shape => {}
            Ok(s) => {
                return Err(format!(
                    "node `{}` ({}) is recorded as {:?} but computes {s:?}",
                    node.name,
                    node.op.kind(),
                    node.shape
                ))
            }
            Err(e) => return Err(format!("node `{}` ({}): {e}", node.name, node.op.kind())),
        }
    }
    for (name, id) in &g.outputs {
        if !g.graph.contains_node(*id) {
            return Err(format!("output `{name}` refers to a removed node"));
        }
    }
    for id in &g.inputs {
        if !g.graph.contains_node(*id) {
            return Err("a graph input was removed".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_sets_parse_and_reject_unknown_names() {
        let s = PassSet::parse(" fuse_activation, fold_bn ,").unwrap();
        assert_eq!(
            s.enabled().collect::<Vec<_>>(),
            ["fold_bn", "fuse_activation"]
        );
        assert!(s.contains("fold_bn") && !s.contains("fuse_se"));
        assert!(PassSet::parse("").unwrap().is_empty());
        assert_eq!(PassSet::all().enabled().count(), PASSES.len());
        let err = PassSet::parse("fold_bn,fuse_everything")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`fuse_everything`"), "{err}");
        for name in names() {
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn no_passes_is_a_no_op() {
        let (mut g, _) = testutil::conv_bn_act_graph();
        let before = g.op_counts();
        let r = run(&mut g, &PassSet::none()).unwrap();
        assert_eq!((r.rounds, r.converged, r.total()), (0, true, 0));
        assert_eq!(g.op_counts(), before);
    }

    #[test]
    fn driver_reaches_a_fixed_point_and_counts_rewrites() {
        let (mut g, x) = testutil::conv_bn_act_graph();
        let before = testutil::eval(&g, &x);
        let r = run(&mut g, &PassSet::all()).unwrap();
        assert!(r.converged && r.rounds >= 2, "{r:?}");
        let count = |name| r.rewrites.iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!(count("fold_bn"), 1);
        assert_eq!(count("fuse_activation"), 1);
        assert_eq!(
            g.op_counts().into_iter().collect::<Vec<_>>(),
            [("conv", 1), ("input", 1)]
        );
        testutil::assert_close(&before, &testutil::eval(&g, &x), 1e-5);
    }
}
