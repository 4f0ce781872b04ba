//! Applies the EfficientNet scaling rules (reference §2.3) to a spec: the concrete
//! architecture with every channel count and repeat spelled out.

use super::schema::{self, ActivationName, Padding, Spec, WeightMethod};
use crate::ir::{Activation, FusionMethod};

/// One MBConv (or depthwise-separable, when `expand == 1`) block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Channels after the expansion conv (`in · expand`).
    pub mid_channels: usize,
    pub expand: usize,
    pub kernel: usize,
    pub stride: usize,
    /// Squeeze-excite reduced channels.
    pub se_channels: Option<usize>,
}

impl Block {
    /// Residual add only when the block keeps resolution and channels.
    pub fn residual(&self) -> bool {
        self.stride == 1 && self.in_channels == self.out_channels
    }
}

/// The concrete architecture a spec describes.
#[derive(Clone, Debug)]
pub struct Arch {
    pub name: String,
    /// `[height, width]`.
    pub image_size: [usize; 2],
    pub padding: Padding,
    pub stem_channels: usize,
    pub backbone_act: Activation,
    pub backbone_bn_eps: f32,
    /// Blocks per stage.
    pub stages: Vec<Vec<Block>>,
    /// `(level, stage index)` for each tapped level, ascending.
    pub taps: Vec<(u32, usize)>,
    pub min_level: u32,
    pub max_level: u32,
    pub fpn_channels: usize,
    pub fpn_cells: usize,
    pub fusion: FusionMethod,
    pub fpn_act: Activation,
    pub fpn_bn_eps: f32,
    pub fpn_conv_bias: bool,
    pub resample_bn: bool,
    pub downsample: schema::Downsample,
    pub conv_after_downsample: bool,
    pub head_repeats: usize,
    pub head_channels: usize,
    pub head_act: Activation,
    pub head_bn_eps: f32,
    pub num_classes: usize,
    pub num_anchors: usize,
}

fn activation(a: ActivationName) -> Activation {
    match a {
        ActivationName::Swish => Activation::Swish,
        ActivationName::Relu => Activation::Relu,
        ActivationName::Relu6 => Activation::Relu6,
    }
}

/// `round_filters`: scale by the width coefficient, round to the nearest multiple of the
/// divisor (at least `min_depth`), and never round down by more than 10%.
pub fn round_filters(channels: u32, width: f64, divisor: u32, min_depth: Option<u32>) -> usize {
    let scaled = channels as f64 * width;
    let divisor = divisor as f64;
    let min_depth = min_depth.map_or(divisor, |m| m as f64);
    let mut rounded = min_depth.max(((scaled + divisor / 2.0) / divisor).floor() * divisor);
    if rounded < 0.9 * scaled {
        rounded += divisor;
    }
    rounded as usize
}

/// `round_repeats`: `ceil(depth · repeats)`, tolerant of float noise such as 1.4·5 = 7.000…1.
pub fn round_repeats(repeats: u32, depth: f64) -> usize {
    (depth * repeats as f64 - 1e-9).ceil().max(1.0) as usize
}

/// The concrete architecture of a validated spec.
pub fn resolve(spec: &Spec) -> Arch {
    let b = &spec.backbone;
    let (width, depth) = (b.width_coefficient.value, b.depth_coefficient.value);
    let divisor = b.depth_divisor.value;
    let round = |c: u32| round_filters(c, width, divisor, b.min_depth);
    let fixed = b.fix_stem_and_edge_stages;
    let stem_channels = if fixed {
        b.stem_channels.value as usize
    } else {
        round(b.stem_channels.value)
    };
    let last = b.stages.len() - 1;
    let mut channels = stem_channels;
    let stages =
        b.stages
            .iter()
            .enumerate()
            .map(|(s, stage)| {
                let st = &stage.value;
                let repeats = if fixed && (s == 0 || s == last) {
                    st.repeats as usize
                } else {
                    round_repeats(st.repeats, depth)
                };
                let out = round(st.out_channels);
                (0..repeats)
                    .map(|r| {
                        // Block 0 reads whatever the previous stage really produced (for Lite3/4
                        // the fixed 32-channel stem, not the nominal rounded width).
                        let input = channels;
                        channels = out;
                        Block {
                            in_channels: input,
                            out_channels: out,
                            mid_channels: input * st.expand as usize,
                            expand: st.expand as usize,
                            kernel: st.kernel as usize,
                            stride: if r == 0 { st.stride as usize } else { 1 },
                            se_channels: b.se.as_ref().map(|se| {
                                ((input as f64 * se.ratio.value).floor() as usize).max(1)
                            }),
                        }
                    })
                    .collect()
            })
            .collect();
    let (min_level, max_level) = (spec.fpn.min_level.value, spec.fpn.max_level.value);
    let taps = b
        .taps
        .value
        .range(min_level..=max_level)
        .map(|(&l, &s)| (l, s as usize))
        .collect();
    let fusion = match spec.fpn.weight_method {
        WeightMethod::Fastattn => FusionMethod::FastAttention {
            eps: spec.fpn.fusion_eps as f32,
        },
        WeightMethod::Attn => FusionMethod::Softmax,
        WeightMethod::Sum => FusionMethod::Sum,
    };
    Arch {
        name: spec.name.clone(),
        image_size: spec.input.image_size.value.map(|v| v as usize),
        padding: b.padding,
        stem_channels,
        backbone_act: activation(b.activation),
        backbone_bn_eps: b.bn_eps.value as f32,
        stages,
        taps,
        min_level,
        max_level,
        fpn_channels: spec.fpn.num_filters.value as usize,
        fpn_cells: spec.fpn.cell_repeats.value as usize,
        fusion,
        fpn_act: activation(spec.fpn.activation),
        fpn_bn_eps: spec.fpn.bn_eps.value as f32,
        fpn_conv_bias: spec.fpn.conv_bias,
        resample_bn: spec.fpn.resample.apply_bn,
        downsample: spec.fpn.resample.downsample,
        conv_after_downsample: spec.fpn.resample.conv_after_downsample,
        head_repeats: spec.head.repeats.value as usize,
        head_channels: spec.head.num_filters.value as usize,
        head_act: activation(spec.head.activation),
        head_bn_eps: spec.head.bn_eps.value as f32,
        num_classes: spec.head.num_classes.value as usize,
        num_anchors: spec.anchors.num_scales.value as usize
            * spec.anchors.aspect_ratios.value.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_reproduces_the_reference_backbone_table() {
        // Reference §2.4: B2 C3 = 48, B3 stem = 40, B4 C5 = 448, B7 stage 6 = 384.
        assert_eq!(round_filters(40, 1.1, 8, None), 48);
        assert_eq!(round_filters(32, 1.2, 8, None), 40);
        assert_eq!(round_filters(320, 1.4, 8, None), 448);
        assert_eq!(round_filters(192, 2.0, 8, None), 384);
        assert_eq!(round_filters(16, 1.2, 8, None), 24);
        assert_eq!(round_repeats(3, 1.1), 4);
        assert_eq!(round_repeats(4, 2.6), 11);
        assert_eq!(round_repeats(5, 1.4), 7);
    }
}
