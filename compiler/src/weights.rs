//! Binds a safetensors `state_dict` to the graph's parameters by name.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    let mut missing = Vec::new();
    let mut wrong = Vec::new();
    let mut values = Vec::with_capacity(graph.params.len());
    for p in &graph.params {
        match file.tensor(&p.name) {
            Err(_) => missing.push(format!("  missing     {} (expected {:?})", p.name, p.shape)),
            Ok(t) => {
                let shape = t.shape().to_vec();
                if shape != p.shape {
                    wrong.push(format!(
                        "  wrong shape {}: expected {:?}, found {:?}",
                        p.name, p.shape, shape
                    ));
                    continue;
                }
                match to_f32(t.dtype(), t.data()) {
                    Some(v) => values.push(v),
                    None => wrong.push(format!(
                        "  wrong dtype {}: {:?} (expected a float type: F32, F16, BF16 or F64)",
                        p.name,
                        t.dtype()
                    )),
                }
            }
        }
    }
    let mut unexpected: Vec<String> = file
        .names()
        .into_iter()
        .filter(|n| !ignored(n) && !graph.params.iter().any(|p| p.name == *n))
        .map(|n| {
            let shape = file
                .tensor(n)
                .map(|t| t.shape().to_vec())
                .unwrap_or_default();
            format!("  unexpected  {n} (found {shape:?})")
        })
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
    for (p, v) in graph.params.iter_mut().zip(values) {
        p.data = Some(Arc::from(v));
    }
    Ok(())
}

/// Little-endian float data to f32; `None` for non-float dtypes.
fn to_f32(dtype: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        _ => return None,
    })
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
