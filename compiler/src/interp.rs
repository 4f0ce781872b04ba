//! The reference interpreter: plain f32 execution of the IR, one op at a time.
//!
//! It is the oracle every later stage (passes, generated code) is checked against, so it
//! favours obviously correct loops over speed. It is still written so that the compiler can
//! vectorize the inner loops (D1 runs in seconds, not minutes), and it frees every
//! intermediate after its last use so the large variants fit in memory.

use std::collections::HashMap;

use crate::ir::{
    Activation, BatchNorm, BinaryOp, Conv2d, Fuse, FusionMethod, Graph, NodeId, Op, Pads, Pool2d,
    PoolKind, ReduceKind, Sampling, SqueezeExcite,
};

/// A dense f32 tensor, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Tensor { shape, data }
    }

    pub fn zeros(shape: &[usize]) -> Self {
        Tensor::new(shape.to_vec(), vec![0.0; shape.iter().product()])
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InterpError {
    #[error("the model takes {expected} input(s), {found} given")]
    InputCount { expected: usize, found: usize },
    #[error("input `{name}` must have shape {expected:?}, got {found:?}")]
    InputShape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("parameter `{0}` has no values bound (give weights)")]
    Unbound(String),
}

/// Runs the graph on `inputs` (in the graph's input order) and returns its outputs by name,
/// in output order.
pub fn run(graph: &Graph, inputs: &[Tensor]) -> Result<Vec<(String, Tensor)>, InterpError> {
    if inputs.len() != graph.inputs.len() {
        return Err(InterpError::InputCount {
            expected: graph.inputs.len(),
            found: inputs.len(),
        });
    }
    if let Some(p) = graph.params.iter().find(|p| p.data.is_none()) {
        return Err(InterpError::Unbound(p.name.clone()));
    }
    let order = graph.topo_order();
    // Remaining uses of each value, so it can be dropped after the last one.
    let mut uses: HashMap<NodeId, usize> = HashMap::new();
    for &id in &order {
        for i in graph.inputs_of(id) {
            *uses.entry(i).or_default() += 1;
        }
    }
    for (_, id) in &graph.outputs {
        *uses.entry(*id).or_default() += 1;
    }

    let mut values: HashMap<NodeId, Tensor> = HashMap::new();
    for (&id, t) in graph.inputs.iter().zip(inputs) {
        let node = graph.node(id);
        if t.shape != node.shape {
            return Err(InterpError::InputShape {
                name: node.name.clone(),
                expected: node.shape.clone(),
                found: t.shape.clone(),
            });
        }
        values.insert(id, t.clone());
    }
    for &id in &order {
        let node = graph.node(id);
        if matches!(node.op, Op::Input) {
            continue;
        }
        let input_ids = graph.inputs_of(id);
        let out = {
            let args: Vec<&Tensor> = input_ids.iter().map(|i| &values[i]).collect();
            eval(graph, &node.op, &args, &node.shape)
        };
        for i in input_ids {
            let left = uses.get_mut(&i).expect("counted above");
            *left -= 1;
            if *left == 0 {
                values.remove(&i);
            }
        }
        values.insert(id, out);
    }
    Ok(graph
        .outputs
        .iter()
        .map(|(name, id)| (name.clone(), values[id].clone()))
        .collect())
}

fn param(graph: &Graph, id: crate::ir::ParamId) -> &[f32] {
    graph
        .param(id)
        .data
        .as_deref()
        .expect("checked bound before running")
}

/// Executes one op. Shapes were checked when the graph was built.
fn eval(graph: &Graph, op: &Op, args: &[&Tensor], out_shape: &[usize]) -> Tensor {
    match op {
        Op::Input => unreachable!("inputs are bound, not evaluated"),
        Op::Constant(p) => Tensor::new(out_shape.to_vec(), param(graph, *p).to_vec()),
        Op::Conv2d(c) => {
            let mut y = conv2d(graph, c, args[0], out_shape);
            // Epilogues, in the order the op defines: activation, then residual.
            if let Some(a) = c.act {
                y = activation(a, &y);
            }
            if let Some(residual) = args.get(1) {
                y = binary(BinaryOp::Add, &y, residual, out_shape);
            }
            y
        }
        Op::BatchNorm(b) => batch_norm(graph, b, args[0]),
        Op::Activation(a) => activation(*a, args[0]),
        Op::Binary(b) => binary(*b, args[0], args[1], out_shape),
        Op::GlobalAvgPool => global_avg_pool(args[0]),
        Op::Pool2d(p) => pool2d(p, args[0], out_shape),
        Op::ResizeNearest { .. } => resize_nearest(args[0], out_shape),
        Op::Pad { pads, value } => pad(args[0], *pads, *value, out_shape),
        Op::WeightedSum { method, weights } => {
            let w = weights.map(|p| param(graph, p));
            weighted_sum(*method, w, args)
        }
        Op::Reshape { shape } => Tensor::new(shape.clone(), args[0].data.clone()),
        Op::Transpose { perm } => transpose(args[0], perm, out_shape),
        Op::Concat { axis } => concat(args, *axis, out_shape),
        Op::Reduce { kind, axes, .. } => reduce(*kind, args[0], axes, out_shape),
        Op::Softmax { axis } => softmax(args[0], *axis),
        Op::SqueezeExcite(se) => squeeze_excite(graph, se, args[0]),
        Op::Fuse(f) => fuse(graph, f, args, out_shape),
    }
}

/// `x · sigmoid(expand(act(reduce(mean(x)))))`, composed from the unfused ops' definitions.
fn squeeze_excite(graph: &Graph, se: &SqueezeExcite, x: &Tensor) -> Tensor {
    let pooled = global_avg_pool(x);
    let (n, c) = (x.shape[0], x.shape[1]);
    let (rw, rb) = (param(graph, se.reduce_weight), param(graph, se.reduce_bias));
    let (ew, eb) = (param(graph, se.expand_weight), param(graph, se.expand_bias));
    let r = rb.len();
    let mut gates = Vec::with_capacity(n * c);
    for b in 0..n {
        let v = &pooled.data[b * c..][..c];
        let hidden: Vec<f32> = (0..r)
            .map(|j| {
                se.act
                    .apply(rb[j] + (0..c).map(|i| rw[j * c + i] * v[i]).sum::<f32>())
            })
            .collect();
        gates.extend((0..c).map(|i| {
            Activation::Sigmoid
                .apply(eb[i] + (0..r).map(|j| ew[i * r + j] * hidden[j]).sum::<f32>())
        }));
    }
    let gate = Tensor::new(vec![n, c, 1, 1], gates);
    binary(BinaryOp::Mul, x, &gate, &x.shape)
}

/// `act(Σ c_i · sample_i(x_i))`, each sampling as the unfused op computes it.
fn fuse(graph: &Graph, f: &Fuse, args: &[&Tensor], out_shape: &[usize]) -> Tensor {
    let coefficients = param(graph, f.coefficients);
    let mut out = Tensor::zeros(out_shape);
    for ((sampling, x), &k) in f.inputs.iter().zip(args).zip(coefficients) {
        let sampled = match sampling {
            Sampling::Identity => (*x).clone(),
            Sampling::Nearest { .. } => resize_nearest(x, out_shape),
            Sampling::MaxPool {
                kernel,
                stride,
                pads,
            } => {
                let p = Pool2d {
                    kind: PoolKind::Max,
                    kernel: *kernel,
                    stride: *stride,
                    pads: *pads,
                };
                pool2d(&p, x, out_shape)
            }
        };
        for (o, v) in out.data.iter_mut().zip(&sampled.data) {
            *o += k * v;
        }
    }
    match f.act {
        Some(a) => activation(a, &out),
        None => out,
    }
}

/// Direct convolution: for each output channel, each input channel of its group and each
/// kernel tap, one shifted multiply-add over the output plane.
fn conv2d(graph: &Graph, c: &Conv2d, x: &Tensor, out_shape: &[usize]) -> Tensor {
    let (n, cin, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (cout, oh, ow) = (out_shape[1], out_shape[2], out_shape[3]);
    let [kh, kw] = c.kernel;
    let cin_g = cin / c.groups;
    let cout_g = cout / c.groups;
    let weight = param(graph, c.weight);
    let bias = c.bias.map(|b| param(graph, b));
    let mut out = Tensor::zeros(out_shape);
    for b in 0..n {
        for co in 0..cout {
            let g = co / cout_g;
            let plane = &mut out.data[((b * cout + co) * oh * ow)..][..oh * ow];
            plane.fill(bias.map_or(0.0, |bias| bias[co]));
            for ci in 0..cin_g {
                let src = &x.data[((b * cin + g * cin_g + ci) * h * w)..][..h * w];
                for ky in 0..kh {
                    for kx in 0..kw {
                        let wv = weight[((co * cin_g + ci) * kh + ky) * kw + kx];
                        let dy = (ky * c.dilation[0]) as isize - c.pads[0] as isize;
                        let dx = (kx * c.dilation[1]) as isize - c.pads[1] as isize;
                        let (ox0, ox1) = valid_range(ow, c.stride[1], dx, w);
                        if ox0 >= ox1 {
                            // This tap only ever reads padding (tiny inputs, e.g. 1×1 at P7).
                            continue;
                        }
                        for oy in 0..oh {
                            let iy = (oy * c.stride[0]) as isize + dy;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            let row = &src[iy as usize * w..][..w];
                            let orow = &mut plane[oy * ow..][..ow];
                            if c.stride[1] == 1 {
                                let start = (ox0 as isize + dx) as usize;
                                for (o, &i) in orow[ox0..ox1].iter_mut().zip(&row[start..]) {
                                    *o += wv * i;
                                }
                            } else {
                                for (ox, o) in orow.iter_mut().enumerate().take(ox1).skip(ox0) {
                                    let ix = (ox * c.stride[1]) as isize + dx;
                                    *o += wv * row[ix as usize];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// The output positions `[lo, hi)` whose input position `o·stride + offset` lies in `0..len`.
fn valid_range(out_len: usize, stride: usize, offset: isize, len: usize) -> (usize, usize) {
    let mut lo = out_len;
    let mut hi = 0;
    for o in 0..out_len {
        let i = (o * stride) as isize + offset;
        if i >= 0 && i < len as isize {
            lo = lo.min(o);
            hi = o + 1;
        }
    }
    if lo >= hi {
        (0, 0)
    } else {
        (lo, hi)
    }
}

fn batch_norm(graph: &Graph, b: &BatchNorm, x: &Tensor) -> Tensor {
    let (gamma, beta) = (param(graph, b.gamma), param(graph, b.beta));
    let (mean, var) = (param(graph, b.mean), param(graph, b.var));
    let c = x.shape[1];
    let inner: usize = x.shape[2..].iter().product();
    let mut out = x.clone();
    for (i, chunk) in out.data.chunks_mut(inner).enumerate() {
        let ch = i % c;
        let scale = gamma[ch] / (var[ch] + b.eps).sqrt();
        for v in chunk {
            *v = (*v - mean[ch]) * scale + beta[ch];
        }
    }
    out
}

fn activation(a: Activation, x: &Tensor) -> Tensor {
    Tensor::new(
        x.shape.clone(),
        x.data.iter().map(|&v| a.apply(v)).collect(),
    )
}

fn binary(op: BinaryOp, a: &Tensor, b: &Tensor, out_shape: &[usize]) -> Tensor {
    if a.shape == b.shape {
        let data = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(&x, &y)| op.apply(x, y))
            .collect();
        return Tensor::new(out_shape.to_vec(), data);
    }
    let sa = broadcast_strides(&a.shape, out_shape);
    let sb = broadcast_strides(&b.shape, out_shape);
    let total: usize = out_shape.iter().product();
    let mut data = Vec::with_capacity(total);
    let mut idx = vec![0usize; out_shape.len()];
    for _ in 0..total {
        let ia: usize = idx.iter().zip(&sa).map(|(i, s)| i * s).sum();
        let ib: usize = idx.iter().zip(&sb).map(|(i, s)| i * s).sum();
        data.push(op.apply(a.data[ia], b.data[ib]));
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < out_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Tensor::new(out_shape.to_vec(), data)
}

/// Strides to read a tensor of `shape` broadcast to `out`: 0 along broadcast dimensions.
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; out.len()];
    let mut stride = 1;
    for (d, &len) in shape.iter().enumerate().rev() {
        let od = d + out.len() - shape.len();
        strides[od] = if len == 1 { 0 } else { stride };
        stride *= len;
    }
    strides
}

fn global_avg_pool(x: &Tensor) -> Tensor {
    let plane = x.shape[2] * x.shape[3];
    let data = x
        .data
        .chunks(plane)
        .map(|c| (c.iter().map(|&v| v as f64).sum::<f64>() / plane as f64) as f32)
        .collect();
    Tensor::new(vec![x.shape[0], x.shape[1], 1, 1], data)
}

fn pool2d(p: &Pool2d, x: &Tensor, out_shape: &[usize]) -> Tensor {
    let (h, w) = (x.shape[2], x.shape[3]);
    let (oh, ow) = (out_shape[2], out_shape[3]);
    let mut out = Tensor::zeros(out_shape);
    for (src, dst) in x.data.chunks(h * w).zip(out.data.chunks_mut(oh * ow)) {
        for oy in 0..oh {
            for ox in 0..ow {
                let (mut acc, mut count) = match p.kind {
                    PoolKind::Max => (f32::NEG_INFINITY, 0usize),
                    PoolKind::Avg { .. } => (0.0, 0),
                };
                for ky in 0..p.kernel[0] {
                    for kx in 0..p.kernel[1] {
                        let iy = (oy * p.stride[0] + ky) as isize - p.pads[0] as isize;
                        let ix = (ox * p.stride[1] + kx) as isize - p.pads[1] as isize;
                        let inside = iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w;
                        if !inside {
                            if let PoolKind::Avg {
                                count_include_pad: true,
                            } = p.kind
                            {
                                // Padding positions beyond the padded frame never count.
                                if iy < (h + p.pads[2]) as isize && ix < (w + p.pads[3]) as isize {
                                    count += 1;
                                }
                            }
                            continue;
                        }
                        let v = src[iy as usize * w + ix as usize];
                        match p.kind {
                            PoolKind::Max => acc = acc.max(v),
                            PoolKind::Avg { .. } => acc += v,
                        }
                        count += 1;
                    }
                }
                dst[oy * ow + ox] = match p.kind {
                    PoolKind::Max => acc,
                    PoolKind::Avg { .. } => acc / count.max(1) as f32,
                };
            }
        }
    }
    out
}

fn resize_nearest(x: &Tensor, out_shape: &[usize]) -> Tensor {
    let (h, w) = (x.shape[2], x.shape[3]);
    let (oh, ow) = (out_shape[2], out_shape[3]);
    let mut out = Tensor::zeros(out_shape);
    for (src, dst) in x.data.chunks(h * w).zip(out.data.chunks_mut(oh * ow)) {
        for oy in 0..oh {
            let iy = oy * h / oh;
            for ox in 0..ow {
                dst[oy * ow + ox] = src[iy * w + ox * w / ow];
            }
        }
    }
    out
}

fn pad(x: &Tensor, pads: Pads, value: f32, out_shape: &[usize]) -> Tensor {
    let (h, w) = (x.shape[2], x.shape[3]);
    let (oh, ow) = (out_shape[2], out_shape[3]);
    let mut out = Tensor::new(out_shape.to_vec(), vec![value; out_shape.iter().product()]);
    for (src, dst) in x.data.chunks(h * w).zip(out.data.chunks_mut(oh * ow)) {
        for y in 0..h {
            dst[(y + pads[0]) * ow + pads[1]..][..w].copy_from_slice(&src[y * w..][..w]);
        }
    }
    out
}

/// The fusion weights a weighted sum applies to its inputs.
pub fn fusion_coefficients(method: FusionMethod, weights: Option<&[f32]>, n: usize) -> Vec<f32> {
    match (method, weights) {
        (FusionMethod::FastAttention { eps }, Some(w)) => {
            let sum: f32 = w.iter().map(|v| v.max(0.0)).sum();
            w.iter().map(|v| v.max(0.0) / (sum + eps)).collect()
        }
        (FusionMethod::Softmax, Some(w)) => {
            let max = w.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = w.iter().map(|v| (v - max).exp()).collect();
            let sum: f32 = e.iter().sum();
            e.iter().map(|v| v / sum).collect()
        }
        _ => vec![1.0; n],
    }
}

fn weighted_sum(method: FusionMethod, weights: Option<&[f32]>, args: &[&Tensor]) -> Tensor {
    let coef = fusion_coefficients(method, weights, args.len());
    let mut out = Tensor::zeros(&args[0].shape);
    for (x, k) in args.iter().zip(coef) {
        for (o, &v) in out.data.iter_mut().zip(&x.data) {
            *o += k * v;
        }
    }
    out
}

/// Row-major strides of a shape.
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// Calls `f(flat_index, multi_index)` for every position of `shape` in row-major order.
fn for_each_index(shape: &[usize], mut f: impl FnMut(usize, &[usize])) {
    let total: usize = shape.iter().product();
    let mut idx = vec![0usize; shape.len()];
    for flat in 0..total {
        f(flat, &idx);
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

fn transpose(x: &Tensor, perm: &[usize], out_shape: &[usize]) -> Tensor {
    let src = strides(&x.shape);
    // Output dim i walks input dim perm[i].
    let walk: Vec<usize> = perm.iter().map(|&p| src[p]).collect();
    let mut data = Vec::with_capacity(x.data.len());
    for_each_index(out_shape, |_, idx| {
        let at: usize = idx.iter().zip(&walk).map(|(i, s)| i * s).sum();
        data.push(x.data[at]);
    });
    Tensor::new(out_shape.to_vec(), data)
}

fn concat(args: &[&Tensor], axis: usize, out_shape: &[usize]) -> Tensor {
    let outer: usize = out_shape[..axis].iter().product();
    let mut data = Vec::with_capacity(out_shape.iter().product());
    for o in 0..outer {
        for x in args {
            let chunk: usize = x.shape[axis..].iter().product();
            data.extend_from_slice(&x.data[o * chunk..][..chunk]);
        }
    }
    Tensor::new(out_shape.to_vec(), data)
}

/// Sums (in f64, like the pools) or averages over `axes`; the output keeps the input's
/// order of the remaining positions whether or not the reduced dims are kept.
fn reduce(kind: ReduceKind, x: &Tensor, axes: &[usize], out_shape: &[usize]) -> Tensor {
    let kept: Vec<usize> = x
        .shape
        .iter()
        .enumerate()
        .map(|(d, &n)| if axes.contains(&d) { 1 } else { n })
        .collect();
    let dst = strides(&kept);
    let mut acc = vec![0f64; kept.iter().product()];
    for_each_index(&x.shape, |flat, idx| {
        let at: usize = idx
            .iter()
            .zip(&dst)
            .enumerate()
            .map(|(d, (i, s))| if axes.contains(&d) { 0 } else { i * s })
            .sum();
        acc[at] += x.data[flat] as f64;
    });
    let count: usize = axes.iter().map(|&a| x.shape[a]).product();
    let data = acc
        .into_iter()
        .map(|v| match kind {
            ReduceKind::Sum => v as f32,
            ReduceKind::Mean => (v / count.max(1) as f64) as f32,
        })
        .collect();
    Tensor::new(out_shape.to_vec(), data)
}

fn softmax(x: &Tensor, axis: usize) -> Tensor {
    let len = x.shape[axis];
    let inner: usize = x.shape[axis + 1..].iter().product();
    let mut out = x.clone();
    if len == 0 || inner == 0 {
        return out;
    }
    for block in out.data.chunks_mut(len * inner) {
        for i in 0..inner {
            let max = (0..len)
                .map(|k| block[k * inner + i])
                .fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for k in 0..len {
                let e = (block[k * inner + i] - max).exp();
                block[k * inner + i] = e;
                sum += e;
            }
            for k in 0..len {
                block[k * inner + i] /= sum;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::ParamRole;
    use std::sync::Arc;

    fn bind(g: &mut Graph, name: &str, shape: &[usize], data: Vec<f32>) -> crate::ir::ParamId {
        let id = g.add_param(name, shape, ParamRole::Learned);
        g.params[id.0].data = Some(Arc::from(data));
        id
    }

    #[test]
    fn conv_with_tf_same_padding_matches_hand_computation() {
        // 1×1×3×3 input 1..9, 2×2 kernel of ones, stride 2, pads (0,0,1,1) (TF 'same').
        let mut g = Graph::new("t");
        let x = g.add_input("x", &[1, 1, 3, 3]);
        let w = bind(&mut g, "w", &[1, 1, 2, 2], vec![1.0; 4]);
        let b = bind(&mut g, "b", &[1], vec![0.5]);
        let conv = Conv2d {
            out_channels: 1,
            kernel: [2, 2],
            stride: [2, 2],
            dilation: [1, 1],
            pads: [0, 0, 1, 1],
            groups: 1,
            weight: w,
            bias: Some(b),
            act: None,
        };
        let c = g.add("c", Op::Conv2d(conv), &[x]).unwrap();
        g.mark_output("y", c);
        let input = Tensor::new(vec![1, 1, 3, 3], (1..=9).map(|v| v as f32).collect());
        let out = run(&g, &[input]).unwrap();
        // Windows: {1,2,4,5}=12, {3,6}=9, {7,8}=15, {9}=9; plus bias.
        assert_eq!(out[0].1.data, vec![12.5, 9.5, 15.5, 9.5]);
    }

    #[test]
    fn max_pool_ignores_padding_and_resize_floors() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", &[1, 1, 2, 2]);
        let pool = Pool2d {
            kind: PoolKind::Max,
            kernel: [3, 3],
            stride: [2, 2],
            pads: [0, 0, 1, 1],
        };
        let p = g.add("p", Op::Pool2d(pool), &[x]).unwrap();
        let r = g
            .add("r", Op::ResizeNearest { size: [3, 2] }, &[x])
            .unwrap();
        g.mark_output("p", p);
        g.mark_output("r", r);
        let input = Tensor::new(vec![1, 1, 2, 2], vec![-4.0, -3.0, -2.0, -1.0]);
        let out = run(&g, &[input]).unwrap();
        assert_eq!(out[0].1.data, vec![-1.0]);
        // Rows 0,0,1 (floor(y·2/3)), columns 0,1.
        assert_eq!(out[1].1.data, vec![-4.0, -3.0, -4.0, -3.0, -2.0, -1.0]);
    }

    #[test]
    fn fast_attention_normalizes_relu_weights() {
        let c = fusion_coefficients(
            FusionMethod::FastAttention { eps: 1e-4 },
            Some(&[1.0, -2.0, 3.0]),
            3,
        );
        assert!((c[0] - 1.0 / 4.0001).abs() < 1e-7);
        assert_eq!(c[1], 0.0);
        assert!((c[2] - 3.0 / 4.0001).abs() < 1e-7);
    }

    fn run1(op: Op, x: Tensor) -> Tensor {
        let mut g = Graph::new("t");
        let i = g.add_input("x", &x.shape);
        let n = g.add("n", op, &[i]).unwrap();
        g.mark_output("y", n);
        run(&g, &[x]).unwrap().remove(0).1
    }

    #[test]
    fn layout_ops() {
        let x = Tensor::new(vec![2, 3], (0..6).map(|v| v as f32).collect());
        let t = run1(Op::Transpose { perm: vec![1, 0] }, x.clone());
        assert_eq!(t.shape, [3, 2]);
        assert_eq!(t.data, [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        let r = run1(
            Op::Reshape {
                shape: vec![3, 1, 2],
            },
            x.clone(),
        );
        assert_eq!((r.shape, r.data), (vec![3, 1, 2], x.data.clone()));

        let mut g = Graph::new("t");
        let a = g.add_input("a", &[2, 1]);
        let b = g.add_input("b", &[2, 2]);
        let c = g.add("c", Op::Concat { axis: 1 }, &[a, b]).unwrap();
        g.mark_output("c", c);
        let out = run(
            &g,
            &[
                Tensor::new(vec![2, 1], vec![1.0, 2.0]),
                Tensor::new(vec![2, 2], vec![3.0, 4.0, 5.0, 6.0]),
            ],
        )
        .unwrap();
        assert_eq!(out[0].1.data, [1.0, 3.0, 4.0, 2.0, 5.0, 6.0]);
    }

    #[test]
    fn reductions_and_softmax() {
        let x = Tensor::new(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let sum = |axes: Vec<usize>, keepdims| Op::Reduce {
            kind: ReduceKind::Sum,
            axes,
            keepdims,
        };
        assert_eq!(run1(sum(vec![0], false), x.clone()).data, [5.0, 7.0, 9.0]);
        let rows = run1(sum(vec![1], true), x.clone());
        assert_eq!((rows.shape, rows.data), (vec![2, 1], vec![6.0, 15.0]));
        let mean = Op::Reduce {
            kind: ReduceKind::Mean,
            axes: vec![0, 1],
            keepdims: false,
        };
        assert_eq!(run1(mean, x.clone()).data, [3.5]);
        let s = run1(Op::Softmax { axis: 0 }, x);
        // Each column: softmax of (a, a+3).
        let lo = 1.0 / (1.0 + 3f32.exp());
        for (v, want) in s
            .data
            .iter()
            .zip([lo, lo, lo, 1.0 - lo, 1.0 - lo, 1.0 - lo])
        {
            assert!((v - want).abs() < 1e-6, "{v} vs {want}");
        }
    }

    #[test]
    fn broadcasting_multiply() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", &[1, 2, 1, 2]);
        let s = g.add_input("s", &[1, 2, 1, 1]);
        let m = g.add("m", Op::Binary(BinaryOp::Mul), &[x, s]).unwrap();
        g.mark_output("m", m);
        let out = run(
            &g,
            &[
                Tensor::new(vec![1, 2, 1, 2], vec![1.0, 2.0, 3.0, 4.0]),
                Tensor::new(vec![1, 2, 1, 1], vec![10.0, 100.0]),
            ],
        )
        .unwrap();
        assert_eq!(out[0].1.data, vec![10.0, 20.0, 300.0, 400.0]);
    }
}
