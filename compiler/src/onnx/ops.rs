//! Per-op import: the one table of supported ONNX ops ([`OPS`]) and a handler for each.
//!
//! A handler either folds (all inputs constant: shape arithmetic, fusion weights) or lowers
//! to IR ops. Lowerings map exporter idioms onto existing IR ops where the mapping is exact:
//! `ReduceMean` over H,W is `GlobalAvgPool`, a `Pad(−∞)` feeding `MaxPool` is the pool's own
//! padding, the BiFPN's `Unsqueeze`+`Concat`+`ReduceSum` stack-and-sum is a `WeightedSum`.
//! Everything else keeps its general IR op (`Pad`+`Conv` stays `Pad`+`Conv2d`; swish stays
//! `Mul`+`Sigmoid` for a later fusion pass).

use super::fold::{self, axes, axis, Bin, Red, Un};
use super::import::{Cx, NodeView, Value};
use super::proto::AttributeProto;
use super::tensor::{Const, DType};
use crate::ir::{
    Activation, BatchNorm, BinaryOp, Conv2d, FusionMethod, Op, Pads, Pool2d, PoolKind, ReduceKind,
};

type Res = Result<Vec<Value>, String>;
pub type Handler = fn(&mut Cx, &NodeView) -> Res;

/// Every supported op type (default domain) and its handler. The README's "ONNX models" section documents them.
static OPS: &[(&str, Handler)] = &[
    ("Abs", |_, n| unary(n, Un::Abs)),
    ("Add", |cx, n| arith(cx, n, Bin::Add, Some(BinaryOp::Add))),
    ("And", |cx, n| arith(cx, n, Bin::And, None)),
    ("AveragePool", |cx, n| pool(cx, n, false)),
    ("BatchNormalization", batch_norm),
    ("Cast", cast),
    ("CastLike", cast),
    ("Ceil", |_, n| unary(n, Un::Ceil)),
    ("Clip", clip),
    ("Concat", concat),
    ("Constant", constant),
    ("ConstantOfShape", constant_of_shape),
    ("Conv", conv),
    ("Div", |cx, n| arith(cx, n, Bin::Div, Some(BinaryOp::Div))),
    ("Dropout", identity),
    ("Equal", |cx, n| arith(cx, n, Bin::Equal, None)),
    ("Exp", |_, n| unary(n, Un::Exp)),
    ("Expand", expand),
    ("Flatten", flatten),
    ("Floor", |_, n| unary(n, Un::Floor)),
    ("Gather", gather),
    ("GlobalAveragePool", global_average_pool),
    ("Greater", |cx, n| arith(cx, n, Bin::Greater, None)),
    ("GreaterOrEqual", |cx, n| {
        arith(cx, n, Bin::GreaterOrEqual, None)
    }),
    ("HardSigmoid", hard_sigmoid),
    ("HardSwish", |cx, n| {
        activation(cx, n, Activation::HardSwish)
    }),
    ("Identity", identity),
    ("Less", |cx, n| arith(cx, n, Bin::Less, None)),
    ("LessOrEqual", |cx, n| arith(cx, n, Bin::LessOrEqual, None)),
    ("Log", |_, n| unary(n, Un::Log)),
    ("Max", |cx, n| variadic(cx, n, Bin::Max)),
    ("MaxPool", |cx, n| pool(cx, n, true)),
    ("Mean", |cx, n| variadic(cx, n, Bin::Add)),
    ("Min", |cx, n| variadic(cx, n, Bin::Min)),
    ("Mod", |cx, n| {
        let fmod = n.int("fmod", 0) != 0;
        arith(cx, n, Bin::Mod { fmod }, None)
    }),
    ("Mul", |cx, n| arith(cx, n, Bin::Mul, Some(BinaryOp::Mul))),
    ("Neg", |_, n| unary(n, Un::Neg)),
    ("Not", |_, n| unary(n, Un::Not)),
    ("Or", |cx, n| arith(cx, n, Bin::Or, None)),
    ("Pad", pad),
    ("Pow", |cx, n| arith(cx, n, Bin::Pow, None)),
    ("Range", range),
    ("Reciprocal", |_, n| unary(n, Un::Reciprocal)),
    ("ReduceMax", |cx, n| reduce(cx, n, Red::Max)),
    ("ReduceMean", |cx, n| reduce(cx, n, Red::Mean)),
    ("ReduceMin", |cx, n| reduce(cx, n, Red::Min)),
    ("ReduceProd", |cx, n| reduce(cx, n, Red::Prod)),
    ("ReduceSum", |cx, n| reduce(cx, n, Red::Sum)),
    ("Relu", |cx, n| activation(cx, n, Activation::Relu)),
    ("Reshape", reshape),
    ("Resize", resize),
    ("Round", |_, n| unary(n, Un::Round)),
    ("Shape", shape),
    ("Sigmoid", |cx, n| activation(cx, n, Activation::Sigmoid)),
    ("Sign", |_, n| unary(n, Un::Sign)),
    ("Size", size),
    ("Slice", slice),
    ("Softmax", softmax),
    ("Sqrt", |_, n| unary(n, Un::Sqrt)),
    ("Squeeze", squeeze),
    ("Sub", |cx, n| arith(cx, n, Bin::Sub, Some(BinaryOp::Sub))),
    ("Sum", |cx, n| variadic(cx, n, Bin::Add)),
    ("Tile", tile),
    ("Transpose", transpose),
    ("Unsqueeze", unsqueeze),
    ("Upsample", resize),
    ("Where", where_),
    ("Xor", |cx, n| arith(cx, n, Bin::Xor, None)),
];

/// The handler of a default-domain op type.
pub fn handler(op_type: &str) -> Option<Handler> {
    OPS.iter()
        .find(|(name, _)| *name == op_type)
        .map(|(_, h)| *h)
}

/// The names of every supported op type, sorted.
pub fn supported() -> Vec<&'static str> {
    OPS.iter().map(|(name, _)| *name).collect()
}

/// The largest kernel, stride, dilation or pad accepted; keeps shape arithmetic far from
/// overflow on hostile files.
const MAX_ATTR: i64 = 1 << 20;

impl NodeView<'_> {
    fn op(&self) -> &str {
        self.proto.op_type()
    }

    /// The name of output `k` (IR node names are the ONNX value names).
    fn out(&self, k: usize) -> &str {
        self.proto.output.get(k).map_or("", |s| s.as_str())
    }

    fn in_name(&self, i: usize) -> &str {
        self.proto.input.get(i).map_or("", |s| s.as_str())
    }

    fn opt(&self, i: usize) -> Option<&Value> {
        self.inputs.get(i).and_then(|v| v.as_ref())
    }

    fn input(&self, i: usize) -> Result<&Value, String> {
        self.opt(i)
            .ok_or_else(|| format!("input {i} is required but missing"))
    }

    /// Input `i` with its name, as [`Cx::emit`] takes it.
    fn arg(&self, i: usize) -> Result<(&str, &Value), String> {
        Ok((self.in_name(i), self.input(i)?))
    }

    fn konst(&self, i: usize) -> Result<&Const, String> {
        match self.input(i)? {
            Value::Const(c) => Ok(c),
            Value::Node(_) => Err(format!(
                "input {i} (`{}`) must be a constant, but it is computed from runtime data",
                self.in_name(i)
            )),
        }
    }

    /// An optional constant input; an empty tensor counts as absent (exporters write
    /// empty `scales`/`roi` placeholders).
    fn opt_konst(&self, i: usize) -> Result<Option<&Const>, String> {
        match self.opt(i) {
            None => Ok(None),
            Some(_) => self.konst(i).map(|c| (c.len() > 0).then_some(c)),
        }
    }

    fn all_const(&self) -> Option<Vec<&Const>> {
        self.inputs
            .iter()
            .flatten()
            .map(|v| match v {
                Value::Const(c) => Some(c),
                Value::Node(_) => None,
            })
            .collect()
    }

    fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.proto.attribute.iter().find(|a| a.name() == name)
    }

    fn int(&self, name: &str, default: i64) -> i64 {
        self.attr(name).and_then(|a| a.i).unwrap_or(default)
    }

    fn float(&self, name: &str, default: f32) -> f32 {
        self.attr(name).and_then(|a| a.f).unwrap_or(default)
    }

    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.attr(name).map(|a| a.ints.clone())
    }

    fn string(&self, name: &str, default: &str) -> String {
        self.attr(name)
            .and_then(|a| a.s.as_ref())
            .map_or(default.to_string(), |s| {
                String::from_utf8_lossy(s).into_owned()
            })
    }

    /// Axes given as an attribute before `since` and as input `input` from `since` on.
    fn axes_arg(&self, cx: &Cx, since: i64, input: usize) -> Result<Option<Vec<i64>>, String> {
        if cx.opset >= since {
            Ok(self.opt_konst(input)?.map(|c| c.ints()))
        } else {
            Ok(self.ints("axes"))
        }
    }
}

fn one(v: Value) -> Res {
    Ok(vec![v])
}

/// Converts validated non-negative attribute values to sizes.
fn sizes(v: &[i64], what: &str, min: i64) -> Result<Vec<usize>, String> {
    v.iter()
        .map(|&x| {
            if (min..=MAX_ATTR).contains(&x) {
                Ok(x as usize)
            } else {
                Err(format!("{what} {v:?} must be within {min}..={MAX_ATTR}"))
            }
        })
        .collect()
}

fn shape_dims(c: &Const) -> Result<Vec<usize>, String> {
    c.ints()
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| format!("shape {:?} has a negative dim", c.ints()))
        })
        .collect()
}

// ---- elementwise -------------------------------------------------------------------------

fn arith(cx: &mut Cx, n: &NodeView, bin: Bin, ir: Option<BinaryOp>) -> Res {
    if let (Value::Const(a), Value::Const(b)) = (n.input(0)?, n.input(1)?) {
        return one(Value::Const(fold::binary(bin, a, b)?));
    }
    let op = ir.ok_or_else(|| {
        format!(
            "{} of runtime tensors is not supported (only constant operands fold)",
            n.op()
        )
    })?;
    one(cx.emit(n.out(0), Op::Binary(op), &[n.arg(0)?, n.arg(1)?])?)
}

/// `Max`, `Min`, `Sum`, `Mean` over any number of inputs: folded pairwise; `Sum` (and only
/// it) of runtime tensors becomes a chain of `Add`s.
fn variadic(cx: &mut Cx, n: &NodeView, bin: Bin) -> Res {
    if let Some(consts) = n.all_const() {
        let (first, rest) = consts.split_first().ok_or("needs at least one input")?;
        let mut acc = (*first).clone();
        for c in rest {
            acc = fold::binary(bin, &acc, c)?;
        }
        if n.op() == "Mean" {
            let count = Const::from_f64(acc.dtype, vec![], &[consts.len() as f64]);
            acc = fold::binary(Bin::Div, &acc, &count)?;
        }
        return one(Value::Const(acc));
    }
    if n.op() != "Sum" {
        return Err(format!("{} of runtime tensors is not supported", n.op()));
    }
    let mut acc = n.input(0)?.clone();
    let mut acc_name = n.in_name(0).to_string();
    for i in 1..n.inputs.len() {
        let name = format!("{}#{i}", n.out(0));
        acc = cx.emit(
            &name,
            Op::Binary(BinaryOp::Add),
            &[(&acc_name, &acc), n.arg(i)?],
        )?;
        acc_name = name;
    }
    one(acc)
}

fn unary(n: &NodeView, op: Un) -> Res {
    match n.input(0)? {
        Value::Const(c) => one(Value::Const(fold::unary(op, c)?)),
        Value::Node(_) => Err(format!(
            "{} of a runtime tensor is not supported (only constants fold)",
            n.op()
        )),
    }
}

fn activation(cx: &mut Cx, n: &NodeView, a: Activation) -> Res {
    if let Value::Const(c) = n.input(0)? {
        if !c.dtype.is_float() && a == Activation::Relu {
            return one(Value::Const(fold::unary(Un::Relu, c)?));
        }
    }
    one(cx.emit(n.out(0), Op::Activation(a), &[n.arg(0)?])?)
}

fn hard_sigmoid(cx: &mut Cx, n: &NodeView) -> Res {
    let a = Activation::HardSigmoid {
        alpha: n.float("alpha", 0.2),
        beta: n.float("beta", 0.5),
    };
    activation(cx, n, a)
}

/// `Clip`: bounds are inputs from opset 11, attributes before. `[0, 6]` is relu6 and
/// `[0, ∞)` relu, so later passes see the functions they know.
fn clip(cx: &mut Cx, n: &NodeView) -> Res {
    let (lo, hi) = if cx.opset >= 11 {
        let bound = |i: usize| -> Result<Option<Const>, String> {
            match n.opt_konst(i)? {
                None => Ok(None),
                Some(c) if c.len() == 1 => Ok(Some(c.clone())),
                Some(c) => Err(format!(
                    "bound {i} must be a scalar, got shape {:?}",
                    c.shape
                )),
            }
        };
        (bound(1)?, bound(2)?)
    } else {
        let f = |name: &str| {
            n.attr(name)
                .and_then(|a| a.f)
                .map(|v| Const::f32(vec![], vec![v]))
        };
        (f("min"), f("max"))
    };
    if let Value::Const(x) = n.input(0)? {
        let mut out = x.clone();
        if let Some(lo) = &lo {
            out = fold::binary(Bin::Max, &out, &lo.cast(x.dtype))?;
        }
        if let Some(hi) = &hi {
            out = fold::binary(Bin::Min, &out, &hi.cast(x.dtype))?;
        }
        return one(Value::Const(out));
    }
    let value = |c: &Option<Const>, default: f32| {
        c.as_ref().map_or(default, |c| {
            c.data.to_f64().first().copied().unwrap_or(0.0) as f32
        })
    };
    let (min, max) = (value(&lo, f32::NEG_INFINITY), value(&hi, f32::INFINITY));
    let a = match (min, max) {
        (0.0, 6.0) => Activation::Relu6,
        (0.0, f32::INFINITY) => Activation::Relu,
        _ => Activation::Clip { min, max },
    };
    one(cx.emit(n.out(0), Op::Activation(a), &[n.arg(0)?])?)
}

fn where_(_: &mut Cx, n: &NodeView) -> Res {
    one(Value::Const(fold::select(
        n.konst(0)?,
        n.konst(1)?,
        n.konst(2)?,
    )?))
}

// ---- values and types ----------------------------------------------------------------------

fn identity(_: &mut Cx, n: &NodeView) -> Res {
    if n.op() == "Dropout" {
        if let Some(c) = n.opt_konst(2)? {
            if c.ints().iter().any(|&v| v != 0) {
                return Err("training_mode = true is not supported".into());
            }
        }
    }
    one(n.input(0)?.clone())
}

fn cast(_: &mut Cx, n: &NodeView) -> Res {
    let to = if n.op() == "CastLike" {
        match n.input(1)? {
            Value::Const(c) => c.dtype,
            Value::Node(_) => DType::F32,
        }
    } else {
        let code = n.int("to", 0);
        i32::try_from(code)
            .ok()
            .and_then(DType::from_onnx)
            .ok_or_else(|| format!("cast to element type code {code} is not supported"))?
    };
    match n.input(0)? {
        Value::Const(c) => one(Value::Const(c.cast(to))),
        // Runtime tensors are float32; casting them to a float type is the identity.
        v if to == DType::F32 => one(v.clone()),
        _ => Err(format!(
            "casting a runtime tensor to {to:?} is not supported"
        )),
    }
}

fn constant(_: &mut Cx, n: &NodeView) -> Res {
    let attr = n
        .proto
        .attribute
        .first()
        .ok_or("a Constant needs a value attribute")?;
    let c = match attr.name() {
        "value" => {
            let mut t = attr.t.clone().ok_or("`value` holds no tensor")?;
            super::load::decode_tensor(&mut t, super::load::DataDir(None))?
        }
        "value_float" => Const::f32(vec![], vec![attr.f.ok_or("`value_float` is empty")?]),
        "value_floats" => Const::f32(vec![attr.floats.len()], attr.floats.clone()),
        "value_int" => Const::i64(vec![], vec![attr.i.ok_or("`value_int` is empty")?]),
        "value_ints" => Const::i64(vec![attr.ints.len()], attr.ints.clone()),
        other => return Err(format!("constant attribute `{other}` is not supported")),
    };
    one(Value::Const(c))
}

fn constant_of_shape(_: &mut Cx, n: &NodeView) -> Res {
    let shape = shape_dims(n.konst(0)?)?;
    let count = super::load::checked_numel(&shape)?;
    let value = match n.attr("value").and_then(|a| a.t.clone()) {
        Some(mut t) => super::load::decode_tensor(&mut t, super::load::DataDir(None))?,
        None => Const::f32(vec![1], vec![0.0]),
    };
    if value.len() != 1 {
        return Err(format!(
            "`value` must hold one element, it has {}",
            value.len()
        ));
    }
    let data = value.data.select(&vec![0; count]);
    one(Value::Const(Const {
        dtype: value.dtype,
        shape,
        data,
    }))
}

fn shape(cx: &mut Cx, n: &NodeView) -> Res {
    let s = cx.shape(n.input(0)?);
    let rank = s.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
    let start = clamp(n.int("start", 0));
    let end = clamp(n.int("end", rank));
    let dims: Vec<i64> = s[start..end.max(start)].iter().map(|&d| d as i64).collect();
    one(Value::Const(Const::i64(vec![dims.len()], dims)))
}

fn size(cx: &mut Cx, n: &NodeView) -> Res {
    let count: usize = cx.shape(n.input(0)?).iter().product();
    one(Value::Const(Const::i64(vec![], vec![count as i64])))
}

fn range(_: &mut Cx, n: &NodeView) -> Res {
    one(Value::Const(fold::range(
        n.konst(0)?,
        n.konst(1)?,
        n.konst(2)?,
    )?))
}

// ---- layout --------------------------------------------------------------------------------

/// Gives a value a new shape: constants directly, runtime tensors through an IR `Reshape`
/// (skipped when the shape does not change).
fn reshaped(cx: &mut Cx, n: &NodeView, to: Vec<usize>) -> Res {
    let x = n.input(0)?;
    let from = cx.shape(x);
    let (a, b) = (
        super::load::checked_numel(from)?,
        super::load::checked_numel(&to)?,
    );
    if a != b {
        return Err(format!("cannot reshape {from:?} to {to:?}"));
    }
    match x {
        Value::Const(c) => one(Value::Const(c.reshaped(to))),
        Value::Node(_) if from == to.as_slice() => one(x.clone()),
        Value::Node(_) => one(cx.emit(n.out(0), Op::Reshape { shape: to }, &[n.arg(0)?])?),
    }
}

fn reshape(cx: &mut Cx, n: &NodeView) -> Res {
    let from = cx.shape(n.input(0)?).to_vec();
    let spec = n.konst(1)?.ints();
    let allowzero = n.int("allowzero", 0) != 0;
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        out.push(match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                1
            }
            0 if !allowzero => *from
                .get(i)
                .ok_or_else(|| format!("shape {spec:?} copies dim {i} of {from:?}"))?,
            d if d >= 0 => d as usize,
            _ => return Err(format!("invalid shape {spec:?}")),
        });
    }
    if let Some(i) = infer {
        let total = super::load::checked_numel(&from)?;
        let known: usize = super::load::checked_numel(&out)?;
        if known == 0 || total % known != 0 {
            return Err(format!("cannot reshape {from:?} to {spec:?}"));
        }
        out[i] = total / known;
    }
    reshaped(cx, n, out)
}

fn flatten(cx: &mut Cx, n: &NodeView) -> Res {
    let s = cx.shape(n.input(0)?).to_vec();
    let a = n.int("axis", 1);
    let r = s.len() as i64;
    if a < -r || a > r {
        return Err(format!("axis {a} is out of range for rank {r}"));
    }
    let a = if a < 0 { a + r } else { a } as usize;
    let to = vec![s[..a].iter().product(), s[a..].iter().product()];
    reshaped(cx, n, to)
}

fn unsqueeze(cx: &mut Cx, n: &NodeView) -> Res {
    let s = cx.shape(n.input(0)?).to_vec();
    let list = n.axes_arg(cx, 13, 1)?.ok_or("Unsqueeze needs axes")?;
    let rank = s.len() + list.len();
    let ax = axes(&list, rank)?;
    let mut src = s.iter();
    let to = (0..rank)
        .map(|d| {
            if ax.contains(&d) {
                Some(1)
            } else {
                src.next().copied()
            }
        })
        .collect::<Option<Vec<usize>>>()
        .ok_or("bad axes")?;
    reshaped(cx, n, to)
}

fn squeeze(cx: &mut Cx, n: &NodeView) -> Res {
    let s = cx.shape(n.input(0)?).to_vec();
    let ax = match n.axes_arg(cx, 13, 1)? {
        Some(list) => axes(&list, s.len())?,
        None => (0..s.len()).filter(|&d| s[d] == 1).collect(),
    };
    if let Some(&d) = ax.iter().find(|&&d| s[d] != 1) {
        return Err(format!("cannot squeeze dim {d} of {s:?}: it is not 1"));
    }
    let to = (0..s.len())
        .filter(|d| !ax.contains(d))
        .map(|d| s[d])
        .collect();
    reshaped(cx, n, to)
}

fn transpose(cx: &mut Cx, n: &NodeView) -> Res {
    let rank = cx.shape(n.input(0)?).len();
    let perm = match n.ints("perm") {
        Some(p) => {
            let ax = p
                .iter()
                .map(|&a| axis(a, rank))
                .collect::<Result<Vec<_>, _>>()?;
            let mut sorted = ax.clone();
            sorted.sort_unstable();
            if sorted != (0..rank).collect::<Vec<_>>() {
                return Err(format!("perm {p:?} is not a permutation of {rank} dims"));
            }
            ax
        }
        None => (0..rank).rev().collect(),
    };
    match n.input(0)? {
        Value::Const(c) => one(Value::Const(fold::transpose(c, &perm))),
        _ if perm.iter().enumerate().all(|(i, &p)| i == p) => one(n.input(0)?.clone()),
        _ => one(cx.emit(n.out(0), Op::Transpose { perm }, &[n.arg(0)?])?),
    }
}

fn concat(cx: &mut Cx, n: &NodeView) -> Res {
    let present: Vec<usize> = (0..n.inputs.len())
        .filter(|&i| n.opt(i).is_some())
        .collect();
    let first = present.first().ok_or("needs at least one input")?;
    let rank = cx.shape(n.input(*first)?).len();
    let ax = axis(
        n.attr("axis").and_then(|a| a.i).ok_or("needs `axis`")?,
        rank,
    )?;
    if let Some(consts) = n.all_const() {
        let parts: Vec<Const> = consts.into_iter().cloned().collect();
        return one(Value::Const(fold::concat(&parts, ax)?));
    }
    // Empty constants (shape arithmetic leftovers) add nothing to a runtime concat.
    let args = present
        .iter()
        .map(|&i| n.arg(i))
        .filter(|a| !matches!(a, Ok((_, Value::Const(c))) if c.len() == 0))
        .collect::<Result<Vec<_>, _>>()?;
    if args.len() == 1 {
        return one(args[0].1.clone());
    }
    one(cx.emit(n.out(0), Op::Concat { axis: ax }, &args)?)
}

fn gather(_: &mut Cx, n: &NodeView) -> Res {
    let data = n
        .konst(0)
        .map_err(|e| format!("{e} (Gather only folds constants)"))?;
    one(Value::Const(fold::gather(
        data,
        n.konst(1)?,
        n.int("axis", 0),
    )?))
}

fn slice(cx: &mut Cx, n: &NodeView) -> Res {
    let shape = cx.shape(n.input(0)?).to_vec();
    let rank = shape.len();
    let (starts, ends, ax, steps) = if cx.opset >= 10 {
        let starts = n.konst(1)?.ints();
        let ends = n.konst(2)?.ints();
        let ax = n.opt_konst(3)?.map(|c| c.ints());
        let steps = n.opt_konst(4)?.map(|c| c.ints());
        (starts, ends, ax, steps)
    } else {
        (
            n.ints("starts").unwrap_or_default(),
            n.ints("ends").unwrap_or_default(),
            n.ints("axes"),
            None,
        )
    };
    let ax = ax.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || ax.len() != starts.len() || steps.len() != starts.len() {
        return Err("starts, ends, axes and steps differ in length".into());
    }
    let ax = ax
        .iter()
        .map(|&a| axis(a, rank))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = ax.clone();
    seen.sort_unstable();
    if seen.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!("axes {ax:?} repeat an axis"));
    }
    match n.input(0)? {
        Value::Const(c) => one(Value::Const(fold::slice(c, &starts, &ends, &ax, &steps)?)),
        v => {
            // A slice that keeps everything is the identity; any other runtime slice is not
            // an EfficientDet idiom.
            let whole = (0..ax.len()).all(|k| {
                fold::slice_dim(shape[ax[k]], starts[k], ends[k], steps[k])
                    .is_ok_and(|(s, st, c)| s == 0 && st == 1 && c == shape[ax[k]])
            });
            if whole {
                one(v.clone())
            } else {
                Err("slicing a runtime tensor is not supported (only constants fold)".into())
            }
        }
    }
}

fn expand(cx: &mut Cx, n: &NodeView) -> Res {
    let to = shape_dims(n.konst(1)?)?;
    match n.input(0)? {
        Value::Const(c) => one(Value::Const(fold::expand(c, &to)?)),
        v => {
            let s = cx.shape(v);
            if crate::ir::op::broadcast(s, &to)? == s {
                one(v.clone())
            } else {
                Err(format!(
                    "expanding a runtime tensor {s:?} to {to:?} is not supported"
                ))
            }
        }
    }
}

fn tile(_: &mut Cx, n: &NodeView) -> Res {
    let reps = shape_dims(n.konst(1)?)?;
    one(Value::Const(fold::tile(n.konst(0)?, &reps)?))
}

// ---- reductions ----------------------------------------------------------------------------

fn reduce(cx: &mut Cx, n: &NodeView, red: Red) -> Res {
    let s = cx.shape(n.input(0)?).to_vec();
    // ReduceSum took axes as an input from opset 13, the others from 18.
    let since = if red == Red::Sum { 13 } else { 18 };
    let list = n.axes_arg(cx, since, 1)?.unwrap_or_default();
    let keepdims = n.int("keepdims", 1) != 0;
    if list.is_empty() && n.int("noop_with_empty_axes", 0) != 0 {
        return one(n.input(0)?.clone());
    }
    let ax = if list.is_empty() {
        (0..s.len()).collect()
    } else {
        axes(&list, s.len())?
    };
    if let Value::Const(c) = n.input(0)? {
        return one(Value::Const(fold::reduce(c, red, &ax, keepdims)?));
    }
    let kind = match red {
        Red::Sum => ReduceKind::Sum,
        Red::Mean => ReduceKind::Mean,
        _ => return Err(format!("{} of a runtime tensor is not supported", n.op())),
    };
    if let Some(v) = stacked_sum(cx, n, kind, &ax, keepdims)? {
        return one(v);
    }
    if kind == ReduceKind::Mean && s.len() == 4 && ax == [2, 3] {
        let pooled = cx.emit(n.out(0), Op::GlobalAvgPool, &[n.arg(0)?])?;
        if keepdims {
            return one(pooled);
        }
        let name = format!("{}#pooled", n.out(0));
        let to = vec![s[0], s[1]];
        return one(cx.emit(n.out(0), Op::Reshape { shape: to }, &[(&name, &pooled)])?);
    }
    one(cx.emit(
        n.out(0),
        Op::Reduce {
            kind,
            axes: ax,
            keepdims,
        },
        &[n.arg(0)?],
    )?)
}

/// `ReduceSum(Concat(Unsqueeze(x_i, a)…, a), a)` — how effdet's BiFPN writes
/// `torch.stack(xs, -1).sum(-1)` — is the plain sum of the `x_i`: a `WeightedSum`.
fn stacked_sum(
    cx: &mut Cx,
    n: &NodeView,
    kind: ReduceKind,
    ax: &[usize],
    keepdims: bool,
) -> Result<Option<Value>, String> {
    let (ReduceKind::Sum, [a], false, Value::Node(id)) = (kind, ax, keepdims, n.input(0)?) else {
        return Ok(None);
    };
    if cx.g.node(*id).op != (Op::Concat { axis: *a }) {
        return Ok(None);
    }
    let mut parts = Vec::new();
    for p in cx.g.inputs_of(*id) {
        let node = cx.g.node(p);
        let src = cx.g.inputs_of(p);
        let unsqueezed = match (&node.op, src.as_slice()) {
            (Op::Reshape { shape }, [x]) => {
                let xs = &cx.g.node(*x).shape;
                shape.get(*a) == Some(&1)
                    && shape.len() == xs.len() + 1
                    && shape[..*a] == xs[..*a]
                    && shape[*a + 1..] == xs[*a..]
            }
            _ => false,
        };
        if !unsqueezed {
            return Ok(None);
        }
        parts.push(src[0]);
    }
    let same = parts
        .iter()
        .all(|&p| cx.g.node(p).shape == cx.g.node(parts[0]).shape);
    if !same {
        return Ok(None);
    }
    let op = Op::WeightedSum {
        method: FusionMethod::Sum,
        weights: None,
    };
    Ok(Some(Value::Node(cx.add(n.out(0), op, &parts)?)))
}

fn softmax(cx: &mut Cx, n: &NodeView) -> Res {
    let s = cx.shape(n.input(0)?).to_vec();
    // Before opset 13 Softmax flattened [axis..] into one dim (default axis 1).
    let legacy = cx.opset < 13;
    let ax = axis(n.int("axis", if legacy { 1 } else { -1 }), s.len())?;
    let inner: usize = s[ax + 1..].iter().product();
    if legacy && inner != 1 {
        let flat = vec![s[..ax].iter().product(), s[ax..].iter().product()];
        let (a, b, c) = (
            format!("{}#2d", n.out(0)),
            format!("{}#softmax", n.out(0)),
            n.out(0),
        );
        let x = cx.emit(&a, Op::Reshape { shape: flat }, &[n.arg(0)?])?;
        let y = cx.emit(&b, Op::Softmax { axis: 1 }, &[(&a, &x)])?;
        return one(cx.emit(c, Op::Reshape { shape: s }, &[(&b, &y)])?);
    }
    // (A constant input is evaluated by `emit`.)
    one(cx.emit(n.out(0), Op::Softmax { axis: ax }, &[n.arg(0)?])?)
}

// ---- vision ops ----------------------------------------------------------------------------

fn rank4(cx: &Cx, v: &Value) -> Result<[usize; 4], String> {
    match *cx.shape(v) {
        [n, c, h, w] => Ok([n, c, h, w]),
        ref s => Err(format!(
            "only 2-D (NCHW) inputs are supported, got shape {s:?}"
        )),
    }
}

/// `[top, left, bottom, right]` from the ONNX attributes `pads`/`auto_pad` of a 2-D window.
fn window_pads(
    n: &NodeView,
    input: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
) -> Result<Pads, String> {
    let auto = n.string("auto_pad", "NOTSET");
    match auto.as_str() {
        "NOTSET" => {
            let p = n.ints("pads").unwrap_or_else(|| vec![0; 4]);
            if p.len() != 4 {
                return Err(format!("pads {p:?} must have 4 values"));
            }
            let p = sizes(&p, "pads", 0)?;
            Ok([p[0], p[1], p[2], p[3]])
        }
        "VALID" => Ok([0; 4]),
        "SAME_UPPER" | "SAME_LOWER" => {
            let mut pads = [0; 4];
            for d in 0..2 {
                let out = input[d].div_ceil(stride[d]);
                let span = dilation[d] * (kernel[d] - 1) + 1;
                let total = (out.saturating_sub(1) * stride[d] + span).saturating_sub(input[d]);
                let (small, big) = (total / 2, total - total / 2);
                // SAME_UPPER puts the odd pixel at the end, SAME_LOWER at the start.
                let (begin, end) = if auto == "SAME_UPPER" {
                    (small, big)
                } else {
                    (big, small)
                };
                pads[d] = begin;
                pads[d + 2] = end;
            }
            Ok(pads)
        }
        other => Err(format!("auto_pad `{other}` is not valid")),
    }
}

fn pair(v: Option<Vec<i64>>, what: &str, default: usize) -> Result<[usize; 2], String> {
    match v {
        None => Ok([default; 2]),
        Some(v) if v.len() == 2 => {
            let s = sizes(&v, what, 1)?;
            Ok([s[0], s[1]])
        }
        Some(v) => Err(format!("{what} {v:?} must have 2 values (2-D only)")),
    }
}

fn conv(cx: &mut Cx, n: &NodeView) -> Res {
    let [_, _, h, w] = rank4(cx, n.input(0)?)?;
    let weight = n.konst(1)?;
    let [m, _, kh, kw] = match *weight.shape {
        [m, c, kh, kw] => [m, c, kh, kw],
        ref s => return Err(format!("weight shape {s:?} is not a 2-D kernel")),
    };
    let kernel = [kh, kw];
    if let Some(k) = n.ints("kernel_shape") {
        if pair(Some(k.clone()), "kernel_shape", 1)? != kernel {
            return Err(format!(
                "kernel_shape {k:?} does not match weight {:?}",
                weight.shape
            ));
        }
    }
    let stride = pair(n.ints("strides"), "strides", 1)?;
    let dilation = pair(n.ints("dilations"), "dilations", 1)?;
    let group = n.int("group", 1);
    if !(1..=MAX_ATTR).contains(&group) || kh == 0 || kw == 0 {
        return Err(format!("group {group} or kernel {kernel:?} is not valid"));
    }
    let pads = window_pads(n, [h, w], kernel, stride, dilation)?;
    let wp = cx.param(n.in_name(1), weight)?;
    let bias = match n.opt_konst(2)? {
        Some(b) => Some(cx.param(n.in_name(2), b)?),
        None => None,
    };
    let op = Op::Conv2d(Conv2d {
        out_channels: m,
        kernel,
        stride,
        dilation,
        pads,
        groups: group as usize,
        weight: wp,
        bias,
        act: None,
    });
    one(cx.emit(n.out(0), op, &[n.arg(0)?])?)
}

fn batch_norm(cx: &mut Cx, n: &NodeView) -> Res {
    if n.int("training_mode", 0) != 0 {
        return Err("training_mode = 1 is not supported (export the model in eval mode)".into());
    }
    let mut p = Vec::new();
    for i in 1..5 {
        p.push(cx.param(n.in_name(i), n.konst(i)?)?);
    }
    let op = Op::BatchNorm(BatchNorm {
        gamma: p[0],
        beta: p[1],
        mean: p[2],
        var: p[3],
        eps: n.float("epsilon", 1e-5),
    });
    one(cx.emit(n.out(0), op, &[n.arg(0)?])?)
}

fn global_average_pool(cx: &mut Cx, n: &NodeView) -> Res {
    rank4(cx, n.input(0)?)?;
    one(cx.emit(n.out(0), Op::GlobalAvgPool, &[n.arg(0)?])?)
}

/// `MaxPool` and `AveragePool`. A `MaxPool` reading a `Pad` with −∞ (TF-'same' max pooling
/// as exporters write it) takes that padding itself: padded cells never win a max, so the
/// result is the same and later stages see one pooling op.
fn pool(cx: &mut Cx, n: &NodeView, max: bool) -> Res {
    let [_, _, h, w] = rank4(cx, n.input(0)?)?;
    let kernel = pair(
        Some(n.ints("kernel_shape").ok_or("needs kernel_shape")?),
        "kernel_shape",
        1,
    )?;
    let stride = pair(n.ints("strides"), "strides", 1)?;
    if pair(n.ints("dilations"), "dilations", 1)? != [1, 1] {
        return Err("dilated pooling is not supported".into());
    }
    let mut pads = window_pads(n, [h, w], kernel, stride, [1, 1])?;
    if n.int("ceil_mode", 0) != 0 {
        // Ceil mode only matters when the last window would start past the floor count.
        for d in 0..2 {
            let padded = [h, w][d] + pads[d] + pads[d + 2];
            if padded < kernel[d] || (padded - kernel[d]) % stride[d] != 0 {
                return Err("ceil_mode = 1 with a partial last window is not supported".into());
            }
        }
    }
    let kind = if max {
        PoolKind::Max
    } else {
        PoolKind::Avg {
            count_include_pad: n.int("count_include_pad", 0) != 0,
        }
    };
    let mut x = n.arg(0)?;
    let merged;
    if let (true, Value::Node(id)) = (max, x.1) {
        if let Op::Pad { pads: p, value } = cx.g.node(*id).op {
            let sum: Pads = std::array::from_fn(|i| pads[i] + p[i]);
            let fits = (0..2).all(|d| sum[d] < kernel[d] && sum[d + 2] < kernel[d]);
            if value == f32::NEG_INFINITY && fits {
                pads = sum;
                merged = Value::Node(cx.g.inputs_of(*id)[0]);
                x = ("", &merged);
            }
        }
    }
    let op = Op::Pool2d(Pool2d {
        kind,
        kernel,
        stride,
        pads,
    });
    one(cx.emit(n.out(0), op, &[x])?)
}

/// `Pad` in constant mode over H and W; pads are an input from opset 11 (attribute before)
/// and may be limited to some axes from opset 18.
fn pad(cx: &mut Cx, n: &NodeView) -> Res {
    let mode = n.string("mode", "constant");
    if mode != "constant" {
        return Err(format!("mode `{mode}` is not supported (only constant)"));
    }
    let x = n.input(0)?;
    let rank = cx.shape(x).len();
    let (raw, value) = if cx.opset >= 11 {
        let raw = n.konst(1)?.ints();
        let value = match n.opt_konst(2)? {
            Some(c) => c.data.to_f64()[0] as f32,
            None => 0.0,
        };
        (raw, value)
    } else {
        (n.ints("pads").unwrap_or_default(), n.float("value", 0.0))
    };
    let ax = match n.opt_konst(3)? {
        Some(c) => axes(&c.ints(), rank)?,
        None => (0..rank).collect(),
    };
    if raw.len() != 2 * ax.len() {
        return Err(format!("pads {raw:?} must have 2 values per padded axis"));
    }
    let mut full = vec![0i64; 2 * rank];
    for (k, &a) in ax.iter().enumerate() {
        full[a] = raw[k];
        full[a + rank] = raw[k + ax.len()];
    }
    if full.iter().all(|&p| p == 0) {
        return one(x.clone());
    }
    if rank != 4 || full[0] != 0 || full[1] != 0 || full[4] != 0 || full[5] != 0 {
        return Err(format!(
            "only padding of H and W of an NCHW tensor is supported, got pads {raw:?}"
        ));
    }
    let p = sizes(&[full[2], full[3], full[6], full[7]], "pads", 0)?;
    let op = Op::Pad {
        pads: [p[0], p[1], p[2], p[3]],
        value,
    };
    one(cx.emit(n.out(0), op, &[n.arg(0)?])?)
}

/// The source pixel ONNX Runtime reads for output pixel `dst` along one axis, computed in
/// f32 as it does.
fn nearest_source(
    dst: usize,
    len_in: usize,
    len_out: usize,
    scale: f32,
    ctm: &str,
    nearest: &str,
) -> Result<usize, String> {
    let x = dst as f32;
    let orig = match ctm {
        "asymmetric" => x / scale,
        "half_pixel" => (x + 0.5) / scale - 0.5,
        "pytorch_half_pixel" if len_out > 1 => (x + 0.5) / scale - 0.5,
        "pytorch_half_pixel" => 0.0,
        "tf_half_pixel_for_nn" => (x + 0.5) / scale,
        "align_corners" if len_out > 1 => x * (len_in as f32 - 1.0) / (len_out as f32 - 1.0),
        "align_corners" => 0.0,
        other => {
            return Err(format!(
                "coordinate_transformation_mode `{other}` is not supported"
            ))
        }
    };
    let idx = match nearest {
        "round_prefer_floor" if orig == orig.floor() + 0.5 => orig.floor(),
        "round_prefer_floor" | "round_prefer_ceil" => orig.round(),
        "floor" => orig.floor(),
        "ceil" => orig.ceil(),
        other => return Err(format!("nearest_mode `{other}` is not supported")),
    };
    Ok((idx.max(0.0) as usize).min(len_in.saturating_sub(1)))
}

/// `Resize` and `Upsample` in nearest mode. The IR's `ResizeNearest` reads pixel
/// `floor(dst·in/out)`; the node maps to it only when its coordinate mode and rounding
/// pick exactly those pixels for these sizes (checked pixel by pixel), else it is rejected.
fn resize(cx: &mut Cx, n: &NodeView) -> Res {
    let [b, c, h, w] = rank4(cx, n.input(0)?)?;
    let upsample = n.op() == "Upsample";
    let mode = n.string("mode", "nearest");
    if mode != "nearest" {
        return Err(format!("mode `{mode}` is not supported (only nearest)"));
    }
    let (ctm, nearest) = if upsample {
        ("asymmetric".to_string(), "floor".to_string())
    } else {
        (
            n.string("coordinate_transformation_mode", "half_pixel"),
            n.string("nearest_mode", "round_prefer_floor"),
        )
    };
    let input = [b, c, h, w];
    // Opset 18 may name the resized axes.
    let ax: Vec<usize> = match n.ints("axes") {
        Some(a) if !upsample => axes(&a, 4)?,
        _ => (0..4).collect(),
    };
    let (scales_in, sizes_in) = if upsample {
        let s = match n.opt_konst(1)? {
            Some(c) => c.data.to_f64().into_iter().map(|v| v as f32).collect(),
            None => n
                .attr("scales")
                .map(|a| a.floats.clone())
                .unwrap_or_default(),
        };
        (Some(s), None)
    } else {
        let scales = n.opt_konst(2)?.map(|c| {
            c.data
                .to_f64()
                .into_iter()
                .map(|v| v as f32)
                .collect::<Vec<f32>>()
        });
        let sizes = n.opt_konst(3)?.map(|c| c.ints());
        (scales, sizes)
    };
    let mut out = input;
    let mut scale = [1f32; 4];
    match (scales_in, sizes_in) {
        (_, Some(sz)) => {
            if sz.len() != ax.len() {
                return Err(format!("sizes {sz:?} do not match axes {ax:?}"));
            }
            if n.string("keep_aspect_ratio_policy", "stretch") != "stretch" {
                return Err("keep_aspect_ratio_policy other than stretch is not supported".into());
            }
            let sz = sizes(&sz, "sizes", 1)?;
            for (k, &a) in ax.iter().enumerate() {
                out[a] = sz[k];
                scale[a] = sz[k] as f32 / input[a] as f32;
            }
        }
        (Some(sc), None) => {
            if sc.len() != ax.len() {
                return Err(format!("scales {sc:?} do not match axes {ax:?}"));
            }
            for (k, &a) in ax.iter().enumerate() {
                let o = (input[a] as f32 * sc[k]).floor();
                if !(sc[k] > 0.0 && o >= 1.0 && o <= MAX_ATTR as f32) {
                    return Err(format!("scales {sc:?} are not usable"));
                }
                out[a] = o as usize;
                scale[a] = sc[k];
            }
        }
        (None, None) => return Err("needs scales or sizes".into()),
    }
    if out[0] != b || out[1] != c {
        return Err("resizing the batch or channel dimension is not supported".into());
    }
    for d in 2..4 {
        for dst in 0..out[d] {
            let src = nearest_source(dst, input[d], out[d], scale[d], &ctm, &nearest)?;
            if src != dst * input[d] / out[d] {
                return Err(format!(
                    "nearest resize {}x{} -> {}x{} with coordinate_transformation_mode `{ctm}` \
                     and nearest_mode `{nearest}` reads pixel {src} for output {dst} (dim {d}); \
                     only the floor(dst·in/out) mapping is supported",
                    h, w, out[2], out[3]
                ));
            }
        }
    }
    let op = Op::ResizeNearest {
        size: [out[2], out[3]],
    };
    one(cx.emit(n.out(0), op, &[n.arg(0)?])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        let names = supported();
        assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
    }

    #[test]
    fn nearest_modes_exporters_use_are_floor_for_integer_upsampling() {
        for (ctm, nm) in [
            ("asymmetric", "floor"),
            ("half_pixel", "round_prefer_floor"),
            ("pytorch_half_pixel", "round_prefer_ceil"),
        ] {
            for dst in 0..16 {
                let src = nearest_source(dst, 8, 16, 2.0, ctm, nm).unwrap();
                assert_eq!(src, dst / 2, "{ctm} {nm} {dst}");
            }
        }
        // align_corners rounding also picks floor(dst/2) for exact 2x upsampling...
        for dst in 0..16 {
            let src = nearest_source(dst, 8, 16, 2.0, "align_corners", "round_prefer_floor");
            assert_eq!(src.unwrap(), dst / 2);
        }
        // ...but not with floor rounding: output 2 reads 2·7/15 = 0.93 -> 0.
        let src = nearest_source(2, 8, 16, 2.0, "align_corners", "floor").unwrap();
        assert_eq!(src, 0);
        // asymmetric with round_prefer_ceil rounds 0.5 up: not floor.
        assert_eq!(
            nearest_source(1, 8, 16, 2.0, "asymmetric", "round_prefer_ceil").unwrap(),
            1
        );
    }
}
