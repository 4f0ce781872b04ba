//! Prints a [`Plan`] as the Rust source of one model module.
//!
//! Steps are grouped into segments (one per block of the network, found from node names),
//! each printed as a function whose body has every shape as a literal and takes only arena
//! and weight offsets as arguments. Segments with the same body (the repeats of a block
//! shape) share one function, so the source stays small and compiles fast however deep the
//! variant is. The module has no inner attributes or `//!` docs, so it can be pulled in with
//! `include!` inside a `mod`.

use std::collections::HashMap;

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};

use crate::detection::DetectionSettings;
use crate::ir::{Activation, BinaryOp, FusionMethod, PoolKind, ReduceKind};
use crate::kernels::depthwise;
use crate::plan::{Kernel, Plan, Sample};
use effdet_runtime::kernels::act::code;
use effdet_runtime::kernels::Act;

/// Where the generated module finds its packed weights.
#[derive(Clone, Debug)]
pub enum WeightsSource {
    /// `include_bytes!` of this path expression (tokens), into an aligned static.
    Embedded(TokenStream),
    /// Read at run time by `Model::new()` from this path expression (tokens).
    File(TokenStream),
}

/// What the module's doc header says about the model, and what it can do beyond `forward`.
pub struct Header<'a> {
    pub model: &'a str,
    pub source: &'a str,
    pub fused: bool,
    /// Anchors, classes, normalization and NMS defaults: with them the module gets
    /// `Model::detect`.
    pub detection: Option<&'a DetectionSettings>,
}

/// The detection parts of the module.
#[derive(Default)]
struct DetectTokens {
    items: TokenStream,
    field: TokenStream,
    init: TokenStream,
    methods: TokenStream,
}

fn f64_lit(v: f64) -> Literal {
    Literal::f64_suffixed(v)
}

/// Constants, the anchors field and `detect` for a model with detection settings; its head
/// outputs must be `class_P<level>` and `box_P<level>` for every level.
fn detection_items(plan: &Plan, d: &DetectionSettings) -> Result<DetectTokens, String> {
    let find = |name: &str| {
        plan.outputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| &plan.slots[*s])
            .ok_or_else(|| {
                format!(
                    "detection needs a head output named `{name}`; the model has {:?}",
                    plan.outputs
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                )
            })
    };
    let mut class_slots = Vec::new();
    let mut box_slots = Vec::new();
    // (output name, the shape detection expects, whether it is a class head)
    let [class_heads, box_heads] = d.head_outputs(plan.batch);
    let expected = class_heads
        .iter()
        .map(|h| (h, true))
        .chain(box_heads.iter().map(|h| (h, false)));
    for ((name, shape), class) in expected {
        let slot = find(name)?;
        if &slot.shape != shape {
            return Err(format!(
                "head output `{name}` has shape {:?}, the detection settings expect {shape:?}",
                slot.shape
            ));
        }
        // One image's part of the output.
        let (off, len) = (lit(slot.offset), lit(slot.len / plan.batch.max(1)));
        if class {
            &mut class_slots
        } else {
            &mut box_slots
        }
        .push(quote!((#off, #len)));
    }
    // A TensorFlow export takes NHWC images: `[N, H, W, 3]`.
    let nhwc = super::input_layout(plan) == "NHWC";
    let (preprocess, image_dims) = if nhwc {
        (
            quote!(preprocess_nhwc),
            quote!([INPUT_SHAPE[1], INPUT_SHAPE[2]]),
        )
    } else {
        (quote!(preprocess), quote!([INPUT_SHAPE[2], INPUT_SHAPE[3]]))
    };
    let clip = if d.clip_to_input {
        quote! {
            // keras-retinanet clips to the network input, padding included.
            options.clip = Some(#image_dims.map(|v| v as f32 - 1.0));
        }
    } else {
        quote! {
            // effdet clips to the image's valid (un-padded) region before NMS.
            options.clip = Some([group[b].height as f32 / scales[b], group[b].width as f32 / scales[b]]);
        }
    };
    let head_format = {
        let layout = match d.format.layout {
            effdet_runtime::HeadLayout::PerLevel => quote!(HeadLayout::PerLevel),
            effdet_runtime::HeadLayout::Concatenated => quote!(HeadLayout::Concatenated),
        };
        let scores = d.format.scores;
        quote!(HeadFormat { layout: #layout, scores: #scores })
    };
    let levels = lit(class_slots.len());
    let a = &d.anchors;
    let [ih, iw] = a.image_size;
    let (ih, iw, min, max, scales) = (
        lit(ih),
        lit(iw),
        lit(a.min_level),
        lit(a.max_level),
        lit(a.num_scales),
    );
    let aspects = a.aspect_ratios.iter().map(|[x, y]| {
        let (x, y) = (f64_lit(*x), f64_lit(*y));
        quote!([#x, #y])
    });
    let anchor_scale = f64_lit(a.anchor_scale);
    let num_classes = lit(d.num_classes);
    let mean = d.normalization.mean.map(f32_lit);
    let std = d.normalization.std.map(f32_lit);
    let o = &d.options;
    let nms = match o.nms {
        effdet_runtime::NmsMethod::Hard => quote!(NmsMethod::Hard),
        effdet_runtime::NmsMethod::SoftGaussian { sigma } => {
            let sigma = f32_lit(sigma);
            quote!(NmsMethod::SoftGaussian { sigma: #sigma })
        }
    };
    let (max_det, topk, iou, agnostic) = (
        lit(o.max_detections),
        lit(o.pre_nms_topk),
        f32_lit(o.iou_threshold),
        o.class_agnostic,
    );
    let items = quote! {
        pub use ::effdet_runtime::{coco_label, DetectOptions, Detection, Image, NmsMethod};
        use ::effdet_runtime::{AnchorConfig, Anchors, HeadFormat, HeadLayout, Normalization};

        /// Classes the class head scores (detections carry 1-based ids).
        pub const NUM_CLASSES: usize = #num_classes;
        /// Input normalization, 0..255 pixel domain.
        const NORMALIZATION: Normalization = Normalization { mean: [#(#mean),*], std: [#(#std),*] };
        const CLASS_SLOTS: [(usize, usize); #levels] = [#(#class_slots),*];
        const BOX_SLOTS: [(usize, usize); #levels] = [#(#box_slots),*];
        /// How the head outputs are laid out and what the class output holds.
        const HEAD_FORMAT: HeadFormat = #head_format;

        /// The anchors the box head regresses against, from the spec.
        pub fn anchor_config() -> AnchorConfig {
            AnchorConfig {
                image_size: [#ih, #iw],
                min_level: #min,
                max_level: #max,
                num_scales: #scales,
                aspect_ratios: vec![#(#aspects),*],
                anchor_scale: #anchor_scale,
            }
        }

        /// The spec's post-processing (effdet's predict path unless the spec says otherwise).
        pub fn detect_options() -> DetectOptions {
            DetectOptions {
                max_detections: #max_det,
                pre_nms_topk: #topk,
                iou_threshold: #iou,
                nms: #nms,
                class_agnostic: #agnostic,
                ..DetectOptions::default()
            }
        }
    };
    let field = quote! {
        /// Computed once, when the model is created.
        anchors: Anchors,
    };
    let init = quote!(anchors: Anchors::new(&anchor_config()),);
    let methods = quote! {
        /// Detects objects in an RGB, RGBA or grayscale image of any size: effdet's
        /// preprocessing (resize keeping the aspect ratio, pad with the mean colour, normalize),
        /// the network, then `options`' post-processing (see [`detect_options`]); boxes are
        /// clipped to the image and given in its pixels.
        pub fn detect(&self, image: &Image<'_>, options: &DetectOptions) -> Result<Vec<Detection>, Error> {
            let mut found = self.detect_batch(::core::slice::from_ref(image), options)?;
            Ok(found.pop().unwrap_or_default())
        }

        /// [`Model::detect`] for each of `images`, [`BATCH`] per forward pass (a last, short
        /// group is padded with blank images whose results are dropped): one list of
        /// detections per image, in order. Each image's detections are those `detect` gives
        /// it alone.
        pub fn detect_batch(&self, images: &[Image<'_>], options: &DetectOptions) -> Result<Vec<Vec<Detection>>, Error> {
            const PER_IMAGE: usize = INPUT_SLOT.1 / BATCH;
            let mut guard = self.state.lock();
            let state = &mut *guard;
            let mut all = Vec::with_capacity(images.len());
            let mut scratch = ::effdet_runtime::PostprocessScratch::default();
            let name = |i: usize, e: &dyn ::core::fmt::Display| {
                if images.len() > 1 {
                    Error::Detect(format!("image {i}: {e}"))
                } else {
                    Error::Detect(e.to_string())
                }
            };
            for (g, group) in images.chunks(BATCH).enumerate() {
                let mut scales = [1.0f32; BATCH];
                let input = &mut state.arena[INPUT_SLOT.0..INPUT_SLOT.0 + INPUT_SLOT.1];
                for (b, (image, x)) in group.iter().zip(input.chunks_exact_mut(PER_IMAGE)).enumerate() {
                    scales[b] = ::effdet_runtime::#preprocess(image, #image_dims, &NORMALIZATION, x)
                        .map_err(|e| name(g * BATCH + b, &e))?;
                }
                input[group.len() * PER_IMAGE..].fill(0.0);
                run(state, self.weights.as_slice(), self.isa, &mut |_| {})?;
                let arena = &state.arena;
                for b in 0..group.len() {
                    let class_outputs = CLASS_SLOTS.map(|(off, len)| &arena[off + b * len..][..len]);
                    let box_outputs = BOX_SLOTS.map(|(off, len)| &arena[off + b * len..][..len]);
                    let mut options = *options;
                    #clip
                    let mut found = Vec::new();
                    catch_panic(|| ::effdet_runtime::postprocess_heads_into(
                        &self.anchors,
                        NUM_CLASSES,
                        HEAD_FORMAT,
                        &class_outputs,
                        &box_outputs,
                        &options,
                        &mut scratch,
                        &mut found,
                    ))?
                    .map_err(|e| name(g * BATCH + b, &e))?;
                    all.push(found.into_iter().map(|d| d.rescaled(scales[b])).collect());
                }
            }
            Ok(all)
        }
    };
    Ok(DetectTokens {
        items,
        field,
        init,
        methods,
    })
}

fn lit(n: usize) -> Literal {
    Literal::usize_unsuffixed(n)
}

fn lits(v: &[usize]) -> TokenStream {
    let items = v.iter().map(|&n| lit(n));
    quote!([#(#items),*])
}

fn f32_lit(v: f32) -> TokenStream {
    if v.is_infinite() {
        if v > 0.0 {
            quote!(f32::INFINITY)
        } else {
            quote!(f32::NEG_INFINITY)
        }
    } else {
        let l = Literal::f32_suffixed(v);
        quote!(#l)
    }
}

/// The kernels' activation for an IR activation (`None`: identity).
fn kernel_act(a: Option<Activation>) -> Act {
    match a {
        None => Act::None,
        Some(Activation::Swish) => Act::Swish,
        Some(Activation::Relu) => Act::Relu,
        Some(Activation::Relu6) => Act::Relu6,
        Some(Activation::Sigmoid) => Act::Sigmoid,
        Some(Activation::HardSwish) => Act::HardSwish,
        Some(Activation::Clip { min, max }) => Act::Clip { min, max },
        Some(Activation::HardSigmoid { alpha, beta }) => Act::HardSigmoid { alpha, beta },
    }
}

/// The activation argument of a kernel call.
fn act(a: Option<Activation>) -> TokenStream {
    match kernel_act(a) {
        Act::None => quote!(Act::None),
        Act::Swish => quote!(Act::Swish),
        Act::Relu => quote!(Act::Relu),
        Act::Relu6 => quote!(Act::Relu6),
        Act::Sigmoid => quote!(Act::Sigmoid),
        Act::HardSwish => quote!(Act::HardSwish),
        Act::Clip { min, max } => {
            let (min, max) = (f32_lit(min), f32_lit(max));
            quote!(Act::Clip { min: #min, max: #max })
        }
        Act::HardSigmoid { alpha, beta } => {
            let (alpha, beta) = (f32_lit(alpha), f32_lit(beta));
            quote!(Act::HardSigmoid { alpha: #alpha, beta: #beta })
        }
    }
}

/// The const parameter of a kernel compiled per activation: the code of `a`
/// (`effdet_runtime::kernels::act::code`), so that the model compiles that variant only.
fn act_code(a: Option<Activation>) -> TokenStream {
    let name = match kernel_act(a).code() {
        code::NONE => "NONE",
        code::SWISH => "SWISH",
        code::RELU6 => "RELU6",
        code::SIGMOID => "SIGMOID",
        _ => "ANY",
    };
    let name = format_ident!("{name}");
    quote!({ ::effdet_runtime::kernels::act::code::#name })
}

/// The const parameter naming depthwise route `bits` (`kernels::depthwise::route`) in a
/// kernel call: its constants or'ed, so the generated source says which kernels run.
fn route_tokens(bits: u8) -> TokenStream {
    use depthwise::route;
    let names: Vec<proc_macro2::Ident> = [
        (route::LANES_512, "LANES_512"),
        (route::TALL_512, "TALL_512"),
        (route::LANES_256, "LANES_256"),
        (route::TALL_NEON, "TALL_NEON"),
    ]
    .iter()
    .filter(|(b, _)| bits & b != 0)
    .map(|(_, n)| format_ident!("{n}"))
    .collect();
    if names.is_empty() {
        quote!({ k::depthwise::route::ROWS })
    } else {
        quote!({ #(k::depthwise::route::#names)|* })
    }
}

/// Offsets a segment body refers to, numbered in order of first use.
#[derive(Default)]
struct Locals {
    slots: Vec<usize>,
    weights: Vec<usize>,
    /// Some offset depends on the image index `b`.
    uses_image: bool,
}

impl Locals {
    fn slot(&mut self, s: usize) -> TokenStream {
        let i = self.slots.iter().position(|&x| x == s).unwrap_or_else(|| {
            self.slots.push(s);
            self.slots.len() - 1
        });
        let i = lit(i);
        quote!(t[#i])
    }
    fn weight(&mut self, w: usize) -> TokenStream {
        let i = self
            .weights
            .iter()
            .position(|&x| x == w)
            .unwrap_or_else(|| {
                self.weights.push(w);
                self.weights.len() - 1
            });
        let i = lit(i);
        quote!(w[#i])
    }
}

/// The body of one step: borrow its regions, call its kernel (once per image for a
/// per-image kernel of a batch). In an image-major segment (`per_image`), the segment loops
/// over the images and every step works on image `b`'s part of its tensors.
fn step_body(
    plan: &Plan,
    step: usize,
    loc: &mut Locals,
    per_image: bool,
    means: Means,
) -> TokenStream {
    if plan.steps[step].kernel == Kernel::View {
        return quote!();
    }
    let images = plan.steps[step].images;
    let (prologue, call) = kernel_call(plan, step, loc, per_image, means);
    if images > 1 && !per_image {
        let images = lit(images);
        quote! {{
            #prologue
            for b in 0..#images {
                #call
            }
        }}
    } else if prologue.is_empty() {
        call
    } else {
        quote!({ #prologue #call })
    }
}

/// Where a squeeze-excite's channel means come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Means {
    /// Its kernel takes them from the feature map (or the step is no part of such a pair).
    Own,
    /// This depthwise conv is the squeeze-excite's producer, right before it: it writes the
    /// means of its output planes to `cx.scratch[..c]` while they are in cache.
    Write,
    /// This squeeze-excite (gates only) reads them there instead of the map.
    Read,
}

/// Per step of a segment: the depthwise conv → squeeze-excite (gates) pairs whose means
/// go through the scratch buffer (consecutive steps, the SE reading the conv's output,
/// one image per call, so nothing runs between the write and the read). The kernels take
/// the means with the same code either way: the outputs are bit for bit the same.
fn means_routes(plan: &Plan, seg: &[usize], per_image: bool) -> Vec<Means> {
    let mut routes = vec![Means::Own; seg.len()];
    for (j, pair) in seg.windows(2).enumerate() {
        let (a, b) = (&plan.steps[pair[0]], &plan.steps[pair[1]]);
        let one_image = per_image || (a.images <= 1 && b.images <= 1);
        if let (
            Kernel::Depthwise {
                c,
                sum: None,
                project: None,
                ..
            },
            Kernel::SqueezeExcite {
                c: c_se,
                gates_only: true,
                ..
            },
        ) = (&a.kernel, &b.kernel)
        {
            if c == c_se && b.inputs.first() == Some(&a.output) && one_image {
                routes[j] = Means::Write;
                routes[j + 1] = Means::Read;
            }
        }
    }
    routes
}

/// The `(input, sample)` pairs of a BiFPN input fusion's call: each input local with the
/// `k::fuse::Sample` that brings it to the output's size.
fn fuse_inputs(samples: &[Sample], names: &[proc_macro2::Ident]) -> Vec<TokenStream> {
    samples
        .iter()
        .zip(names)
        .map(|(sample, x)| {
            let sample = match sample {
                Sample::Identity => quote!(k::fuse::Sample::Identity),
                Sample::Nearest { h, w } => {
                    let (h, w) = (lit(*h), lit(*w));
                    quote!(k::fuse::Sample::Nearest { h: #h, w: #w })
                }
                Sample::MaxPool {
                    h,
                    w,
                    kernel,
                    stride,
                    pads,
                } => {
                    let (h, w, kernel, stride, pads) =
                        (lit(*h), lit(*w), lits(kernel), lits(stride), lits(pads));
                    quote!(k::fuse::Sample::MaxPool { h: #h, w: #w, kernel: #kernel, stride: #stride, pads: #pads })
                }
            };
            quote!((#x, #sample))
        })
        .collect()
}

/// What runs once before the per-image calls (a whole-tensor copy), and one kernel call
/// on image `b`'s regions (the only image when the step is not per-image).
fn kernel_call(
    plan: &Plan,
    step: usize,
    loc: &mut Locals,
    per_image: bool,
    means: Means,
) -> (TokenStream, TokenStream) {
    let s = &plan.steps[step];
    let len = |slot: usize| lit(plan.slots[slot].len);
    let ws: Vec<TokenStream> = s
        .weights
        .iter()
        .map(|&e| {
            let off = loc.weight(e);
            let n = lit(plan.weights[e].len);
            quote!(&cx.weights[#off..#off + #n])
        })
        .collect();
    // A per-image kernel runs in a loop over the batch, on image `b`'s part of each tensor.
    let images = if per_image { plan.batch } else { s.images }.max(1);
    let part = |slot: usize, loc: &mut Locals| {
        let sl = &plan.slots[slot];
        let (off, n) = if sl.per_image {
            (loc.slot(slot), sl.len)
        } else {
            (loc.slot(slot), sl.len / images)
        };
        let l = lit(n);
        if images > 1 && !sl.per_image {
            loc.uses_image = true;
            (quote!(#off + b * #l), l)
        } else {
            (off, l)
        }
    };
    let (whole_out, whole_len) = if per_image {
        part(s.output, loc)
    } else {
        (loc.slot(s.output), len(s.output))
    };
    let (out_off, out_len) = part(s.output, loc);
    let ins: Vec<(TokenStream, Literal)> = s.inputs.iter().map(|&i| part(i, loc)).collect();
    let in_pairs = ins.iter().map(|(o, l)| quote!((#o, #l)));
    let names: Vec<proc_macro2::Ident> = (0..ins.len()).map(|i| format_ident!("x{}", i)).collect();
    // `let ([x0, x1], y) = split(...)`: the common prologue of out-of-place kernels.
    let split = quote! {
        let ([#(#names),*], y) = arena::split(cx.arena, [#(#in_pairs),*], (#out_off, #out_len));
    };
    let x0 = names
        .first()
        .cloned()
        .unwrap_or_else(|| format_ident!("x0"));
    let mut prologue = quote!();
    let call = match &s.kernel {
        Kernel::Conv1x1 {
            n,
            cin,
            cout,
            hw,
            act: a,
            nhwc,
            gated,
            tuning,
        } => {
            let (w0, b) = (&ws[0], &ws[1]);
            // Inputs: x, then the gates when gated, then the residual if any.
            let residual = match (s.inputs.len(), *gated) {
                (2, false) => quote!(Some(x1)),
                (3, true) => quote!(Some(x2)),
                _ => quote!(None),
            };
            let n = if per_image { 1 } else { *n };
            let code = act_code(*a);
            let (n, cin, cout, hw, a) = (lit(n), lit(*cin), lit(*cout), lit(*hw), act(*a));
            // The blocking: the fixed cache model's, or a tuned conv's (never a
            // channels-last one: `tune::apply` skips those) choices, as a constant.
            let tune = match tuning {
                Some(t) => {
                    let isa = format_ident!("{}", format!("{:?}", t.isa));
                    let tile = format_ident!("{}", format!("{:?}", t.tile));
                    let (block, pack_x) = (lit(t.block), t.pack_x);
                    quote! {
                        { k::conv1x1::tuned(Isa::#isa, #block, #pack_x, k::conv1x1::Tile::#tile) }
                    }
                }
                None => quote!({ k::conv1x1::UNTUNED }),
            };
            if *gated {
                quote! {{
                    #split
                    k::conv1x1::conv1x1_batch_gated_fixed::<#code, #n, #cin, #cout, #hw, #tune, I>(cx.par, #x0, x1, #w0, #b, #residual, y, #a);
                }}
            } else if *nhwc {
                quote! {{
                    #split
                    k::conv1x1::conv1x1_batch_nhwc_fixed::<#code, #n, #cin, #cout, #hw, I>(cx.par, #x0, #w0, #b, y, #a);
                }}
            } else {
                quote! {{
                    #split
                    k::conv1x1::conv1x1_batch_fixed::<#code, #n, #cin, #cout, #hw, #tune, I>(cx.par, #x0, #w0, #b, #residual, y, #a);
                }}
            }
        }
        Kernel::Depthwise {
            c,
            h,
            w,
            k,
            stride,
            pads,
            act: a,
            expand,
            sum,
            project,
        } => {
            // With `expand`, the 1×1 conv's weights come first and x is that conv's input;
            // with `sum`, the fusion's coefficients come first and its inputs are the
            // step's; with `project`, the 1×1 conv's weights come last and a residual is the
            // last input.
            let (w0, b) = match (expand, sum) {
                (Some(_), _) => (&ws[2], &ws[3]),
                (_, Some(_)) => (&ws[1], &ws[2]),
                _ => (&ws[0], &ws[1]),
            };
            let means_arg = match means {
                Means::Write => quote!(&mut cx.scratch[..#c]),
                _ => quote!(&mut []),
            };
            // A fast shape calls the kernel compiled for its kernel size, stride,
            // activation(s) and route (of the channels and rows each call of the depthwise
            // kernel covers: all, the panels of MR channels a fused MBConv runs it on, a
            // fused sum's tiles, a separable conv's bands); any other the plain loops.
            let (oh, ow) = (
                depthwise::out_len(*h, pads[0], pads[2], *k, *stride),
                depthwise::out_len(*w, pads[1], pads[3], *k, *stride),
            );
            let route =
                |c: usize, oh: usize| route_tokens(depthwise::route(c, oh, ow, *k, *stride));
            let (kc, sc, ac) = (lit(*k), lit(*stride), act_code(*a));
            let (channels, height, width) = (*c, *h, *w);
            let fast = depthwise::fast(*k, *stride);
            let band = || crate::kernels::separable::band_rows(channels, oh, ow);
            let (c, h, w, k, stride, pads, a) = (
                lit(*c),
                lit(*h),
                lit(*w),
                lit(*k),
                lit(*stride),
                lits(pads),
                act(*a),
            );
            // The call's padding as its `PADS` constant (with its sizes, the shape its
            // instance is compiled for).
            let pk = quote!({ k::depthwise::pads(#pads) });
            let project_args = |p: &crate::plan::Project, first: usize| {
                let (pw, pb, pa) = (&ws[first], &ws[first + 1], act(p.act));
                let residual = if p.residual {
                    let r = &names[names.len() - 1];
                    quote!(Some(#r))
                } else {
                    quote!(None)
                };
                (quote!(#pw, #pb, #pa, #residual), lit(p.cout))
            };
            let call = match (expand, sum, project) {
                (_, Some(f), Some(p)) => {
                    let (afc, apc, r) = (act_code(f.act), act_code(p.act), route(channels, band()));
                    let (coef, fa) = (&ws[0], act(f.act));
                    let inputs = fuse_inputs(&f.samples, &names);
                    let (pargs, cout) = project_args(p, 3);
                    quote!(k::separable::sum_depthwise_pointwise_fixed::<#kc, #sc, #ac, #afc, #apc, #r, #c, #cout, #h, #w, #pk, I>(cx.par, &[#(#inputs),*], #coef, #fa, #w0, #b, #a, #pargs, y, #c, #cout, #h, #w, #k, #stride, #pads))
                }
                (Some(e), _, _) => {
                    let (aec, r) = (
                        act_code(e.act),
                        route(crate::kernels::conv1x1::MR.min(channels), oh),
                    );
                    let (ew, eb, cin, ea) = (&ws[0], &ws[1], lit(e.cin), act(e.act));
                    quote!(k::mbconv::expand_depthwise_fixed::<#kc, #sc, #ac, #aec, #r, #cin, #c, #h, #w, #pk, I>(cx.par, #x0, #ew, #eb, #ea, #w0, #b, y, #cin, #c, #h, #w, #k, #stride, #pads, #a, #means_arg))
                }
                (_, Some(f), _) => {
                    let afc = act_code(f.act);
                    let tile =
                        crate::kernels::fuse_depthwise::tile_channels(channels, height, width);
                    let r = route(tile, oh);
                    let (coef, fa, inputs) = (&ws[0], act(f.act), fuse_inputs(&f.samples, &names));
                    quote!(k::fuse_depthwise::fuse_depthwise_fixed::<#kc, #sc, #ac, #afc, #r, #c, #h, #w, #pk, I>(cx.par, &[#(#inputs),*], #coef, #fa, #w0, #b, y, #c, #h, #w, #k, #stride, #pads, #a))
                }
                (_, _, Some(p)) => {
                    let (apc, r) = (act_code(p.act), route(channels, band()));
                    let (pargs, cout) = project_args(p, 2);
                    quote!(k::separable::depthwise_pointwise_fixed::<#kc, #sc, #ac, #apc, #r, #c, #cout, #h, #w, #pk, I>(cx.par, #x0, #w0, #b, #a, #pargs, y, #c, #cout, #h, #w, #k, #stride, #pads))
                }
                _ if fast => {
                    let r = route(channels, oh);
                    quote!(k::depthwise::depthwise_fixed::<#kc, #sc, #ac, #r, #c, #h, #w, #pk, I>(cx.par, #x0, #w0, #b, y, #c, #h, #w, #k, #stride, #pads, #a, #means_arg))
                }
                _ => {
                    quote!(k::depthwise::depthwise_general::<I>(cx.par, #x0, #w0, #b, y, #c, #h, #w, #k, #stride, #pads, #a, #means_arg))
                }
            };
            quote! {{
                #split
                #call;
            }}
        }
        Kernel::Dense {
            cin,
            cout,
            h,
            w,
            kernel,
            stride,
            pads,
            act: a,
        } => {
            let (w0, b) = (&ws[0], &ws[1]);
            let (cin, cout, h, w) = (lit(*cin), lit(*cout), lit(*h), lit(*w));
            let code = act_code(*a);
            let (kernel, stride, pads, a) = (lits(kernel), lits(stride), lits(pads), act(*a));
            quote! {{
                #split
                k::dense::conv_dense_fixed::<#code, I>(cx.par, #x0, #w0, #b, y, #cin, #cout, #h, #w, #kernel, #stride, #pads, #a);
            }}
        }
        Kernel::ConvGeneric {
            cin,
            cout,
            groups,
            h,
            w,
            kernel,
            stride,
            dilation,
            pads,
            act: a,
            bias,
        } => {
            let w0 = &ws[0];
            let b = if *bias {
                let b = &ws[1];
                quote!(Some(#b))
            } else {
                quote!(None)
            };
            let residual = if s.inputs.len() == 2 {
                quote!(Some(x1))
            } else {
                quote!(None)
            };
            let (cin, cout, groups, h, w) = (lit(*cin), lit(*cout), lit(*groups), lit(*h), lit(*w));
            let (kernel, stride, dilation, pads, a) = (
                lits(kernel),
                lits(stride),
                lits(dilation),
                lits(pads),
                act(*a),
            );
            quote! {{
                #split
                k::dense::conv_generic(cx.par, #x0, #w0, #b, #residual, y, #cin, #cout, #groups, #h, #w, #kernel, #stride, #dilation, #pads, #a);
            }}
        }
        Kernel::SqueezeExcite {
            c,
            hw,
            r,
            act: a,
            gates_only: true,
        } => {
            let (rw, rb, ew, eb) = (&ws[0], &ws[1], &ws[2], &ws[3]);
            let (c, hw, scratch, a) = (lit(*c), lit(*hw), lit(*r), act(Some(*a)));
            match means {
                Means::Read => quote! {{
                    let y = arena::region(cx.arena, #out_off, #out_len);
                    let (means, hidden) = cx.scratch.split_at_mut(#c);
                    k::se::squeeze_excite_gates_from_means::<I>(means, #rw, #rb, #ew, #eb, #a, &mut hidden[..#scratch], y);
                }},
                _ => quote! {{
                    #split
                    k::se::squeeze_excite_gates::<I>(cx.par, #x0, #c, #hw, #rw, #rb, #ew, #eb, #a, &mut cx.scratch[..#scratch], y);
                }},
            }
        }
        Kernel::SqueezeExcite {
            c,
            hw,
            r,
            act: a,
            gates_only: false,
        } => {
            let (rw, rb, ew, eb) = (&ws[0], &ws[1], &ws[2], &ws[3]);
            let in_place = plan.slots[s.inputs[0]].offset == plan.slots[s.output].offset;
            if !in_place {
                let from = part(s.inputs[0], loc).0;
                prologue = quote!(arena::copy(cx.arena, #from, #whole_out, #whole_len););
            }
            let (c, hw, scratch, a) = (lit(*c), lit(*hw), lit(c + r), act(Some(*a)));
            quote! {{
                let y = arena::region(cx.arena, #out_off, #out_len);
                k::se::squeeze_excite::<I>(cx.par, y, #c, #hw, #rw, #rb, #ew, #eb, #a, &mut cx.scratch[..#scratch]);
            }}
        }
        Kernel::Fuse {
            c,
            oh,
            ow,
            samples,
            act: a,
        } => {
            let (coef, inputs) = (&ws[0], fuse_inputs(samples, &names));
            let code = act_code(*a);
            let (c, oh, ow, a) = (lit(*c), lit(*oh), lit(*ow), act(*a));
            quote! {{
                #split
                k::fuse::fuse_fixed::<#code, #c, #oh, #ow, I>(cx.par, &[#(#inputs),*], #coef, y, #c, #oh, #ow, #a);
            }}
        }
        Kernel::BatchNorm { c, hw, eps } => {
            let (g, b, m, v) = (&ws[0], &ws[1], &ws[2], &ws[3]);
            let (c, hw, eps) = (lit(*c), lit(*hw), f32_lit(*eps));
            quote! {{
                #split
                k::generic::batch_norm(cx.par, #x0, y, #c, #hw, #g, #b, #m, #v, #eps);
            }}
        }
        Kernel::Activation { act: a, .. } => {
            let a = act(Some(*a));
            quote! {{
                #split
                k::generic::activation::<I>(cx.par, #x0, y, #a);
            }}
        }
        Kernel::Binary { op, a, b, y: ys } => {
            let op = match op {
                BinaryOp::Add => quote!(k::generic::BinOp::Add),
                BinaryOp::Sub => quote!(k::generic::BinOp::Sub),
                BinaryOp::Mul => quote!(k::generic::BinOp::Mul),
                BinaryOp::Div => quote!(k::generic::BinOp::Div),
            };
            let (a, b, ys) = (lits(a), lits(b), lits(ys));
            quote! {{
                #split
                k::generic::binary(cx.par, #op, x0, &#a, x1, &#b, y, &#ys);
            }}
        }
        Kernel::GlobalAvgPool { c, hw } => {
            let (c, hw) = (lit(*c), lit(*hw));
            quote! {{
                #split
                k::generic::global_avg_pool(cx.par, #x0, y, #c, #hw);
            }}
        }
        Kernel::Pool {
            kind,
            c,
            h,
            w,
            kernel,
            stride,
            pads,
        } => {
            let kind = match kind {
                PoolKind::Max => quote!(k::generic::PoolKind::Max),
                PoolKind::Avg { count_include_pad } => {
                    quote!(k::generic::PoolKind::Avg { count_include_pad: #count_include_pad })
                }
            };
            let (c, h, w, kernel, stride, pads) = (
                lit(*c),
                lit(*h),
                lit(*w),
                lits(kernel),
                lits(stride),
                lits(pads),
            );
            quote! {{
                #split
                k::generic::pool2d(cx.par, #kind, #x0, y, #c, #h, #w, #kernel, #stride, #pads);
            }}
        }
        Kernel::Resize { c, h, w, oh, ow } => {
            let (c, h, w, oh, ow) = (lit(*c), lit(*h), lit(*w), lit(*oh), lit(*ow));
            quote! {{
                #split
                k::generic::resize_nearest(cx.par, #x0, y, #c, #h, #w, #oh, #ow);
            }}
        }
        Kernel::Pad {
            c,
            h,
            w,
            pads,
            value,
        } => {
            let (c, h, w, pads, value) = (lit(*c), lit(*h), lit(*w), lits(pads), f32_lit(*value));
            quote! {{
                #split
                k::generic::pad(cx.par, #x0, y, #c, #h, #w, #pads, #value);
            }}
        }
        Kernel::WeightedSum { method, .. } => {
            let method = match method {
                FusionMethod::FastAttention { eps } => {
                    let eps = f32_lit(*eps);
                    quote!(k::generic::FusionMethod::FastAttention { eps: #eps })
                }
                FusionMethod::Softmax => quote!(k::generic::FusionMethod::Softmax),
                FusionMethod::Sum => quote!(k::generic::FusionMethod::Sum),
            };
            let raw = ws.first().cloned().unwrap_or_else(|| quote!(&[]));
            quote! {{
                #split
                k::generic::weighted_sum(cx.par, #method, #raw, &[#(#names),*], y);
            }}
        }
        Kernel::View => quote!(),
        Kernel::Copy => quote! {{
            #split
            y.copy_from_slice(#x0);
        }},
        Kernel::Transpose { shape, perm } => {
            let (shape, perm) = (lits(shape), lits(perm));
            quote! {{
                #split
                k::generic::transpose(#x0, &#shape, &#perm, y);
            }}
        }
        Kernel::Concat { shapes, axis } => {
            let parts = shapes.iter().zip(&names).map(|(sh, x)| {
                let sh = lits(sh);
                quote!((#x, &#sh[..]))
            });
            let axis = lit(*axis);
            quote! {{
                #split
                k::generic::concat(&[#(#parts),*], #axis, y);
            }}
        }
        Kernel::Reduce { kind, shape, axes } => {
            let kind = match kind {
                ReduceKind::Sum => quote!(k::generic::ReduceKind::Sum),
                ReduceKind::Mean => quote!(k::generic::ReduceKind::Mean),
            };
            let (shape, axes) = (lits(shape), lits(axes));
            quote! {{
                #split
                k::generic::reduce(#kind, #x0, &#shape, &#axes, y);
            }}
        }
        Kernel::Softmax { shape, axis } => {
            let (shape, axis) = (lits(shape), lit(*axis));
            quote! {{
                #split
                k::generic::softmax(#x0, &#shape, #axis, y);
            }}
        }
        Kernel::Constant => {
            let w0 = &ws[0];
            quote! {{
                let y = arena::region(cx.arena, #out_off, #out_len);
                y.copy_from_slice(#w0);
            }}
        }
    };
    (prologue, call)
}

/// Where a generated module's op kernels ([`crate::kernels`]) go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelSource {
    /// In the crate's `src/kernels/` (`crate::kernels::crate_files`), declared from
    /// `src/model.rs`.
    Files,
    /// Inline in the module: one file for `include!` and the proc-macro.
    Inline,
}

/// The whole module source, formatted.
pub fn module(
    plan: &Plan,
    weights: &WeightsSource,
    header: &Header<'_>,
    kernels: KernelSource,
) -> Result<String, String> {
    let mut functions: Vec<TokenStream> = Vec::new();
    let mut by_body: HashMap<String, usize> = HashMap::new();
    let mut calls = Vec::new();
    // Per block function: its first op's name and calls per forward pass (for `profile`).
    let mut blocks: Vec<(String, usize)> = Vec::new();
    for seg in &plan.segments {
        let mut loc = Locals::default();
        let per_image = seg.image_major;
        let seg: Vec<usize> = seg.steps.clone().collect();
        let routes = means_routes(plan, &seg, per_image);
        let steps: Vec<TokenStream> = seg
            .iter()
            .zip(routes)
            .map(|(&i, means)| step_body(plan, i, &mut loc, per_image, means))
            .collect();
        let body = quote!(#(#steps)*);
        let key = format!("{per_image} {body}");
        let next = by_body.len();
        let index = *by_body.entry(key).or_insert(next);
        let name = format_ident!("block_{}", index);
        let (nt, nw) = (lit(loc.slots.len()), lit(loc.weights.len()));
        if index == functions.len() {
            blocks.push((plan.steps[seg[0]].name.clone(), 0));
            let doc = format!(" `{}` …", plan.steps[seg[0]].name);
            let t_param = if loc.slots.is_empty() {
                quote!(_t)
            } else {
                quote!(t)
            };
            let w_param = if loc.weights.is_empty() {
                quote!(_w)
            } else {
                quote!(w)
            };
            // An image-major segment works on image `b` (its caller loops over the batch).
            let b_param = match (per_image, loc.uses_image) {
                (false, _) => quote!(),
                (true, true) => quote!(, b: usize),
                (true, false) => quote!(, _b: usize),
            };
            // A segment of views only (a reshape or concat that copies nothing) has no call.
            let cx_param = if body.is_empty() {
                quote!(_cx)
            } else {
                quote!(cx)
            };
            functions.push(quote! {
                #[doc = #doc]
                fn #name<const I: u8>(#cx_param: &mut Ctx<'_>, #t_param: [usize; #nt], #w_param: [usize; #nw] #b_param) {
                    #body
                }
            });
        }
        let t = loc.slots.iter().map(|&s| lit(plan.slots[s].offset));
        let w = loc.weights.iter().map(|&e| lit(plan.weights[e].offset));
        let b_arg = if per_image { quote!(, b) } else { quote!() };
        blocks[index].1 += if per_image { plan.batch } else { 1 };
        let index = lit(index);
        calls.push((
            per_image,
            quote!(#name::<I>(cx, [#(#t),*], [#(#w),*] #b_arg); lap(#index);),
        ));
    }
    // Consecutive image-major segments run inside one loop over the images.
    let images = lit(plan.batch);
    let mut grouped: Vec<TokenStream> = Vec::new();
    let mut run: Vec<TokenStream> = Vec::new();
    for (per_image, call) in calls.into_iter().chain([(false, quote!())]) {
        if per_image {
            run.push(call);
            continue;
        }
        if !run.is_empty() {
            grouped.push(quote! {
                for b in 0..#images {
                    #(#run)*
                }
            });
            run.clear();
        }
        grouped.push(call);
    }
    let calls = grouped;

    let input = &plan.slots[plan.input];
    let input_shape: Vec<usize> = input.shape.clone();
    if input_shape.len() != 4 {
        return Err(format!("the model input must be NCHW, got {input_shape:?}"));
    }
    let input_shape_tokens = lits(&input_shape);
    let layout = super::input_layout(plan);
    let input_shape_doc = format!(" Input shape, {layout}.");
    let batch = lit(input_shape[0]);
    let (input_off, input_len) = (lit(input.offset), lit(input.len));
    let n_out = lit(plan.outputs.len());
    let out_names = plan.outputs.iter().map(|(n, _)| n.as_str());
    let out_slots = plan.outputs.iter().map(|(n, s)| {
        let slot = &plan.slots[*s];
        let (off, shape) = (lit(slot.offset), lits(&slot.shape));
        quote!(OutputSlot { name: #n, offset: #off, shape: &#shape })
    });
    let arena_len = lit(plan.arena_len);
    let weights_len = lit(plan.weights_len);
    let scratch_len = lit(plan
        .steps
        .iter()
        .map(|s| match s.kernel {
            Kernel::SqueezeExcite { c, r, .. } => c + r,
            _ => 0,
        })
        .max()
        .unwrap_or(0)
        .max(1));
    let weight_bytes = 4 * plan.weights_len;
    // (items, constructors, constructors that read files: only with the runtime's `std`)
    let (weights_static, constructors, file_constructors) = match weights {
        WeightsSource::Embedded(path) => {
            let n = lit(weight_bytes);
            (
                quote! {
                    /// The packed weights, embedded and 64-byte aligned so they are read in place.
                    static WEIGHTS: &arena::Aligned<[u8; #n]> = &arena::Aligned(*include_bytes!(#path));
                },
                quote! {
                    /// The model with its built-in weights, on the best instruction set this CPU has, one thread.
                    pub fn new() -> Self {
                        Self::with_weights(Weights::Embedded(arena::as_f32(&WEIGHTS.0)))
                    }

                    /// [`Model::new`]; never fails for this model (its weights are embedded).
                    pub fn try_new() -> Result<Self, Error> {
                        Ok(Self::new())
                    }
                },
                quote!(),
            )
        }
        WeightsSource::File(path) => (
            quote!(),
            quote!(),
            quote! {
                /// The model with the weights file it was built with (too large to embed), on the
                /// best instruction set this CPU has, one thread.
                ///
                /// # Panics
                /// If that file is gone or changed; [`Model::try_new`] and [`Model::from_file`]
                /// return the error instead.
                pub fn new() -> Self {
                    match Self::try_new() {
                        Ok(m) => m,
                        Err(e) => panic!("{e} (this model's weights are too large to embed; use Model::try_new or Model::from_file)"),
                    }
                }

                /// The model with the weights file it was built with; `Error::Weights` if it is
                /// missing or not this model's.
                pub fn try_new() -> Result<Self, Error> {
                    Self::from_file(#path)
                }
            },
        ),
    };
    let default_impl = quote! {
        impl Default for Model {
            fn default() -> Self {
                Self::new()
            }
        }
    };
    // `Model::new` reads a file when the weights are not embedded: then it and `Default`
    // exist only with the runtime's `std`.
    let (default_impl, file_default_impl) = match weights {
        WeightsSource::Embedded(_) => (default_impl, quote!()),
        WeightsSource::File(_) => (quote!(), default_impl),
    };
    let outputs_table: Vec<String> = plan
        .outputs
        .iter()
        .map(|(n, s)| format!(" | `{n}` | `{:?}` |", plan.slots[*s].shape))
        .collect();
    let model_doc = [
        format!(
            " `{}`, compiled by effdetc from `{}`{}.",
            header.model,
            header.source,
            if header.fused { "" } else { " without fusion" }
        ),
        String::new(),
        format!(" Input: `{input_shape:?}` f32, {layout}, normalized."),
        String::new(),
        " | output | shape |".to_string(),
        " |---|---|".to_string(),
    ]
    .into_iter()
    .chain(outputs_table)
    .chain([
        String::new(),
        format!(
            " Arena: {} bytes. Packed weights: {} bytes.",
            4 * plan.arena_len,
            weight_bytes
        ),
    ]);
    let model_doc = model_doc.map(|l| quote!(#[doc = #l]));
    let n_steps = plan.steps.len();
    let forward_doc = format!(
        " Runs the network ({n_steps} kernel calls) on `input` (`INPUT_SHAPE`, {layout} f32) into the model's own arena; allocates nothing after the first call, at any thread count."
    );
    let detect = match &header.detection {
        Some(d) => detection_items(plan, d)?,
        None => DetectTokens::default(),
    };
    let DetectTokens {
        items: detect_items,
        field: detect_field,
        init: detect_init,
        methods: detect_methods,
    } = detect;
    let file = quote! {
        use ::effdet_runtime::arena;
        use self::kernels as k;
        use ::effdet_runtime::kernels::{Act, FlushDenormals, Isa, Pool};
        use ::effdet_runtime::model::{catch_panic, Ctx, OutputSlot, StateCell, Weights};
        use ::effdet_runtime::model::prelude::*;
        pub use ::effdet_runtime::model::{BlockTime, Error, Outputs};

        #[doc = #input_shape_doc]
        pub const INPUT_SHAPE: [usize; 4] = #input_shape_tokens;
        /// Images per forward pass (`INPUT_SHAPE[0]`; every output's first dimension).
        pub const BATCH: usize = #batch;
        /// Output names, in order.
        pub const OUTPUT_NAMES: [&str; #n_out] = [#(#out_names),*];
        /// Bytes of the arena holding every intermediate tensor.
        pub const ARENA_BYTES: usize = 4 * ARENA_LEN;
        /// Bytes of the packed weights.
        pub const WEIGHT_BYTES: usize = 4 * WEIGHTS_LEN;
        const ARENA_LEN: usize = #arena_len;
        const WEIGHTS_LEN: usize = #weights_len;
        const SCRATCH_LEN: usize = #scratch_len;
        const INPUT_SLOT: (usize, usize) = (#input_off, #input_len);
        static OUTPUTS: [OutputSlot; #n_out] = [#(#out_slots),*];
        #weights_static
        #detect_items

        /// What one inference works in: the arena, the kernels' scratch and the threads.
        struct State {
            arena: Vec<f32>,
            scratch: Vec<f32>,
            pool: Pool,
        }

        #(#model_doc)*
        pub struct Model {
            /// Behind a mutex (a `RefCell` without `std`) so that `detect(&self)` can run;
            /// `forward(&mut self)` takes it without locking.
            state: StateCell<State>,
            weights: Weights,
            isa: Isa,
            #detect_field
        }

        #default_impl

        impl Model {
            #constructors

            /// The model with packed weights from memory: the bytes of the `weights.bin` its
            /// crate was generated with (copied; `Error::Weights` if their size is not this
            /// model's). Works without `std`.
            pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
                Ok(Self::with_weights(Weights::from_bytes(bytes, WEIGHTS_LEN, "packed weights")?))
            }

            fn with_weights(weights: Weights) -> Self {
                Model {
                    state: StateCell::new(State {
                        arena: vec![0.0; ARENA_LEN],
                        scratch: vec![0.0; SCRATCH_LEN],
                        pool: Pool::new(1),
                    }),
                    weights,
                    isa: Isa::detect(),
                    #detect_init
                }
            }

            /// Intra-op threads for `forward` and `detect`: starts `threads − 1` workers, parked
            /// between parallel regions, joined when the model is dropped (1: no thread is
            /// started). Outputs are bit-identical at every thread count.
            pub fn set_threads(&mut self, threads: usize) {
                self.state.get_mut().pool.set_threads(threads);
            }

            /// The instruction set the kernels use.
            pub fn isa(&self) -> Isa {
                self.isa
            }

            /// Runs the network with `isa` from now on, instead of the best instruction set
            /// this CPU has (`Isa::detect()`, the default): to compare or time them. Each one
            /// has its own compiled block functions; outputs agree within float rounding (the
            /// vector activations differ in their last bits). Returns `false`, and keeps the
            /// current one, if this CPU cannot run `isa`.
            pub fn set_isa(&mut self, isa: Isa) -> bool {
                let ok = ::effdet_runtime::kernels::act::isa_ok(isa);
                if ok {
                    self.isa = isa;
                }
                ok
            }

            #[doc = #forward_doc]
            pub fn forward(&mut self, input: &[f32]) -> Result<Outputs<'_>, Error> {
                let state = self.state.get_mut();
                load_input(state, input)?;
                run(state, self.weights.as_slice(), self.isa, &mut |_| {})?;
                Ok(Outputs::new(&state.arena, &OUTPUTS))
            }

            #detect_methods
        }


        /// Copies `input` (checked to be the model's input size) into its arena slot.
        fn load_input(state: &mut State, input: &[f32]) -> Result<(), Error> {
            if input.len() != INPUT_SLOT.1 {
                return Err(Error::InputLength { expected: INPUT_SLOT.1, found: input.len() });
            }
            state.arena[INPUT_SLOT.0..INPUT_SLOT.0 + INPUT_SLOT.1].copy_from_slice(input);
            Ok(())
        }

        /// The network: every kernel call, on the input already in the arena. A panic on
        /// any thread becomes `Error::Panic`. `lap(i)` follows each call of `block_i`
        /// (`profile` times them; elsewhere it does nothing). Denormals are flushed to zero
        /// meanwhile (the caller's mode is restored on return): see `effdet_runtime::kernels::denormals`.
        fn run(state: &mut State, weights: &[f32], isa: Isa, lap: &mut dyn FnMut(usize)) -> Result<(), Error> {
            state.pool.restart_after_fork();
            let _flush = FlushDenormals::new();
            catch_panic(|| {
                let mut cx = Ctx {
                    arena: &mut state.arena,
                    weights,
                    par: state.pool.par(),
                    scratch: &mut state.scratch,
                };
                // The one choice of instruction set in a pass: every block function is
                // compiled once per instruction set this target has. The arms of
                // `effdet_runtime::with_isa!` written out, because prettyplease leaves a
                // macro's body unformatted (`network:: < I > (& mut cx, lap)`).
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => network::<{ ::effdet_runtime::kernels::isa_code::AVX512 }>(&mut cx, lap),
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => network::<{ ::effdet_runtime::kernels::isa_code::AVX2 }>(&mut cx, lap),
                    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
                    Isa::Neon => network::<{ ::effdet_runtime::kernels::isa_code::NEON }>(&mut cx, lap),
                    _ => network::<{ ::effdet_runtime::kernels::isa_code::SCALAR }>(&mut cx, lap),
                }
            })
        }

        /// Every block function in order, compiled for instruction set `I`
        /// (`effdet_runtime::kernels::isa_code`); `lap(i)` after each call of `block_i`.
        fn network<const I: u8>(cx: &mut Ctx<'_>, lap: &mut dyn FnMut(usize)) {
            #(#calls)*
        }

        // `Model` must stay `Send` (it moves between threads with its arena).
        const _: fn() = || {
            fn assert_send<T: Send>() {}
            assert_send::<Model>();
        };

        #(#functions)*
    };
    let n_blocks = lit(blocks.len());
    let block_rows = blocks.iter().enumerate().map(|(i, (first, calls))| {
        let (name, calls) = (format!("block_{i}"), lit(*calls));
        quote!((#name, #first, #calls))
    });
    // What reads files or the clock, only with the runtime's `std` (see `effdet_runtime::if_std!`):
    // formatted on its own, since rustfmt and prettyplease leave macro bodies as they are.
    let std_items = quote! {
        #file_default_impl

        impl Model {
            #file_constructors

            /// The model with packed weights read from `path` (the `weights.bin` its crate
            /// was generated with). Needs the runtime's `std` feature.
            pub fn from_file(path: impl AsRef<::std::path::Path>) -> Result<Self, Error> {
                Ok(Self::with_weights(Weights::from_file(path.as_ref(), WEIGHTS_LEN)?))
            }

            /// Where the time of `forward` goes: the median milliseconds of each generated
            /// block function (all its calls in one pass) over `iters` passes on `input`,
            /// slowest first (the binary's `bench --profile`). Needs the runtime's `std`
            /// feature (a clock).
            pub fn profile(&mut self, input: &[f32], iters: usize) -> Result<Vec<BlockTime>, Error> {
                let state = self.state.get_mut();
                let (weights, isa) = (self.weights.as_slice(), self.isa);
                ::effdet_runtime::model::profile_blocks(&BLOCKS, iters, |lap| {
                    load_input(state, input)?;
                    lap(usize::MAX);
                    run(state, weights, isa, lap)
                })
            }
        }

        /// Per generated block function: its name, the IR name of its first op and its
        /// calls per forward pass.
        static BLOCKS: [(&str, &str, usize); #n_blocks] = [#(#block_rows),*];
    };
    let parse = |tokens| -> Result<syn::File, String> {
        syn::parse2(tokens).map_err(|e| format!("generated code does not parse: {e}"))
    };
    let parsed = parse(file)?;
    let std_items = prettyplease::unparse(&parse(std_items)?);
    let std_items = super::indent(&std_items, "    ");
    let banner = format!(
        "// Generated by effdetc {} from `{}`. Do not edit: regenerate with `effdetc build`.\n\n",
        env!("CARGO_PKG_VERSION"),
        header.source
    );
    let kernels = match kernels {
        KernelSource::Files => crate::kernels::module_declaration(),
        KernelSource::Inline => crate::kernels::module_inline(),
    };
    Ok(format!(
        "{banner}{}\n// Constructors that read files: they exist when the runtime has its `std` feature.\n::effdet_runtime::if_std! {{\n{std_items}}}\n\n{kernels}",
        prettyplease::unparse(&parsed)
    ))
}
