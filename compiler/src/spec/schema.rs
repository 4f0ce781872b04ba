//! The YAML schema of a compound-scaling spec (documented in `specs/README.md`).
//!
//! Every struct rejects unknown fields, so a misspelt key is an error with its location
//! instead of a silently ignored setting. Values the official scaling table sets are required;
//! family constants default to effdet's `tf_efficientdet_*` values. Values whose validity
//! depends on other values are [`Spanned`] so that [`super::validate`] can point at them.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Schema version; only 1 exists.
    pub spec_version: Spanned<u32>,
    pub name: String,
    /// The compound-scaling coefficient; informational (`null` for d7x and lite3x), used
    /// only to check the rules every official variant follows.
    #[serde(default)]
    pub phi: Option<u32>,
    pub input: Input,
    pub backbone: Backbone,
    pub fpn: Fpn,
    pub head: Head,
    pub anchors: Anchors,
    #[serde(default)]
    pub postprocess: Postprocess,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// `[height, width]` of the network input.
    pub image_size: Spanned<[u32; 2]>,
    /// Per-channel RGB mean in the 0..255 pixel domain.
    #[serde(default = "imagenet_mean")]
    pub mean: Spanned<[f32; 3]>,
    /// Per-channel RGB standard deviation in the 0..255 pixel domain.
    #[serde(default = "imagenet_std")]
    pub std: Spanned<[f32; 3]>,
}

fn imagenet_mean() -> Spanned<[f32; 3]> {
    unspanned([123.675, 116.28, 103.53])
}
fn imagenet_std() -> Spanned<[f32; 3]> {
    unspanned([58.395, 57.12, 57.375])
}

/// A default value, which has no place in the file.
pub fn unspanned<T>(value: T) -> Spanned<T> {
    Spanned::new(
        value,
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ActivationName {
    Swish,
    Relu,
    Relu6,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BackboneKind {
    Efficientnet,
    EfficientnetLite,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    /// TensorFlow 'SAME': output = ceil(input / stride), the odd pixel padded after.
    TfSame,
    /// PyTorch symmetric: `((stride − 1) + (kernel − 1)) / 2` on both sides.
    Symmetric,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backbone {
    pub kind: BackboneKind,
    /// `b0`…`b7` or `lite0`…`lite4`: names the coefficients below, which are what count.
    pub variant: String,
    pub width_coefficient: Spanned<f64>,
    pub depth_coefficient: Spanned<f64>,
    #[serde(default = "default_divisor")]
    pub depth_divisor: Spanned<u32>,
    /// Smallest channel count after rounding; `null` means `depth_divisor`.
    #[serde(default)]
    pub min_depth: Option<u32>,
    /// Base stem channels (rounded with the width coefficient unless fixed).
    #[serde(default = "default_stem")]
    pub stem_channels: Spanned<u32>,
    /// EfficientNet-Lite: the stem stays at `stem_channels` and the first and last stages
    /// keep their base repeats.
    #[serde(default)]
    pub fix_stem_and_edge_stages: bool,
    #[serde(default = "swish")]
    pub activation: ActivationName,
    /// Squeeze-excite; `null` for none (Lite).
    #[serde(default = "default_se")]
    pub se: Option<SqueezeExcite>,
    #[serde(default = "default_bn_eps")]
    pub bn_eps: Spanned<f64>,
    #[serde(default = "tf_same")]
    pub padding: Padding,
    /// Base block arguments per stage, before scaling.
    #[serde(default = "default_stages")]
    pub stages: Vec<Spanned<Stage>>,
    /// Pyramid level → 0-based index of the stage whose last block output is that level.
    #[serde(default = "default_taps")]
    pub taps: Spanned<BTreeMap<u32, u32>>,
}

fn default_divisor() -> Spanned<u32> {
    unspanned(8)
}
fn default_stem() -> Spanned<u32> {
    unspanned(32)
}
fn swish() -> ActivationName {
    ActivationName::Swish
}
fn default_se() -> Option<SqueezeExcite> {
    Some(SqueezeExcite {
        ratio: unspanned(0.25),
    })
}
fn default_bn_eps() -> Spanned<f64> {
    unspanned(1e-3)
}
fn tf_same() -> Padding {
    Padding::TfSame
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqueezeExcite {
    /// Reduced channels = max(1, floor(block input channels · ratio)).
    pub ratio: Spanned<f64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub kernel: u32,
    pub stride: u32,
    pub expand: u32,
    #[serde(rename = "in")]
    pub in_channels: u32,
    #[serde(rename = "out")]
    pub out_channels: u32,
    pub repeats: u32,
}

/// EfficientNet-B0's seven stages (reference §2.2), shared by every variant.
pub fn default_stages() -> Vec<Spanned<Stage>> {
    [
        (3, 1, 1, 32, 16, 1),
        (3, 2, 6, 16, 24, 2),
        (5, 2, 6, 24, 40, 2),
        (3, 2, 6, 40, 80, 3),
        (5, 1, 6, 80, 112, 3),
        (5, 2, 6, 112, 192, 4),
        (3, 1, 6, 192, 320, 1),
    ]
    .into_iter()
    .map(
        |(kernel, stride, expand, in_channels, out_channels, repeats)| {
            unspanned(Stage {
                kernel,
                stride,
                expand,
                in_channels,
                out_channels,
                repeats,
            })
        },
    )
    .collect()
}

fn default_taps() -> Spanned<BTreeMap<u32, u32>> {
    unspanned(BTreeMap::from([(3, 2), (4, 4), (5, 6)]))
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WeightMethod {
    /// Fast normalized fusion: `Σ relu(w_i)·x_i / (Σ relu(w_j) + eps)`.
    Fastattn,
    /// Softmax-normalized fusion.
    Attn,
    /// Plain sum, no weights.
    Sum,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Downsample {
    Max,
    Avg,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fpn {
    pub min_level: Spanned<u32>,
    pub max_level: Spanned<u32>,
    pub num_filters: Spanned<u32>,
    pub cell_repeats: Spanned<u32>,
    pub weight_method: WeightMethod,
    #[serde(default = "default_fusion_eps")]
    pub fusion_eps: f64,
    #[serde(default = "swish")]
    pub activation: ActivationName,
    #[serde(default = "default_bn_eps")]
    pub bn_eps: Spanned<f64>,
    /// Bias on the pointwise conv of each node (before its BN), as TF builds it.
    #[serde(default = "yes")]
    pub conv_bias: bool,
    #[serde(default)]
    pub resample: Resample,
}

fn default_fusion_eps() -> f64 {
    1e-4
}
fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resample {
    /// BN after every 1×1 channel-matching conv.
    #[serde(default = "yes")]
    pub apply_bn: bool,
    #[serde(default = "max_pool")]
    pub downsample: Downsample,
    /// Run the 1×1 conv after the pool instead of before it.
    #[serde(default)]
    pub conv_after_downsample: bool,
}

fn max_pool() -> Downsample {
    Downsample::Max
}

impl Default for Resample {
    fn default() -> Self {
        Resample {
            apply_bn: true,
            downsample: Downsample::Max,
            conv_after_downsample: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    pub repeats: Spanned<u32>,
    pub num_filters: Spanned<u32>,
    #[serde(default = "swish")]
    pub activation: ActivationName,
    #[serde(default = "default_classes")]
    pub num_classes: Spanned<u32>,
    #[serde(default = "default_bn_eps")]
    pub bn_eps: Spanned<f64>,
}

fn default_classes() -> Spanned<u32> {
    unspanned(90)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anchors {
    #[serde(default = "default_scales")]
    pub num_scales: Spanned<u32>,
    /// `(x, y)` multipliers per aspect ratio, effdet's pair form.
    #[serde(default = "default_aspects")]
    pub aspect_ratios: Spanned<Vec<[f64; 2]>>,
    /// keras-retinanet's height/width ratios (`[1, 0.5, 2]`), instead of `aspect_ratios`:
    /// ratio `r` is the pair `(1/√r, √r)`, so an anchor of size `s` is `s/√r` wide and
    /// `s·√r` high. The spec loader turns them into `aspect_ratios`.
    #[serde(default)]
    pub ratios: Option<Spanned<Vec<f64>>>,
    pub anchor_scale: Spanned<f64>,
    /// Whose box conventions the post-processing follows.
    #[serde(default)]
    pub convention: AnchorConvention,
}

/// Box conventions around the anchors. Both place anchors alike (size `anchor_scale ·
/// stride · 2^(i/num_scales)`, centred on `(x + ½, y + ½) · stride`, anchor
/// `scale_index · ratios + ratio_index` at a location) and decode alike (`(ty, tx, th, tw)`,
/// centre offsets in anchor sizes, `exp` of the size codes, no scale factors); they differ
/// in clipping.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AnchorConvention {
    /// effdet: boxes clipped to the image's valid (un-padded) region.
    #[default]
    Effdet,
    /// keras-retinanet (xuannianz/EfficientDet's `ClipBoxes`): boxes clipped to
    /// `[0, width − 1] × [0, height − 1]` of the network input.
    KerasRetinanet,
}

/// How the head outputs are laid out.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HeadLayout {
    /// `class_P<l>` `[1, A·C, H, W]` and `box_P<l>` `[1, A·4, H, W]` per level (effdet).
    #[default]
    PerLevel,
    /// `classification` `[1, N, C]` and `regression` `[1, N, 4]`, all levels' anchors
    /// concatenated (a Keras model's reshaped NHWC heads).
    Concatenated,
}

/// What the class output holds.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClassOutput {
    /// Logits; the post-processing applies the sigmoid (effdet).
    #[default]
    Logits,
    /// Scores: the network ends in a sigmoid (Keras' `ClassNet`).
    Sigmoid,
}

fn default_scales() -> Spanned<u32> {
    unspanned(3)
}
fn default_aspects() -> Spanned<Vec<[f64; 2]>> {
    unspanned(vec![[1.0, 1.0], [1.4, 0.7], [0.7, 1.4]])
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NmsMethod {
    Hard,
    SoftGaussian,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Postprocess {
    /// Top-k over all (anchor, class) logits before NMS.
    #[serde(default = "default_topk")]
    pub pre_nms_topk: u32,
    #[serde(default)]
    pub nms: Nms,
    #[serde(default = "default_max_det")]
    pub max_detections: u32,
    #[serde(default)]
    pub head_layout: HeadLayout,
    #[serde(default)]
    pub class_output: ClassOutput,
}

fn default_topk() -> u32 {
    5000
}
fn default_max_det() -> u32 {
    100
}

impl Default for Postprocess {
    fn default() -> Self {
        Postprocess {
            pre_nms_topk: default_topk(),
            nms: Nms::default(),
            max_detections: default_max_det(),
            head_layout: HeadLayout::default(),
            class_output: ClassOutput::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nms {
    #[serde(default = "hard")]
    pub method: NmsMethod,
    /// Per-class NMS (effdet) rather than class-agnostic.
    #[serde(default = "yes")]
    pub class_aware: bool,
    #[serde(default = "default_iou")]
    pub iou_threshold: f32,
    /// Gaussian soft-NMS σ (only for `soft_gaussian`).
    #[serde(default = "default_sigma")]
    pub sigma: f32,
}

fn hard() -> NmsMethod {
    NmsMethod::Hard
}
fn default_iou() -> f32 {
    0.5
}
fn default_sigma() -> f32 {
    0.5
}

impl Default for Nms {
    fn default() -> Self {
        Nms {
            method: NmsMethod::Hard,
            class_aware: true,
            iou_threshold: default_iou(),
            sigma: default_sigma(),
        }
    }
}
