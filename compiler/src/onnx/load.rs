//! Bytes to a `ModelProto`, and `TensorProto`s (initializers, `Constant` values) to [`Const`]s,
//! including tensors stored in external-data files next to the model.

use std::path::{Component, Path};

use prost::Message;

use super::proto::{self, tensor_proto::DataLocation, ModelProto, TensorProto};
use super::tensor::{Const, DType, Data};

/// The largest tensor the importer builds (elements: 256 MiB of f32). A hundred times any
/// EfficientDet weight; it keeps a corrupt or hostile file from asking for gigabytes.
pub const MAX_ELEMENTS: usize = 1 << 26;

/// Decodes a serialized model. Protobuf accepts many byte strings (an empty file is a valid
/// empty message), so a model without a graph is rejected here too.
pub fn decode_model(bytes: &[u8]) -> Result<ModelProto, String> {
    let model = ModelProto::decode(bytes).map_err(|e| e.to_string())?;
    if model.graph.is_none() {
        return Err(format!(
            "no graph in the file ({} bytes decoded as an empty or foreign protobuf message)",
            bytes.len()
        ));
    }
    Ok(model)
}

/// Where external data files are looked up: the directory of the model file.
#[derive(Clone, Copy, Debug)]
pub struct DataDir<'a>(pub Option<&'a Path>);

/// The number of elements of a shape, checked against [`MAX_ELEMENTS`].
pub fn checked_numel(shape: &[usize]) -> Result<usize, String> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| format!("shape {shape:?} is too large (more than {MAX_ELEMENTS} elements)"))
}

/// Decodes a tensor, taking its raw bytes out of the proto (initializers are big; they are
/// not kept twice). Errors say what is wrong with the tensor; the caller adds its name.
pub fn decode_tensor(t: &mut TensorProto, dir: DataDir) -> Result<Const, String> {
    let code = t.data_type();
    let dtype = DType::from_onnx(code).ok_or_else(|| {
        let name = proto::tensor_proto::DataType::try_from(code)
            .map(|d| d.as_str_name().to_string())
            .unwrap_or_else(|_| format!("code {code}"));
        format!("element type {name} is not supported")
    })?;
    if t.segment.is_some() {
        return Err("segmented tensors are not supported".into());
    }
    let shape = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d} in {:?}", t.dims)))
        .collect::<Result<Vec<usize>, String>>()?;
    let n = checked_numel(&shape)?;
    let raw = if t.data_location == Some(DataLocation::External as i32) {
        Some(read_external(t, dir)?)
    } else {
        t.raw_data.take()
    };
    let data = match raw {
        Some(raw) => {
            if raw.len() != n * dtype.size() {
                return Err(format!(
                    "declared shape {shape:?} of {dtype:?} needs {} bytes, the data has {}",
                    n * dtype.size(),
                    raw.len()
                ));
            }
            from_raw(dtype, &raw)
        }
        None => from_typed(dtype, t, n, &shape)?,
    };
    Ok(Const { dtype, shape, data })
}

fn from_raw(dtype: DType, raw: &[u8]) -> Data {
    fn chunks<const N: usize>(raw: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        raw.chunks_exact(N).map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            a
        })
    }
    match dtype {
        DType::F32 => Data::F32(chunks::<4>(raw).map(f32::from_le_bytes).collect()),
        DType::F64 => Data::F64(chunks::<8>(raw).map(f64::from_le_bytes).collect()),
        DType::F16 => Data::F32(
            chunks::<2>(raw)
                .map(|b| half::f16::from_le_bytes(b).to_f32())
                .collect(),
        ),
        DType::BF16 => Data::F32(
            chunks::<2>(raw)
                .map(|b| half::bf16::from_le_bytes(b).to_f32())
                .collect(),
        ),
        DType::I8 => Data::I64(raw.iter().map(|&b| b as i8 as i64).collect()),
        DType::U8 => Data::I64(raw.iter().map(|&b| b as i64).collect()),
        DType::Bool => Data::Bool(raw.iter().map(|&b| b != 0).collect()),
        DType::I16 => Data::I64(
            chunks::<2>(raw)
                .map(|b| i16::from_le_bytes(b) as i64)
                .collect(),
        ),
        DType::U16 => Data::I64(
            chunks::<2>(raw)
                .map(|b| u16::from_le_bytes(b) as i64)
                .collect(),
        ),
        DType::I32 => Data::I64(
            chunks::<4>(raw)
                .map(|b| i32::from_le_bytes(b) as i64)
                .collect(),
        ),
        DType::U32 => Data::I64(
            chunks::<4>(raw)
                .map(|b| u32::from_le_bytes(b) as i64)
                .collect(),
        ),
        DType::I64 => Data::I64(chunks::<8>(raw).map(i64::from_le_bytes).collect()),
        DType::U64 => Data::I64(
            chunks::<8>(raw)
                .map(|b| u64::from_le_bytes(b) as i64)
                .collect(),
        ),
    }
}

/// Reads the typed fields (`float_data`, `int32_data`, ...), which hold the values when there
/// is no `raw_data`. Which field holds which type is fixed by onnx.proto.
fn from_typed(dtype: DType, t: &TensorProto, n: usize, shape: &[usize]) -> Result<Data, String> {
    let (found, data) = match dtype {
        DType::F32 => (
            t.float_data.len(),
            Data::F32(t.float_data.as_slice().into()),
        ),
        DType::F64 => (
            t.double_data.len(),
            Data::F64(t.double_data.as_slice().into()),
        ),
        DType::I64 => (
            t.int64_data.len(),
            Data::I64(t.int64_data.as_slice().into()),
        ),
        DType::U32 | DType::U64 => (
            t.uint64_data.len(),
            Data::I64(t.uint64_data.iter().map(|&v| v as i64).collect()),
        ),
        // 16-bit floats are stored as their bit patterns in int32_data.
        DType::F16 => (
            t.int32_data.len(),
            Data::F32(
                t.int32_data
                    .iter()
                    .map(|&v| half::f16::from_bits(v as u16).to_f32())
                    .collect(),
            ),
        ),
        DType::BF16 => (
            t.int32_data.len(),
            Data::F32(
                t.int32_data
                    .iter()
                    .map(|&v| half::bf16::from_bits(v as u16).to_f32())
                    .collect(),
            ),
        ),
        DType::Bool => (
            t.int32_data.len(),
            Data::Bool(t.int32_data.iter().map(|&v| v != 0).collect()),
        ),
        _ => (
            t.int32_data.len(),
            Data::I64(t.int32_data.iter().map(|&v| v as i64).collect()),
        ),
    };
    if found != n {
        return Err(format!(
            "declared shape {shape:?} has {n} elements, the data has {found}"
        ));
    }
    Ok(data)
}

/// Reads an external-data tensor: `location` relative to the model's directory, optional
/// `offset` and `length`. Paths that leave the directory are refused, as the ONNX checker does.
fn read_external(t: &TensorProto, dir: DataDir) -> Result<Vec<u8>, String> {
    let entry = |key: &str| {
        t.external_data
            .iter()
            .find(|e| e.key() == key)
            .map(|e| e.value().to_string())
    };
    let location = entry("location").ok_or("external data without a `location`")?;
    let rel = Path::new(&location);
    if !rel
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "external data location `{location}` must be a relative path inside the model's directory"
        ));
    }
    let dir = dir
        .0
        .ok_or("external data needs the model's directory (import the model from a file)")?;
    let path = dir.join(rel);
    let parse = |key: &str| -> Result<Option<u64>, String> {
        entry(key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("external data `{key}` is not a number: `{v}`"))
            })
            .transpose()
    };
    let offset = parse("offset")?.unwrap_or(0);
    let length = parse("length")?;
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(&path)
        .map_err(|e| format!("cannot open external data {}: {e}", path.display()))?;
    let size = f
        .metadata()
        .map_err(|e| format!("cannot read external data {}: {e}", path.display()))?
        .len();
    let length = length.unwrap_or(size.saturating_sub(offset));
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(format!(
            "external data {} has {size} bytes, the tensor wants {length} at offset {offset}",
            path.display()
        ));
    }
    let mut buf = vec![0u8; length as usize];
    f.seek(SeekFrom::Start(offset))
        .and_then(|_| f.read_exact(&mut buf))
        .map_err(|e| format!("cannot read external data {}: {e}", path.display()))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(dims: &[i64], dtype: i32) -> TensorProto {
        TensorProto {
            dims: dims.to_vec(),
            data_type: Some(dtype),
            ..Default::default()
        }
    }

    #[test]
    fn raw_and_typed_data_decode_alike() {
        let mut raw = tensor(&[2], 1);
        raw.raw_data = Some(
            [1.5f32, -2.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        );
        let mut typed = tensor(&[2], 1);
        typed.float_data = vec![1.5, -2.0];
        let a = decode_tensor(&mut raw, DataDir(None)).unwrap();
        let b = decode_tensor(&mut typed, DataDir(None)).unwrap();
        assert_eq!(a, b);
        let mut ints = tensor(&[3], 6);
        ints.int32_data = vec![1, -2, 3];
        assert_eq!(
            decode_tensor(&mut ints, DataDir(None)).unwrap().ints(),
            [1, -2, 3]
        );
    }

    #[test]
    fn size_mismatches_and_bad_dims_are_errors() {
        let mut t = tensor(&[2, 3], 1);
        t.float_data = vec![0.0; 5];
        let e = decode_tensor(&mut t, DataDir(None)).unwrap_err();
        assert!(
            e.contains("[2, 3]") && e.contains("6 elements") && e.contains('5'),
            "{e}"
        );
        let mut t = tensor(&[4], 7);
        t.raw_data = Some(vec![0; 31]);
        assert!(decode_tensor(&mut t, DataDir(None))
            .unwrap_err()
            .contains("32 bytes"));
        let mut t = tensor(&[-1], 1);
        assert!(decode_tensor(&mut t, DataDir(None))
            .unwrap_err()
            .contains("negative"));
        let mut t = tensor(&[1 << 40, 1 << 40], 1);
        assert!(decode_tensor(&mut t, DataDir(None))
            .unwrap_err()
            .contains("too large"));
        let mut t = tensor(&[1], 8);
        assert!(decode_tensor(&mut t, DataDir(None))
            .unwrap_err()
            .contains("STRING"));
    }

    #[test]
    fn external_data_is_read_next_to_the_model() {
        let dir = std::env::temp_dir().join(format!("effdet-ext-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bytes: Vec<u8> = [7.0f32, 8.0, 9.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        std::fs::write(dir.join("w.bin"), &bytes).unwrap();
        let kv = |k: &str, v: &str| proto::StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v.into()),
        };
        let mut t = tensor(&[2], 1);
        t.data_location = Some(DataLocation::External as i32);
        t.external_data = vec![
            kv("location", "w.bin"),
            kv("offset", "4"),
            kv("length", "8"),
        ];
        let c = decode_tensor(&mut t, DataDir(Some(&dir))).unwrap();
        assert_eq!(c.to_f32().unwrap().as_ref(), [8.0, 9.0]);
        t.external_data = vec![kv("location", "../w.bin")];
        assert!(decode_tensor(&mut t, DataDir(Some(&dir))).is_err());
        t.external_data = vec![
            kv("location", "w.bin"),
            kv("offset", "8"),
            kv("length", "8"),
        ];
        assert!(decode_tensor(&mut t, DataDir(Some(&dir)))
            .unwrap_err()
            .contains("12 bytes"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
