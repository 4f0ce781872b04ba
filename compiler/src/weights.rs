//! Binds a `state_dict` to the graph's parameters by name: from a safetensors file, or from
//! a PyTorch checkpoint (`.pth` / `.pt`) as `torch.save` writes it, read with
//! `pytorch-reader` (which parses the pickle without executing it).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pytorch_reader::{PickleValue, PytorchReader};
use safetensors::{Dtype, SafeTensors};

use crate::ir::Graph;

/// Why a weights file does not fit the model. Mismatches are collected, not stopped at, so
/// one run names every problem.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a safetensors file: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: not a readable PyTorch checkpoint: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("{path}: not a weights file: neither safetensors nor a PyTorch checkpoint (.pth/.pt as torch.save writes it)")]
    Unknown { path: PathBuf },
    #[error("{path}: the weights do not match the model `{model}`:\n{details}")]
    Mismatch {
        path: PathBuf,
        model: String,
        details: String,
    },
}

/// Tensors every PyTorch BatchNorm saves that inference does not use.
fn ignored(name: &str) -> bool {
    name.ends_with(".num_batches_tracked")
}

/// Element type of a stored tensor, as far as binding cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Elem {
    F32,
    F16,
    BF16,
    F64,
}

/// Reads one tensor's little-endian bytes (lazily: a checkpoint's storages are only read
/// for tensors that bind).
type ReadFn<'a> = Box<dyn Fn() -> Result<Vec<u8>, String> + 'a>;

/// One tensor of a weights file: its shape, its element type (`Err` names a non-float
/// type) and how to read its bytes.
struct Stored<'a> {
    shape: Vec<usize>,
    elem: Result<Elem, String>,
    read: ReadFn<'a>,
}

/// Loads every parameter of `graph` from `path`: a safetensors file, or a PyTorch checkpoint
/// (`torch.save` output, ZIP or legacy container; a bare `state_dict` or a training
/// checkpoint holding one, see [`bind_checkpoint`]). The format is told by the file's first
/// bytes, so a misnamed file is still read as what it is. `progress` receives a line for
/// each decision a user may want to know about (which checkpoint entry was used, a
/// stripped name prefix).
pub fn bind_file(
    graph: &mut Graph,
    path: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<(), WeightsError> {
    match sniff(path)? {
        Format::Safetensors => bind_safetensors(graph, path),
        Format::Checkpoint => bind_checkpoint(graph, path, progress),
    }
}

enum Format {
    Safetensors,
    Checkpoint,
}

/// Tells the format by the first bytes (a safetensors file opens with an 8-byte
/// little-endian header length and the JSON header's `{`; a checkpoint with a ZIP or pickle
/// signature), then by the extension, so a misnamed file is read as what it is and a file
/// too broken to tell gets the error of the format its name claims.
fn sniff(path: &Path) -> Result<Format, WeightsError> {
    use std::io::Read as _;
    let mut head = Vec::with_capacity(9);
    std::fs::File::open(path)
        .and_then(|f| f.take(9).read_to_end(&mut head))
        .map_err(|source| WeightsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if head.len() == 9 {
        let len = u64::from_le_bytes(head[..8].try_into().unwrap_or([0; 8]));
        if head[8] == b'{' && len < 100_000_000 {
            return Ok(Format::Safetensors);
        }
    }
    if head.starts_with(b"PK") || head.first() == Some(&0x80) {
        return Ok(Format::Checkpoint);
    }
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    match ext.as_deref() {
        Some("safetensors") => Ok(Format::Safetensors),
        Some("pth" | "pt" | "bin" | "ckpt" | "tar") => Ok(Format::Checkpoint),
        _ => Err(WeightsError::Unknown {
            path: path.to_path_buf(),
        }),
    }
}

/// Loads every parameter of `graph` from the safetensors file at `path` (f32, f16, bf16 or
/// f64, converted to f32). Missing, unexpected and mis-shaped tensors are reported together.
pub fn bind_safetensors(graph: &mut Graph, path: &Path) -> Result<(), WeightsError> {
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| WeightsError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut stored = BTreeMap::new();
    for (name, view) in file.tensors() {
        let elem = match view.dtype() {
            Dtype::F32 => Ok(Elem::F32),
            Dtype::F16 => Ok(Elem::F16),
            Dtype::BF16 => Ok(Elem::BF16),
            Dtype::F64 => Ok(Elem::F64),
            other => Err(format!("{other:?}")),
        };
        let data = view.data();
        stored.insert(
            name,
            Stored {
                shape: view.shape().to_vec(),
                elem,
                read: Box::new(move || Ok(data.to_vec())),
            },
        );
    }
    bind_stored(graph, path, stored, Vec::new())
}

/// The keys under which training scripts save the model's `state_dict`, best first: timm's
/// checkpoint saver writes the EMA weights (what effdet evaluates and releases) under
/// `state_dict_ema` next to the raw ones under `state_dict`; other trainers use `model_ema`
/// / `model`.
const STATE_DICT_KEYS: [&str; 4] = ["state_dict_ema", "model_ema", "state_dict", "model"];

/// The Python type `pytorch-reader` reports for a tensor it does not hand out as a value.
const TENSOR_TYPE: &str = "torch.Tensor";

/// Prefixes that wrappers put before every parameter name: `module.` (DataParallel /
/// DistributedDataParallel, timm's EMA of a wrapped model) and `model.` (effdet's `DetBench*`
/// wrappers), alone or stacked.
const PREFIXES: [&str; 4] = ["module.", "model.", "module.model.", "model.module."];

/// Loads every parameter of `graph` from a PyTorch checkpoint at `path`, as `torch.save`
/// writes it: the ZIP container of PyTorch >= 1.6 or the legacy container of older releases.
///
/// The file holds either a bare `state_dict` or a training checkpoint, a dict holding the
/// `state_dict` under one of `state_dict_ema`, `model_ema`, `state_dict`, `model` (the EMA
/// weights are preferred: they are the ones effdet evaluates and releases) next to entries
/// such as `epoch`, `optimizer` or an `argparse.Namespace` under `args`. Those are skipped:
/// `pytorch-reader` keeps objects it does not know as opaque names and never executes a
/// pickle. The chosen dict must hold only tensors. A `module.` / `model.` prefix is stripped
/// when that makes more names match the model. Values are converted to f32 as for
/// safetensors, and mismatches are reported as for safetensors.
pub fn bind_checkpoint(
    graph: &mut Graph,
    path: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<(), WeightsError> {
    let bad = |message: String| WeightsError::Checkpoint {
        path: path.to_path_buf(),
        message: message.replace('\n', " "),
    };
    // The structure first (tensors appear as their type name): which entry is the
    // state_dict, and does it hold only tensors?
    let root = PytorchReader::read_pickle_data(path, None).map_err(|e| bad(e.to_string()))?;
    let PickleValue::Dict(root) = root else {
        return Err(bad(format!(
            "it holds {}, not a dict (a state_dict or a training checkpoint)",
            describe(&root)
        )));
    };
    let chosen = STATE_DICT_KEYS.into_iter().find_map(|k| match root.get(k) {
        Some(PickleValue::Dict(d)) => Some((k, d)),
        _ => None,
    });
    let key = chosen.map(|(k, _)| k);
    let dict = match chosen {
        Some((k, d)) => {
            let mut others: Vec<&str> = root
                .keys()
                .map(String::as_str)
                .filter(|o| *o != k)
                .collect();
            others.sort_unstable();
            let ema = if k.contains("ema") {
                " (EMA weights)"
            } else {
                ""
            };
            progress(&format!(
                "{}: using the checkpoint's `{k}`{ema}; skipped: {}",
                path.display(),
                if others.is_empty() {
                    "nothing".to_string()
                } else {
                    others.join(", ")
                }
            ));
            d
        }
        None => {
            if let Some((k, v)) = STATE_DICT_KEYS
                .into_iter()
                .find_map(|k| root.get(k).map(|v| (k, v)))
            {
                return Err(bad(format!(
                    "its `{k}` entry holds {}, not a state_dict (a dict of tensors); save `model.state_dict()` instead",
                    describe(v)
                )));
            }
            &root
        }
    };
    if dict.is_empty() {
        return Err(bad(format!(
            "the state_dict{} is empty",
            key.map(|k| format!(" under `{k}`")).unwrap_or_default()
        )));
    }
    let mut non_tensors: Vec<String> = dict
        .iter()
        // `OrderedDict` state: torch's per-module version table, not a tensor.
        .filter(|(name, _)| name.as_str() != "_metadata")
        .filter(|(_, v)| !matches!(v, PickleValue::Unsupported(t) if t == TENSOR_TYPE))
        .map(|(name, v)| format!("`{name}` ({})", describe(v)))
        .collect();
    if !non_tensors.is_empty() {
        non_tensors.sort();
        let n = non_tensors.len();
        if n > 5 {
            non_tensors.truncate(5);
            non_tensors.push(format!("and {} more", n - 5));
        }
        return Err(bad(format!(
            "the state_dict{} must hold only tensors, but {n} entr{} not: {}",
            key.map(|k| format!(" under `{k}`")).unwrap_or_default(),
            if n == 1 { "y is" } else { "ies are" },
            non_tensors.join(", ")
        )));
    }
    // Then the tensors of the chosen dict, whose bytes are read only when they bind.
    let reader = match key {
        Some(k) => PytorchReader::with_top_level_key(path, k),
        None => PytorchReader::new(path),
    }
    .map_err(|e| bad(e.to_string()))?;
    let tensors = reader.into_tensors();

    let wanted: std::collections::HashSet<&str> =
        graph.params.iter().map(|p| p.name.as_str()).collect();
    let matching = |prefix: &str| {
        tensors
            .keys()
            .filter(|n| wanted.contains(n.strip_prefix(prefix).unwrap_or(n)))
            .count()
    };
    let mut prefix = None;
    let mut best = matching("");
    for p in PREFIXES {
        let m = matching(p);
        if m > best {
            (prefix, best) = (Some(p), m);
        }
    }
    if let Some(p) = prefix {
        let n = tensors.keys().filter(|n| n.starts_with(p)).count();
        progress(&format!(
            "{}: stripped the prefix `{p}` from {n} tensor names",
            path.display()
        ));
    }
    let mut stored = BTreeMap::new();
    let mut duplicates = Vec::new();
    for (name, t) in tensors {
        let short = prefix
            .and_then(|p| name.strip_prefix(p))
            .unwrap_or(&name)
            .to_string();
        let elem = match t.dtype() {
            pytorch_reader::DType::F32 => Ok(Elem::F32),
            pytorch_reader::DType::F16 => Ok(Elem::F16),
            pytorch_reader::DType::BF16 => Ok(Elem::BF16),
            pytorch_reader::DType::F64 => Ok(Elem::F64),
            other => Err(format!("{other:?}")),
        };
        let entry = Stored {
            shape: t.shape().to_vec(),
            elem,
            read: Box::new(move || t.read().map_err(|e| e.to_string())),
        };
        match stored.entry(short) {
            std::collections::btree_map::Entry::Occupied(e) => duplicates.push(format!(
                "  duplicate   {name} (another tensor is also named {})",
                e.key()
            )),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(entry);
            }
        }
    }
    bind_stored(graph, path, stored, duplicates)
}

/// A pickle value's kind, for messages.
fn describe(v: &PickleValue) -> String {
    match v {
        PickleValue::None => "None".into(),
        PickleValue::Bool(_) => "a bool".into(),
        PickleValue::Int(_) => "an int".into(),
        PickleValue::Float(_) => "a float".into(),
        PickleValue::String(_) => "a str".into(),
        PickleValue::List(_) => "a list".into(),
        PickleValue::Dict(_) => "a dict".into(),
        PickleValue::Bytes(_) => "bytes".into(),
        PickleValue::Unsupported(t) if t == TENSOR_TYPE => "a tensor".into(),
        PickleValue::Unsupported(t) => format!("a `{t}` object"),
    }
}

/// Binds `stored` (name → tensor) to `graph`'s parameters. Every missing, mis-shaped,
/// mistyped and unexpected tensor is collected (`extra` adds lines the caller found, such
/// as duplicates) into one [`WeightsError::Mismatch`]; nothing is bound unless all fit.
fn bind_stored(
    graph: &mut Graph,
    path: &Path,
    stored: BTreeMap<String, Stored<'_>>,
    extra: Vec<String>,
) -> Result<(), WeightsError> {
    let mut missing = Vec::new();
    let mut wrong = Vec::new();
    let mut found = Vec::with_capacity(graph.params.len());
    for p in &graph.params {
        match stored.get(&p.name) {
            None => missing.push(format!("  missing     {} (expected {:?})", p.name, p.shape)),
            Some(t) if t.shape != p.shape => wrong.push(format!(
                "  wrong shape {}: expected {:?}, found {:?}",
                p.name, p.shape, t.shape
            )),
            Some(Stored { elem: Err(dt), .. }) => wrong.push(format!(
                "  wrong dtype {}: {dt} (expected a float type: F32, F16, BF16 or F64)",
                p.name
            )),
            Some(t) => found.push(t),
        }
    }
    let mut unexpected: Vec<String> = stored
        .iter()
        .filter(|(n, _)| !ignored(n) && !graph.params.iter().any(|p| p.name == **n))
        .map(|(n, t)| format!("  unexpected  {n} (found {:?})", t.shape))
        .chain(extra)
        .collect();
    unexpected.sort();
    if !(missing.is_empty() && wrong.is_empty() && unexpected.is_empty()) {
        let mut details = String::new();
        let _ = write!(
            details,
            "{} missing, {} mis-shaped or mistyped, {} unexpected tensor(s)",
            missing.len(),
            wrong.len(),
            unexpected.len()
        );
        for line in missing.iter().chain(&wrong).chain(&unexpected) {
            details.push('\n');
            details.push_str(line);
        }
        return Err(WeightsError::Mismatch {
            path: path.to_path_buf(),
            model: graph.name.clone(),
            details,
        });
    }
    // Everything fits: read and convert (a storage that fails to read now is a corrupt file).
    let mut values = Vec::with_capacity(found.len());
    for (p, t) in graph.params.iter().zip(found) {
        let bytes = (t.read)().map_err(|e| WeightsError::Checkpoint {
            path: path.to_path_buf(),
            message: format!("cannot read tensor {}: {}", p.name, e.replace('\n', " ")),
        })?;
        let elem = t.elem.clone().unwrap_or(Elem::F32);
        let v = to_f32(elem, &bytes);
        if v.len() != p.len() {
            return Err(WeightsError::Checkpoint {
                path: path.to_path_buf(),
                message: format!(
                    "tensor {} holds {} values, its shape {:?} says {}",
                    p.name,
                    v.len(),
                    p.shape,
                    p.len()
                ),
            });
        }
        values.push(v);
    }
    for (p, v) in graph.params.iter_mut().zip(values) {
        p.data = Some(Arc::from(v));
    }
    Ok(())
}

/// Little-endian float data to f32.
fn to_f32(elem: Elem, data: &[u8]) -> Vec<f32> {
    match elem {
        Elem::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Elem::F16 => data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Elem::BF16 => data
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Elem::F64 => data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
    }
}

/// Fills every parameter with deterministic pseudo-random values for benchmarks and compile
/// tests (`--random-weights SEED`): conv weights uniform with variance 1/fan-in (so
/// activations stay in range through a deep network), BN variances and scales in
/// [0.5, 1.5], everything else small. Not a trained model: its detections mean nothing.
pub fn bind_random(graph: &mut Graph, seed: u64) {
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // splitmix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32
    };
    for p in &mut graph.params {
        let n = p.len();
        let (lo, hi) = if p.shape.len() >= 2 {
            let fan_in = p.shape[1..].iter().product::<usize>().max(1) as f32;
            let b = (3.0 / fan_in).sqrt();
            (-b, b)
        } else if p.name.ends_with("running_var")
            || p.name.ends_with(".weight")
            || p.name.ends_with("edge_weights")
        {
            (0.5, 1.5)
        } else {
            (-0.1, 0.1)
        };
        let values: Vec<f32> = (0..n).map(|_| lo + (hi - lo) * next()).collect();
        p.data = Some(Arc::from(values));
    }
}
