//! `.npy` input and output for the CLI: f32 arrays in C order, checked against what the
//! model expects.

use std::path::{Path, PathBuf};

use npyz::WriterBuilder;

use crate::interp::Tensor;

#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid .npy file: {source}")]
    Format {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: dtype is {found}, expected little-endian float32 (`<f4`)")]
    DType { path: PathBuf, found: String },
    #[error("{path}: Fortran-ordered arrays are not supported; save it in C order")]
    Order { path: PathBuf },
    #[error("{path}: shape is {found:?}, the model takes {expected:?}")]
    Shape {
        path: PathBuf,
        expected: Vec<usize>,
        found: Vec<u64>,
    },
}

/// Reads an f32 `.npy` array of exactly `expected` shape.
pub fn read_f32(path: &Path, expected: &[usize]) -> Result<Tensor, NpyError> {
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let format = |source| NpyError::Format {
        path: path.to_path_buf(),
        source,
    };
    let file = npyz::NpyFile::new(&bytes[..]).map_err(format)?;
    let found = match file.dtype() {
        npyz::DType::Plain(t) => t.to_string(),
        other => format!("{other:?}"),
    };
    if found != "<f4" {
        return Err(NpyError::DType {
            path: path.to_path_buf(),
            found,
        });
    }
    if file.order() != npyz::Order::C {
        return Err(NpyError::Order {
            path: path.to_path_buf(),
        });
    }
    let shape = file.shape().to_vec();
    if shape.len() != expected.len() || shape.iter().zip(expected).any(|(&a, &b)| a != b as u64) {
        return Err(NpyError::Shape {
            path: path.to_path_buf(),
            expected: expected.to_vec(),
            found: shape,
        });
    }
    let data: Vec<f32> = file.into_vec().map_err(format)?;
    Ok(Tensor::new(expected.to_vec(), data))
}

/// `t` encoded as a little-endian f32 `.npy` file.
pub fn encode_f32(t: &Tensor) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(128 + 4 * t.data.len());
    let shape: Vec<u64> = t.shape.iter().map(|&d| d as u64).collect();
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(&mut bytes)
        .begin_nd()?;
    writer.extend(t.data.iter().copied())?;
    writer.finish()?;
    Ok(bytes)
}

/// Writes `t` as a little-endian f32 `.npy` file.
pub fn write_f32(path: &Path, t: &Tensor) -> std::io::Result<()> {
    std::fs::write(path, encode_f32(t)?)
}

/// Replaces every character outside `[A-Za-z0-9_.-]` with `_`, so any output name is a
/// safe file name.
pub fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes one `<name>.npy` per output into `dir` without ever leaving a partial file there:
/// everything is written into a fresh sibling directory first, then moved in by rename.
pub fn write_outputs(dir: &Path, outputs: &[(String, Tensor)]) -> std::io::Result<Vec<PathBuf>> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)?;
    let leaf = dir
        .file_name()
        .map_or("out".into(), |n| n.to_string_lossy().into_owned());
    let staging = parent.join(format!(".{leaf}.effdetc-{}", std::process::id()));
    let result = (|| {
        std::fs::create_dir_all(&staging)?;
        let mut names = Vec::new();
        for (name, t) in outputs {
            let file = format!("{}.npy", file_stem(name));
            write_f32(&staging.join(&file), t)?;
            names.push(file);
        }
        if !dir.exists() {
            std::fs::rename(&staging, dir)?;
        } else {
            for file in &names {
                std::fs::rename(staging.join(file), dir.join(file))?;
            }
        }
        Ok(names.into_iter().map(|f| dir.join(f)).collect())
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}
