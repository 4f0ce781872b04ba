//! Property tests of every reader a user hands files to: the spec front end (mutations of
//! every shipped spec: numbers pushed to extremes, lines dropped or duplicated, YAML alias
//! bombs, deep nesting, byte flips), the weights readers (safetensors and `.pth`, byte-level
//! mutations of real files) and `.npy`. Whatever the input: no panic, a result within the
//! default resource budget (a spec that loads passes the budget check, and is planned), and
//! the process's address space capped at 8 GiB, so a reader that asks for more fails the
//! test instead of the machine.
//!
//! CI runs a few hundred cases per property; a long run sets `PROPTEST_CASES`, e.g.
//! `PROPTEST_CASES=200000 cargo test --release -p effdet-compiler --test fuzz_inputs`.

use std::path::Path;
use std::sync::OnceLock;

use effdet_compiler::budget::{self, Limits};
use effdet_compiler::ir::Graph;
use effdet_compiler::passes::{self, PassSet};
use effdet_compiler::plan::Plan;
use effdet_compiler::{npy, spec, weights};
use proptest::prelude::*;

mod common;
use common::root;

/// Caps the address space once (8 GiB): an allocation beyond it fails instead of paging.
fn cap_memory() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let lim = libc::rlimit {
            rlim_cur: 8 << 30,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: setrlimit reads one rlimit struct we own.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) };
        assert_eq!(rc, 0, "setrlimit");
    });
}

/// Every shipped spec's text; fails if there are none.
fn specs() -> &'static [(String, String)] {
    static SPECS: OnceLock<Vec<(String, String)>> = OnceLock::new();
    SPECS.get_or_init(|| {
        let mut v: Vec<(String, String)> = std::fs::read_dir(root().join("specs"))
            .expect("specs/")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .map(|p| {
                let text = std::fs::read_to_string(&p).unwrap();
                (p.file_name().unwrap().to_string_lossy().into_owned(), text)
            })
            .collect();
        v.sort();
        assert_eq!(v.len(), 16, "the shipped specs");
        v
    })
}

/// Parses, validates, resolves, lowers, checks the budget and plans a spec text: the
/// whole front end a spec goes through, without weights.
fn front_end(text: &str) {
    let path = Path::new("fuzz.yaml");
    let Ok(loaded) = spec::parse(path, text.as_bytes()) else {
        return;
    };
    let arch = spec::resolve::resolve(&loaded.spec);
    let Ok(mut graph) = spec::lower::lower(&arch, 1) else {
        return;
    };
    let limits = Limits::default();
    if budget::check_model(&graph, &limits).is_err() {
        return;
    }
    // Planning and the passes are linear in the graph; skip the huge ones to keep cases fast.
    if graph.graph.node_count() < 5000 {
        let _ = budget::interpreter_peak(&graph);
        if passes::run(&mut graph, &PassSet::all()).is_ok() {
            if let Ok(plan) = Plan::build(&graph) {
                let _ = budget::check_plan(&plan, &limits);
            }
        }
    }
}

/// Number-like tokens a user might type, from harmless to hostile.
const EXTREMES: &[&str] = &[
    "0",
    "-1",
    "1",
    "3",
    "1e9",
    "1e300",
    "-1e300",
    "4294967295",
    "4294967296",
    "18446744073709551616",
    ".nan",
    ".inf",
    "-.inf",
    "1e-320",
    "0.0",
    "null",
    "~",
    "[]",
    "{}",
    "\"x\"",
    "0x7fffffff",
    "9999999999999999999999",
];

/// One edit of a spec's text.
#[derive(Clone, Debug)]
enum Edit {
    /// The n-th number-like token becomes an extreme.
    Number(usize, usize),
    /// Drop the n-th line.
    DropLine(usize),
    /// Duplicate the n-th line (a repeated key).
    DupLine(usize),
    /// Overwrite a byte.
    Byte(usize, u8),
    /// Append a YAML alias bomb of this depth.
    AliasBomb(u8),
    /// Wrap a value in this many nested sequences.
    Nest(usize, u16),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), 0..EXTREMES.len()).prop_map(|(n, e)| Edit::Number(n, e)),
        1 => any::<usize>().prop_map(Edit::DropLine),
        1 => any::<usize>().prop_map(Edit::DupLine),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Byte(i, b)),
        1 => (1u8..64).prop_map(Edit::AliasBomb),
        1 => (any::<usize>(), 1u16..20_000).prop_map(|(n, d)| Edit::Nest(n, d)),
    ]
}

/// Byte ranges of the number-like tokens of `text`.
fn numbers(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() || (b[i] == b'-' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            let start = i;
            i += 1;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'-') {
                i += 1;
            }
            out.push((start, i));
        } else {
            i += 1;
        }
    }
    out
}

fn apply(text: &str, e: &Edit) -> String {
    let lines: Vec<&str> = text.lines().collect();
    match *e {
        Edit::Number(n, x) => {
            let nums = numbers(text);
            match nums.get(n % nums.len().max(1)) {
                Some(&(a, b)) => format!("{}{}{}", &text[..a], EXTREMES[x], &text[b..]),
                None => text.to_string(),
            }
        }
        Edit::DropLine(n) => {
            let k = n % lines.len().max(1);
            lines
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != k)
                .map(|(_, l)| *l)
                .collect::<Vec<_>>()
                .join("\n")
        }
        Edit::DupLine(n) => {
            let k = n % lines.len().max(1);
            let mut v = lines.clone();
            if let Some(l) = lines.get(k) {
                v.insert(k, l);
            }
            v.join("\n")
        }
        Edit::Byte(i, byte) => {
            let mut b = text.as_bytes().to_vec();
            let n = b.len().max(1);
            if let Some(x) = b.get_mut(i % n) {
                *x = byte;
            }
            String::from_utf8_lossy(&b).into_owned()
        }
        Edit::AliasBomb(depth) => {
            let mut s = format!("{text}\nbomb0: &b0 [x, x, x, x, x, x, x, x, x, x]\n");
            for d in 1..depth {
                s += &format!("bomb{d}: &b{d} [*b{p}, *b{p}, *b{p}, *b{p}, *b{p}, *b{p}, *b{p}, *b{p}, *b{p}, *b{p}]\n", p = d - 1);
            }
            s
        }
        Edit::Nest(n, depth) => {
            let nums = numbers(text);
            match nums.get(n % nums.len().max(1)) {
                Some(&(a, b)) => format!(
                    "{}{}{}{}{}",
                    &text[..a],
                    "[".repeat(depth as usize),
                    &text[a..b],
                    "]".repeat(depth as usize),
                    &text[b..]
                ),
                None => text.to_string(),
            }
        }
    }
}

/// A small D0-like graph for the weights readers (the spec's own parameter names).
fn d0_graph() -> Graph {
    let loaded = spec::load(&root().join("specs/d0.yaml")).unwrap();
    let arch = spec::resolve::resolve(&loaded.spec);
    spec::lower::lower(&arch, 1).unwrap()
}

/// The fixture's weight files; the test fails when they are missing.
fn weight_files() -> &'static [(String, Vec<u8>)] {
    static FILES: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    FILES.get_or_init(|| {
        let fx = root().join("../shared/fixtures/tf_efficientdet_d0");
        [
            "weights.safetensors",
            "weights_legacy.pth",
            "checkpoint_train.pth",
        ]
        .iter()
        .map(|n| {
            let b =
                std::fs::read(fx.join(n)).unwrap_or_else(|e| panic!("fixture {n} missing: {e}"));
            (n.to_string(), b)
        })
        .collect()
    })
}

/// Writes `bytes` under `name` in a fresh directory and binds it to a D0 graph.
fn bind(name: &str, bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let mut g = d0_graph();
    let _ = weights::bind_file(&mut g, &path, &mut |_| {});
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_specs_never_panic(which in any::<usize>(), edits in prop::collection::vec(edit(), 1..4)) {
        cap_memory();
        let (_, text) = &specs()[which % specs().len()];
        let mut t = text.clone();
        for e in &edits {
            t = apply(&t, e);
        }
        front_end(&t);
    }

    #[test]
    fn mutated_weight_files_never_panic(
        which in 0usize..3,
        flips in prop::collection::vec((any::<u32>(), any::<u8>()), 0..8),
        head_flips in prop::collection::vec((0usize..4096, any::<u8>()), 0..8),
        cut in prop::option::of(any::<u32>()),
    ) {
        cap_memory();
        let (name, orig) = &weight_files()[which];
        let mut b = orig.clone();
        // Headers (safetensors JSON, ZIP directory, pickle) are where readers decide sizes.
        for (pos, v) in head_flips {
            let n = b.len();
            if let Some(x) = b.get_mut(pos % n) {
                *x = v;
            }
        }
        for (pos, v) in flips {
            let n = b.len();
            if let Some(x) = b.get_mut(pos as usize % n) {
                *x = v;
            }
        }
        if let Some(c) = cut {
            let n = b.len();
            b.truncate(c as usize % n);
        }
        bind(name, &b);
    }

    #[test]
    fn mutated_npy_files_never_panic(
        flips in prop::collection::vec((0usize..256, any::<u8>()), 0..8),
        cut in prop::option::of(0usize..512),
    ) {
        cap_memory();
        let t = effdet_compiler::interp::Tensor::new(vec![1, 2, 3, 4], (0..24).map(|v| v as f32).collect());
        let mut b = npy::encode_f32(&t).unwrap();
        for (pos, v) in flips {
            let n = b.len();
            if let Some(x) = b.get_mut(pos % n) {
                *x = v;
            }
        }
        if let Some(c) = cut {
            b.truncate(c.min(b.len()));
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        std::fs::write(&p, &b).unwrap();
        let _ = npy::read_f32(&p, &[1, 2, 3, 4]);
    }
}

/// The shipped specs themselves go through the whole front end within the default budget.
#[test]
fn shipped_specs_pass_the_front_end_and_the_budget() {
    cap_memory();
    for (name, text) in specs() {
        let loaded = spec::parse(Path::new(name), text.as_bytes()).unwrap();
        let arch = spec::resolve::resolve(&loaded.spec);
        let graph = spec::lower::lower(&arch, 1).unwrap();
        budget::check_model(&graph, &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        budget::check_run(&graph, &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
