//! The operators of the IR, their attributes and their shape rules.
//!
//! Every op is defined here once: its attributes, its kind name (used by `inspect`), its
//! shape inference and its multiply-accumulate count. Front ends (spec, ONNX) build ops, the
//! interpreter executes them, passes rewrite them; none of them repeats these rules.
//!
//! Tensors are dense f32 of any rank; the vision ops (conv, pools, resize, pad) expect NCHW.

use super::ParamId;

/// Padding of the two spatial dimensions: `[top, left, bottom, right]`.
pub type Pads = [usize; 4];

/// A pointwise activation function.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// `x · sigmoid(x)` (also called SiLU).
    Swish,
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    Sigmoid,
    /// `min(max(x, min), max)`.
    Clip {
        min: f32,
        max: f32,
    },
    /// `max(0, min(1, alpha·x + beta))`.
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    /// `x · max(0, min(1, x/6 + 1/2))`.
    HardSwish,
}

impl Activation {
    /// Applies the activation to one value; the definition every executor must match.
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Swish => x / (1.0 + (-x).exp()),
            Activation::Relu => x.max(0.0),
            Activation::Relu6 => x.clamp(0.0, 6.0),
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::Clip { min, max } => x.max(min).min(max),
            Activation::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Activation::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
        }
    }

    /// Lower-case name, as written in specs and printed by `inspect`.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Swish => "swish",
            Activation::Relu => "relu",
            Activation::Relu6 => "relu6",
            Activation::Sigmoid => "sigmoid",
            Activation::Clip { .. } => "clip",
            Activation::HardSigmoid { .. } => "hard_sigmoid",
            Activation::HardSwish => "hard_swish",
        }
    }
}

/// An elementwise binary op with numpy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinaryOp {
    #[inline]
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
        }
    }
}

/// A 2-D convolution over NCHW input, weights `[out, in/groups, kh, kw]`.
///
/// Computes `act(conv(x) + bias) + residual`: the activation and the residual (an optional
/// second input of the output's shape) are epilogues that fusion passes attach, so a whole
/// conv → BN → act or project → BN → add chain is one op.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2d {
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    pub pads: Pads,
    pub groups: usize,
    pub weight: ParamId,
    pub bias: Option<ParamId>,
    pub act: Option<Activation>,
}

/// Squeeze-excite as one op: `x · sigmoid(expand(act(reduce(mean_hw(x)))))`, with the two
/// 1×1 convs as matrices (`reduce: [r, c]`, `expand: [c, r]`) and their biases.
#[derive(Clone, Debug, PartialEq)]
pub struct SqueezeExcite {
    pub reduce_weight: ParamId,
    pub reduce_bias: ParamId,
    pub expand_weight: ParamId,
    pub expand_bias: ParamId,
    pub act: Activation,
}

/// How one input of a [`Fuse`] is brought to the output's size.
#[derive(Clone, Debug, PartialEq)]
pub enum Sampling {
    /// Already the output's size.
    Identity,
    /// Nearest-neighbour resize, as [`Op::ResizeNearest`].
    Nearest { size: [usize; 2] },
    /// Max-pool window, as a max [`Pool2d`].
    MaxPool {
        kernel: [usize; 2],
        stride: [usize; 2],
        pads: Pads,
    },
}

/// A BiFPN node's fusion as one op: `act(Σ_i c_i · sample_i(x_i))`, with the coefficients
/// already normalized at compile time (`coefficients: [n]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Fuse {
    pub coefficients: ParamId,
    pub inputs: Vec<Sampling>,
    pub act: Option<Activation>,
}

/// Inference-mode batch normalization over the channel dimension (dim 1).
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm {
    pub gamma: ParamId,
    pub beta: ParamId,
    pub mean: ParamId,
    pub var: ParamId,
    pub eps: f32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    /// Padded positions never win the max (as if they held −∞).
    Max,
    /// Average; padded positions count as zeros only when `count_include_pad`.
    Avg { count_include_pad: bool },
}

/// A 2-D pooling window over NCHW input.
#[derive(Clone, Debug, PartialEq)]
pub struct Pool2d {
    pub kind: PoolKind,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pads: Pads,
}

/// How a weighted fusion combines its inputs (BiFPN nodes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FusionMethod {
    /// `Σ relu(w_i)·x_i / (Σ relu(w_j) + eps)`: EfficientDet's fast normalized fusion.
    FastAttention { eps: f32 },
    /// `Σ softmax(w)_i·x_i`.
    Softmax,
    /// `Σ x_i`, no weights.
    Sum,
}

/// How a reduction combines the values along its axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceKind {
    Sum,
    Mean,
}

/// What an op computes. Attributes only: tensors come in through the graph's edges,
/// learned values through [`ParamId`]s into the graph's parameter table.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A graph input; its shape is given when it is added.
    Input,
    /// A constant tensor held in the parameter table.
    Constant(ParamId),
    Conv2d(Conv2d),
    BatchNorm(BatchNorm),
    Activation(Activation),
    Binary(BinaryOp),
    /// Mean over H and W, keeping them as 1×1.
    GlobalAvgPool,
    Pool2d(Pool2d),
    /// Nearest-neighbour resize of H and W to `size`, source index `floor(dst · in / out)`.
    ResizeNearest {
        size: [usize; 2],
    },
    /// Constant padding of H and W.
    Pad {
        pads: Pads,
        value: f32,
    },
    /// A weighted sum of same-shaped inputs; `weights` holds one raw scalar per input
    /// (absent for [`FusionMethod::Sum`]).
    WeightedSum {
        method: FusionMethod,
        weights: Option<ParamId>,
    },
    /// The same values in row-major order under a new shape of equal size (ONNX Reshape,
    /// Flatten, Squeeze, Unsqueeze: they differ only in how the new shape is written).
    Reshape {
        shape: Vec<usize>,
    },
    /// Permutes the dimensions: output dim `i` is input dim `perm[i]`.
    Transpose {
        perm: Vec<usize>,
    },
    /// Joins its inputs along `axis`; all other dimensions must agree.
    Concat {
        axis: usize,
    },
    /// Sums or averages over `axes` (sorted, distinct), keeping them as size 1 or dropping them.
    Reduce {
        kind: ReduceKind,
        axes: Vec<usize>,
        keepdims: bool,
    },
    /// `exp(x − max) / Σ exp(x − max)` along one axis.
    Softmax {
        axis: usize,
    },
    SqueezeExcite(SqueezeExcite),
    Fuse(Fuse),
}

impl Op {
    /// The name of this op's kind, as counted by `inspect` (`conv`, `batch_norm`, `swish`,
    /// `add`, ...). Activations and binary ops are counted by their function.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Constant(_) => "constant",
            Op::Conv2d(c) if c.groups == 1 => "conv",
            Op::Conv2d(c) if c.groups == c.out_channels => "depthwise_conv",
            Op::Conv2d(_) => "grouped_conv",
            Op::BatchNorm(_) => "batch_norm",
            Op::Activation(a) => a.name(),
            Op::Binary(b) => b.name(),
            Op::GlobalAvgPool => "global_avg_pool",
            Op::Pool2d(Pool2d {
                kind: PoolKind::Max,
                ..
            }) => "max_pool",
            Op::Pool2d(_) => "avg_pool",
            Op::ResizeNearest { .. } => "resize_nearest",
            Op::Pad { .. } => "pad",
            Op::WeightedSum { .. } => "weighted_sum",
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Concat { .. } => "concat",
            Op::Reduce {
                kind: ReduceKind::Sum,
                ..
            } => "reduce_sum",
            Op::Reduce {
                kind: ReduceKind::Mean,
                ..
            } => "reduce_mean",
            Op::Softmax { .. } => "softmax",
            Op::SqueezeExcite(_) => "squeeze_excite",
            Op::Fuse(_) => "fused_sum",
        }
    }

    /// The parameters this op reads, in a fixed order.
    pub fn params(&self) -> Vec<ParamId> {
        match self {
            Op::Constant(p) => vec![*p],
            Op::Conv2d(c) => std::iter::once(c.weight).chain(c.bias).collect(),
            Op::SqueezeExcite(se) => vec![
                se.reduce_weight,
                se.reduce_bias,
                se.expand_weight,
                se.expand_bias,
            ],
            Op::Fuse(f) => vec![f.coefficients],
            Op::BatchNorm(b) => vec![b.gamma, b.beta, b.mean, b.var],
            Op::WeightedSum { weights, .. } => weights.iter().copied().collect(),
            _ => Vec::new(),
        }
    }

    /// Multiply-accumulates of one execution with this output shape (convolutions only);
    /// `None` when the count overflows `u64`.
    pub fn macs(
        &self,
        inputs: &[&[usize]],
        output: &[usize],
        param_shape: &dyn Fn(ParamId) -> Vec<usize>,
    ) -> Option<u64> {
        let product = |dims: &[usize]| {
            dims.iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        };
        match self {
            Op::Conv2d(c) => {
                let cin = inputs.first().map_or(0, |s| s.get(1).copied().unwrap_or(0));
                let per_output = product(&[cin / c.groups.max(1), c.kernel[0], c.kernel[1]])?;
                product(output)?.checked_mul(per_output)
            }
            // The two 1×1 convs on the pooled vector, as counted before fusion.
            Op::SqueezeExcite(se) => {
                let batch = output.first().copied().unwrap_or(0) as u64;
                product(&param_shape(se.reduce_weight))?
                    .checked_mul(batch)?
                    .checked_mul(2)
            }
            _ => Some(0),
        }
    }

    /// How many inputs the op takes (`None`: any number ≥ 1).
    fn arity(&self) -> Option<usize> {
        match self {
            Op::Input | Op::Constant(_) => Some(0),
            Op::Binary(_) => Some(2),
            // Conv2d: the input, then optionally the residual.
            Op::WeightedSum { .. } | Op::Concat { .. } | Op::Fuse(_) | Op::Conv2d(_) => None,
            _ => Some(1),
        }
    }

    /// Infers the output shape from the input shapes and parameter shapes, or says why the
    /// op cannot apply to them.
    pub fn infer_shape(
        &self,
        inputs: &[&[usize]],
        param_shape: &dyn Fn(ParamId) -> Vec<usize>,
    ) -> Result<Vec<usize>, String> {
        match self.arity() {
            Some(n) if inputs.len() != n => {
                return Err(format!("takes {n} input(s), got {}", inputs.len()))
            }
            None if inputs.is_empty() => return Err("takes at least one input".into()),
            _ => {}
        }
        match self {
            Op::Input => Err("graph inputs get their shape when they are added".into()),
            Op::Constant(p) => Ok(param_shape(*p)),
            Op::Conv2d(c) => {
                if inputs.len() > 2 {
                    return Err(format!(
                        "takes an input and an optional residual, got {} inputs",
                        inputs.len()
                    ));
                }
                let [n, cin, h, w] = nchw(inputs[0])?;
                if c.groups == 0 || cin % c.groups != 0 || c.out_channels % c.groups != 0 {
                    return Err(format!(
                        "{} groups do not divide {cin} input and {} output channels",
                        c.groups, c.out_channels
                    ));
                }
                let expected = vec![c.out_channels, cin / c.groups, c.kernel[0], c.kernel[1]];
                let found = param_shape(c.weight);
                if found != expected {
                    return Err(format!(
                        "weight shape {found:?} does not match expected {expected:?}"
                    ));
                }
                if let Some(b) = c.bias {
                    let found = param_shape(b);
                    if found != [c.out_channels] {
                        return Err(format!(
                            "bias shape {found:?} does not match expected [{}]",
                            c.out_channels
                        ));
                    }
                }
                let (oh, ow) = window_out([h, w], c.kernel, c.stride, c.dilation, c.pads)?;
                let out = vec![n, c.out_channels, oh, ow];
                if let Some(residual) = inputs.get(1) {
                    if *residual != out.as_slice() {
                        return Err(format!(
                            "residual shape {residual:?} differs from the output {out:?}"
                        ));
                    }
                }
                Ok(out)
            }
            Op::BatchNorm(b) => {
                let s = inputs[0];
                if s.len() < 2 {
                    return Err(format!("needs a channel dimension, input is {s:?}"));
                }
                for p in [b.gamma, b.beta, b.mean, b.var] {
                    let found = param_shape(p);
                    if found != [s[1]] {
                        return Err(format!(
                            "parameter shape {found:?} does not match [{}] channels",
                            s[1]
                        ));
                    }
                }
                Ok(s.to_vec())
            }
            Op::Activation(_) => Ok(inputs[0].to_vec()),
            Op::SqueezeExcite(se) => {
                let [_, c, _, _] = nchw(inputs[0])?;
                let r = param_shape(se.reduce_weight);
                let ok = r.len() == 2
                    && r[1] == c
                    && param_shape(se.reduce_bias) == [r[0]]
                    && param_shape(se.expand_weight) == [c, r[0]]
                    && param_shape(se.expand_bias) == [c];
                if !ok {
                    return Err(format!(
                        "parameters do not fit {c} channels (reduce weight {r:?})"
                    ));
                }
                Ok(inputs[0].to_vec())
            }
            Op::Fuse(f) => {
                if f.inputs.len() != inputs.len() {
                    return Err(format!(
                        "{} samplings for {} inputs",
                        f.inputs.len(),
                        inputs.len()
                    ));
                }
                if param_shape(f.coefficients) != [inputs.len()] {
                    return Err(format!("coefficients do not match {} inputs", inputs.len()));
                }
                let mut shape: Option<Vec<usize>> = None;
                for (sampling, input) in f.inputs.iter().zip(inputs) {
                    let [n, c, h, w] = nchw(input)?;
                    let sampled = match sampling {
                        Sampling::Identity => vec![n, c, h, w],
                        Sampling::Nearest { size } => vec![n, c, size[0], size[1]],
                        Sampling::MaxPool {
                            kernel,
                            stride,
                            pads,
                        } => {
                            let (oh, ow) = window_out([h, w], *kernel, *stride, [1, 1], *pads)?;
                            vec![n, c, oh, ow]
                        }
                    };
                    match &shape {
                        None => shape = Some(sampled),
                        Some(s) if *s != sampled => {
                            return Err(format!("sampled inputs disagree: {s:?} and {sampled:?}"))
                        }
                        Some(_) => {}
                    }
                }
                shape.ok_or_else(|| "takes at least one input".into())
            }
            Op::Binary(_) => broadcast(inputs[0], inputs[1]),
            Op::GlobalAvgPool => {
                let [n, c, _, _] = nchw(inputs[0])?;
                Ok(vec![n, c, 1, 1])
            }
            Op::Pool2d(p) => {
                let [n, c, h, w] = nchw(inputs[0])?;
                if p.pads[0] > p.kernel[0] || p.pads[1] > p.kernel[1] {
                    return Err("padding larger than the window".into());
                }
                let (oh, ow) = window_out([h, w], p.kernel, p.stride, [1, 1], p.pads)?;
                Ok(vec![n, c, oh, ow])
            }
            Op::ResizeNearest { size } => {
                let [n, c, _, _] = nchw(inputs[0])?;
                if size.contains(&0) {
                    return Err(format!("target size {size:?} has a zero"));
                }
                Ok(vec![n, c, size[0], size[1]])
            }
            Op::Pad { pads, .. } => {
                let [n, c, h, w] = nchw(inputs[0])?;
                Ok(vec![n, c, h + pads[0] + pads[2], w + pads[1] + pads[3]])
            }
            Op::WeightedSum { method, weights } => {
                let first = inputs[0];
                if let Some(other) = inputs.iter().find(|s| *s != &first) {
                    return Err(format!(
                        "inputs must have one shape, got {first:?} and {other:?}"
                    ));
                }
                match (method, weights) {
                    (FusionMethod::Sum, None) => {}
                    (FusionMethod::Sum, Some(_)) => return Err("a plain sum has no weights".into()),
                    (_, None) => return Err("a weighted fusion needs its weights".into()),
                    (_, Some(p)) => {
                        let found = param_shape(*p);
                        if found != [inputs.len()] {
                            return Err(format!(
                                "weights shape {found:?} does not match [{}] inputs",
                                inputs.len()
                            ));
                        }
                    }
                }
                Ok(first.to_vec())
            }
            Op::Reshape { shape } => {
                let (from, to) = (numel(inputs[0])?, numel(shape)?);
                if from != to {
                    return Err(format!(
                        "cannot reshape {:?} ({from} values) to {shape:?} ({to} values)",
                        inputs[0]
                    ));
                }
                Ok(shape.clone())
            }
            Op::Transpose { perm } => {
                let s = inputs[0];
                let mut seen = vec![false; s.len()];
                if perm.len() != s.len()
                    || perm
                        .iter()
                        .any(|&p| p >= s.len() || std::mem::replace(&mut seen[p], true))
                {
                    return Err(format!(
                        "{perm:?} is not a permutation of the dims of {s:?}"
                    ));
                }
                Ok(perm.iter().map(|&p| s[p]).collect())
            }
            Op::Concat { axis } => {
                let first = inputs[0];
                if *axis >= first.len() {
                    return Err(format!("axis {axis} is out of range for {first:?}"));
                }
                let mut out = first.to_vec();
                for s in &inputs[1..] {
                    let agree = s.len() == first.len()
                        && (0..s.len()).all(|d| d == *axis || s[d] == first[d]);
                    if !agree {
                        return Err(format!("cannot join {first:?} and {s:?} along axis {axis}"));
                    }
                    out[*axis] += s[*axis];
                }
                Ok(out)
            }
            Op::Reduce { axes, keepdims, .. } => {
                let s = inputs[0];
                if axes.is_empty()
                    || axes.windows(2).any(|w| w[0] >= w[1])
                    || axes.iter().any(|&a| a >= s.len())
                {
                    return Err(format!(
                        "axes {axes:?} must be sorted, distinct and within the dims of {s:?}"
                    ));
                }
                Ok(s.iter()
                    .enumerate()
                    .filter_map(|(d, &n)| match axes.contains(&d) {
                        false => Some(n),
                        true if *keepdims => Some(1),
                        true => None,
                    })
                    .collect())
            }
            Op::Softmax { axis } => {
                if *axis >= inputs[0].len() {
                    return Err(format!("axis {axis} is out of range for {:?}", inputs[0]));
                }
                Ok(inputs[0].to_vec())
            }
        }
    }
}

/// The number of elements of a shape, or an error when it does not fit in memory's index type.
fn numel(s: &[usize]) -> Result<usize, String> {
    s.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {s:?} has too many elements"))
}

fn nchw(s: &[usize]) -> Result<[usize; 4], String> {
    match *s {
        [n, c, h, w] => Ok([n, c, h, w]),
        _ => Err(format!("expects an NCHW (rank 4) input, got {s:?}")),
    }
}

/// Output size of a sliding window: `floor((in + pads − dilation·(k−1) − 1) / stride) + 1`.
fn window_out(
    input: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    pads: Pads,
) -> Result<(usize, usize), String> {
    let mut out = [0; 2];
    for d in 0..2 {
        if kernel[d] == 0 || stride[d] == 0 || dilation[d] == 0 {
            return Err(format!(
                "kernel {kernel:?}, stride {stride:?} and dilation {dilation:?} must be positive"
            ));
        }
        let padded = input[d] + pads[d] + pads[d + 2];
        let span = dilation[d] * (kernel[d] - 1) + 1;
        if padded < span {
            return Err(format!(
                "window {kernel:?} does not fit the padded input {}x{}",
                input[0] + pads[0] + pads[2],
                input[1] + pads[1] + pads[3]
            ));
        }
        out[d] = (padded - span) / stride[d] + 1;
    }
    Ok((out[0], out[1]))
}

/// Numpy broadcasting of two shapes.
pub fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| (i + s.len()).checked_sub(rank).map_or(1, |j| s[j]);
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        })
        .collect()
}

/// TF 'SAME' padding of one dimension: `(before, after)` so that `out = ceil(in / stride)`,
/// with the odd pixel after.
pub fn tf_same_pad(input: usize, kernel: usize, stride: usize, dilation: usize) -> (usize, usize) {
    let out = input.div_ceil(stride);
    let span = dilation * (kernel - 1) + 1;
    let total = ((out - 1) * stride + span).saturating_sub(input);
    (total / 2, total - total / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf_same_matches_reference_examples() {
        // Reference §2.7: stride 2 on an even input pads (0, 1) for k3 and (1, 2) for k5.
        assert_eq!(tf_same_pad(512, 3, 2, 1), (0, 1));
        assert_eq!(tf_same_pad(128, 5, 2, 1), (1, 2));
        assert_eq!(tf_same_pad(64, 3, 1, 1), (1, 1));
        // Odd input, stride 2: out = ceil(5/2) = 3, total = 2·2 + 3 − 5 = 2.
        assert_eq!(tf_same_pad(5, 3, 2, 1), (1, 1));
    }

    #[test]
    fn broadcasting() {
        assert_eq!(
            broadcast(&[1, 8, 4, 4], &[1, 8, 1, 1]).unwrap(),
            [1, 8, 4, 4]
        );
        assert_eq!(broadcast(&[3], &[2, 1]).unwrap(), [2, 3]);
        assert!(broadcast(&[2, 3], &[4]).is_err());
    }

    #[test]
    fn layout_ops_infer_shapes() {
        let none = |_: ParamId| Vec::new();
        let reshape = Op::Reshape { shape: vec![2, 6] };
        assert_eq!(reshape.infer_shape(&[&[1, 3, 4]], &none).unwrap(), [2, 6]);
        assert!(reshape.infer_shape(&[&[1, 3, 5]], &none).is_err());
        let t = Op::Transpose {
            perm: vec![0, 2, 3, 1],
        };
        assert_eq!(
            t.infer_shape(&[&[1, 8, 4, 5]], &none).unwrap(),
            [1, 4, 5, 8]
        );
        let dup = Op::Transpose {
            perm: vec![0, 0, 1],
        };
        assert!(dup.infer_shape(&[&[1, 2, 3]], &none).is_err());
        let cat = Op::Concat { axis: 1 };
        assert_eq!(
            cat.infer_shape(&[&[1, 2, 4], &[1, 3, 4]], &none).unwrap(),
            [1, 5, 4]
        );
        assert!(cat.infer_shape(&[&[1, 2, 4], &[1, 3, 5]], &none).is_err());
        let sum = Op::Reduce {
            kind: ReduceKind::Sum,
            axes: vec![2, 3],
            keepdims: false,
        };
        assert_eq!(sum.infer_shape(&[&[1, 8, 4, 5]], &none).unwrap(), [1, 8]);
        let bad = Op::Reduce {
            kind: ReduceKind::Mean,
            axes: vec![3, 2],
            keepdims: true,
        };
        assert!(bad.infer_shape(&[&[1, 8, 4, 5]], &none).is_err());
        assert_eq!(sum.kind(), "reduce_sum");
        assert!(Op::Softmax { axis: 2 }
            .infer_shape(&[&[1, 2]], &none)
            .is_err());
    }

    #[test]
    fn activations() {
        assert!((Activation::Swish.apply(1.0) - 0.731_058_6).abs() < 1e-6);
        assert_eq!(Activation::Relu6.apply(7.0), 6.0);
        assert_eq!(Activation::HardSwish.apply(-4.0), 0.0);
    }
}
