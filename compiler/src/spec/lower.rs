//! Builds the IR graph of a resolved architecture, naming every parameter exactly as effdet's
//! `state_dict` does (reference §2.5a, §3.6, §4), so effdet weights bind by name.

use super::bifpn;
use super::resolve::{Arch, Block};
use super::schema::{Downsample, Padding};
use crate::ir::{
    tf_same_pad, Activation, BatchNorm, BinaryOp, Conv2d, Graph, NodeId, Op, ParamId, ParamRole,
    Pool2d, PoolKind, ShapeError,
};

/// Builds the graph of `arch` for `batch` images: input `input` `[batch, 3, H, W]`, outputs
/// `class_P<l>` then `box_P<l>` for each level, effdet's NCHW head layout.
pub fn lower(arch: &Arch, batch: usize) -> Result<Graph, ShapeError> {
    let mut b = Builder {
        g: Graph::new(arch.name.clone()),
        padding: arch.padding,
    };
    let [h, w] = arch.image_size;
    let input = b.g.add_input("input", &[batch, 3, h, w]);
    let features = b.backbone(arch, input)?;
    let pyramid = b.fpn(arch, features)?;
    let class = b.head(
        arch,
        "class_net",
        arch.num_anchors * arch.num_classes,
        &pyramid,
    )?;
    let boxes = b.head(arch, "box_net", arch.num_anchors * 4, &pyramid)?;
    for (prefix, outs) in [("class", class), ("box", boxes)] {
        for (level, node) in (arch.min_level..).zip(outs) {
            b.g.mark_output(format!("{prefix}_P{level}"), node);
        }
    }
    Ok(b.g)
}

struct Builder {
    g: Graph,
    padding: Padding,
}

/// Weights of one convolution, created once and possibly applied at several levels.
#[derive(Clone, Copy)]
struct ConvParams {
    weight: ParamId,
    bias: Option<ParamId>,
    out: usize,
    kernel: usize,
    groups: usize,
}

impl Builder {
    fn shape(&self, x: NodeId) -> &[usize] {
        &self.g.node(x).shape
    }

    fn conv_params(
        &mut self,
        prefix: &str,
        cin: usize,
        out: usize,
        kernel: usize,
        depthwise: bool,
        bias: bool,
    ) -> ConvParams {
        let per_group = if depthwise { 1 } else { cin };
        let weight = self.g.add_param(
            format!("{prefix}.weight"),
            &[out, per_group, kernel, kernel],
            ParamRole::Learned,
        );
        let bias = bias.then(|| {
            self.g
                .add_param(format!("{prefix}.bias"), &[out], ParamRole::Learned)
        });
        ConvParams {
            weight,
            bias,
            out,
            kernel,
            groups: if depthwise { out } else { 1 },
        }
    }

    /// Padding of a `kernel`×`kernel` window with `stride` over this input, per the spec's rule.
    fn pads(&self, x: NodeId, kernel: usize, stride: usize) -> [usize; 4] {
        let s = self.shape(x);
        match self.padding {
            Padding::TfSame => {
                let (t, bot) = tf_same_pad(s[2], kernel, stride, 1);
                let (l, r) = tf_same_pad(s[3], kernel, stride, 1);
                [t, l, bot, r]
            }
            Padding::Symmetric => {
                let p = ((stride - 1) + (kernel - 1)) / 2;
                [p; 4]
            }
        }
    }

    fn conv_with(
        &mut self,
        name: &str,
        x: NodeId,
        p: ConvParams,
        stride: usize,
    ) -> Result<NodeId, ShapeError> {
        let conv = Conv2d {
            out_channels: p.out,
            kernel: [p.kernel; 2],
            stride: [stride; 2],
            dilation: [1, 1],
            pads: self.pads(x, p.kernel, stride),
            groups: p.groups,
            weight: p.weight,
            bias: p.bias,
            act: None,
        };
        self.g.add(name, Op::Conv2d(conv), &[x])
    }

    /// A dense conv with its own weights.
    fn conv(
        &mut self,
        prefix: &str,
        x: NodeId,
        out: usize,
        kernel: usize,
        stride: usize,
        bias: bool,
    ) -> Result<NodeId, ShapeError> {
        let cin = self.shape(x)[1];
        let p = self.conv_params(prefix, cin, out, kernel, false, bias);
        self.conv_with(prefix, x, p, stride)
    }

    /// A depthwise conv (no bias in any EfficientDet part) with its own weights.
    fn dwconv(
        &mut self,
        prefix: &str,
        x: NodeId,
        kernel: usize,
        stride: usize,
    ) -> Result<NodeId, ShapeError> {
        let c = self.shape(x)[1];
        let p = self.conv_params(prefix, c, c, kernel, true, false);
        self.conv_with(prefix, x, p, stride)
    }

    fn bn(&mut self, prefix: &str, x: NodeId, eps: f32) -> Result<NodeId, ShapeError> {
        let c = self.shape(x)[1];
        let mut p = |suffix: &str, role| self.g.add_param(format!("{prefix}.{suffix}"), &[c], role);
        let bn = BatchNorm {
            gamma: p("weight", ParamRole::Learned),
            beta: p("bias", ParamRole::Learned),
            mean: p("running_mean", ParamRole::Statistic),
            var: p("running_var", ParamRole::Statistic),
            eps,
        };
        self.g.add(prefix, Op::BatchNorm(bn), &[x])
    }

    fn act(&mut self, name: &str, x: NodeId, a: Activation) -> Result<NodeId, ShapeError> {
        self.g.add(format!("{name}.act"), Op::Activation(a), &[x])
    }

    fn pool(
        &mut self,
        name: &str,
        x: NodeId,
        kind: Downsample,
        stride: usize,
    ) -> Result<NodeId, ShapeError> {
        let kernel = stride + 1;
        let pool = Pool2d {
            kind: match kind {
                Downsample::Max => PoolKind::Max,
                Downsample::Avg => PoolKind::Avg {
                    count_include_pad: false,
                },
            },
            kernel: [kernel; 2],
            stride: [stride; 2],
            pads: self.pads(x, kernel, stride),
        };
        self.g.add(name, Op::Pool2d(pool), &[x])
    }

    /// EfficientNet stem and blocks; returns the tapped feature maps, levels ascending.
    fn backbone(&mut self, arch: &Arch, input: NodeId) -> Result<Vec<NodeId>, ShapeError> {
        let (act, eps) = (arch.backbone_act, arch.backbone_bn_eps);
        let x = self.conv("backbone.conv_stem", input, arch.stem_channels, 3, 2, false)?;
        let x = self.bn("backbone.bn1", x, eps)?;
        let mut x = self.act("backbone.bn1", x, act)?;
        let mut stage_outputs = Vec::new();
        for (s, blocks) in arch.stages.iter().enumerate() {
            for (i, block) in blocks.iter().enumerate() {
                x = self.block(&format!("backbone.blocks.{s}.{i}"), x, block, act, eps)?;
            }
            stage_outputs.push(x);
        }
        Ok(arch.taps.iter().map(|&(_, s)| stage_outputs[s]).collect())
    }

    /// One block with timm's names: depthwise-separable (`conv_dw`, `bn1`, `se`, `conv_pw`,
    /// `bn2`) when there is no expansion, inverted residual (`conv_pw`, `bn1`, `conv_dw`,
    /// `bn2`, `se`, `conv_pwl`, `bn3`) otherwise.
    fn block(
        &mut self,
        p: &str,
        input: NodeId,
        b: &Block,
        act: Activation,
        eps: f32,
    ) -> Result<NodeId, ShapeError> {
        let mut x = input;
        let (dw_bn, proj, proj_bn) = if b.expand == 1 {
            ("bn1", "conv_pw", "bn2")
        } else {
            x = self.conv(&format!("{p}.conv_pw"), x, b.mid_channels, 1, 1, false)?;
            x = self.bn(&format!("{p}.bn1"), x, eps)?;
            x = self.act(&format!("{p}.bn1"), x, act)?;
            ("bn2", "conv_pwl", "bn3")
        };
        x = self.dwconv(&format!("{p}.conv_dw"), x, b.kernel, b.stride)?;
        x = self.bn(&format!("{p}.{dw_bn}"), x, eps)?;
        x = self.act(&format!("{p}.{dw_bn}"), x, act)?;
        if let Some(reduced) = b.se_channels {
            x = self.squeeze_excite(&format!("{p}.se"), x, reduced, act)?;
        }
        x = self.conv(&format!("{p}.{proj}"), x, b.out_channels, 1, 1, false)?;
        x = self.bn(&format!("{p}.{proj_bn}"), x, eps)?;
        if b.residual() {
            x = self.g.add(
                format!("{p}.residual"),
                Op::Binary(BinaryOp::Add),
                &[x, input],
            )?;
        }
        Ok(x)
    }

    /// `x · sigmoid(expand(act(reduce(mean(x)))))`.
    fn squeeze_excite(
        &mut self,
        p: &str,
        x: NodeId,
        reduced: usize,
        act: Activation,
    ) -> Result<NodeId, ShapeError> {
        let channels = self.shape(x)[1];
        let s = self.g.add(format!("{p}.pool"), Op::GlobalAvgPool, &[x])?;
        let s = self.conv(&format!("{p}.conv_reduce"), s, reduced, 1, 1, true)?;
        let s = self.act(&format!("{p}.conv_reduce"), s, act)?;
        let s = self.conv(&format!("{p}.conv_expand"), s, channels, 1, 1, true)?;
        let gate = self.g.add(
            format!("{p}.gate"),
            Op::Activation(Activation::Sigmoid),
            &[s],
        )?;
        self.g
            .add(format!("{p}.scale"), Op::Binary(BinaryOp::Mul), &[x, gate])
    }

    /// 1×1 conv (with bias) and optional BN, matching channels to the BiFPN width.
    fn channel_match(&mut self, p: &str, x: NodeId, arch: &Arch) -> Result<NodeId, ShapeError> {
        let x = self.conv(&format!("{p}.conv"), x, arch.fpn_channels, 1, 1, true)?;
        if arch.resample_bn {
            self.bn(&format!("{p}.bn"), x, arch.fpn_bn_eps)
        } else {
            Ok(x)
        }
    }

    /// effdet's `ResampleFeatureMap`: channel matching, then down- or upsampling to `target`.
    fn resample(
        &mut self,
        p: &str,
        x: NodeId,
        target: [usize; 2],
        arch: &Arch,
    ) -> Result<NodeId, ShapeError> {
        let needs_conv = self.shape(x)[1] != arch.fpn_channels;
        let mut x = x;
        if needs_conv && !arch.conv_after_downsample {
            x = self.channel_match(&format!("{p}.conv"), x, arch)?;
        }
        let [h, w] = [self.shape(x)[2], self.shape(x)[3]];
        if h > target[0] && w > target[1] {
            let stride = (h - 1) / target[0] + 1;
            x = self.pool(&format!("{p}.downsample"), x, arch.downsample, stride)?;
        } else if h < target[0] || w < target[1] {
            x = self.g.add(
                format!("{p}.upsample"),
                Op::ResizeNearest { size: target },
                &[x],
            )?;
        }
        if needs_conv && arch.conv_after_downsample {
            x = self.channel_match(&format!("{p}.conv"), x, arch)?;
        }
        Ok(x)
    }

    /// The extra levels above the backbone, then `fpn_cells` BiFPN cells.
    fn fpn(&mut self, arch: &Arch, features: Vec<NodeId>) -> Result<Vec<NodeId>, ShapeError> {
        let mut maps = features;
        // Levels above the last tap: resample the previous map, half its size (ceil).
        while maps.len() < (arch.max_level - arch.min_level + 1) as usize {
            let idx = maps.len();
            let prev = *maps.last().expect("at least one tap");
            let [h, w] = [self.shape(prev)[2], self.shape(prev)[3]];
            let target = [h.div_ceil(2), w.div_ceil(2)];
            let x = self.resample(&format!("fpn.resample.{idx}"), prev, target, arch)?;
            maps.push(x);
        }
        let nodes = bifpn::cell_nodes(arch.min_level, arch.max_level);
        let outputs = bifpn::cell_outputs(arch.min_level, arch.max_level);
        for c in 0..arch.fpn_cells {
            let mut all = maps.clone();
            for (j, node) in nodes.iter().enumerate() {
                let p = format!("fpn.cell.{c}.fnode.{j}");
                let target_node = maps[(node.level - arch.min_level) as usize];
                let target = [self.shape(target_node)[2], self.shape(target_node)[3]];
                let mut inputs = Vec::new();
                for &id in &node.inputs {
                    inputs.push(self.resample(
                        &format!("{p}.combine.resample.{id}"),
                        all[id],
                        target,
                        arch,
                    )?);
                }
                let weights = match arch.fusion {
                    crate::ir::FusionMethod::Sum => None,
                    _ => Some(self.g.add_param(
                        format!("{p}.combine.edge_weights"),
                        &[inputs.len()],
                        ParamRole::Learned,
                    )),
                };
                let fused = self.g.add(
                    format!("{p}.combine"),
                    Op::WeightedSum {
                        method: arch.fusion,
                        weights,
                    },
                    &inputs,
                )?;
                // Pre-activation separable conv, BN, no activation after.
                let x = self.act(&format!("{p}.after_combine"), fused, arch.fpn_act)?;
                let q = format!("{p}.after_combine.conv");
                let x = self.dwconv(&format!("{q}.conv_dw"), x, 3, 1)?;
                let x = self.conv(
                    &format!("{q}.conv_pw"),
                    x,
                    arch.fpn_channels,
                    1,
                    1,
                    arch.fpn_conv_bias,
                )?;
                let x = self.bn(&format!("{q}.bn"), x, arch.fpn_bn_eps)?;
                all.push(x);
            }
            maps = outputs.iter().map(|&id| all[id]).collect();
        }
        Ok(maps)
    }

    /// A class or box head: conv weights shared across levels, BN per level.
    fn head(
        &mut self,
        arch: &Arch,
        net: &str,
        out: usize,
        pyramid: &[NodeId],
    ) -> Result<Vec<NodeId>, ShapeError> {
        let c = arch.head_channels;
        let cin = self.shape(pyramid[0])[1];
        let mut reps = Vec::new();
        for i in 0..arch.head_repeats {
            let input_channels = if i == 0 { cin } else { c };
            let dw = self.conv_params(
                &format!("{net}.conv_rep.{i}.conv_dw"),
                input_channels,
                input_channels,
                3,
                true,
                false,
            );
            let pw = self.conv_params(
                &format!("{net}.conv_rep.{i}.conv_pw"),
                input_channels,
                c,
                1,
                false,
                true,
            );
            reps.push((dw, pw));
        }
        let last = if arch.head_repeats == 0 { cin } else { c };
        let pred_dw = self.conv_params(
            &format!("{net}.predict.conv_dw"),
            last,
            last,
            3,
            true,
            false,
        );
        let pred_pw =
            self.conv_params(&format!("{net}.predict.conv_pw"), last, out, 1, false, true);
        let mut outs = Vec::new();
        for (l, &feature) in pyramid.iter().enumerate() {
            let mut x = feature;
            for (i, &(dw, pw)) in reps.iter().enumerate() {
                x = self.conv_with(
                    &format!(
                        "{net}.conv_rep.{i}.conv_dw@P{}",
                        arch.min_level as usize + l
                    ),
                    x,
                    dw,
                    1,
                )?;
                x = self.conv_with(
                    &format!(
                        "{net}.conv_rep.{i}.conv_pw@P{}",
                        arch.min_level as usize + l
                    ),
                    x,
                    pw,
                    1,
                )?;
                let bn = format!("{net}.bn_rep.{i}.{l}.bn");
                x = self.bn(&bn, x, arch.head_bn_eps)?;
                x = self.act(&bn, x, arch.head_act)?;
            }
            let level = arch.min_level as usize + l;
            x = self.conv_with(&format!("{net}.predict.conv_dw@P{level}"), x, pred_dw, 1)?;
            x = self.conv_with(&format!("{net}.predict.conv_pw@P{level}"), x, pred_pw, 1)?;
            outs.push(x);
        }
        Ok(outs)
    }
}
