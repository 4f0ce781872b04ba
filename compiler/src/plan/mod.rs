//! The execution plan: the graph as a sequence of kernel calls over one arena.
//!
//! [`Plan::build`] picks a kernel for every op (the specialization: a 1×1 conv becomes a
//! register-tiled GEMM, a depthwise conv its own kernel, ...), plans the arena with a
//! [`memory::Planner`], and lays out the packed weights. The code generator only prints it.

mod expand_depthwise;
mod fuse_depthwise;
pub mod memory;
pub mod segments;
mod separable;

use std::collections::{BTreeMap, HashMap};

use crate::ir::{
    Activation, BinaryOp, FusionMethod, Graph, NodeId, Op, Pads, ParamId, PoolKind, ReduceKind,
    Sampling,
};
use memory::{Buffer, GreedyBySize, Planner};
pub use segments::{block_key, Segment};

/// Every tensor starts on a 64-byte boundary.
pub const ALIGN: usize = 16;

/// A 1×1 conv's blocking chosen by `--tune`: the runtime kernel's own description.
pub use crate::kernels::conv1x1::Tuning;
/// How one input of a fused BiFPN sum is sampled (sizes are the input's): the runtime
/// kernel's own description, so the plan and the kernel cannot drift apart.
pub use crate::kernels::fuse::Sample;

/// The kernel a step calls, with every shape constant it needs.
#[derive(Clone, Debug, PartialEq)]
pub enum Kernel {
    /// 1×1, stride 1, no padding, dense; optional residual as the second input. Runs the
    /// whole batch of `n` images in one call (each thread's weights read once).
    Conv1x1 {
        n: usize,
        cin: usize,
        cout: usize,
        hw: usize,
        act: Option<Activation>,
        /// Writes its output channels-last (`[n][hw][cout]`) for the NCHW → NHWC transpose
        /// that is its only reader, which becomes a view (set by the memory planner).
        nhwc: bool,
        /// Its second input is a squeeze-excite's gates (one per input channel), which
        /// scale its input channels as it copies each block of them; a residual comes third.
        gated: bool,
        /// The blocking `effdetc build --tune` (or `--tuning FILE`) chose for this shape;
        /// `None`: the kernel's fixed rule (`tune.rs`).
        tuning: Option<Tuning>,
    },
    /// With `expand`, the 1×1 conv before it (an MBConv's expand conv, or a separable
    /// conv's pointwise before the next one's depthwise) runs inside it band by band: its
    /// input is then that conv's input and its weights come
    /// after that conv's (`plan/expand_depthwise.rs`). With `sum`, the BiFPN input fusion
    /// before it runs inside it tile by tile of channels: its inputs are then the fusion's
    /// and the coefficients come first (`plan/fuse_depthwise.rs`). With `project`, it feeds
    /// the 1×1 conv after it band by band (a separable conv): the step's output and
    /// residual input are that conv's, and its weights come last (`plan/separable.rs`).
    Depthwise {
        c: usize,
        h: usize,
        w: usize,
        k: usize,
        stride: usize,
        pads: Pads,
        act: Option<Activation>,
        expand: Option<Expand>,
        sum: Option<FusedSum>,
        project: Option<Project>,
    },
    Dense {
        cin: usize,
        cout: usize,
        h: usize,
        w: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        pads: Pads,
        act: Option<Activation>,
    },
    /// Any other convolution (groups, dilation, residual on a non-1×1 conv).
    ConvGeneric {
        cin: usize,
        cout: usize,
        groups: usize,
        h: usize,
        w: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
        pads: Pads,
        act: Option<Activation>,
        bias: bool,
    },
    /// In place on its output region (which holds, or first receives a copy of, the input);
    /// with `gates_only`, writes just the `c` gates (its reader, a 1×1 conv, applies them).
    SqueezeExcite {
        c: usize,
        hw: usize,
        r: usize,
        act: Activation,
        gates_only: bool,
    },
    Fuse {
        c: usize,
        oh: usize,
        ow: usize,
        samples: Vec<Sample>,
        act: Option<Activation>,
    },
    BatchNorm {
        c: usize,
        hw: usize,
        eps: f32,
    },
    Activation {
        act: Activation,
        len: usize,
    },
    Binary {
        op: BinaryOp,
        a: Vec<usize>,
        b: Vec<usize>,
        y: Vec<usize>,
    },
    GlobalAvgPool {
        c: usize,
        hw: usize,
    },
    Pool {
        kind: PoolKind,
        c: usize,
        h: usize,
        w: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        pads: Pads,
    },
    Resize {
        c: usize,
        h: usize,
        w: usize,
        oh: usize,
        ow: usize,
    },
    Pad {
        c: usize,
        h: usize,
        w: usize,
        pads: Pads,
        value: f32,
    },
    WeightedSum {
        method: FusionMethod,
        n: usize,
    },
    /// Same values, new shape.
    Copy,
    /// Nothing to do: the output already sits where the kernel would have put it (a reshape
    /// whose output is its input's bytes, a concat whose inputs were written side by side
    /// in its output). Set by the memory planner.
    View,
    Transpose {
        shape: Vec<usize>,
        perm: Vec<usize>,
    },
    Concat {
        shapes: Vec<Vec<usize>>,
        axis: usize,
    },
    Reduce {
        kind: ReduceKind,
        shape: Vec<usize>,
        axes: Vec<usize>,
    },
    Softmax {
        shape: Vec<usize>,
        axis: usize,
    },
    /// Copies a constant from the weights into the arena.
    Constant,
}

/// How a parameter is stored in the packed weights.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Packing {
    /// As-is, row-major.
    Raw(ParamId),
    /// 1×1 conv weights `[cout, cin]` in the GEMM kernel's panel layout.
    Conv1x1 {
        param: ParamId,
        cout: usize,
        cin: usize,
    },
    /// `len` zeros (a bias a conv does not have).
    Zeros(usize),
}

/// One array in the packed weights.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightEntry {
    pub packing: Packing,
    pub offset: usize,
    pub len: usize,
}

/// A region of the arena.
#[derive(Clone, Debug, PartialEq)]
pub struct Slot {
    pub offset: usize,
    /// Floats the region holds: the whole tensor, or one image of it when `per_image`.
    pub len: usize,
    pub shape: Vec<usize>,
    /// Made and used only inside one image-major run of segments: the region holds one
    /// image at a time, reused by the next image's pass (see [`Segment::image_major`]).
    pub per_image: bool,
}

/// A 1×1 conv run inside the depthwise conv that reads it ([`Kernel::Depthwise`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Expand {
    /// Its input channels (its output channels are the depthwise conv's).
    pub cin: usize,
    pub act: Option<Activation>,
}

/// A BiFPN input fusion run inside the depthwise conv that reads it ([`Kernel::Depthwise`]):
/// how each of its inputs is sampled, and its activation.
#[derive(Clone, Debug, PartialEq)]
pub struct FusedSum {
    pub samples: Vec<Sample>,
    pub act: Option<Activation>,
}

/// The 1×1 conv a depthwise conv feeds band by band ([`Kernel::Depthwise`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Project {
    /// Its output channels (its input channels are the depthwise conv's).
    pub cout: usize,
    pub act: Option<Activation>,
    /// It adds a residual: the step's second input.
    pub residual: bool,
}

/// One kernel call.
#[derive(Clone, Debug)]
pub struct Step {
    pub name: String,
    pub kernel: Kernel,
    /// Slots read, in the kernel's input order.
    pub inputs: Vec<usize>,
    /// Slot written.
    pub output: usize,
    /// Weight entries read, in the kernel's order.
    pub weights: Vec<usize>,
    /// The kernel describes one image and runs once per image of the batch, on the
    /// `1/images` part of every input and of the output (per-image NCHW kernels); 1 for
    /// kernels that take the whole tensor (shapes with the batch, elementwise, 1×1 convs).
    pub images: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("model `{model}` has {found} inputs; a compiled model takes exactly one image tensor")]
    Inputs { model: String, found: usize },
    #[error("node `{node}`: {message}")]
    Unsupported { node: String, message: String },
}

/// The whole schedule of a model.
#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    pub steps: Vec<Step>,
    pub slots: Vec<Slot>,
    /// The slot the caller's input is copied into.
    pub input: usize,
    /// Images per forward pass: the input's first dimension.
    pub batch: usize,
    pub outputs: Vec<(String, usize)>,
    /// The steps in order, cut into the functions the code generator prints.
    pub segments: Vec<Segment>,
    pub arena_len: usize,
    pub weights: Vec<WeightEntry>,
    pub weights_len: usize,
}

impl Plan {
    /// Plans `graph` (after whatever passes the caller ran).
    pub fn build(graph: &Graph) -> Result<Plan, PlanError> {
        let planner = GreedyBySize { align: ALIGN };
        if graph.inputs.len() != 1 {
            return Err(PlanError::Inputs {
                model: graph.name.clone(),
                found: graph.inputs.len(),
            });
        }
        let input_node = graph.inputs[0];
        let input_shape = graph.node(input_node).shape.clone();
        let batch = input_shape.first().copied().unwrap_or(1);
        let order = graph.topo_order();
        let mut slot_of: HashMap<NodeId, usize> = HashMap::new();
        let mut slots: Vec<Slot> = Vec::new();
        let new_slot = |shape: &[usize], slots: &mut Vec<Slot>| {
            slots.push(Slot {
                offset: 0,
                len: shape.iter().product(),
                shape: shape.to_vec(),
                per_image: false,
            });
            slots.len() - 1
        };
        let input = new_slot(&input_shape, &mut slots);
        slot_of.insert(input_node, input);

        let mut weights: Vec<WeightEntry> = Vec::new();
        let mut weight_index: BTreeMap<Packing, usize> = BTreeMap::new();
        let mut weights_len = 0usize;
        let mut weight = |packing: Packing, len: usize| -> usize {
            *weight_index.entry(packing.clone()).or_insert_with(|| {
                weights.push(WeightEntry {
                    packing,
                    offset: weights_len,
                    len,
                });
                weights_len += len.div_ceil(ALIGN) * ALIGN;
                weights.len() - 1
            })
        };
        let plen = |p: ParamId| graph.param(p).len();

        let mut steps = Vec::new();
        for &id in &order {
            let node = graph.node(id);
            if matches!(node.op, Op::Input) {
                continue;
            }
            let ins = graph.inputs_of(id);
            let in_shapes: Vec<&[usize]> = ins
                .iter()
                .map(|&i| graph.node(i).shape.as_slice())
                .collect();
            let out = &node.shape;
            let unsupported = |message: String| PlanError::Unsupported {
                node: node.name.clone(),
                message,
            };
            // A per-image NCHW kernel: 4-D tensors whose first dimension is the image count
            // (which becomes the step's `images`).
            let need4 = |s: &[usize]| {
                if s.len() == 4 && s[0] > 0 {
                    Ok(s[0])
                } else {
                    Err(unsupported(format!("needs an NCHW tensor, got {s:?}")))
                }
            };
            let mut images = 1;
            let mut step_weights = Vec::new();
            let kernel = match &node.op {
                Op::Input => unreachable!(),
                Op::Constant(p) => {
                    step_weights.push(weight(Packing::Raw(*p), plen(*p)));
                    Kernel::Constant
                }
                Op::Conv2d(c) => {
                    images = need4(in_shapes[0])?;
                    let [_, cin, h, w] = [
                        in_shapes[0][0],
                        in_shapes[0][1],
                        in_shapes[0][2],
                        in_shapes[0][3],
                    ];
                    let cout = c.out_channels;
                    let residual = ins.len() == 2;
                    let bias_len = cout;
                    let bias = |weight: &mut dyn FnMut(Packing, usize) -> usize| match c.bias {
                        Some(b) => weight(Packing::Raw(b), bias_len),
                        None => weight(Packing::Zeros(bias_len), bias_len),
                    };
                    let pointwise = c.groups == 1
                        && c.kernel == [1, 1]
                        && c.stride == [1, 1]
                        && c.pads == [0; 4]
                        && c.dilation == [1, 1];
                    let depthwise = c.groups == cin
                        && cout == cin
                        && c.kernel[0] == c.kernel[1]
                        && c.stride[0] == c.stride[1]
                        && c.dilation == [1, 1]
                        && !residual;
                    if pointwise {
                        step_weights.push(weight(
                            Packing::Conv1x1 {
                                param: c.weight,
                                cout,
                                cin,
                            },
                            crate::kernels::conv1x1::packed_len(cout, cin),
                        ));
                        step_weights.push(bias(&mut weight));
                        let n = std::mem::replace(&mut images, 1);
                        Kernel::Conv1x1 {
                            n,
                            cin,
                            cout,
                            hw: h * w,
                            act: c.act,
                            nhwc: false,
                            gated: false,
                            tuning: None,
                        }
                    } else if depthwise {
                        step_weights.push(weight(Packing::Raw(c.weight), plen(c.weight)));
                        step_weights.push(bias(&mut weight));
                        Kernel::Depthwise {
                            c: cin,
                            h,
                            w,
                            k: c.kernel[0],
                            stride: c.stride[0],
                            pads: c.pads,
                            act: c.act,
                            expand: None,
                            sum: None,
                            project: None,
                        }
                    } else if c.groups == 1 && c.dilation == [1, 1] && !residual {
                        step_weights.push(weight(Packing::Raw(c.weight), plen(c.weight)));
                        step_weights.push(bias(&mut weight));
                        Kernel::Dense {
                            cin,
                            cout,
                            h,
                            w,
                            kernel: c.kernel,
                            stride: c.stride,
                            pads: c.pads,
                            act: c.act,
                        }
                    } else {
                        step_weights.push(weight(Packing::Raw(c.weight), plen(c.weight)));
                        if let Some(b) = c.bias {
                            step_weights.push(weight(Packing::Raw(b), cout));
                        }
                        Kernel::ConvGeneric {
                            cin,
                            cout,
                            groups: c.groups,
                            h,
                            w,
                            kernel: c.kernel,
                            stride: c.stride,
                            dilation: c.dilation,
                            pads: c.pads,
                            act: c.act,
                            bias: c.bias.is_some(),
                        }
                    }
                }
                Op::SqueezeExcite(se) => {
                    images = need4(out)?;
                    for p in [
                        se.reduce_weight,
                        se.reduce_bias,
                        se.expand_weight,
                        se.expand_bias,
                    ] {
                        step_weights.push(weight(Packing::Raw(p), plen(p)));
                    }
                    Kernel::SqueezeExcite {
                        c: out[1],
                        hw: out[2] * out[3],
                        r: plen(se.reduce_bias),
                        act: se.act,
                        gates_only: false,
                    }
                }
                Op::Fuse(f) => {
                    images = need4(out)?;
                    step_weights.push(weight(Packing::Raw(f.coefficients), plen(f.coefficients)));
                    let samples = f
                        .inputs
                        .iter()
                        .zip(&in_shapes)
                        .map(|(s, shape)| match s {
                            Sampling::Identity => Sample::Identity,
                            Sampling::Nearest { .. } => Sample::Nearest {
                                h: shape[2],
                                w: shape[3],
                            },
                            Sampling::MaxPool {
                                kernel,
                                stride,
                                pads,
                            } => Sample::MaxPool {
                                h: shape[2],
                                w: shape[3],
                                kernel: *kernel,
                                stride: *stride,
                                pads: *pads,
                            },
                        })
                        .collect();
                    Kernel::Fuse {
                        c: out[1],
                        oh: out[2],
                        ow: out[3],
                        samples,
                        act: f.act,
                    }
                }
                Op::BatchNorm(b) => {
                    for p in [b.gamma, b.beta, b.mean, b.var] {
                        step_weights.push(weight(Packing::Raw(p), plen(p)));
                    }
                    Kernel::BatchNorm {
                        c: out[1],
                        hw: out[2..].iter().product(),
                        eps: b.eps,
                    }
                }
                Op::Activation(a) => Kernel::Activation {
                    act: *a,
                    len: out.iter().product(),
                },
                Op::Binary(b) => Kernel::Binary {
                    op: *b,
                    a: in_shapes[0].to_vec(),
                    b: in_shapes[1].to_vec(),
                    y: out.clone(),
                },
                Op::GlobalAvgPool => {
                    images = need4(in_shapes[0])?;
                    Kernel::GlobalAvgPool {
                        c: out[1],
                        hw: in_shapes[0][2] * in_shapes[0][3],
                    }
                }
                Op::Pool2d(p) => {
                    images = need4(in_shapes[0])?;
                    Kernel::Pool {
                        kind: p.kind,
                        c: out[1],
                        h: in_shapes[0][2],
                        w: in_shapes[0][3],
                        kernel: p.kernel,
                        stride: p.stride,
                        pads: p.pads,
                    }
                }
                Op::ResizeNearest { size } => {
                    images = need4(in_shapes[0])?;
                    Kernel::Resize {
                        c: out[1],
                        h: in_shapes[0][2],
                        w: in_shapes[0][3],
                        oh: size[0],
                        ow: size[1],
                    }
                }
                Op::Pad { pads, value } => {
                    images = need4(in_shapes[0])?;
                    Kernel::Pad {
                        c: out[1],
                        h: in_shapes[0][2],
                        w: in_shapes[0][3],
                        pads: *pads,
                        value: *value,
                    }
                }
                Op::WeightedSum { method, weights: w } => {
                    if let Some(p) = w {
                        step_weights.push(weight(Packing::Raw(*p), plen(*p)));
                    }
                    Kernel::WeightedSum {
                        method: *method,
                        n: ins.len(),
                    }
                }
                Op::Reshape { .. } => Kernel::Copy,
                Op::Transpose { perm } => Kernel::Transpose {
                    shape: in_shapes[0].to_vec(),
                    perm: perm.clone(),
                },
                Op::Concat { axis } => Kernel::Concat {
                    shapes: in_shapes.iter().map(|s| s.to_vec()).collect(),
                    axis: *axis,
                },
                Op::Reduce { kind, axes, .. } => Kernel::Reduce {
                    kind: *kind,
                    shape: in_shapes[0].to_vec(),
                    axes: axes.clone(),
                },
                Op::Softmax { axis } => Kernel::Softmax {
                    shape: in_shapes[0].to_vec(),
                    axis: *axis,
                },
            };
            let output = new_slot(out, &mut slots);
            slot_of.insert(id, output);
            steps.push(Step {
                name: node.name.clone(),
                kernel,
                inputs: ins.iter().map(|i| slot_of[i]).collect(),
                output,
                weights: step_weights,
                images,
            });
        }
        let outputs: Vec<(String, usize)> = graph
            .outputs
            .iter()
            .map(|(n, id)| (n.clone(), slot_of[id]))
            .collect();

        let mut plan = Plan {
            name: graph.name.clone(),
            steps,
            slots,
            input,
            batch,
            outputs,
            segments: Vec::new(),
            arena_len: 0,
            weights,
            weights_len,
        };
        gate_project_convs(&mut plan.steps, &mut plan.slots, &plan.outputs, batch);
        expand_depthwise::fuse(&mut plan.steps, &mut plan.slots, &plan.outputs, batch);
        fuse_depthwise::fuse(&mut plan.steps, &mut plan.slots, &plan.outputs);
        separable::fuse(&mut plan.steps, &mut plan.slots, &plan.outputs);
        plan.segments = segments::segments(&plan);
        let runs = segments::image_major_runs(&plan.segments);
        let Plan {
            steps,
            slots,
            outputs,
            batch,
            ..
        } = &mut plan;
        // A tensor made and used only inside one image-major run holds one image at a time.
        let mut run_of = vec![None::<usize>; steps.len()];
        for (r, range) in runs.iter().enumerate() {
            for i in range.clone() {
                run_of[i] = Some(r);
            }
        }
        let mut used_in: Vec<Option<Option<usize>>> = vec![None; slots.len()];
        let mut mixed = vec![false; slots.len()];
        for (i, s) in steps.iter().enumerate() {
            for &x in s.inputs.iter().chain([&s.output]) {
                match used_in[x] {
                    None => used_in[x] = Some(run_of[i]),
                    Some(r) if r != run_of[i] => mixed[x] = true,
                    _ => {}
                }
            }
        }
        for (x, slot) in slots.iter_mut().enumerate() {
            let internal = matches!(used_in[x], Some(Some(_))) && !mixed[x];
            if internal && x != input && !outputs.iter().any(|&(_, o)| o == x) {
                slot.per_image = true;
                slot.len /= *batch;
            }
        }

        // Lifetimes in step indices; the input is live from the start (step 0 is "copy in"),
        // outputs to the end. Squeeze-excite works in place: when its input dies there, both
        // share one buffer. An image-major segment runs its steps once per image, so every
        // tensor it touches lives through the whole segment.
        let end = steps.len() + 1;
        let mut first = vec![usize::MAX; slots.len()];
        let mut last = vec![0usize; slots.len()];
        first[input] = 0;
        for (i, s) in steps.iter().enumerate() {
            let t = i + 1;
            first[s.output] = first[s.output].min(t);
            last[s.output] = last[s.output].max(t);
            for &x in &s.inputs {
                last[x] = last[x].max(t);
            }
        }
        for &(_, o) in outputs.iter() {
            last[o] = end;
        }
        // An image-major run repeats its steps once per image: a whole-batch tensor it
        // touches lives through the whole run (one image's part is read or written on
        // every pass). One-image tensors keep their lifetime within a pass, which is the
        // same on every pass.
        for range in &runs {
            let (a, b) = (range.start + 1, range.end);
            for s in &steps[range.clone()] {
                for &x in s.inputs.iter().chain([&s.output]) {
                    if !slots[x].per_image {
                        first[x] = first[x].min(a);
                        last[x] = last[x].max(b);
                    }
                }
            }
        }
        // Slots sharing a buffer: `parent[s] = (p, d)` puts slot `s` at `d` floats into
        // `p`'s region; a root is its own parent and owns a buffer.
        let mut parent: Vec<(usize, usize)> = (0..slots.len()).map(|s| (s, 0)).collect();
        views(steps, slots, input, outputs, &mut parent);
        // Squeeze-excite works in place when everything sharing its input's buffer dies
        // there.
        let mut set_last = last.clone();
        for (s, &l) in last.iter().enumerate() {
            let (r, _) = find(&parent, s);
            set_last[r] = set_last[r].max(l);
        }
        for (i, s) in steps.iter().enumerate() {
            if let Kernel::SqueezeExcite {
                gates_only: false, ..
            } = s.kernel
            {
                let x = s.inputs[0];
                let (r, d) = find(&parent, x);
                if set_last[r] == i + 1
                    && r != input
                    && find(&parent, s.output).0 == s.output
                    && slots[x].per_image == slots[s.output].per_image
                {
                    parent[s.output] = (r, d);
                }
            }
        }
        let mut buffers = Vec::new();
        let mut buffer_of = vec![usize::MAX; slots.len()];
        let mut delta = vec![0; slots.len()];
        for s in 0..slots.len() {
            let (r, d) = find(&parent, s);
            delta[s] = d;
            if buffer_of[r] == usize::MAX {
                buffer_of[r] = buffers.len();
                buffers.push(Buffer {
                    size: slots[r].len,
                    first: first[r],
                    last: last[r],
                });
            }
            let b = &mut buffers[buffer_of[r]];
            b.first = b.first.min(first[s]);
            b.last = b.last.max(last[s]);
            buffer_of[s] = buffer_of[r];
        }
        let offsets = planner.assign(&buffers);
        for (s, slot) in slots.iter_mut().enumerate() {
            slot.offset = offsets[buffer_of[s]] + delta[s];
        }
        plan.arena_len = memory::arena_len(&buffers, &offsets).div_ceil(ALIGN) * ALIGN;
        Ok(plan)
    }

    /// The packed weights, in the layout the kernels read. Needs every parameter bound.
    pub fn pack_weights(&self, graph: &Graph) -> Result<Vec<f32>, String> {
        let mut blob = vec![0f32; self.weights_len];
        for e in &self.weights {
            let data = |p: ParamId| {
                graph
                    .param(p)
                    .data
                    .clone()
                    .ok_or_else(|| format!("parameter `{}` has no values", graph.param(p).name))
            };
            let packed: Vec<f32> = match &e.packing {
                Packing::Raw(p) => data(*p)?.to_vec(),
                Packing::Conv1x1 { param, cout, cin } => {
                    crate::kernels::conv1x1::pack(&data(*param)?, *cout, *cin)
                }
                Packing::Zeros(n) => vec![0.0; *n],
            };
            blob[e.offset..e.offset + packed.len()].copy_from_slice(&packed);
        }
        Ok(blob)
    }

    /// Sum of all intermediate tensors (bytes): what a planner-less runtime allocates.
    pub fn naive_bytes(graph: &Graph) -> u64 {
        graph
            .graph
            .node_weights()
            .filter(|n| !matches!(n.op, Op::Input | Op::Constant(_)))
            .map(|n| 4 * n.shape.iter().product::<usize>() as u64)
            .sum()
    }

    pub fn arena_bytes(&self) -> u64 {
        4 * self.arena_len as u64
    }
}

/// A squeeze-excite whose only reader is a 1×1 conv (an MBConv's project conv) leaves its
/// input unscaled and hands the conv its gates, which scale each block of the conv's input
/// as the conv copies it for its tiles: the expanded feature map is then read once by the
/// squeeze-excite (its means), instead of read twice and written once. The copy holds the
/// bits the squeeze-excite would have written, and with a batch each image's gates scale
/// that image's blocks, so every image stays bit-identical to the unfused batch of one.
fn gate_project_convs(
    steps: &mut [Step],
    slots: &mut Vec<Slot>,
    outputs: &[(String, usize)],
    batch: usize,
) {
    let read_once = read_once(steps, slots.len(), outputs);
    for i in 0..steps.len() {
        let Kernel::SqueezeExcite { c, hw, .. } = steps[i].kernel else {
            continue;
        };
        let se_out = steps[i].output;
        if !read_once[se_out] {
            continue;
        }
        let Some(j) = reader_after(steps, i, se_out) else {
            continue;
        };
        let fits = matches!(
            steps[j].kernel,
            Kernel::Conv1x1 { n, cin, hw: chw, nhwc: false, gated: false, .. }
                if cin == c && chw == hw && n == batch
        ) && steps[j].inputs[0] == se_out
            && steps[i].images == batch;
        if !fits {
            continue;
        }
        slots.push(Slot {
            offset: 0,
            len: batch * c,
            shape: vec![batch, c, 1, 1],
            per_image: false,
        });
        let gates = slots.len() - 1;
        // The squeeze-excite's own output is no longer made or read.
        slots[se_out].len = 0;
        let x = steps[i].inputs[0];
        steps[i].output = gates;
        if let Kernel::SqueezeExcite { gates_only, .. } = &mut steps[i].kernel {
            *gates_only = true;
        }
        steps[j].inputs[0] = x;
        steps[j].inputs.insert(1, gates);
        if let Kernel::Conv1x1 { gated, .. } = &mut steps[j].kernel {
            *gated = true;
        }
    }
}

/// Per slot of `slots`: whether one step input alone names it and it is not a model
/// output, so that a pass may run its producer inside that reader and leave it unmade.
fn read_once(steps: &[Step], slots: usize, outputs: &[(String, usize)]) -> Vec<bool> {
    let mut readers = vec![0usize; slots];
    for step in steps {
        step.inputs.iter().for_each(|&x| readers[x] += 1);
    }
    let mut once: Vec<bool> = readers.into_iter().map(|n| n == 1).collect();
    for &(_, o) in outputs {
        once[o] = false;
    }
    once
}

/// The first step after step `i` that reads slot `x`.
fn reader_after(steps: &[Step], i: usize, x: usize) -> Option<usize> {
    (i + 1..steps.len()).find(|&j| steps[j].inputs.contains(&x))
}

/// The slot owning `s`'s buffer and where `s` starts in it (see `parent` in [`Plan::build`]).
fn find(parent: &[(usize, usize)], mut s: usize) -> (usize, usize) {
    let mut delta = 0;
    while parent[s].0 != s {
        delta += parent[s].1;
        s = parent[s].0;
    }
    (s, delta)
}

/// Steps that need not move data, found before buffers are placed: a reshape (`Copy`) puts
/// its output at its input's place; an NCHW → NHWC transpose of a 1×1 conv's output that
/// nothing else reads has the conv write channels-last in its place (a TensorFlow export's
/// heads); a concat along an axis with nothing but 1s before it has each input written
/// straight into its part of the output (the heads' reshaped outputs of a tf2onnx graph,
/// side by side in the output). Such steps become [`Kernel::View`]. A tensor joins
/// another's buffer only when it has no place of its own yet, is not the graph input and
/// holds as many images as the other, so every region stays inside its buffer.
fn views(
    steps: &mut [Step],
    slots: &[Slot],
    input: usize,
    outputs: &[(String, usize)],
    parent: &mut [(usize, usize)],
) {
    let free = |parent: &[(usize, usize)], s: usize| parent[s].0 == s && s != input;
    let mut readers = vec![0usize; slots.len()];
    let mut producer = vec![usize::MAX; slots.len()];
    for (i, step) in steps.iter().enumerate() {
        step.inputs.iter().for_each(|&x| readers[x] += 1);
        producer[step.output] = i;
    }
    for i in 0..steps.len() {
        let Kernel::Transpose { shape, perm } = &steps[i].kernel else {
            continue;
        };
        let (x, y) = (steps[i].inputs[0], steps[i].output);
        let Some(Kernel::Conv1x1 { n, cout, hw, .. }) = steps.get(producer[x]).map(|c| &c.kernel)
        else {
            continue;
        };
        let channels_last = perm == &[0, 2, 3, 1]
            && shape.len() == 4
            && shape[0] == *n
            && shape[1] == *cout
            && shape[2] * shape[3] == *hw
            && steps[producer[x]].inputs.len() == 1;
        if channels_last
            && readers[x] == 1
            && !outputs.iter().any(|&(_, o)| o == x)
            && free(parent, x)
            && free(parent, y)
            && slots[x].per_image == slots[y].per_image
        {
            parent[y] = (x, 0);
            steps[i].kernel = Kernel::View;
            if let Kernel::Conv1x1 { nhwc, .. } = &mut steps[producer[x]].kernel {
                *nhwc = true;
            }
        }
    }
    for step in steps.iter_mut() {
        let y = step.output;
        match &step.kernel {
            Kernel::Copy => {
                let x = step.inputs[0];
                let (r, d) = find(parent, x);
                if free(parent, y)
                    && r != y
                    && x != input
                    && slots[x].per_image == slots[y].per_image
                {
                    parent[y] = (r, d);
                    step.kernel = Kernel::View;
                }
            }
            Kernel::Concat { shapes, axis } => {
                let outer: usize = shapes[0][..*axis].iter().product();
                let mut roots: Vec<usize> =
                    step.inputs.iter().map(|&x| find(parent, x).0).collect();
                let fits = step.inputs.iter().zip(&roots).all(|(&x, &r)| {
                    // The input's whole set lies within the input's own extent.
                    find(parent, x).1 == 0
                        && slots[r].len == slots[x].len
                        && r != input
                        && slots[x].per_image == slots[y].per_image
                });
                let n = roots.len();
                roots.sort_unstable();
                roots.dedup();
                if outer != 1 || !fits || roots.len() != n || roots.contains(&y) || !free(parent, y)
                {
                    continue;
                }
                let mut at = 0;
                for &x in &step.inputs {
                    let r = find(parent, x).0;
                    parent[r] = (y, at);
                    at += slots[x].len;
                }
                step.kernel = Kernel::View;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::testutil::conv;

    /// input → 1×1 conv → NCHW-to-NHWC transpose, the conv's output also a graph output
    /// when `shared`.
    fn conv_transpose(shared: bool) -> Plan {
        let mut g = Graph::new("t");
        let x = g.add_input("x", &[2, 8, 6, 5]);
        let c = conv(&mut g, "c", x, 12, 1, 1, true);
        let t = g
            .add(
                "t",
                Op::Transpose {
                    perm: vec![0, 2, 3, 1],
                },
                &[c],
            )
            .unwrap();
        g.mark_output("y", t);
        if shared {
            g.mark_output("c", c);
        }
        Plan::build(&g).unwrap()
    }

    #[test]
    fn a_transpose_to_nhwc_of_a_pointwise_conv_is_written_by_the_conv() {
        let plan = conv_transpose(false);
        let [conv, transpose] = &plan.steps[..] else {
            panic!("{:?}", plan.steps);
        };
        assert!(matches!(conv.kernel, Kernel::Conv1x1 { nhwc: true, .. }));
        assert_eq!(transpose.kernel, Kernel::View);
        let (c, t) = (&plan.slots[conv.output], &plan.slots[transpose.output]);
        assert_eq!(c.offset, t.offset);
        assert_eq!(t.shape, [2, 6, 5, 12]);
    }

    /// input → depthwise → squeeze-excite → 1×1 conv (an MBConv's tail), the
    /// squeeze-excite's output also a graph output when `shared`.
    fn se_project(shared: bool) -> Plan {
        use crate::ir::{Activation, SqueezeExcite};
        use crate::passes::testutil::param;
        let mut g = Graph::new("t");
        let x = g.add_input("x", &[1, 8, 6, 5]);
        let d = conv(&mut g, "dw", x, 8, 3, 8, true);
        let se = Op::SqueezeExcite(SqueezeExcite {
            reduce_weight: param(&mut g, "r.w", &[2, 8]),
            reduce_bias: param(&mut g, "r.b", &[2]),
            expand_weight: param(&mut g, "e.w", &[8, 2]),
            expand_bias: param(&mut g, "e.b", &[8]),
            act: Activation::Swish,
        });
        let s = g.add("se", se, &[d]).unwrap();
        let p = conv(&mut g, "project", s, 4, 1, 1, true);
        g.mark_output("y", p);
        if shared {
            g.mark_output("s", s);
        }
        Plan::build(&g).unwrap()
    }

    #[test]
    fn a_squeeze_excite_read_only_by_a_pointwise_conv_hands_it_the_gates() {
        let plan = se_project(false);
        let [dw, se, project] = &plan.steps[..] else {
            panic!("{:?}", plan.steps);
        };
        assert!(matches!(
            se.kernel,
            Kernel::SqueezeExcite {
                gates_only: true,
                ..
            }
        ));
        assert!(matches!(
            project.kernel,
            Kernel::Conv1x1 { gated: true, .. }
        ));
        assert_eq!(project.inputs, [dw.output, se.output]);
        assert_eq!(plan.slots[se.output].len, 8);
        // The depthwise output stays alive (unscaled) until the project conv reads it.
        let (a, b) = (&plan.slots[dw.output], &plan.slots[se.output]);
        assert!(a.offset + a.len <= b.offset || b.offset + b.len <= a.offset);
        let shared = se_project(true);
        assert!(matches!(
            shared.steps[1].kernel,
            Kernel::SqueezeExcite {
                gates_only: false,
                ..
            }
        ));
    }

    #[test]
    fn a_conv_output_read_elsewhere_stays_nchw() {
        let plan = conv_transpose(true);
        assert!(matches!(
            plan.steps[0].kernel,
            Kernel::Conv1x1 { nhwc: false, .. }
        ));
        assert!(matches!(plan.steps[1].kernel, Kernel::Transpose { .. }));
    }
}
