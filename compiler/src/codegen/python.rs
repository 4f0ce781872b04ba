//! `effdetc build --python`: a PyO3 extension module for a generated crate, built by maturin,
//! so `pip install DIR` gives `import <lib>` with `Model`, `forward` (numpy in, numpy out) and
//! `detect` (a uint8 image in, a list of dicts out).
//!
//! The crate gets `src/python.rs` behind the cargo feature `python` (the plain crate does not
//! depend on pyo3), `pyproject.toml` (maturin, `features = ["python"]`, module name = the
//! library name) and `<lib>.pyi` (type stubs; maturin adds `py.typed` beside them in the
//! wheel). Text templates, like the C ABI, because the docstrings are part of the product;
//! the Rust is written rustfmt-clean and a test parses it.

use std::path::PathBuf;

use super::CrateOptions;
use crate::plan::Plan;

/// pyo3 and rust-numpy releases that go together (rust-numpy 0.30 is built on pyo3 0.30).
const PYO3_VERSION: &str = "0.30";
const NUMPY_CRATE_VERSION: &str = "0.30";
/// maturin sets `PYO3_BUILD_EXTENSION_MODULE` itself from 1.9.4 on (pyo3 ≥ 0.26 needs it).
const MATURIN_REQUIREMENT: &str = "maturin>=1.9.4,<2.0";

/// Adds the Python binding to a crate's files: `src/python.rs`, `pyproject.toml`,
/// `<lib>.pyi`, the `python` feature and its optional dependencies in `Cargo.toml`, and the
/// feature-gated module in `src/lib.rs`.
pub fn add(
    files: &mut Vec<(PathBuf, Vec<u8>)>,
    plan: &Plan,
    opts: &CrateOptions<'_>,
) -> Result<(), String> {
    let lib = opts.name.replace('-', "_");
    let detect = opts.header.detection.is_some();
    edit(
        files,
        "Cargo.toml",
        "cli = [\"std\", \"dep:npyz\", \"dep:image\"]\n",
        "cli = [\"std\", \"dep:npyz\", \"dep:image\"]\n# `--python`: the PyO3 extension module (src/python.rs); maturin builds it from pyproject.toml.\npython = [\"std\", \"dep:pyo3\", \"dep:numpy\"]\n",
    )?;
    edit(
        files,
        "Cargo.toml",
        "\n# A crate of its own",
        &format!(
            "pyo3 = {{ version = \"{PYO3_VERSION}\", optional = true }}\nnumpy = {{ version = \"{NUMPY_CRATE_VERSION}\", optional = true }}\n\n# A crate of its own"
        ),
    )?;
    edit(
        files,
        "src/lib.rs",
        "\nmod model;\n",
        &format!(
            "//!\n//! Python: `pip install .` builds the extension module `{lib}` (feature `python`, \
             `pyproject.toml`, stubs in `{lib}.pyi`).\n\nmod model;\n"
        ),
    )?;
    if let Some((_, text)) = files.iter_mut().find(|(p, _)| p.as_path() == "src/lib.rs") {
        text.extend_from_slice(b"#[cfg(feature = \"python\")]\nmod python;\n");
    }
    files.push((
        "src/python.rs".into(),
        rust(plan, opts, &lib, detect).into_bytes(),
    ));
    files.push(("pyproject.toml".into(), pyproject(opts, &lib).into_bytes()));
    files.push((
        PathBuf::from(format!("{lib}.pyi")),
        stub(plan, opts, &lib, detect).into_bytes(),
    ));
    Ok(())
}

/// Replaces `anchor` in the text of `file`; an anchor that moved is an error, not a crate
/// that silently lacks its binding.
fn edit(
    files: &mut [(PathBuf, Vec<u8>)],
    file: &str,
    anchor: &str,
    with: &str,
) -> Result<(), String> {
    let (_, bytes) = files
        .iter_mut()
        .find(|(p, _)| p.as_path() == file)
        .ok_or_else(|| format!("--python: the crate has no {file}"))?;
    let text = String::from_utf8_lossy(bytes).into_owned();
    if !text.contains(anchor) {
        return Err(format!("--python: {file} lacks `{}`", anchor.trim()));
    }
    *bytes = text.replacen(anchor, with, 1).into_bytes();
    Ok(())
}

/// Text safe inside a Rust string literal, a doc comment and a Python docstring.
fn plain(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == '"' || c == '\\' || c == '`' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// `[N, 3, 512, 512]` for a batch axis, as the messages and docs write the input.
fn input_text(plan: &Plan) -> String {
    let shape = &plan.slots[plan.input].shape;
    let rest: Vec<String> = shape[1..].iter().map(|d| d.to_string()).collect();
    format!("[N, {}]", rest.join(", "))
}

/// Fills the placeholders that describe the model (name, source, input shape and layout)
/// in a template of the binding or of its stubs.
fn describe(template: &str, plan: &Plan, opts: &CrateOptions<'_>) -> String {
    let layout = super::input_layout(plan);
    template
        .replace("@MODEL@", &plain(opts.header.model))
        .replace("@SOURCE@", &plain(opts.header.source))
        .replace("@INPUT@", &input_text(plan))
        .replace("@LAYOUT@", layout)
        .replace(
            "@INPUT_SHAPE_PY@",
            match layout {
                "NHWC" => "(BATCH, H, W, 3)",
                _ => "(BATCH, 3, H, W)",
            },
        )
}

fn rust(plan: &Plan, opts: &CrateOptions<'_>, lib: &str, detect: bool) -> String {
    let shapes: Vec<String> = plan
        .outputs
        .iter()
        .enumerate()
        .map(|(i, (_, s))| {
            let dims: Vec<String> = plan.slots[*s].shape[1..]
                .iter()
                .map(|d| d.to_string())
                .collect();
            format!("        {i} => &[{}],", dims.join(", "))
        })
        .collect();
    let fill = |t: &str| {
        describe(t, plan, opts)
            .replace("@SHAPES@", &shapes.join("\n"))
            .replace("effdet_lib", lib)
    };
    let mut text = fill(RUST_TEMPLATE);
    if detect {
        text = text
            .replace(
                "use crate::{Error, Model, BATCH, INPUT_SHAPE, OUTPUT_NAMES};\n",
                "use crate::{\n    coco_label, detect_options, Detection, Error, Image, Model, BATCH, INPUT_SHAPE, NUM_CLASSES,\n    OUTPUT_NAMES,\n};\n",
            )
            .replace("    // @DETECT_METHODS@\n", &fill(RUST_DETECT_METHODS))
            .replace("    // @DETECT_MODULE@\n", RUST_DETECT_MODULE)
            + &fill(RUST_DETECT_ITEMS);
    } else {
        text = text
            .replace("    // @DETECT_METHODS@\n", "")
            .replace("    // @DETECT_MODULE@\n", "");
    }
    text
}

fn pyproject(opts: &CrateOptions<'_>, lib: &str) -> String {
    format!(
        r#"# Generated by effdetc. Do not edit: regenerate with `effdetc build --python`.
# `pip install .` builds the extension module `{lib}` with maturin (a Rust toolchain is needed).
[build-system]
requires = ["{MATURIN_REQUIREMENT}"]
build-backend = "maturin"

[project]
name = "{name}"
version = "0.1.0"
description = "EfficientDet model {model} compiled by effdetc (PyO3 extension module)"
requires-python = ">=3.9"
dependencies = ["numpy>=1.21"]
classifiers = [
    "Programming Language :: Rust",
    "Programming Language :: Python :: Implementation :: CPython",
    "Typing :: Typed",
]

[tool.maturin]
bindings = "pyo3"
module-name = "{lib}"
# Only the library with its binding: the default `cli` feature is for the crate's own binary.
no-default-features = true
features = ["python"]
"#,
        name = opts.name,
        model = plain(opts.header.model),
    )
}

fn stub(plan: &Plan, opts: &CrateOptions<'_>, lib: &str, detect: bool) -> String {
    let names: Vec<String> = plan
        .outputs
        .iter()
        .map(|(n, s)| format!("#   {}: {:?}", plain(n), plan.slots[*s].shape))
        .collect();
    let mut text = describe(STUB_TEMPLATE, plan, opts)
        .replace("@OUTPUTS@", &names.join("\n"))
        .replace("effdet_lib", lib);
    if detect {
        text = text.replace("    # @DETECT_METHODS@\n", STUB_DETECT_METHODS) + STUB_DETECT_ITEMS;
    } else {
        text = text.replace("    # @DETECT_METHODS@\n", "");
    }
    text
}

const RUST_TEMPLATE: &str = r#"// Generated by effdetc. Do not edit: regenerate with `effdetc build --python`.
//! The Python extension module `effdet_lib` (cargo feature `python`; `pip install .` builds it
//! with maturin from `pyproject.toml`; `effdet_lib.pyi` holds its type stubs).
//!
//! Calls that run the network release the GIL and take the model's lock: other Python
//! threads run meanwhile, and one `Model` may be shared by several threads (their calls take
//! turns). Arrays are checked (type, dtype, rank, shape) before anything runs, and the errors
//! say what was expected. Errors of the model become Python exceptions: a panic inside the
//! network (on any of its threads) is a `RuntimeError` and the model stays usable.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use numpy::ndarray::{ArrayD, IxDyn};
use numpy::{
    IntoPyArray, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::{Error, Model, BATCH, INPUT_SHAPE, OUTPUT_NAMES};

/// The shape of output `i` (in `OUTPUT_NAMES` order) after its first (batch) dimension.
fn output_tail(i: usize) -> &'static [usize] {
    match i {
@SHAPES@
        _ => &[],
    }
}

/// Values of one image's share of output `i`.
fn image_values(i: usize) -> usize {
    output_tail(i).iter().product()
}

/// Values of one image's input.
const IMAGE_LEN: usize = INPUT_SHAPE[1] * INPUT_SHAPE[2] * INPUT_SHAPE[3];

/// An error of the model as the Python exception that fits it.
fn py_err(e: Error) -> PyErr {
    match e {
        Error::Weights { .. } => PyOSError::new_err(e.to_string()),
        Error::Panic(_) => PyRuntimeError::new_err(e.to_string()),
        _ => PyValueError::new_err(e.to_string()),
    }
}

/// The Python type of `obj`, for messages.
fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map_or_else(|_| "?".to_string(), |n| n.to_string())
}

/// `obj` as a numpy array of `T`, or a `TypeError` saying it must be `expected`.
fn array<'py, T: numpy::Element>(
    obj: &Bound<'py, PyAny>,
    what: &str,
    expected: &str,
) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    let Ok(untyped) = obj.cast::<PyUntypedArray>() else {
        return Err(PyTypeError::new_err(format!(
            "{what} must be {expected}, got {}",
            type_name(obj)
        )));
    };
    let dtype = untyped.dtype();
    if !dtype.is_equiv_to(&numpy::dtype::<T>(obj.py())) {
        return Err(PyTypeError::new_err(format!(
            "{what} must be {expected}, got a numpy array of dtype {dtype}"
        )));
    }
    Ok(untyped.cast::<PyArrayDyn<T>>()?.clone())
}

/// The elements of `a` in C order: one copy, made under the GIL (so no Python thread can
/// change them while the network reads them).
fn values<T: numpy::Element + Copy>(a: &Bound<'_, PyArrayDyn<T>>) -> PyResult<Vec<T>> {
    let view = a
        .try_readonly()
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    // `as_slice` also accepts Fortran order, which is not the order the model reads.
    Ok(match view.as_slice() {
        Ok(slice) if a.is_c_contiguous() => slice.to_vec(),
        _ => view.as_array().iter().copied().collect(),
    })
}

/// The shape of `a` as Python prints it, e.g. `(3, 512, 512)`.
fn shape_text(shape: &[usize]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => {
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            format!("({})", dims.join(", "))
        }
    }
}

/// `@MODEL@` compiled by effdetc from `@SOURCE@`.
///
/// `Model(threads=1)` uses the weights built into the module; `Model.from_file(path)` reads a
/// `weights.bin`. `threads` is the number of intra-op threads of each call (outputs are
/// bit-identical at every count). One model may be shared by several Python threads: each
/// call takes the model's lock and releases the GIL while it runs. In worker processes,
/// create the model in the worker.
#[pyclass(name = "Model", module = "effdet_lib", frozen)]
struct PyModel {
    model: Mutex<Model>,
    /// Read without the lock, so `threads` and `repr` never wait for a running call.
    threads: AtomicUsize,
}

impl PyModel {
    fn wrap(mut model: Model, threads: usize) -> PyResult<Self> {
        if threads == 0 {
            return Err(PyValueError::new_err("threads must be at least 1, got 0"));
        }
        model.set_threads(threads);
        Ok(PyModel {
            model: Mutex::new(model),
            threads: AtomicUsize::new(threads),
        })
    }

    /// The model's lock (a panic is caught inside the model, so the lock is never left
    /// poisoned by one; if it were, the model is still consistent between calls).
    fn lock(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `n` images of `input` (@LAYOUT@, `n · IMAGE_LEN` values), `BATCH` per forward pass
    /// (a short last pass padded with zeros, whose outputs are dropped); returns each output's
    /// values for the `n` images.
    fn run(&self, input: &[f32], n: usize) -> Result<Vec<Vec<f32>>, Error> {
        let mut model = self.lock();
        let mut outputs: Vec<Vec<f32>> = (0..OUTPUT_NAMES.len())
            .map(|i| Vec::with_capacity(n * image_values(i)))
            .collect();
        let mut padded = Vec::new();
        for first in (0..n).step_by(BATCH) {
            let images = (n - first).min(BATCH);
            let mut chunk = &input[first * IMAGE_LEN..(first + images) * IMAGE_LEN];
            if images < BATCH {
                padded.clear();
                padded.extend_from_slice(chunk);
                padded.resize(BATCH * IMAGE_LEN, 0.0);
                chunk = &padded;
            }
            let found = model.forward(chunk)?;
            for (i, (name, out)) in OUTPUT_NAMES.iter().zip(&mut outputs).enumerate() {
                let values = found
                    .get(name)
                    .ok_or_else(|| Error::Detect(format!("the model has no output {name}")))?;
                out.extend_from_slice(&values[..images * image_values(i)]);
            }
        }
        Ok(outputs)
    }
}

#[pymethods]
impl PyModel {
    /// The model with the weights built into the module (a model too large to embed reads
    /// the `weights.bin` it was built with: `OSError` if that is gone or changed), running on
    /// `threads` threads.
    #[new]
    #[pyo3(signature = (threads = 1))]
    fn new(threads: usize) -> PyResult<Self> {
        Self::wrap(Model::try_new().map_err(py_err)?, threads)
    }

    /// The model with packed weights read from `path` (a `weights.bin` written by effdetc
    /// for this model); `OSError` if it cannot be read or does not fit.
    #[staticmethod]
    #[pyo3(signature = (path, threads = 1))]
    fn from_file(path: std::path::PathBuf, threads: usize) -> PyResult<Self> {
        Self::wrap(Model::from_file(path).map_err(py_err)?, threads)
    }

    /// Intra-op threads of each call.
    #[getter]
    fn threads(&self) -> usize {
        self.threads.load(Ordering::Relaxed)
    }

    /// Sets the intra-op threads (at least 1; 1 starts no thread).
    fn set_threads(&self, py: Python<'_>, threads: usize) -> PyResult<()> {
        if threads == 0 {
            return Err(PyValueError::new_err("threads must be at least 1, got 0"));
        }
        py.detach(|| {
            self.lock().set_threads(threads);
            self.threads.store(threads, Ordering::Relaxed);
        });
        Ok(())
    }

    /// Runs the network on `x`, a C- or otherwise-ordered float32 numpy array of shape
    /// @INPUT@ (@LAYOUT@, normalized; any N ≥ 1, run BATCH images per pass). Returns a dict of
    /// float32 arrays named as OUTPUT_NAMES, each of shape (N, ...) as OUTPUT_SHAPES says.
    /// The GIL is released while the network runs. `TypeError` for another type or dtype,
    /// `ValueError` for another rank or shape, `RuntimeError` for a panic inside the model.
    fn forward<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
        let expected = "a float32 numpy array of shape @INPUT@ (N >= 1)";
        let a = array::<f32>(x, "x", expected)?;
        let shape = a.shape().to_vec();
        if shape.len() != 4 || shape[0] == 0 || shape[1..] != INPUT_SHAPE[1..] {
            return Err(PyValueError::new_err(format!(
                "x must be {expected}, got shape {}",
                shape_text(&shape)
            )));
        }
        let n = shape[0];
        let input = values(&a)?;
        let outputs = py.detach(|| self.run(&input, n)).map_err(py_err)?;
        let dict = PyDict::new(py);
        for (i, (name, values)) in OUTPUT_NAMES.iter().zip(outputs).enumerate() {
            let mut dims = vec![n];
            dims.extend_from_slice(output_tail(i));
            let array = ArrayD::from_shape_vec(IxDyn(&dims), values)
                .map_err(|e| PyRuntimeError::new_err(format!("output {name}: {e}")))?;
            dict.set_item(*name, array.into_pyarray(py))?;
        }
        Ok(dict)
    }

    // @DETECT_METHODS@
    fn __repr__(&self) -> String {
        format!(
            "effdet_lib.Model(threads={})",
            self.threads.load(Ordering::Relaxed)
        )
    }
}

/// Test hook: the `n`-th task run from now on by any model of this process panics (0
/// cancels), so a test can see the `RuntimeError` and the model working after it. Not for
/// production use.
#[pyfunction]
fn _test_inject_panic(n: usize) {
    ::effdet_runtime::kernels::pool::inject_panic(n);
}

/// `@MODEL@` compiled by effdetc from `@SOURCE@`: `Model`, `INPUT_SHAPE`, `BATCH`,
/// `OUTPUT_NAMES`, `OUTPUT_SHAPES` (see `effdet_lib.pyi`).
#[pymodule]
fn effdet_lib(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<PyModel>()?;
    m.add("INPUT_SHAPE", PyTuple::new(py, INPUT_SHAPE)?)?;
    m.add("BATCH", BATCH)?;
    m.add("OUTPUT_NAMES", PyTuple::new(py, OUTPUT_NAMES)?)?;
    let shapes = PyDict::new(py);
    for (i, name) in OUTPUT_NAMES.iter().enumerate() {
        let mut dims = vec![BATCH];
        dims.extend_from_slice(output_tail(i));
        shapes.set_item(*name, PyTuple::new(py, dims)?)?;
    }
    m.add("OUTPUT_SHAPES", shapes)?;
    m.add_function(wrap_pyfunction!(_test_inject_panic, m)?)?;
    // @DETECT_MODULE@
    Ok(())
}
"#;

const RUST_DETECT_METHODS: &str = r#"    /// Detects objects in `image`, a uint8 numpy array of shape [H, W, 3] (RGB), [H, W]
    /// (grayscale) or [H, W, 4] (RGBA, alpha ignored), any size. Returns a list of dicts
    /// `{"bbox": [x1, y1, x2, y2], "score": float, "class": int, "label": str}`, best first,
    /// boxes in the image's pixels, classes 1-based COCO ids. `score_threshold` (default 0.4;
    /// None keeps all), `max_detections`, `iou_threshold` and `class_agnostic` override the
    /// spec's post-processing. The GIL is released while it runs.
    #[pyo3(signature = (image, score_threshold = Some(0.4), max_detections = None, iou_threshold = None, class_agnostic = None))]
    fn detect<'py>(
        &self,
        py: Python<'py>,
        image: &Bound<'py, PyAny>,
        score_threshold: Option<f32>,
        max_detections: Option<usize>,
        iou_threshold: Option<f32>,
        class_agnostic: Option<bool>,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let options = options(
            score_threshold,
            max_detections,
            iou_threshold,
            class_agnostic,
        );
        let pixels = Pixels::from_py(image, "image")?;
        let found = py
            .detach(|| self.lock().detect(&pixels.image(), &options))
            .map_err(py_err)?;
        detections(py, &found)
    }

    /// `detect` for each image of a list, BATCH images per forward pass: one list of
    /// detections per image, in order (the same as `detect` gives each alone).
    #[pyo3(signature = (images, score_threshold = Some(0.4), max_detections = None, iou_threshold = None, class_agnostic = None))]
    fn detect_batch<'py>(
        &self,
        py: Python<'py>,
        images: Vec<Bound<'py, PyAny>>,
        score_threshold: Option<f32>,
        max_detections: Option<usize>,
        iou_threshold: Option<f32>,
        class_agnostic: Option<bool>,
    ) -> PyResult<Vec<Vec<Bound<'py, PyDict>>>> {
        let options = options(
            score_threshold,
            max_detections,
            iou_threshold,
            class_agnostic,
        );
        let pixels = images
            .iter()
            .enumerate()
            .map(|(i, image)| Pixels::from_py(image, &format!("images[{i}]")))
            .collect::<PyResult<Vec<Pixels>>>()?;
        let found = py
            .detach(|| {
                let images: Vec<Image<'_>> = pixels.iter().map(Pixels::image).collect();
                self.lock().detect_batch(&images, &options)
            })
            .map_err(py_err)?;
        found.iter().map(|d| detections(py, d)).collect()
    }

"#;

const RUST_DETECT_MODULE: &str = r#"    m.add("NUM_CLASSES", NUM_CLASSES)?;
    m.add_function(wrap_pyfunction!(label, m)?)?;
"#;

const RUST_DETECT_ITEMS: &str = r#"
/// The spec's post-processing with the caller's overrides.
fn options(
    score_threshold: Option<f32>,
    max_detections: Option<usize>,
    iou_threshold: Option<f32>,
    class_agnostic: Option<bool>,
) -> crate::DetectOptions {
    let mut options = detect_options();
    options.score_threshold = score_threshold;
    if let Some(n) = max_detections {
        options.max_detections = n;
    }
    if let Some(iou) = iou_threshold {
        options.iou_threshold = iou;
    }
    if let Some(agnostic) = class_agnostic {
        options.class_agnostic = agnostic;
    }
    options
}

/// An image's pixels, copied out of its numpy array under the GIL.
struct Pixels {
    width: usize,
    height: usize,
    channels: usize,
    data: Vec<u8>,
}

impl Pixels {
    fn from_py(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Pixels> {
        let expected =
            "a uint8 numpy array of shape [H, W, 3] (RGB), [H, W] (grayscale) or [H, W, 4] (RGBA)";
        let a = array::<u8>(obj, what, expected)?;
        let shape = a.shape().to_vec();
        let (height, width, channels) = match shape[..] {
            [h, w] => (h, w, 1),
            [h, w, c] if c == 3 || c == 4 => (h, w, c),
            _ => {
                return Err(PyValueError::new_err(format!(
                    "{what} must be {expected}, got shape {}",
                    shape_text(&shape)
                )))
            }
        };
        if height == 0 || width == 0 {
            return Err(PyValueError::new_err(format!(
                "{what} must not be empty, got shape {}",
                shape_text(&shape)
            )));
        }
        Ok(Pixels {
            width,
            height,
            channels,
            data: values(&a)?,
        })
    }

    fn image(&self) -> Image<'_> {
        Image {
            width: self.width,
            height: self.height,
            channels: self.channels,
            data: &self.data,
        }
    }
}

/// Detections as Python dicts: `bbox`, `score`, `class`, `label`.
fn detections<'py>(py: Python<'py>, found: &[Detection]) -> PyResult<Vec<Bound<'py, PyDict>>> {
    found
        .iter()
        .map(|d| {
            let dict = PyDict::new(py);
            dict.set_item(pyo3::intern!(py, "bbox"), d.bbox.to_vec())?;
            dict.set_item(pyo3::intern!(py, "score"), d.score)?;
            dict.set_item(pyo3::intern!(py, "class"), d.class)?;
            dict.set_item(pyo3::intern!(py, "label"), coco_label(d.class))?;
            Ok(dict)
        })
        .collect()
}

/// The COCO name of a 1-based class id (`"person"` for 1; `"n/a"` for ids COCO leaves out).
#[pyfunction]
fn label(class_id: u32) -> &'static str {
    coco_label(class_id)
}
"#;

const STUB_TEMPLATE: &str = r#"# Generated by effdetc. Do not edit: regenerate with `effdetc build --python`.
"""`@MODEL@` compiled by effdetc from `@SOURCE@` (a PyO3 extension module).

Outputs (name: shape at N = BATCH):
@OUTPUTS@
"""

import os
from typing import Final, TypedDict

import numpy as np
import numpy.typing as npt

INPUT_SHAPE: Final[tuple[int, int, int, int]]
"""The input of one forward pass, @LAYOUT@: @INPUT_SHAPE_PY@."""
BATCH: Final[int]
"""Images per forward pass; `forward` takes any N and runs BATCH at a time."""
OUTPUT_NAMES: Final[tuple[str, ...]]
"""The keys of `forward`'s dict, in order."""
OUTPUT_SHAPES: Final[dict[str, tuple[int, ...]]]
"""Each output's shape for BATCH images (`forward` gives N in the first dimension)."""

Detection = TypedDict(
    "Detection", {"bbox": list[float], "score": float, "class": int, "label": str}
)
"""One detected object: box (x1, y1, x2, y2) in image pixels, score, 1-based COCO class, label."""

class Model:
    """`@MODEL@` compiled by effdetc.

    Thread-safe: each call takes the model's lock and releases the GIL while it runs.
    In worker processes, create the model in the worker.
    """

    def __init__(self, threads: int = 1) -> None:
        """The model with its built-in weights, on `threads` intra-op threads.

        A model too large to embed reads the weights.bin it was built with (OSError if gone).
        """

    @staticmethod
    def from_file(path: str | os.PathLike[str], threads: int = 1) -> Model:
        """The model with packed weights read from `path` (a weights.bin); OSError if unusable."""

    @property
    def threads(self) -> int:
        """Intra-op threads of each call."""

    def set_threads(self, threads: int) -> None:
        """Sets the intra-op threads (at least 1)."""

    def forward(self, x: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
        """Runs the network on x, float32 of shape @INPUT@ (@LAYOUT@, normalized, any N >= 1).

        Returns float32 arrays named as OUTPUT_NAMES, each (N, ...). TypeError for another
        type or dtype, ValueError for another rank or shape, RuntimeError for a panic inside.
        """
    # @DETECT_METHODS@

def _test_inject_panic(n: int) -> None:
    """Test hook: the n-th task from now on panics (0 cancels). Not for production use."""
"#;

const STUB_DETECT_METHODS: &str = r#"
    def detect(
        self,
        image: npt.NDArray[np.uint8],
        score_threshold: float | None = 0.4,
        max_detections: int | None = None,
        iou_threshold: float | None = None,
        class_agnostic: bool | None = None,
    ) -> list[Detection]:
        """Detects objects in a uint8 image [H, W, 3] (RGB), [H, W] (gray) or [H, W, 4] (RGBA).

        Best first; boxes in the image's pixels. score_threshold None keeps all; the other
        options default to the spec's post-processing. TypeError / ValueError for another
        dtype / shape.
        """

    def detect_batch(
        self,
        images: list[npt.NDArray[np.uint8]],
        score_threshold: float | None = 0.4,
        max_detections: int | None = None,
        iou_threshold: float | None = None,
        class_agnostic: bool | None = None,
    ) -> list[list[Detection]]:
        """`detect` for each image, BATCH per forward pass: one list per image, in order."""
"#;

const STUB_DETECT_ITEMS: &str = r#"
NUM_CLASSES: Final[int]
"""Classes the class head scores (detections carry 1-based ids)."""

def label(class_id: int) -> str:
    """The COCO name of a 1-based class id."""
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{compile_model, BuildRequest, WeightsChoice};
    use crate::passes::PassSet;

    fn d0_files(python: bool) -> Vec<(PathBuf, Vec<u8>)> {
        let req = BuildRequest {
            model: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/d0.yaml"),
            weights: WeightsChoice::Random(0),
            out_dir: None,
            name: None,
            passes: PassSet::all(),
            input_shape: None,
            batch: None,
            limits: Default::default(),
            embed_limit: crate::codegen::DEFAULT_EMBED_LIMIT,
            detect_spec: None,
            c_api: false,
            python,
            tuning: Default::default(),
        };
        let c = compile_model(&req, &mut |_| {}).unwrap();
        let opts = CrateOptions {
            name: "effdet-d0",
            header: c.header(),
            embed_limit: req.embed_limit,
            runtime_version: "0.1.0",
            c_api: false,
            python,
        };
        crate::codegen::crate_files(&c.plan, &c.weights, &opts)
            .unwrap()
            .files
    }

    fn text<'a>(files: &'a [(PathBuf, Vec<u8>)], path: &str) -> &'a str {
        let (_, bytes) = files.iter().find(|(p, _)| p.as_path() == path).unwrap();
        std::str::from_utf8(bytes).unwrap()
    }

    #[test]
    fn python_adds_its_files_and_only_with_the_flag() {
        let plain = d0_files(false);
        assert!(!plain.iter().any(|(p, _)| p.as_path() == "pyproject.toml"));
        assert!(!text(&plain, "Cargo.toml").contains("pyo3"));
        let files = d0_files(true);
        let toml = text(&files, "Cargo.toml");
        assert!(toml.contains("python = [\"std\", \"dep:pyo3\", \"dep:numpy\"]"));
        assert!(toml.contains("pyo3 = { version = \"0.30\", optional = true }"));
        // Both under [dependencies] (not a later table, which cargo would reject).
        let section = |line: &str| {
            let at = toml.find(line).unwrap();
            toml[..at]
                .rfind("\n[")
                .map(|i| toml[i + 1..].lines().next().unwrap())
        };
        for dep in ["pyo3 = ", "numpy = "] {
            assert_eq!(section(dep), Some("[dependencies]"), "{dep} in\n{toml}");
        }
        assert!(text(&files, "src/lib.rs").ends_with("#[cfg(feature = \"python\")]\nmod python;\n"));
        let py = text(&files, "pyproject.toml");
        assert!(
            py.contains("module-name = \"effdet_d0\"") && py.contains("features = [\"python\"]")
        );
        let stub = text(&files, "effdet_d0.pyi");
        assert!(stub.contains("def detect(") && stub.contains("#   class_P3: [1, 810, 64, 64]"));
        let rust = text(&files, "src/python.rs");
        assert!(!rust.contains("effdet_lib") && !rust.contains('@'));
        assert!(rust.contains("fn effdet_d0(m: &Bound<'_, PyModule>)"));
        assert!(rust.contains("fn detect<'py>("));
        assert!(rust.contains("[N, 3, 512, 512]"));
    }

    /// The module parses as Rust, and the same model gives the same files, byte for byte.
    #[test]
    fn python_module_parses_and_is_deterministic() {
        let a = d0_files(true);
        let b = d0_files(true);
        for path in [
            "src/python.rs",
            "pyproject.toml",
            "effdet_d0.pyi",
            "Cargo.toml",
        ] {
            assert_eq!(
                text(&a, path),
                text(&b, path),
                "{path} differs between two runs"
            );
        }
        let rust = text(&a, "src/python.rs");
        syn::parse_file(rust).unwrap_or_else(|e| panic!("src/python.rs does not parse: {e}"));
    }

    #[test]
    fn text_is_safe_in_literals() {
        assert_eq!(plain("a\"b\\c`d\n"), "a_b_c_d_");
    }
}
