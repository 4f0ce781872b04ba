#!/usr/bin/env python3
"""Make ONNX test models of EfficientDet the way real exporters write them, plus reference outputs.

What it makes
-------------
Small models, checked in under tests/onnx/models/ (default mode):

  tf_d0_ts13          tf_efficientdet_d0 config, TorchScript exporter (dynamo=False), opset 13
  tf_d0_ts17          same model, TorchScript exporter, opset 17
  tf_d0_export18      same model, torch.export-based exporter (dynamo=True, optimize=False), opset 18
  tf_d0_export18_opt  same model, torch.export-based exporter with its default optimize=True, opset 18
  tf_lite0_ts17       tf_efficientdet_lite0 config (relu6, 'sum' fusion), TorchScript exporter, opset 17
  pt_d0_ts17          efficientdet_d0 config (PyTorch-native symmetric padding), TorchScript, opset 17
  tf_d0_ts17_batch    tf_d0_ts17 (same weights) exported with a symbolic batch axis: input [N,3,128,128]
                      and every output [N,...] with dim_param N; its reference input has batch 2

  To keep the files small (1.3-3.5 MB each), the small models use effdet's real configs with
  these overrides: image_size (128x128 for tf_d0, 160x160 for tf_lite0, 96x96 for pt_d0),
  num_classes 3, fpn_channels 32 (instead of 64), and a narrowed backbone: the same timm
  generator as the real backbone (tf_efficientnet_b0 / tf_efficientnet_lite0 / efficientnet_b0:
  identical block list, depth, kernels, strides, SE, activation, BN eps and padding type) with
  channel_multiplier 0.2 instead of 1.0. BiFPN cells (3), head repeats (3), fusion method,
  activation, padding type and redundant_bias are the real ones, and the script asserts that
  each small model has exactly the modules (names and types) of its full-size config, so no
  resample conv appears or disappears through the narrowing.

  Exported tf_d0_export18* files have their per-node "pkg.torch.onnx.stack_trace" metadata
  blanked (machine-specific paths, 1.6 MB); all other exporter metadata is kept as written.

Full-size models, never checked in (--big [DIR], default /tmp/onnx-big), written unmodified:

  tf_d1_ts17          tf_efficientdet_d1, 640x640, 90 classes, TorchScript exporter, opset 17
  tf_d0_ts17          tf_efficientdet_d0, 512x512, 90 classes, TorchScript exporter, opset 17
  tf_lite0_ts17       tf_efficientdet_lite0, 320x320, 90 classes, TorchScript exporter, opset 17
  pt_d0_ts17          efficientdet_d0, 512x512, 90 classes, TorchScript exporter, opset 17
  tf_d0_export18      tf_efficientdet_d0, 512x512, 90 classes, torch.export exporter, optimize=False, opset 18
  tf_d0_export18_opt  the same with the exporter's default optimize=True

For every model NAME it writes NAME.onnx, NAME.input.npy (seeded N(0,1) f32, NCHW, batch 1) and
NAME.<output>.npy for the 10 outputs class_P3..class_P7, box_P3..box_P7, as computed by ONNX
Runtime on the written file (ORT_ENABLE_ALL, 1 thread). A model whose table entry gives a batch
(only tf_d0_ts17_batch: 2) is exported with batch axis N symbolic (TorchScript: dynamic_axes;
torch.export: dynamic_shapes), its input holds that many seeded images (the first is the batch-1
model's) and ORT is also run on it at batch 1 and 3, which must reproduce the per-image outputs.
It asserts that ORT and PyTorch eager agree, per output tensor, within the project's tolerance
1e-4 * max(1, max|ref - mean(ref)|) (see /work/shared/fixtures/README.md; for the small D0-style
models that is an absolute 1e-4, for the Lite0 ones up to 5.5e-4 since their outputs spread
wider; every small model passes with max |diff| <= 4e-5 absolute), and writes MANIFEST.json
with the file sizes, node counts, op-type histograms, opsets and shapes.

No exporter-side simplification is done beyond the exporters' own defaults: the TorchScript
exporter runs with its defaults (do_constant_folding=True, which folds BatchNorm into Conv in
eval mode; the TF-'same' padding arithmetic stays in-graph as Shape/Gather/.../Pad chains); the
torch.export exporter runs with optimize=False (all BatchNormalization nodes stay in the graph)
and, for the _opt variant, with its default optimize=True (onnxscript optimizer: folds constants, folds BN into
the preceding Conv unless that Conv's weight is shared, folds the zero-valued Pads into Conv
pads; the 30 head BNs, whose Convs share weights across the 5 levels, remain).
No onnx-simplifier, no onnxruntime offline optimization.

Weights: no weights can be downloaded; models are built with pretrained_backbone=False, seeded
random initialisation (effdet's and timm's own init), then made non-trivial as in
/work/shared/fixtures/README.md: every BatchNorm gets running_mean ~ N(0, 0.1),
running_var ~ U(0.5, 1.5), weight ~ U(0.5, 1.5), bias ~ N(0, 0.1); every BiFPN fusion weight
(edge_weights) ~ U(0.1, 2.0). In addition (not in the fixture recipe), every Conv bias that the
init leaves at zero (all but the class head's prior bias -4.6) ~ N(0, 0.1), as trained weights
would have. Eval mode.

How to run
----------
  python3 tests/onnx/make_models.py                 # small models -> tests/onnx/models/
  python3 tests/onnx/make_models.py --big           # full-size -> /tmp/onnx-big/ (not for git)
  python3 tests/onnx/make_models.py --only tf_d0_ts13 [--big]
  python3 tests/onnx/make_models.py --only tf_d0_ts17_batch   # the symbolic-batch model alone

Requires: pip install torch==2.15.0 timm==1.0.31 effdet==0.4.1 onnxscript==0.7.2
(plus numpy, onnx, onnxruntime). Run with: python 3.11.7, torch 2.15.0 (+cu132 wheel from PyPI,
run on CPU), timm 1.0.31, effdet 0.4.1, onnx 1.23.2, onnxruntime 1.32.0, onnxscript 0.7.2,
onnx_ir 1.1.0, numpy 2.4.6. Other versions produce different graphs (node counts, names).
The small set takes about 30 s on 2 cores; --big about 3 minutes.
"""

import argparse
import collections
import json
import os
import sys
import warnings
from importlib.metadata import version

warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from timm.models import register_model  # noqa: E402
from timm.models.efficientnet import _gen_efficientnet, _gen_efficientnet_lite  # noqa: E402

from effdet import EfficientDet, get_efficientdet_config  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SMALL_DIR = os.path.join(HERE, "models")
BIG_DIR = "/tmp/onnx-big"
OUTPUT_NAMES = [f"class_P{l}" for l in range(3, 8)] + [f"box_P{l}" for l in range(3, 8)]
TOL = 1e-4
BN_EPS_TF = 1e-3
NARROW = 0.2  # channel_multiplier of the narrowed backbones of the small models
BATCH_DIM = "N"  # dim_param of the symbolic batch axis (models whose table entry gives a batch)
OTHER_BATCHES = (1, 3)  # batch sizes ORT is also run at for a symbolic-batch model


# ---------------------------------------------------------------------------------------------
# Narrowed backbones: the real timm generators, channel_multiplier NARROW, depth unchanged.
# The B0 ones round channels to multiples of 4 (not 8) so that the stem (8) and the first block
# (4) keep different widths: with equal widths timm would add a residual skip that B0 lacks.
# check_same_topology() below verifies the result against the full-size model.
# The variant string passed to the generator is the real model's (used by timm only to look up
# a pretrained config, never to download anything since pretrained=False).
@register_model
def tf_efficientnet_b0_w20(pretrained=False, **kwargs):
    kwargs.setdefault("bn_eps", BN_EPS_TF)
    kwargs.setdefault("pad_type", "same")
    return _gen_efficientnet(
        "tf_efficientnet_b0", channel_multiplier=NARROW, depth_multiplier=1.0, channel_divisor=4,
        pretrained=False, **kwargs)


@register_model
def tf_efficientnet_lite0_w20(pretrained=False, **kwargs):
    kwargs.setdefault("bn_eps", BN_EPS_TF)
    kwargs.setdefault("pad_type", "same")
    return _gen_efficientnet_lite(
        "tf_efficientnet_lite0", channel_multiplier=NARROW, depth_multiplier=1.0, pretrained=False, **kwargs)


@register_model
def efficientnet_b0_w20(pretrained=False, **kwargs):
    return _gen_efficientnet(
        "efficientnet_b0", channel_multiplier=NARROW, depth_multiplier=1.0, channel_divisor=4,
        pretrained=False, **kwargs)


# ---------------------------------------------------------------------------------------------
# name -> (effdet config, overrides, exporter, opset, seed[, batch])
# exporter: "torchscript" = torch.onnx.export(dynamo=False), defaults otherwise;
#           "torch.export" = torch.onnx.export(dynamo=True, optimize=False);
#           "torch.export+opt" = torch.onnx.export(dynamo=True), i.e. optimize=True (the default).
# batch (optional): export with a symbolic batch axis named BATCH_DIM on the input and on every
#           output, and make the reference input with this many images (no batch: static batch 1).
D0_SMALL = dict(image_size=(128, 128), num_classes=3, fpn_channels=32, backbone_name="tf_efficientnet_b0_w20")
SMALL = {
    "tf_d0_ts13": ("tf_efficientdet_d0", D0_SMALL, "torchscript", 13, 1),
    "tf_d0_ts17": ("tf_efficientdet_d0", D0_SMALL, "torchscript", 17, 1),
    "tf_d0_export18": ("tf_efficientdet_d0", D0_SMALL, "torch.export", 18, 1),
    "tf_d0_export18_opt": ("tf_efficientdet_d0", D0_SMALL, "torch.export+opt", 18, 1),
    "tf_lite0_ts17": ("tf_efficientdet_lite0",
                      dict(image_size=(160, 160), num_classes=3, fpn_channels=32,
                           backbone_name="tf_efficientnet_lite0_w20"),
                      "torchscript", 17, 2),
    "pt_d0_ts17": ("efficientdet_d0",
                   dict(image_size=(96, 96), num_classes=3, fpn_channels=32, backbone_name="efficientnet_b0_w20"),
                   "torchscript", 17, 3),
    "tf_d0_ts17_batch": ("tf_efficientdet_d0", D0_SMALL, "torchscript", 17, 1, 2),
}
BIG = {
    "tf_d1_ts17": ("tf_efficientdet_d1", {}, "torchscript", 17, 11),
    "tf_d0_ts17": ("tf_efficientdet_d0", {}, "torchscript", 17, 15),
    "tf_lite0_ts17": ("tf_efficientdet_lite0", {}, "torchscript", 17, 12),
    "pt_d0_ts17": ("efficientdet_d0", {}, "torchscript", 17, 13),
    "tf_d0_export18": ("tf_efficientdet_d0", {}, "torch.export", 18, 14),
    "tf_d0_export18_opt": ("tf_efficientdet_d0", {}, "torch.export+opt", 18, 14),
}


class HeadsAsTuple(torch.nn.Module):
    """EfficientDet returning the 10 head tensors: class P3..P7, then box P3..P7."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        x_class, x_box = self.model(x)
        return tuple(x_class) + tuple(x_box)


def build(config_name, overrides, seed):
    torch.manual_seed(seed)
    config = get_efficientdet_config(config_name)
    for k, v in overrides.items():
        config[k] = v
    model = EfficientDet(config, pretrained_backbone=False)
    # Non-trivial BN statistics and fusion weights (fixture README recipe), seeded.
    g = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
            if isinstance(m, torch.nn.Conv2d) and m.bias is not None and not m.bias.any():
                # Beyond the fixture recipe: the inits leave conv biases at zero (only the class
                # head's prior bias is not), so a dropped bias would go unnoticed, and exporters
                # treat zero biases specially (TorchScript dedups equal initializers into
                # Identity nodes, the onnxscript optimizer deletes all-zero biases).
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            if hasattr(m, "edge_weights") and m.edge_weights is not None:
                w = m.edge_weights
                w.copy_(torch.rand(w.shape, generator=g) * 1.9 + 0.1)
    model.eval()
    return HeadsAsTuple(model).eval(), config


def topology(model):
    """Everything about the graph's structure except channel counts: module names and types,
    residual skips, conv kernel/stride/padding/dilation, depthwise or not, bias or not."""
    topo = []
    for name, m in model.named_modules():
        t = [name, type(m).__name__, getattr(m, "has_skip", None)]
        if isinstance(m, torch.nn.Conv2d):
            t += [m.kernel_size, m.stride, m.padding, m.dilation, m.bias is not None,
                  m.groups == 1, m.groups > 1 and m.groups == m.in_channels]
        topo.append(tuple(t))
    return topo


def check_same_topology(config_name, small):
    """The small model must have exactly the modules (names and types) of the full-size one:
    same blocks, same resample convs (which exist only where channel counts differ), same BNs."""
    full = EfficientDet(get_efficientdet_config(config_name), pretrained_backbone=False)
    a, b = topology(small), topology(full)
    if a != b:
        diff = sorted(set(a) ^ set(b))[:10]
        raise AssertionError(f"small {config_name} differs in structure from the full one: {diff}")


def export(wrapper, x, path, exporter, opset, strip_stack_traces, symbolic_batch=False):
    # Only a symbolic-batch export passes dynamic_axes/dynamic_shapes at all, so that the other
    # models are exported exactly as before.
    dyn = {}
    if exporter == "torchscript":
        if symbolic_batch:
            dyn["dynamic_axes"] = {n: {0: BATCH_DIM} for n in ["input"] + OUTPUT_NAMES}
        torch.onnx.export(
            wrapper, (x,), path, dynamo=False, opset_version=opset,
            input_names=["input"], output_names=OUTPUT_NAMES, **dyn)
        return {"dynamo": False, "do_constant_folding": True, **dyn}
    assert exporter in ("torch.export", "torch.export+opt"), exporter
    optimize = exporter == "torch.export+opt"
    if symbolic_batch:
        # Keyed by HeadsAsTuple.forward's argument name; the outputs' batch follows the input's.
        dyn["dynamic_shapes"] = {"x": {0: torch.export.Dim(BATCH_DIM)}}
    prog = torch.onnx.export(
        wrapper, (x,), dynamo=True, opset_version=opset, optimize=optimize, external_data=False,
        input_names=["input"], output_names=OUTPUT_NAMES, **dyn)
    prog.save(path, external_data=False)
    opts = {"dynamo": True, "optimize": optimize}
    if symbolic_batch:
        opts["dynamic_shapes"] = {"x": {0: BATCH_DIM}}
    if strip_stack_traces:
        # The exporter stores a Python stack trace (absolute paths of the exporting machine)
        # in every node's metadata_props; it is most of the file. Blank it, as the exporter
        # itself writes it for nodes without a trace. All other metadata stays as written.
        m = onnx.load(path)
        for n in m.graph.node:
            for p in n.metadata_props:
                if p.key == "pkg.torch.onnx.stack_trace":
                    p.value = ""
        onnx.save(m, path)
        opts["stack_traces_blanked"] = True
    return opts


def declared_shape(vi):
    dims = []
    for d in vi.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
    return dims


def describe(path):
    m = onnx.load(path)
    g = m.graph
    hist = collections.Counter(n.op_type for n in g.node)
    opsets = {(o.domain or "ai.onnx"): o.version for o in m.opset_import}
    attrs = collections.defaultdict(collections.Counter)
    for n in g.node:
        if n.op_type in ("Resize", "MaxPool", "Pad", "BatchNormalization", "Clip", "Cast"):
            key = tuple(sorted((a.name, str(onnx.helper.get_attribute_value(a))) for a in n.attribute))
            attrs[n.op_type][repr(key)] += 1
    return {
        "file_bytes": os.path.getsize(path),
        "producer": f"{m.producer_name} {m.producer_version}",
        "ir_version": m.ir_version,
        "opset_import": opsets,
        "nodes": len(g.node),
        "initializers": len(g.initializer),
        "op_histogram": dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))),
        "inputs": {i.name: declared_shape(i) for i in g.input},
        "declared_outputs": {o.name: declared_shape(o) for o in g.output},
        "attributes": {k: dict(v) for k, v in attrs.items()},
    }


def make(name, spec, out_dir, strip_stack_traces):
    config_name, overrides, exporter, opset, seed = spec[:5]
    batch = spec[5] if len(spec) > 5 else None  # None: static batch 1
    wrapper, config = build(config_name, overrides, seed)
    if overrides:
        check_same_topology(config_name, wrapper.model)
    h, w = config.image_size
    rng = np.random.default_rng(seed)
    # With batch B the B images are drawn in one go from the same seeded stream, so image 0 is
    # the batch-1 input of the model with the same seed and the others differ from it.
    x_np = rng.standard_normal((batch or 1, 3, h, w), dtype=np.float32)
    x = torch.from_numpy(x_np)
    with torch.no_grad():
        ref = [t.numpy() for t in wrapper(x)]

    path = os.path.join(out_dir, f"{name}.onnx")
    export_opts = export(wrapper, x, path, exporter, opset, strip_stack_traces,
                         symbolic_batch=batch is not None)
    onnx.checker.check_model(path)

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    in_names = [i.name for i in sess.get_inputs()]
    out_names = [o.name for o in sess.get_outputs()]
    assert in_names == ["input"], in_names
    assert out_names == OUTPUT_NAMES, out_names
    outs = sess.run(None, {"input": x_np})

    np.save(os.path.join(out_dir, f"{name}.input.npy"), x_np)
    diffs, worst_ratio = {}, 0.0
    for oname, o, r in zip(out_names, outs, ref):
        assert o.shape == r.shape, (oname, o.shape, r.shape)
        d = float(np.max(np.abs(o - r)))
        # The project's tolerance rule (fixtures README): 1e-4 * max(1, max|ref - mean(ref)|).
        tol = TOL * max(1.0, float(np.max(np.abs(r - r.mean()))))
        diffs[oname] = d
        worst_ratio = max(worst_ratio, d / tol)
        np.save(os.path.join(out_dir, f"{name}.{oname}.npy"), o)
    maxd = max(diffs.values())
    print(f"{name}: ORT vs PyTorch max |diff| = {maxd:.3g} (worst {max(diffs, key=diffs.get)}); "
          f"worst diff/tolerance = {worst_ratio:.3f}", flush=True)
    assert worst_ratio <= 1.0, f"{name}: ORT and PyTorch differ beyond tolerance: {diffs}"

    other_batches = {}
    if batch is not None:
        # The symbolic batch must really be free: run the same session at other batch sizes
        # (images cycled from the reference input) and compare image by image with the
        # reference batch's ORT outputs, within the same tolerance.
        for b in OTHER_BATCHES:
            idx = [i % batch for i in range(b)]
            outs_b = sess.run(None, {"input": np.ascontiguousarray(x_np[idx])})
            d_b, ratio_b = 0.0, 0.0
            for oname, ob, o in zip(out_names, outs_b, outs):
                assert ob.shape == (b,) + o.shape[1:], (oname, b, ob.shape, o.shape)
                r = o[idx]
                tol = TOL * max(1.0, float(np.max(np.abs(r - r.mean()))))
                d = float(np.max(np.abs(ob - r)))
                d_b, ratio_b = max(d_b, d), max(ratio_b, d / tol)
            print(f"{name}: ORT at batch {b} vs batch {batch}, per image: max |diff| = {d_b:.3g}", flush=True)
            assert ratio_b <= 1.0, f"{name}: ORT at batch {b} differs from batch {batch}: {d_b}"
            other_batches[str(b)] = d_b

    info = describe(path)
    info.update(
        exporter=exporter, export_options=export_opts, opset=opset, effdet_config=config_name,
        overrides={k: (list(v) if isinstance(v, tuple) else v) for k, v in overrides.items()},
        params=sum(p.numel() for p in wrapper.parameters()), seed=seed,
        input_shape=list(x_np.shape),
        output_shapes={n: list(o.shape) for n, o in zip(out_names, outs)},
        ort_vs_torch_max_abs_diff=maxd, ort_vs_torch_worst_diff_over_tolerance=worst_ratio)
    if batch is not None:
        info.update(symbolic_batch=BATCH_DIM, ort_other_batches_max_abs_diff=other_batches)
    return info


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--big", nargs="?", const=BIG_DIR, default=None, metavar="DIR",
                    help=f"make the full-size models into DIR (default {BIG_DIR}) instead of the small ones")
    ap.add_argument("--only", action="append", help="make only this model (repeatable)")
    args = ap.parse_args()

    torch.set_num_threads(2)
    specs, out_dir = (BIG, args.big) if args.big else (SMALL, SMALL_DIR)
    os.makedirs(out_dir, exist_ok=True)
    names = args.only or list(specs)
    for n in names:
        if n not in specs:
            sys.exit(f"unknown model {n}; choose from {list(specs)}")

    manifest_path = os.path.join(out_dir, "MANIFEST.json")
    manifest = {}
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f).get("models", {})
    for n in names:
        manifest[n] = make(n, specs[n], out_dir, strip_stack_traces=not args.big)

    versions = {p: version(p) for p in ("torch", "timm", "effdet", "onnx", "onnxruntime",
                                        "onnxscript", "onnx_ir", "numpy")}
    versions["python"] = sys.version.split()[0]
    with open(manifest_path, "w") as f:
        json.dump({"versions": versions, "models": dict(sorted(manifest.items()))}, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(out_dir, p)) for p in os.listdir(out_dir))
    print(f"wrote {out_dir}: {total / 1e6:.2f} MB in total")


if __name__ == "__main__":
    main()
