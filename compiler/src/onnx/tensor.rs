//! Constant tensors of the importer: initializers, `Constant` nodes and everything folded from
//! them. Shape arithmetic is integer, fusion weights are float, masks are bool; all of it is
//! evaluated here at import time, so the IR only ever sees f32 parameters.

use std::sync::Arc;

/// The ONNX element types the importer reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    F64,
    F16,
    BF16,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    Bool,
}

impl DType {
    /// The type for an ONNX `TensorProto.DataType` code.
    pub fn from_onnx(code: i32) -> Option<DType> {
        Some(match code {
            1 => DType::F32,
            2 => DType::U8,
            3 => DType::I8,
            4 => DType::U16,
            5 => DType::I16,
            6 => DType::I32,
            7 => DType::I64,
            9 => DType::Bool,
            10 => DType::F16,
            11 => DType::F64,
            12 => DType::U32,
            13 => DType::U64,
            16 => DType::BF16,
            _ => return None,
        })
    }

    /// Bytes per element in `raw_data`.
    pub fn size(self) -> usize {
        match self {
            DType::I8 | DType::U8 | DType::Bool => 1,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 => 8,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
    }

    /// Brings an i64 into this integer type's range the way a C cast does (two's complement
    /// wrap), so folded casts behave like ONNX Runtime's.
    fn wrap(self, v: i64) -> i64 {
        match self {
            DType::I8 => v as i8 as i64,
            DType::I16 => v as i16 as i64,
            DType::I32 => v as i32 as i64,
            DType::U8 => v as u8 as i64,
            DType::U16 => v as u16 as i64,
            DType::U32 => v as u32 as i64,
            _ => v,
        }
    }

    /// Rounds an f32 to this float type's precision.
    fn round_f32(self, v: f32) -> f32 {
        match self {
            DType::F16 => half::f16::from_f32(v).to_f32(),
            DType::BF16 => half::bf16::from_f32(v).to_f32(),
            _ => v,
        }
    }
}

/// Element storage: every float type but f64 is held as f32 (rounded to its own precision),
/// every integer type as i64.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F32(Arc<[f32]>),
    F64(Arc<[f64]>),
    I64(Arc<[i64]>),
    Bool(Arc<[bool]>),
}

/// Applies one expression to whichever storage a [`Data`] has, keeping the variant.
macro_rules! per_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            Data::F32($v) => Data::F32($body),
            Data::F64($v) => Data::F64($body),
            Data::I64($v) => Data::I64($body),
            Data::Bool($v) => Data::Bool($body),
        }
    };
}

impl Data {
    pub fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::F64(v) => v.len(),
            Data::I64(v) => v.len(),
            Data::Bool(v) => v.len(),
        }
    }

    /// The elements at `idx`, in that order: every layout op (gather, slice, transpose,
    /// expand, tile) is an index map followed by this.
    pub fn select(&self, idx: &[usize]) -> Data {
        per_data!(self, v => idx.iter().map(|&i| v[i]).collect())
    }

    /// The values as f64 (bool as 0/1).
    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            Data::F32(v) => v.iter().map(|&x| x as f64).collect(),
            Data::F64(v) => v.to_vec(),
            Data::I64(v) => v.iter().map(|&x| x as f64).collect(),
            Data::Bool(v) => v.iter().map(|&x| x as u8 as f64).collect(),
        }
    }

    /// The values as i64: floats truncate toward zero (saturating), bools are 0/1.
    pub fn to_i64(&self) -> Vec<i64> {
        match self {
            Data::F32(v) => v.iter().map(|&x| x as i64).collect(),
            Data::F64(v) => v.iter().map(|&x| x as i64).collect(),
            Data::I64(v) => v.to_vec(),
            Data::Bool(v) => v.iter().map(|&x| x as i64).collect(),
        }
    }
}

/// A constant tensor with its ONNX element type.
#[derive(Clone, Debug, PartialEq)]
pub struct Const {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Data,
}

impl Const {
    /// Bytes its values take in memory (as stored: integers as i64, floats as f32 or f64).
    pub fn bytes(&self) -> u64 {
        let per = match &self.data {
            Data::F32(_) => 4,
            Data::F64(_) | Data::I64(_) => 8,
            Data::Bool(_) => 1,
        };
        self.len() as u64 * per
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Const {
        Const {
            dtype: DType::F32,
            shape,
            data: Data::F32(data.into()),
        }
    }

    pub fn i64(shape: Vec<usize>, data: Vec<i64>) -> Const {
        Const {
            dtype: DType::I64,
            shape,
            data: Data::I64(data.into()),
        }
    }

    pub fn bool(shape: Vec<usize>, data: Vec<bool>) -> Const {
        Const {
            dtype: DType::Bool,
            shape,
            data: Data::Bool(data.into()),
        }
    }

    /// A tensor of `dtype` from f64 values (rounded, truncated or wrapped into the type).
    pub fn from_f64(dtype: DType, shape: Vec<usize>, v: &[f64]) -> Const {
        let data = match dtype {
            DType::F64 => Data::F64(v.into()),
            DType::Bool => Data::Bool(v.iter().map(|&x| x != 0.0).collect()),
            t if t.is_float() => Data::F32(v.iter().map(|&x| t.round_f32(x as f32)).collect()),
            t => Data::I64(v.iter().map(|&x| t.wrap(x as i64)).collect()),
        };
        Const { dtype, shape, data }
    }

    /// Converts to another element type with ONNX `Cast` semantics.
    pub fn cast(&self, to: DType) -> Const {
        let data = match (&self.data, to) {
            (_, t) if t == self.dtype => self.data.clone(),
            (Data::I64(v), DType::Bool) => Data::Bool(v.iter().map(|&x| x != 0).collect()),
            (Data::I64(v), t) if !t.is_float() => Data::I64(v.iter().map(|&x| t.wrap(x)).collect()),
            (Data::I64(v), DType::F64) => Data::F64(v.iter().map(|&x| x as f64).collect()),
            (Data::I64(v), t) => Data::F32(v.iter().map(|&x| t.round_f32(x as f32)).collect()),
            (Data::F32(v), DType::F64) => Data::F64(v.iter().map(|&x| x as f64).collect()),
            (Data::F32(v), t) if t.is_float() => {
                Data::F32(v.iter().map(|&x| t.round_f32(x)).collect())
            }
            (Data::Bool(v), t) if t.is_float() && t != DType::F64 => {
                Data::F32(v.iter().map(|&x| x as u8 as f32).collect())
            }
            _ => return Const::from_f64(to, self.shape.clone(), &self.data.to_f64()),
        };
        Const {
            dtype: to,
            shape: self.shape.clone(),
            data,
        }
    }

    /// The values as integers, for attributes given as tensors (axes, pads, shapes).
    pub fn ints(&self) -> Vec<i64> {
        self.data.to_i64()
    }

    /// The values as f32 parameters, or `None` when the type is not a float type.
    pub fn to_f32(&self) -> Option<Arc<[f32]>> {
        match &self.data {
            Data::F32(v) => Some(v.clone()),
            Data::F64(v) => Some(v.iter().map(|&x| x as f32).collect()),
            _ => None,
        }
    }

    /// The same tensor under another shape of equal size.
    pub fn reshaped(&self, shape: Vec<usize>) -> Const {
        Const {
            dtype: self.dtype,
            shape,
            data: self.data.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts_follow_onnx() {
        let f = Const::f32(vec![4], vec![-1.7, 2.9, 300.0, 0.0]);
        assert_eq!(f.cast(DType::I64).ints(), [-1, 2, 300, 0]);
        assert_eq!(f.cast(DType::U8).ints(), [255, 2, 44, 0]);
        assert_eq!(
            f.cast(DType::Bool).data,
            Data::Bool(vec![true, true, true, false].into())
        );
        let i = Const::i64(vec![2], vec![3, -2]);
        assert_eq!(i.cast(DType::F32).data, Data::F32(vec![3.0, -2.0].into()));
        assert_eq!(i.cast(DType::F16).to_f32().unwrap()[0], 3.0);
        assert!(i.to_f32().is_none());
    }
}
