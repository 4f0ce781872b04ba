"""The D0 package against the fixture outputs; detection; every error a caller can make."""

from __future__ import annotations

import ast
import importlib.resources
from pathlib import Path

import numpy as np
import pytest

from conftest import CRATE, D0


def check_close(name: str, got: np.ndarray, ref: np.ndarray) -> None:
    """The Rust goldens' rule: |got − ref| ≤ 1e-4 · max(1, max|ref − mean(ref)|); NaN fails."""
    assert got.shape == ref.shape, f"{name}: shape {got.shape}, reference {ref.shape}"
    assert got.dtype == np.float32, f"{name}: dtype {got.dtype}"
    assert np.isfinite(got).all(), f"{name}: NaN or infinity in the output"
    assert np.isfinite(ref).all(), f"{name}: NaN or infinity in the reference"
    ref64 = ref.astype(np.float64)
    tol = 1e-4 * max(1.0, float(np.abs(ref64 - ref64.mean()).max()))
    err = float(np.abs(got.astype(np.float64) - ref64).max())
    assert err <= tol, f"{name}: max error {err:.3e} > tolerance {tol:.3e}"


def test_constants(mod):
    assert mod.INPUT_SHAPE == (1, 3, 512, 512)
    assert mod.BATCH == 1
    assert mod.OUTPUT_NAMES == tuple(f"{k}_P{l}" for k in ("class", "box") for l in range(3, 8))
    assert mod.OUTPUT_SHAPES["class_P3"] == (1, 810, 64, 64)
    assert mod.OUTPUT_SHAPES["box_P7"] == (1, 36, 4, 4)
    assert mod.NUM_CLASSES == 90
    assert mod.label(1) == "person"
    assert "tf_efficientdet_d0" in mod.__doc__
    assert mod.Model.forward.__doc__ and mod.Model.detect.__doc__ and mod.Model.__doc__


def test_forward_reproduces_the_fixture_outputs(model, mod, x):
    outs = model.forward(x)
    assert list(outs) == list(mod.OUTPUT_NAMES)
    for name in mod.OUTPUT_NAMES:
        check_close(name, outs[name], np.load(D0 / f"{name}.npy"))


def test_forward_takes_any_batch_and_any_layout(model, x):
    one = model.forward(x)
    # N = 3 images run BATCH at a time; each equals the single-image result exactly.
    three = model.forward(np.concatenate([x, x[:, :, ::-1, :], x]))
    flipped = model.forward(np.ascontiguousarray(x[:, :, ::-1, :]))
    for name, v in one.items():
        assert three[name].shape == (3,) + v.shape[1:]
        np.testing.assert_array_equal(three[name][0:1], v)
        np.testing.assert_array_equal(three[name][1:2], flipped[name])
        np.testing.assert_array_equal(three[name][2:3], v)
    # A Fortran-ordered copy and a strided view give the same values.
    fortran = model.forward(np.asfortranarray(x))
    strided = model.forward(np.concatenate([x, x], axis=2)[:, :, ::2, :])
    for name, v in one.items():
        np.testing.assert_array_equal(fortran[name], v)
    np.testing.assert_array_equal(strided["class_P3"], model.forward(
        np.ascontiguousarray(np.concatenate([x, x], axis=2)[:, :, ::2, :]))["class_P3"])


def test_a_batch_2_model_pads_the_last_pass(mod_b2, model, x):
    assert mod_b2.BATCH == 2 and mod_b2.INPUT_SHAPE == (2, 3, 512, 512)
    assert mod_b2.OUTPUT_SHAPES["class_P3"] == (2, 810, 64, 64)
    flipped = np.ascontiguousarray(x[:, :, :, ::-1])
    # N = 3 on a batch-2 model: one full pass, then one padded with a blank image.
    three = mod_b2.Model().forward(np.concatenate([x, flipped, x]))
    alone = [model.forward(x), model.forward(flipped), model.forward(x)]
    for name, v in three.items():
        assert v.shape == (3,) + mod_b2.OUTPUT_SHAPES[name][1:]
        for i in range(3):
            # Each image of a batch is bit-identical to the batch-1 crate's result.
            np.testing.assert_array_equal(v[i:i + 1], alone[i][name])


def test_from_file_equals_the_embedded_weights(mod, model, x):
    loaded = mod.Model.from_file(str(CRATE / "weights.bin"), threads=2)
    assert loaded.threads == 2 and repr(loaded) == "effdet_d0.Model(threads=2)"
    a, b = model.forward(x), loaded.forward(x)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_detect_on_the_photograph(model, photo):
    h, w, _ = photo.shape
    dets = model.detect(photo, score_threshold=0)
    assert dets, "no detection at threshold 0"
    assert len(dets) <= 100
    scores = [d["score"] for d in dets]
    assert scores == sorted(scores, reverse=True)
    for d in dets:
        assert set(d) == {"bbox", "score", "class", "label"}
        x1, y1, x2, y2 = d["bbox"]
        assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h, d
        assert isinstance(d["class"], int) and 1 <= d["class"] <= 90
        assert isinstance(d["label"], str) and d["label"]
    assert model.detect(photo, score_threshold=0, max_detections=7) == dets[:7]
    # The fixture weights are random: their scores stay far below the default 0.4.
    assert all(d["score"] >= 0.4 for d in model.detect(photo))


def test_detect_grayscale_and_rgba(model, photo):
    gray = np.asarray(photo.mean(axis=2), dtype=np.uint8)
    dets = model.detect(gray, score_threshold=0)
    assert dets
    # Grayscale is replicated to RGB; RGBA's alpha is ignored.
    assert dets == model.detect(np.repeat(gray[:, :, None], 3, axis=2), score_threshold=0)
    alpha = np.full(photo.shape[:2] + (1,), 77, dtype=np.uint8)
    rgba = np.concatenate([photo, alpha], axis=2)
    assert model.detect(rgba, score_threshold=0) == model.detect(photo, score_threshold=0)


def test_detect_batch_equals_detect(model, photo):
    images = [photo, photo[::-1], np.ascontiguousarray(photo[:150, :200])]
    batch = model.detect_batch(images, score_threshold=0)
    assert batch == [model.detect(i, score_threshold=0) for i in images]


F32_SHAPE = "float32 numpy array of shape [N, 3, 512, 512]"
U8_SHAPE = "uint8 numpy array of shape [H, W, 3] (RGB), [H, W] (grayscale) or [H, W, 4] (RGBA)"


@pytest.mark.parametrize(
    "make, exc, says",
    [
        (lambda x: x.astype(np.float64), TypeError, [F32_SHAPE, "dtype float64"]),
        (lambda x: x.astype(np.float16), TypeError, [F32_SHAPE, "dtype float16"]),
        (lambda x: x.tolist(), TypeError, [F32_SHAPE, "got list"]),
        (lambda x: None, TypeError, [F32_SHAPE, "got NoneType"]),
        (lambda x: x[0], ValueError, [F32_SHAPE, "got shape (3, 512, 512)"]),
        (lambda x: x[None], ValueError, [F32_SHAPE, "got shape (1, 1, 3, 512, 512)"]),
        (lambda x: x[:, :, :256, :], ValueError, [F32_SHAPE, "got shape (1, 3, 256, 512)"]),
        (lambda x: x[:, :1], ValueError, [F32_SHAPE, "got shape (1, 1, 512, 512)"]),
        (lambda x: x[:0], ValueError, [F32_SHAPE, "got shape (0, 3, 512, 512)"]),
    ],
)
def test_forward_errors_name_what_was_expected(model, x, make, exc, says):
    with pytest.raises(exc) as e:
        model.forward(make(x))
    for s in says:
        assert s in str(e.value)


@pytest.mark.parametrize(
    "make, exc, says",
    [
        (lambda p: p.astype(np.float32), TypeError, [U8_SHAPE, "dtype float32"]),
        (lambda p: p.astype(np.int64), TypeError, [U8_SHAPE, "dtype int64"]),
        (lambda p: p.tolist(), TypeError, [U8_SHAPE, "got list"]),
        (lambda p: p[:, :, :2], ValueError, [U8_SHAPE, "got shape (300, 256, 2)"]),
        (lambda p: p[None], ValueError, [U8_SHAPE, "got shape (1, 300, 256, 3)"]),
        (lambda p: p[0, 0], ValueError, [U8_SHAPE, "got shape (3,)"]),
        (lambda p: p[:0], ValueError, ["must not be empty", "got shape (0, 256, 3)"]),
    ],
)
def test_detect_errors_name_what_was_expected(model, photo, make, exc, says):
    with pytest.raises(exc) as e:
        model.detect(make(photo))
    for s in says:
        assert s in str(e.value)


def test_other_errors(mod, model, photo, tmp_path):
    with pytest.raises(TypeError, match="images\\[1\\] must be a uint8"):
        model.detect_batch([photo, photo.astype(np.float32)])
    with pytest.raises(ValueError, match="threads must be at least 1"):
        mod.Model(threads=0)
    with pytest.raises(OverflowError):
        mod.Model(threads=-1)
    with pytest.raises(OSError, match="nope.bin"):
        mod.Model.from_file(tmp_path / "nope.bin")
    short = tmp_path / "short.bin"
    short.write_bytes(b"\0" * 64)
    with pytest.raises(OSError, match="short.bin"):
        mod.Model.from_file(short)


def test_a_panic_inside_is_an_exception_and_the_model_recovers(mod, x):
    m = mod.Model(threads=2)
    before = m.forward(x)
    mod._test_inject_panic(40)
    with pytest.raises(RuntimeError, match="panic"):
        m.forward(x)
    after = m.forward(x)
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])


def test_the_stub_matches_the_module(mod):
    files = importlib.resources.files("effdet_d0")
    assert files.joinpath("py.typed").is_file()
    stub = files.joinpath("__init__.pyi").read_text()
    tree = ast.parse(stub)
    declared = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            declared.add(node.name)
        elif isinstance(node, ast.AnnAssign):
            declared.add(node.target.id)
        elif isinstance(node, ast.Assign):
            declared.update(t.id for t in node.targets)
    public = {n for n in dir(mod) if not n.startswith("__")} - {"effdet_d0"}
    # Detection is a TypedDict for type checkers only.
    assert public == declared - {"Detection"}
    model_methods = {f.name for c in tree.body if isinstance(c, ast.ClassDef)
                     for f in c.body if isinstance(f, ast.FunctionDef)}
    assert model_methods - {"__init__"} == {n for n in dir(mod.Model) if not n.startswith("_")}
    assert Path(CRATE / "effdet_d0.pyi").read_text() == stub
