//! Constant folding: evaluates ops whose inputs are all constants at import time.
//!
//! Exporters compute TF-'same' pads, resize sizes and fusion weights in-graph from `Shape`
//! of runtime tensors; since every shape is static, all of that is constant here and folds
//! away, and the IR never sees integer tensors. Every function checks its inputs and sizes,
//! so a hostile file gets an error, never a panic or a huge allocation.

use super::load::checked_numel;
use super::tensor::{Const, DType, Data};
use crate::interp::strides;
use crate::ir::op::broadcast;

/// Normalizes an ONNX axis (negative counts from the end) for a tensor of `rank` dims.
pub fn axis(a: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    if a < -r || a >= r {
        return Err(format!("axis {a} is out of range for rank {rank}"));
    }
    Ok(if a < 0 { a + r } else { a } as usize)
}

/// Normalizes a list of axes, rejecting repeats; returned sorted.
pub fn axes(list: &[i64], rank: usize) -> Result<Vec<usize>, String> {
    let mut out = list
        .iter()
        .map(|&a| axis(a, rank))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_unstable();
    if out.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!("axes {list:?} repeat an axis"));
    }
    Ok(out)
}

/// The flat source index of every output position, when output dim `d` advances the
/// source by `walk[d]` and starts at `base`.
fn index_map(out_shape: &[usize], walk: &[isize], base: isize) -> Vec<usize> {
    let total: usize = out_shape.iter().product();
    let mut out = Vec::with_capacity(total);
    let mut idx = vec![0usize; out_shape.len()];
    let mut at = base;
    for _ in 0..total {
        out.push(at as usize);
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            at += walk[d];
            if idx[d] < out_shape[d] {
                break;
            }
            at -= walk[d] * out_shape[d] as isize;
            idx[d] = 0;
        }
    }
    out
}

/// Source indices reading a tensor of `shape` broadcast to `out`.
fn broadcast_map(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let s = strides(shape);
    let mut walk = vec![0isize; out.len()];
    for d in 0..shape.len() {
        let od = d + out.len() - shape.len();
        if shape[d] != 1 {
            walk[od] = s[d] as isize;
        }
    }
    index_map(out, &walk, 0)
}

/// Elementwise binary ops with numpy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bin {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    /// `fmod = true` keeps the dividend's sign (C fmod); otherwise the divisor's (Python %).
    Mod {
        fmod: bool,
    },
    Max,
    Min,
    Equal,
    Less,
    Greater,
    LessOrEqual,
    GreaterOrEqual,
    And,
    Or,
    Xor,
}

impl Bin {
    fn is_comparison(self) -> bool {
        matches!(
            self,
            Bin::Equal | Bin::Less | Bin::Greater | Bin::LessOrEqual | Bin::GreaterOrEqual
        )
    }
}

trait Num: Copy + PartialOrd {
    fn arith(op: Bin, a: Self, b: Self) -> Result<Self, String>;
    fn wrap(v: Vec<Self>) -> Data;
}

macro_rules! float_num {
    ($t:ty, $variant:ident) => {
        impl Num for $t {
            fn arith(op: Bin, a: $t, b: $t) -> Result<$t, String> {
                Ok(match op {
                    Bin::Add => a + b,
                    Bin::Sub => a - b,
                    Bin::Mul => a * b,
                    Bin::Div => a / b,
                    Bin::Pow => a.powf(b),
                    Bin::Mod { fmod: true } => a % b,
                    Bin::Mod { fmod: false } => {
                        let r = a % b;
                        if r != 0.0 && (r < 0.0) != (b < 0.0) {
                            r + b
                        } else {
                            r
                        }
                    }
                    Bin::Max => a.max(b),
                    Bin::Min => a.min(b),
                    _ => return Err(format!("{op:?} does not apply to floats")),
                })
            }
            fn wrap(v: Vec<$t>) -> Data {
                Data::$variant(v.into())
            }
        }
    };
}
float_num!(f32, F32);
float_num!(f64, F64);

impl Num for i64 {
    fn arith(op: Bin, a: i64, b: i64) -> Result<i64, String> {
        let nonzero = || {
            if b == 0 {
                Err("integer division by zero".to_string())
            } else {
                Ok(())
            }
        };
        Ok(match op {
            Bin::Add => a.wrapping_add(b),
            Bin::Sub => a.wrapping_sub(b),
            Bin::Mul => a.wrapping_mul(b),
            Bin::Div => {
                nonzero()?;
                a.wrapping_div(b)
            }
            Bin::Pow => {
                let e = u32::try_from(b).map_err(|_| format!("integer power {a}^{b}"))?;
                a.wrapping_pow(e)
            }
            Bin::Mod { fmod } => {
                nonzero()?;
                let r = a.wrapping_rem(b);
                if !fmod && r != 0 && (r < 0) != (b < 0) {
                    r + b
                } else {
                    r
                }
            }
            Bin::Max => a.max(b),
            Bin::Min => a.min(b),
            _ => return Err(format!("{op:?} does not apply to integers")),
        })
    }
    fn wrap(v: Vec<i64>) -> Data {
        Data::I64(v.into())
    }
}

fn zip_num<T: Num>(op: Bin, x: &[T], ia: &[usize], y: &[T], ib: &[usize]) -> Result<Data, String> {
    if op.is_comparison() {
        let cmp = |a: T, b: T| match op {
            Bin::Equal => a == b,
            Bin::Less => a < b,
            Bin::Greater => a > b,
            Bin::LessOrEqual => a <= b,
            _ => a >= b,
        };
        return Ok(Data::Bool(
            ia.iter().zip(ib).map(|(&i, &j)| cmp(x[i], y[j])).collect(),
        ));
    }
    let v = ia
        .iter()
        .zip(ib)
        .map(|(&i, &j)| T::arith(op, x[i], y[j]))
        .collect::<Result<Vec<T>, String>>()?;
    Ok(T::wrap(v))
}

/// Evaluates a broadcasting binary op. Operands must have one element type (as ONNX
/// requires), except `Pow`, whose exponent may differ and is converted to the base's type.
pub fn binary(op: Bin, a: &Const, b: &Const) -> Result<Const, String> {
    let b = if op == Bin::Pow && b.dtype != a.dtype {
        b.cast(a.dtype)
    } else {
        b.clone()
    };
    if a.dtype != b.dtype {
        return Err(format!(
            "operands have different types {:?} and {:?}",
            a.dtype, b.dtype
        ));
    }
    let shape = broadcast(&a.shape, &b.shape)?;
    checked_numel(&shape)?;
    let (ia, ib) = (
        broadcast_map(&a.shape, &shape),
        broadcast_map(&b.shape, &shape),
    );
    let data = match (&a.data, &b.data) {
        (Data::F32(x), Data::F32(y)) => zip_num(op, x, &ia, y, &ib)?,
        (Data::F64(x), Data::F64(y)) => zip_num(op, x, &ia, y, &ib)?,
        (Data::I64(x), Data::I64(y)) => zip_num(op, x, &ia, y, &ib)?,
        (Data::Bool(x), Data::Bool(y)) => {
            let f = |p: bool, q: bool| match op {
                Bin::And => Ok(p && q),
                Bin::Or => Ok(p || q),
                Bin::Xor => Ok(p != q),
                Bin::Equal => Ok(p == q),
                _ => Err(format!("{op:?} does not apply to booleans")),
            };
            Data::Bool(
                ia.iter()
                    .zip(&ib)
                    .map(|(&i, &j)| f(x[i], y[j]))
                    .collect::<Result<Vec<bool>, String>>()?
                    .into(),
            )
        }
        _ => return Err(format!("{op:?} does not apply to {:?}", a.dtype)),
    };
    let dtype = match data {
        Data::Bool(_) => DType::Bool,
        _ => a.dtype,
    };
    // Integer results wrap into narrower integer types like the runtime's would.
    let out = Const { dtype, shape, data };
    Ok(if matches!(out.data, Data::I64(_)) && dtype != DType::I64 {
        out.cast(dtype)
    } else {
        out
    })
}

/// Elementwise unary ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Un {
    Neg,
    Abs,
    Ceil,
    Floor,
    Round,
    Sqrt,
    Reciprocal,
    Exp,
    Log,
    Relu,
    Sign,
    Not,
}

/// Evaluates a unary op; float math is done in f64 and rounded back to the element type.
pub fn unary(op: Un, x: &Const) -> Result<Const, String> {
    match (&x.data, op) {
        (Data::Bool(v), Un::Not) => {
            return Ok(Const::bool(
                x.shape.clone(),
                v.iter().map(|&b| !b).collect(),
            ))
        }
        (Data::Bool(_), _) | (_, Un::Not) => {
            return Err(format!("{op:?} does not apply to {:?}", x.dtype))
        }
        (
            Data::I64(v),
            Un::Neg | Un::Abs | Un::Relu | Un::Sign | Un::Ceil | Un::Floor | Un::Round,
        ) => {
            let f = |a: i64| match op {
                Un::Neg => a.wrapping_neg(),
                Un::Abs => a.wrapping_abs(),
                Un::Relu => a.max(0),
                Un::Sign => a.signum(),
                _ => a,
            };
            return Ok(
                Const::i64(x.shape.clone(), v.iter().map(|&a| f(a)).collect()).cast(x.dtype),
            );
        }
        (Data::I64(_), _) => return Err(format!("{op:?} does not apply to {:?}", x.dtype)),
        _ => {}
    }
    let f = |a: f64| match op {
        Un::Neg => -a,
        Un::Abs => a.abs(),
        Un::Ceil => a.ceil(),
        Un::Floor => a.floor(),
        // ONNX rounds half to even.
        Un::Round => a.round_ties_even(),
        Un::Sqrt => a.sqrt(),
        Un::Reciprocal => 1.0 / a,
        Un::Exp => a.exp(),
        Un::Log => a.ln(),
        Un::Relu => a.max(0.0),
        Un::Sign => {
            if a == 0.0 {
                0.0
            } else {
                a.signum()
            }
        }
        Un::Not => a,
    };
    let v: Vec<f64> = x.data.to_f64().into_iter().map(f).collect();
    Ok(Const::from_f64(x.dtype, x.shape.clone(), &v))
}

/// `Where(cond, x, y)` with broadcasting.
pub fn select(cond: &Const, x: &Const, y: &Const) -> Result<Const, String> {
    let Data::Bool(c) = &cond.data else {
        return Err("the condition must be boolean".into());
    };
    if x.dtype != y.dtype {
        return Err(format!(
            "branches have types {:?} and {:?}",
            x.dtype, y.dtype
        ));
    }
    let shape = broadcast(&broadcast(&cond.shape, &x.shape)?, &y.shape)?;
    checked_numel(&shape)?;
    let (ic, ix, iy) = (
        broadcast_map(&cond.shape, &shape),
        broadcast_map(&x.shape, &shape),
        broadcast_map(&y.shape, &shape),
    );
    // Pick from x or y by building an index into their concatenation.
    let both = concat(&[x.reshaped(vec![x.len()]), y.reshaped(vec![y.len()])], 0)?;
    let idx: Vec<usize> = (0..ic.len())
        .map(|k| if c[ic[k]] { ix[k] } else { x.len() + iy[k] })
        .collect();
    Ok(Const {
        dtype: x.dtype,
        shape,
        data: both.data.select(&idx),
    })
}

/// `Gather` along `axis`; negative indices count from the end.
pub fn gather(x: &Const, indices: &Const, axis_: i64) -> Result<Const, String> {
    let ax = axis(axis_, x.shape.len())?;
    let n = x.shape[ax] as i64;
    let idx = indices
        .ints()
        .into_iter()
        .map(|i| {
            let j = if i < 0 { i + n } else { i };
            if j < 0 || j >= n {
                Err(format!("index {i} is out of range for a dimension of {n}"))
            } else {
                Ok(j as usize)
            }
        })
        .collect::<Result<Vec<usize>, String>>()?;
    let outer: usize = x.shape[..ax].iter().product();
    let inner: usize = x.shape[ax + 1..].iter().product();
    let mut shape = x.shape[..ax].to_vec();
    shape.extend_from_slice(&indices.shape);
    shape.extend_from_slice(&x.shape[ax + 1..]);
    checked_numel(&shape)?;
    let mut map = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &i in &idx {
            let base = (o * x.shape[ax] + i) * inner;
            map.extend(base..base + inner);
        }
    }
    Ok(Const {
        dtype: x.dtype,
        shape,
        data: x.data.select(&map),
    })
}

/// The `(start, step, count)` of one sliced dimension, with ONNX's clamping rules.
pub fn slice_dim(
    len: usize,
    start: i64,
    end: i64,
    step: i64,
) -> Result<(usize, isize, usize), String> {
    if step == 0 {
        return Err("slice step 0".into());
    }
    if len == 0 {
        return Ok((0, step as isize, 0));
    }
    let n = len as i64;
    let norm = |v: i64| if v < 0 { v.saturating_add(n) } else { v };
    let (s, e) = (norm(start), norm(end));
    let (s, e) = if step > 0 {
        (s.clamp(0, n), e.clamp(0, n))
    } else {
        (s.clamp(0, n - 1), e.clamp(-1, n - 1))
    };
    let count = if step > 0 {
        if e > s {
            (e - s - 1) / step + 1
        } else {
            0
        }
    } else if s > e {
        (s - e - 1) / (-step) + 1
    } else {
        0
    };
    Ok((s.max(0) as usize, step as isize, count as usize))
}

/// `Slice` with per-axis starts, ends and steps.
pub fn slice(
    x: &Const,
    starts: &[i64],
    ends: &[i64],
    axes_: &[usize],
    steps: &[i64],
) -> Result<Const, String> {
    let mut shape = x.shape.clone();
    let st = strides(&x.shape);
    let mut walk: Vec<isize> = st.iter().map(|&s| s as isize).collect();
    let mut base = 0isize;
    for (k, &ax) in axes_.iter().enumerate() {
        let (s, step, count) = slice_dim(x.shape[ax], starts[k], ends[k], steps[k])?;
        shape[ax] = count;
        walk[ax] = st[ax] as isize * step;
        if count > 0 {
            base += (s * st[ax]) as isize;
        }
    }
    let data = if shape.contains(&0) {
        x.data.select(&[])
    } else {
        x.data.select(&index_map(&shape, &walk, base))
    };
    Ok(Const {
        dtype: x.dtype,
        shape,
        data,
    })
}

/// `Concat` along an already normalized axis.
pub fn concat(parts: &[Const], ax: usize) -> Result<Const, String> {
    let first = parts.first().ok_or("nothing to concatenate")?;
    let mut shape = first.shape.clone();
    for p in &parts[1..] {
        if p.dtype != first.dtype {
            return Err(format!(
                "inputs have types {:?} and {:?}",
                first.dtype, p.dtype
            ));
        }
        let ok = p.shape.len() == shape.len()
            && (0..shape.len()).all(|d| d == ax || p.shape[d] == shape[d]);
        if !ok {
            return Err(format!(
                "cannot join {:?} and {:?} on axis {ax}",
                first.shape, p.shape
            ));
        }
        shape[ax] += p.shape[ax];
    }
    checked_numel(&shape)?;
    // One index map over the parts laid end to end.
    let outer: usize = shape[..ax].iter().product();
    let mut offsets = Vec::with_capacity(parts.len());
    let mut total = 0;
    for p in parts {
        offsets.push(total);
        total += p.len();
    }
    let mut map = Vec::new();
    for o in 0..outer {
        for (p, off) in parts.iter().zip(&offsets) {
            let chunk: usize = p.shape[ax..].iter().product();
            map.extend(off + o * chunk..off + (o + 1) * chunk);
        }
    }
    let joined = match &first.data {
        Data::F32(_) => Data::F32(parts.iter().flat_map(|p| f32s(&p.data)).collect()),
        Data::F64(_) => Data::F64(parts.iter().flat_map(|p| p.data.to_f64()).collect()),
        Data::I64(_) => Data::I64(parts.iter().flat_map(|p| p.data.to_i64()).collect()),
        Data::Bool(_) => Data::Bool(
            parts
                .iter()
                .flat_map(|p| p.data.to_i64().into_iter().map(|v| v != 0))
                .collect(),
        ),
    };
    Ok(Const {
        dtype: first.dtype,
        shape,
        data: joined.select(&map),
    })
}

fn f32s(d: &Data) -> Vec<f32> {
    match d {
        Data::F32(v) => v.to_vec(),
        other => other.to_f64().into_iter().map(|v| v as f32).collect(),
    }
}

/// `Transpose` by a permutation (already validated).
pub fn transpose(x: &Const, perm: &[usize]) -> Const {
    let st = strides(&x.shape);
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let walk: Vec<isize> = perm.iter().map(|&p| st[p] as isize).collect();
    Const {
        dtype: x.dtype,
        data: x.data.select(&index_map(&shape, &walk, 0)),
        shape,
    }
}

/// `Expand`: broadcasts `x` against `shape`.
pub fn expand(x: &Const, shape: &[usize]) -> Result<Const, String> {
    let out = broadcast(&x.shape, shape)?;
    checked_numel(&out)?;
    Ok(Const {
        dtype: x.dtype,
        data: x.data.select(&broadcast_map(&x.shape, &out)),
        shape: out,
    })
}

/// `Tile`: repeats `x` `reps[d]` times along each dim.
pub fn tile(x: &Const, reps: &[usize]) -> Result<Const, String> {
    if reps.len() != x.shape.len() {
        return Err(format!(
            "{} repeats for a rank-{} tensor",
            reps.len(),
            x.shape.len()
        ));
    }
    let shape: Vec<usize> = x
        .shape
        .iter()
        .zip(reps)
        .map(|(&d, &r)| d.checked_mul(r).ok_or("tile too large"))
        .collect::<Result<_, _>>()?;
    checked_numel(&shape)?;
    let st = strides(&x.shape);
    let total: usize = shape.iter().product();
    let mut map = Vec::with_capacity(total);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..total {
        map.push(
            idx.iter()
                .enumerate()
                .map(|(d, &i)| (i % x.shape[d]) * st[d])
                .sum(),
        );
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(Const {
        dtype: x.dtype,
        data: x.data.select(&map),
        shape,
    })
}

/// `Range(start, limit, delta)`: `max(ceil((limit − start) / delta), 0)` values.
pub fn range(start: &Const, limit: &Const, delta: &Const) -> Result<Const, String> {
    let scalar = |c: &Const| -> Result<f64, String> {
        match c.data.to_f64().as_slice() {
            [v] => Ok(*v),
            _ => Err(format!("Range needs scalars, got shape {:?}", c.shape)),
        }
    };
    let (s, l, d) = (scalar(start)?, scalar(limit)?, scalar(delta)?);
    if d == 0.0 || !(s.is_finite() && l.is_finite() && d.is_finite()) {
        return Err(format!("Range({s}, {l}, {d}) is not finite"));
    }
    let n = ((l - s) / d).ceil().max(0.0);
    if n > super::load::MAX_ELEMENTS as f64 {
        return Err(format!("Range({s}, {l}, {d}) is too long"));
    }
    let n = n as usize;
    let v: Vec<f64> = (0..n).map(|i| s + i as f64 * d).collect();
    Ok(Const::from_f64(start.dtype, vec![n], &v))
}

/// Reductions over sorted, distinct axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Red {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
}

pub fn reduce(x: &Const, op: Red, axes_: &[usize], keepdims: bool) -> Result<Const, String> {
    if matches!(x.data, Data::Bool(_)) {
        return Err("cannot reduce booleans".into());
    }
    let kept: Vec<usize> = x
        .shape
        .iter()
        .enumerate()
        .map(|(d, &n)| if axes_.contains(&d) { 1 } else { n })
        .collect();
    let st = strides(&kept);
    let walk: Vec<isize> = (0..x.shape.len())
        .map(|d| {
            if axes_.contains(&d) {
                0
            } else {
                st[d] as isize
            }
        })
        .collect();
    let dst = index_map(&x.shape, &walk, 0);
    let init = match op {
        Red::Sum | Red::Mean => 0.0,
        Red::Prod => 1.0,
        Red::Max => f64::NEG_INFINITY,
        Red::Min => f64::INFINITY,
    };
    let mut acc = vec![init; kept.iter().product()];
    for (v, &at) in x.data.to_f64().into_iter().zip(&dst) {
        let a = &mut acc[at];
        *a = match op {
            Red::Sum | Red::Mean => *a + v,
            Red::Prod => *a * v,
            Red::Max => a.max(v),
            Red::Min => a.min(v),
        };
    }
    if op == Red::Mean {
        let count: usize = axes_.iter().map(|&a| x.shape[a]).product();
        acc.iter_mut().for_each(|a| *a /= count.max(1) as f64);
    }
    let shape = if keepdims {
        kept
    } else {
        x.shape
            .iter()
            .enumerate()
            .filter(|(d, _)| !axes_.contains(d))
            .map(|(_, &n)| n)
            .collect()
    };
    Ok(Const::from_f64(x.dtype, shape, &acc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf_same_pad_arithmetic_folds() {
        // ceil(512 / 2) = 256; pad = max((256 − 1)·2 + 3 − 512, 0) = 1.
        let size = Const::i64(vec![], vec![512]);
        let f = size.cast(DType::F32);
        let two = Const::f32(vec![], vec![2.0]);
        let out = unary(Un::Ceil, &binary(Bin::Div, &f, &two).unwrap()).unwrap();
        let out = out.cast(DType::I64);
        let one = Const::i64(vec![], vec![1]);
        let k = Const::i64(vec![], vec![3]);
        let t = binary(
            Bin::Mul,
            &binary(Bin::Sub, &out, &one).unwrap(),
            &Const::i64(vec![], vec![2]),
        )
        .unwrap();
        let pad = binary(Bin::Sub, &binary(Bin::Add, &t, &k).unwrap(), &size).unwrap();
        let pad = binary(Bin::Max, &pad, &Const::i64(vec![], vec![0])).unwrap();
        assert_eq!(pad.ints(), [1]);
    }

    #[test]
    fn layout_folds() {
        let x = Const::i64(vec![2, 3], (0..6).collect());
        assert_eq!(
            gather(&x, &Const::i64(vec![], vec![-1]), 1).unwrap().ints(),
            [2, 5]
        );
        assert_eq!(
            gather(&x, &Const::i64(vec![1], vec![1]), 0).unwrap().shape,
            [1, 3]
        );
        assert!(gather(&x, &Const::i64(vec![], vec![3]), 1).is_err());
        // Reverse every row (the F.pad symbolic's `[::-1]` slice).
        let r = slice(&x, &[-1], &[i64::MIN], &[1], &[-1]).unwrap();
        assert_eq!(r.ints(), [2, 1, 0, 5, 4, 3]);
        let r = slice(&x, &[1], &[i64::MAX], &[1], &[1]).unwrap();
        assert_eq!((r.shape.clone(), r.ints()), (vec![2, 2], vec![1, 2, 4, 5]));
        assert!(slice(&x, &[0], &[1], &[0], &[0]).is_err());
        assert_eq!(transpose(&x, &[1, 0]).ints(), [0, 3, 1, 4, 2, 5]);
        let c = concat(&[x.clone(), Const::i64(vec![2, 1], vec![9, 9])], 1).unwrap();
        assert_eq!(c.ints(), [0, 1, 2, 9, 3, 4, 5, 9]);
        let e = expand(&Const::i64(vec![2, 1], vec![1, 2]), &[2, 2]).unwrap();
        assert_eq!(e.ints(), [1, 1, 2, 2]);
        assert_eq!(
            tile(&Const::i64(vec![2], vec![1, 2]), &[2]).unwrap().ints(),
            [1, 2, 1, 2]
        );
        let r = range(
            &Const::i64(vec![], vec![0]),
            &Const::i64(vec![], vec![5]),
            &Const::i64(vec![], vec![2]),
        )
        .unwrap();
        assert_eq!(r.ints(), [0, 2, 4]);
    }

    #[test]
    fn arithmetic_and_logic_folds() {
        let a = Const::i64(vec![3], vec![7, -7, 4]);
        let b = Const::i64(vec![], vec![2]);
        assert_eq!(binary(Bin::Div, &a, &b).unwrap().ints(), [3, -3, 2]);
        assert_eq!(
            binary(Bin::Mod { fmod: false }, &a, &b).unwrap().ints(),
            [1, 1, 0]
        );
        assert!(binary(Bin::Div, &a, &Const::i64(vec![], vec![0])).is_err());
        assert!(binary(Bin::Add, &a, &Const::f32(vec![], vec![1.0])).is_err());
        let eq = binary(Bin::Equal, &a, &Const::i64(vec![], vec![4])).unwrap();
        let w = select(&eq, &a, &Const::i64(vec![], vec![0])).unwrap();
        assert_eq!(w.ints(), [0, 0, 4]);
        let f = Const::f32(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]);
        let s = reduce(&f, Red::Sum, &[1], false).unwrap();
        assert_eq!(
            (s.shape.clone(), s.to_f32().unwrap().to_vec()),
            (vec![2], vec![3.0, 7.0])
        );
        assert_eq!(
            unary(Un::Round, &Const::f32(vec![2], vec![2.5, -0.5]))
                .unwrap()
                .to_f32()
                .unwrap()
                .as_ref(),
            [2.0, -0.0]
        );
    }
}
