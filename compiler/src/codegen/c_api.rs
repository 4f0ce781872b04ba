//! `effdetc build --c-api`: an `extern "C"` surface and a C header for a generated crate,
//! which is then also built as a static library (`crate-type = ["rlib", "staticlib"]`).
//!
//! The generated `src/c_api.rs` is the only place of a generated crate with `unsafe`: every
//! function checks its pointers (null, alignment) and lengths against the model's, turns a
//! panic into a status code (`catch_unwind`: unwinding into C is undefined), and keeps each
//! `unsafe` block to one pointer operation with a `SAFETY:` line. Symbols are prefixed with
//! the library name (`effdet_d0_create`), so several models link into one program; the status
//! codes are shared by all of them (`EFFDET_OK`, ...).
//!
//! Text templates (not `quote!`) because the comments are part of the product: `SAFETY:`
//! lines in the Rust, the contract of each function in the header.

use std::path::PathBuf;

use super::CrateOptions;
use crate::plan::Plan;

/// Adds the C ABI to a crate's files: `src/c_api.rs`, `include/<lib>.h`, the `staticlib`
/// crate type in `Cargo.toml` and `pub mod c_api;` in `src/lib.rs`.
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
        "[lib]\npath = \"src/lib.rs\"\n",
        "[lib]\npath = \"src/lib.rs\"\n# `--c-api`: also a static library for C and C++ (include/*.h).\ncrate-type = [\"rlib\", \"staticlib\"]\n",
    )?;
    edit(
        files,
        "src/lib.rs",
        "\nmod model;\n",
        &format!(
            "//!\n//! C and C++: `include/{lib}.h` declares the C ABI of [`c_api`]; link `lib{lib}.a` \
             (`cargo build --release --lib`) with `-lpthread -ldl -lm`.\n\nmod model;\n"
        ),
    )?;
    if let Some((_, text)) = files.iter_mut().find(|(p, _)| p.as_path() == "src/lib.rs") {
        text.extend_from_slice(b"pub mod c_api;\n");
    }
    files.push(("src/c_api.rs".into(), rust(plan, &lib, detect).into_bytes()));
    files.push((
        PathBuf::from(format!("include/{lib}.h")),
        header(plan, opts, &lib, detect).into_bytes(),
    ));
    Ok(())
}

/// Replaces `anchor` in the text of `file`; an anchor that moved is an error, not a crate
/// that silently lacks its C ABI.
fn edit(
    files: &mut [(PathBuf, Vec<u8>)],
    file: &str,
    anchor: &str,
    with: &str,
) -> Result<(), String> {
    let (_, bytes) = files
        .iter_mut()
        .find(|(p, _)| p.as_path() == file)
        .ok_or_else(|| format!("--c-api: the crate has no {file}"))?;
    let text = String::from_utf8_lossy(bytes).into_owned();
    if !text.contains(anchor) {
        return Err(format!("--c-api: {file} lacks `{}`", anchor.trim()));
    }
    *bytes = text.replacen(anchor, with, 1).into_bytes();
    Ok(())
}

/// Output `(name, element count, shape)` in output order.
fn outputs(plan: &Plan) -> Vec<(&str, usize, &[usize])> {
    plan.outputs
        .iter()
        .map(|(n, s)| {
            let slot = &plan.slots[*s];
            (n.as_str(), slot.len, slot.shape.as_slice())
        })
        .collect()
}

/// `class_P3` → `CLASS_P3`; anything but ASCII letters and digits becomes `_`.
fn c_ident(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Text safe inside a C comment or a Rust string literal: no `*/`, quotes, backslashes or
/// control characters.
fn plain(name: &str) -> String {
    name.replace("*/", "*_/")
        .chars()
        .map(|c| {
            if c == '"' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

fn rust(plan: &Plan, lib: &str, detect: bool) -> String {
    let outs = outputs(plan);
    let n = outs.len();
    let lens: Vec<String> = outs.iter().map(|(_, l, _)| l.to_string()).collect();
    // The names as C strings; `OUTPUT_NAMES` (the Rust API) stays the lookup key.
    let names: Vec<String> = outs
        .iter()
        .map(|(name, _, _)| format!("c\"{}\"", plain(name)))
        .collect();
    let mut text = RUST_TEMPLATE
        .replace("@N@", &n.to_string())
        .replace("@INPUT_LEN@", &plan.slots[plan.input].len.to_string())
        .replace("@LAYOUT@", super::input_layout(plan))
        .replace("@LENS@", &lens.join(", "))
        .replace("@NAMES@", &names.join(", "));
    if detect {
        text.push_str(RUST_DETECT_TEMPLATE);
    }
    text.replace("effdet_lib", lib)
        .replace("EFFDET_LIB", &c_ident(lib))
}

fn header(plan: &Plan, opts: &CrateOptions<'_>, lib: &str, detect: bool) -> String {
    let upper = c_ident(lib);
    let input = &plan.slots[plan.input];
    let mut defines = String::new();
    for (i, (name, len, shape)) in outputs(plan).iter().enumerate() {
        let id = c_ident(name);
        defines.push_str(&format!(
            "/** `{}`: {shape:?} floats, row-major. */\n#define {upper}_OUTPUT_{id} {i}\n#define {upper}_OUTPUT_{id}_LEN {len}\n",
            plain(name)
        ));
    }
    let mut text = HEADER_TEMPLATE
        .replace("@MODEL@", &plain(opts.header.model))
        .replace("@SOURCE@", &plain(opts.header.source))
        .replace("@CRATE@", opts.name)
        .replace("@INPUT_SHAPE@", &format!("{:?}", input.shape))
        .replace("@LAYOUT@", super::input_layout(plan))
        .replace("@INPUT_LEN@", &input.len.to_string())
        .replace("@BATCH@", &plan.batch.to_string())
        .replace("@N@", &plan.outputs.len().to_string())
        .replace("@OUTPUT_DEFINES@", &defines);
    let detect_decls = if detect {
        let max = opts
            .header
            .detection
            .map_or(100, |d| d.options.max_detections);
        HEADER_DETECT_TEMPLATE.replace("@MAX_DETECTIONS@", &max.to_string())
    } else {
        String::new()
    };
    text = text.replace("@DETECT@", &detect_decls);
    text.replace("effdet_lib", lib)
        .replace("EFFDET_LIB", &upper)
}

const RUST_TEMPLATE: &str = r#"// Generated by effdetc (--c-api). Do not edit: regenerate with `effdetc build --c-api`.
//! The C ABI of this crate, declared in `include/effdet_lib.h`.
//!
//! Every function returns a status code (`EFFDET_OK` is 0) and never lets a panic cross into
//! C: a panic becomes `EFFDET_PANIC`. Pointers are checked for null and alignment, lengths
//! against the model's. What cannot be checked is the caller's part, stated on each
//! function: that a pointer really covers the length given, and that a handle came from
//! `effdet_lib_create*`, is not yet freed, and is not used by two threads at once.

#![deny(unsafe_op_in_unsafe_fn)]

use std::ffi::{c_char, c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::{Model, OUTPUT_NAMES};

/// Success.
pub const EFFDET_OK: c_int = 0;
/// A required pointer was null.
pub const EFFDET_NULL_POINTER: c_int = 1;
/// A length does not match the model's: the input, the number of outputs, or an output
/// buffer shorter than its output.
pub const EFFDET_BAD_LENGTH: c_int = 2;
/// An argument is out of range: zero threads, a misaligned pointer, an image size that
/// overflows, a path that is not valid on this system.
pub const EFFDET_BAD_ARGUMENT: c_int = 3;
/// The weights file could not be read or belongs to another model.
pub const EFFDET_WEIGHTS: c_int = 4;
/// More detections than the buffer holds: the first `capacity` were written and `*count`
/// is the total.
pub const EFFDET_BUFFER_TOO_SMALL: c_int = 5;
/// Pre- or post-processing failed (for example an image with 2 channels).
pub const EFFDET_DETECT: c_int = 6;
/// A panic inside the model (a bug), caught on whichever of its threads it happened: that
/// call's outputs are lost; the handle and its threads stay usable.
pub const EFFDET_PANIC: c_int = 7;

/// Floats in the input (`INPUT_SHAPE`, @LAYOUT@).
const INPUT_LEN: usize = @INPUT_LEN@;
/// Floats in each output, in `OUTPUT_NAMES` order.
const OUTPUT_LENS: [usize; @N@] = [@LENS@];
/// `OUTPUT_NAMES` as C strings.
const OUTPUT_NAMES_C: [&CStr; @N@] = [@NAMES@];

/// The status code of each error variant.
fn status_of(e: &crate::Error) -> c_int {
    match e {
        crate::Error::InputLength { .. } => EFFDET_BAD_LENGTH,
        crate::Error::Weights { .. } => EFFDET_WEIGHTS,
        crate::Error::Detect(_) => EFFDET_DETECT,
        crate::Error::Panic(_) => EFFDET_PANIC,
    }
}

/// Runs `f`, turning a panic into `EFFDET_PANIC`.
fn guard(f: impl FnOnce() -> c_int) -> c_int {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(EFFDET_PANIC)
}

/// Checks `out` and clears it, so a failed create leaves a null handle behind.
///
/// # Safety
/// `out` must be null or point to a writable `effdet_lib_model *`.
unsafe fn clear(out: *mut *mut Model) -> Result<(), c_int> {
    if out.is_null() {
        return Err(EFFDET_NULL_POINTER);
    }
    if !out.is_aligned() {
        return Err(EFFDET_BAD_ARGUMENT);
    }
    // SAFETY: non-null and aligned; the caller promises it is writable.
    unsafe { out.write(std::ptr::null_mut()) };
    Ok(())
}

/// Stores a new handle for `model` in `*out`.
///
/// # Safety
/// `out` must have passed `clear`.
unsafe fn give(out: *mut *mut Model, model: Model) {
    let raw = Box::into_raw(Box::new(model));
    // SAFETY: `clear` checked `out` non-null and aligned; the caller promises it is writable.
    unsafe { out.write(raw) };
}

/// Creates the model with the weights built into the library and stores the handle in
/// `*out` (null on failure).
///
/// # Safety
/// `out` must be null or point to a writable `effdet_lib_model *`.
#[no_mangle]
pub unsafe extern "C" fn effdet_lib_create(out: *mut *mut Model) -> c_int {
    guard(|| {
        // SAFETY: forwarded contract.
        if let Err(status) = unsafe { clear(out) } {
            return status;
        }
        match Model::try_new() {
            Ok(model) => {
                // SAFETY: `out` passed `clear`.
                unsafe { give(out, model) };
                EFFDET_OK
            }
            Err(e) => status_of(&e),
        }
    })
}

/// Creates the model with packed weights read from `path` (a copy of the crate's
/// `weights.bin`) and stores the handle in `*out` (null on failure).
///
/// # Safety
/// `path` must be null or a NUL-terminated string; `out` null or a writable
/// `effdet_lib_model *`.
#[no_mangle]
pub unsafe extern "C" fn effdet_lib_create_from_file(
    path: *const c_char,
    out: *mut *mut Model,
) -> c_int {
    guard(|| {
        // SAFETY: forwarded contract.
        if let Err(status) = unsafe { clear(out) } {
            return status;
        }
        if path.is_null() {
            return EFFDET_NULL_POINTER;
        }
        // SAFETY: non-null; the caller promises a NUL-terminated string that outlives this call.
        let path = unsafe { CStr::from_ptr(path) };
        let Some(path) = os_path(path) else {
            return EFFDET_BAD_ARGUMENT;
        };
        match Model::from_file(path) {
            Ok(model) => {
                // SAFETY: `out` passed `clear`.
                unsafe { give(out, model) };
                EFFDET_OK
            }
            Err(e) => status_of(&e),
        }
    })
}

#[cfg(unix)]
fn os_path(path: &CStr) -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    Some(std::ffi::OsStr::from_bytes(path.to_bytes()).into())
}

#[cfg(not(unix))]
fn os_path(path: &CStr) -> Option<std::path::PathBuf> {
    path.to_str().ok().map(Into::into)
}

/// The handle as a model, or the status saying why not.
///
/// # Safety
/// `model` must be null or a live handle that nothing else uses during the borrow.
unsafe fn handle<'a>(model: *mut Model) -> Result<&'a mut Model, c_int> {
    if model.is_null() {
        return Err(EFFDET_NULL_POINTER);
    }
    if !model.is_aligned() {
        return Err(EFFDET_BAD_ARGUMENT);
    }
    // SAFETY: non-null and aligned; the caller promises it came from `effdet_lib_create*`,
    // is not freed, and is not in use elsewhere.
    Ok(unsafe { &mut *model })
}

/// Frees the model; a null handle is ignored.
///
/// # Safety
/// `model` must be null or a handle from `effdet_lib_create*` not yet freed; it is invalid
/// afterwards.
#[no_mangle]
pub unsafe extern "C" fn effdet_lib_free(model: *mut Model) -> c_int {
    guard(|| {
        if model.is_null() {
            return EFFDET_OK;
        }
        if !model.is_aligned() {
            return EFFDET_BAD_ARGUMENT;
        }
        // SAFETY: the caller promises `model` came from `Box::into_raw` in `give` and is
        // freed once.
        drop(unsafe { Box::from_raw(model) });
        EFFDET_OK
    })
}

/// Test hook for callers' error handling: the `n`-th task run from now on by any model of
/// this process panics (0 cancels), so a test can see `EFFDET_PANIC` and the recovery after
/// it. Not for production use.
#[no_mangle]
pub extern "C" fn effdet_lib_test_inject_panic(n: usize) {
    ::effdet_runtime::kernels::pool::inject_panic(n);
}

/// Intra-op threads for forward and detect (1, the default: no thread is started;
/// `threads − 1` workers otherwise, parked between parallel regions).
///
/// # Safety
/// `model` must be null or a live handle not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn effdet_lib_set_threads(model: *mut Model, threads: usize) -> c_int {
    guard(|| {
        // SAFETY: forwarded contract.
        let model = match unsafe { handle(model) } {
            Ok(m) => m,
            Err(status) => return status,
        };
        if threads == 0 {
            return EFFDET_BAD_ARGUMENT;
        }
        model.set_threads(threads);
        EFFDET_OK
    })
}

/// Runs the network on `input` (`input_len` floats, @LAYOUT@, normalized) and copies output `i`
/// into `outputs[i]`, which holds `output_lens[i]` floats, at least the output's length
/// (`effdet_lib_output_len(i)`); a null `outputs[i]` skips that output. `num_outputs` must be
/// the model's output count. Buffers may overlap (they are written in turn after the input
/// has been read), though overlapping outputs overwrite each other.
///
/// # Safety
/// `model` must be null or a live handle not in use by another thread; `input` null or
/// `input_len` readable floats; `outputs` and `output_lens` null or `num_outputs` readable
/// entries each; every non-null `outputs[i]` `output_lens[i]` writable floats.
#[no_mangle]
pub unsafe extern "C" fn effdet_lib_forward(
    model: *mut Model,
    input: *const f32,
    input_len: usize,
    outputs: *const *mut f32,
    output_lens: *const usize,
    num_outputs: usize,
) -> c_int {
    guard(|| {
        // SAFETY: forwarded contract.
        let model = match unsafe { handle(model) } {
            Ok(m) => m,
            Err(status) => return status,
        };
        if input.is_null() || outputs.is_null() || output_lens.is_null() {
            return EFFDET_NULL_POINTER;
        }
        if !input.is_aligned() || !outputs.is_aligned() || !output_lens.is_aligned() {
            return EFFDET_BAD_ARGUMENT;
        }
        if input_len != INPUT_LEN || num_outputs != OUTPUT_LENS.len() {
            return EFFDET_BAD_LENGTH;
        }
        // SAFETY: non-null, aligned; the caller promises `num_outputs` readable entries.
        let buffers = unsafe { std::slice::from_raw_parts(outputs, num_outputs) };
        // SAFETY: as above.
        let lens = unsafe { std::slice::from_raw_parts(output_lens, num_outputs) };
        for ((&buffer, &len), &needed) in buffers.iter().zip(lens).zip(&OUTPUT_LENS) {
            if !buffer.is_null() && len < needed {
                return EFFDET_BAD_LENGTH;
            }
            if !buffer.is_aligned() {
                return EFFDET_BAD_ARGUMENT;
            }
        }
        // Every region this call reads or writes, as byte ranges: an output that overlaps
        // another output, the input or the pointer and length arrays is refused (writing it
        // would change memory the call still reads, or alias a live reference).
        let span = |p: usize, bytes: usize| (p, p.saturating_add(bytes));
        let word = std::mem::size_of::<usize>();
        let mut regions = vec![
            span(input as usize, input_len * 4),
            span(outputs as usize, num_outputs * word),
            span(output_lens as usize, num_outputs * word),
        ];
        let fixed = regions.len();
        for (&buffer, &needed) in buffers.iter().zip(&OUTPUT_LENS) {
            if !buffer.is_null() {
                regions.push(span(buffer as usize, needed * 4));
            }
        }
        for (i, a) in regions.iter().enumerate().skip(fixed) {
            let clash = regions
                .iter()
                .enumerate()
                .any(|(j, b)| j != i && a.0 < b.1 && b.0 < a.1 && a.1 > a.0 && b.1 > b.0);
            if clash {
                return EFFDET_BAD_ARGUMENT;
            }
        }
        // The output pointers, copied out of the caller's array before anything is written.
        let buffers: Vec<*mut f32> = buffers.to_vec();
        // SAFETY: non-null, aligned; the caller promises `input_len` readable floats.
        let input = unsafe { std::slice::from_raw_parts(input, input_len) };
        let results = match model.forward(input) {
            Ok(r) => r,
            Err(e) => return status_of(&e),
        };
        for (name, &buffer) in OUTPUT_NAMES.iter().zip(&buffers) {
            if buffer.is_null() {
                continue;
            }
            let Some(values) = results.get(name) else {
                return EFFDET_PANIC;
            };
            // SAFETY: non-null, aligned, and the caller promises `output_lens[i]` writable
            // floats, checked above to be at least `values.len()`; checked above not to
            // overlap the input, the other outputs or the caller's arrays, and no reference
            // to those is alive (the pointers were copied, the input is no longer used).
            let out = unsafe { std::slice::from_raw_parts_mut(buffer, values.len()) };
            out.copy_from_slice(values);
        }
        EFFDET_OK
    })
}

/// Floats in the input.
#[no_mangle]
pub extern "C" fn effdet_lib_input_len() -> usize {
    INPUT_LEN
}

/// The number of outputs.
#[no_mangle]
pub extern "C" fn effdet_lib_num_outputs() -> usize {
    OUTPUT_LENS.len()
}

/// Floats in output `index` (0 when there is no such output).
#[no_mangle]
pub extern "C" fn effdet_lib_output_len(index: usize) -> usize {
    OUTPUT_LENS.get(index).copied().unwrap_or(0)
}

/// The name of output `index` (`class_P3`, ...), a static string; null when there is no such
/// output.
#[no_mangle]
pub extern "C" fn effdet_lib_output_name(index: usize) -> *const c_char {
    OUTPUT_NAMES_C
        .get(index)
        .map_or(std::ptr::null(), |s| s.as_ptr())
}

/// What a status code means, as a static string.
#[no_mangle]
pub extern "C" fn effdet_lib_status_message(status: c_int) -> *const c_char {
    let text: &'static CStr = match status {
        EFFDET_OK => c"ok",
        EFFDET_NULL_POINTER => c"a required pointer was null",
        EFFDET_BAD_LENGTH => c"a length does not match the model's",
        EFFDET_BAD_ARGUMENT => c"an argument is out of range (zero threads, misaligned pointer, image size overflow, bad path)",
        EFFDET_WEIGHTS => c"the weights file could not be read or belongs to another model",
        EFFDET_BUFFER_TOO_SMALL => c"more detections than the buffer holds",
        EFFDET_DETECT => c"pre- or post-processing failed",
        EFFDET_PANIC => c"internal error (a panic in the model, caught); the handle is still usable",
        _ => c"unknown status",
    };
    text.as_ptr()
}
"#;

const RUST_DETECT_TEMPLATE: &str = r#"
/// One detection, as C sees it (`effdet_lib_detection`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CDetection {
    /// `[x1, y1, x2, y2]` in the image's pixels.
    pub bbox: [f32; 4],
    /// Sigmoid score.
    pub score: f32,
    /// 1-based class id (COCO ids for the released models).
    pub class_id: u32,
}

/// Detects objects in an image of `width` × `height` pixels with `channels` bytes each (1
/// grey, 3 RGB, 4 RGBA), row-major: the spec's preprocessing, the network and its
/// post-processing, keeping scores ≥ `score_threshold` (a negative or NaN threshold keeps
/// all, as effdet does). Writes up to `capacity` detections, best first, to `out` and the
/// number found to `*count`; returns `EFFDET_BUFFER_TOO_SMALL` when that exceeds
/// `capacity` (at most `EFFDET_LIB_MAX_DETECTIONS` are found).
///
/// # Safety
/// `model` must be null or a live handle not in use by another thread; `pixels` null or
/// `width · height · channels` readable bytes; `out` null or `capacity` writable
/// detections; `count` null or a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn effdet_lib_detect(
    model: *mut Model,
    pixels: *const u8,
    width: usize,
    height: usize,
    channels: usize,
    score_threshold: f32,
    out: *mut CDetection,
    capacity: usize,
    count: *mut usize,
) -> c_int {
    guard(|| {
        // SAFETY: forwarded contract.
        let model = match unsafe { handle(model) } {
            Ok(m) => m,
            Err(status) => return status,
        };
        if pixels.is_null() || count.is_null() || (out.is_null() && capacity > 0) {
            return EFFDET_NULL_POINTER;
        }
        if !count.is_aligned() || !out.is_aligned() {
            return EFFDET_BAD_ARGUMENT;
        }
        let Some(len) = width.checked_mul(height).and_then(|n| n.checked_mul(channels)) else {
            return EFFDET_BAD_ARGUMENT;
        };
        if len > isize::MAX as usize {
            return EFFDET_BAD_ARGUMENT;
        }
        // SAFETY: non-null; the caller promises `width · height · channels` readable bytes.
        let data = unsafe { std::slice::from_raw_parts(pixels, len) };
        let image = crate::Image {
            width,
            height,
            channels,
            data,
        };
        let mut options = crate::detect_options();
        options.score_threshold = (score_threshold >= 0.0).then_some(score_threshold);
        let found = match model.detect(&image, &options) {
            Ok(found) => found,
            Err(e) => return status_of(&e),
        };
        // SAFETY: non-null and aligned; the caller promises a writable `size_t`.
        unsafe { count.write(found.len()) };
        for (i, d) in found.iter().take(capacity).enumerate() {
            let c = CDetection {
                bbox: d.bbox,
                score: d.score,
                class_id: d.class,
            };
            // SAFETY: `i < capacity`, `out` non-null and aligned; the caller promises
            // `capacity` writable detections.
            unsafe { out.add(i).write(c) };
        }
        if found.len() > capacity {
            EFFDET_BUFFER_TOO_SMALL
        } else {
            EFFDET_OK
        }
    })
}
"#;

const HEADER_TEMPLATE: &str = r#"/*
 * Generated by effdetc (--c-api) from `@SOURCE@`. Do not edit: regenerate with
 * `effdetc build --c-api`.
 *
 * The C ABI of @CRATE@: `@MODEL@`, compiled to specialized Rust. Build the static library
 * with `cargo build --release --lib` (target/release/libeffdet_lib.a) and link it with
 * `-lpthread -ldl -lm`:
 *
 *     cc main.c -I include target/release/libeffdet_lib.a -lpthread -ldl -lm
 *
 * Every function returns a status (EFFDET_OK is 0; effdet_lib_status_message says what
 * another means) and checks null pointers, alignment and lengths; no panic crosses into C.
 * A handle may move between threads but must not be used by two at once.
 */
#ifndef EFFDET_LIB_H
#define EFFDET_LIB_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes, shared by every effdet model's C ABI. */
#ifndef EFFDET_STATUS_CODES
#define EFFDET_STATUS_CODES
#define EFFDET_OK 0
#define EFFDET_NULL_POINTER 1     /* a required pointer was null */
#define EFFDET_BAD_LENGTH 2       /* input length, output count or an output buffer's length */
#define EFFDET_BAD_ARGUMENT 3     /* zero threads, misaligned or overlapping buffers, image size overflow, bad path */
#define EFFDET_WEIGHTS 4          /* the weights file could not be read or is another model's */
#define EFFDET_BUFFER_TOO_SMALL 5 /* more detections than the buffer holds */
#define EFFDET_DETECT 6           /* pre- or post-processing failed */
#define EFFDET_PANIC 7            /* internal error (a caught panic): that call failed, the handle stays usable */
#endif

/** The input: @INPUT_SHAPE@ floats, @LAYOUT@, normalized. */
#define EFFDET_LIB_INPUT_LEN @INPUT_LEN@
/** Images per forward pass (the input's and every output's first dimension). */
#define EFFDET_LIB_BATCH @BATCH@
/** Outputs, in this order (indices into effdet_lib_forward's buffers). */
#define EFFDET_LIB_NUM_OUTPUTS @N@
@OUTPUT_DEFINES@
/** A model: its weights, arena and threads. Opaque. */
typedef struct effdet_lib_model effdet_lib_model;

/**
 * Creates the model with the weights built into the library (or, for a model too large to
 * embed, read from the weights.bin it was built with: EFFDET_WEIGHTS if that file is
 * missing or not the right size); *out is null on failure.
 */
int effdet_lib_create(effdet_lib_model **out);
/**
 * Creates the model with packed weights read from `path` (a copy of the crate's weights.bin);
 * its size is checked before anything is read: EFFDET_WEIGHTS if missing, short or long.
 */
int effdet_lib_create_from_file(const char *path, effdet_lib_model **out);
/** Frees the model (null is ignored). */
int effdet_lib_free(effdet_lib_model *model);
/**
 * Intra-op threads (default 1: no thread is started; otherwise threads - 1 workers, parked
 * between parallel regions, joined by effdet_lib_free); 0 is EFFDET_BAD_ARGUMENT. Outputs
 * are bit-identical at every thread count.
 */
int effdet_lib_set_threads(effdet_lib_model *model, size_t threads);
/**
 * Runs the network on `input` (EFFDET_LIB_INPUT_LEN floats) and copies output i into
 * outputs[i], which holds output_lens[i] >= effdet_lib_output_len(i) floats (a null
 * outputs[i] skips output i); num_outputs must be EFFDET_LIB_NUM_OUTPUTS.
 */
int effdet_lib_forward(effdet_lib_model *model, const float *input, size_t input_len,
                       float *const *outputs, const size_t *output_lens, size_t num_outputs);
/** Floats in the input. */
size_t effdet_lib_input_len(void);
/** The number of outputs. */
size_t effdet_lib_num_outputs(void);
/** Floats in output `index` (0 if there is none). */
size_t effdet_lib_output_len(size_t index);
/** The name of output `index` ("class_P3", ...; static), or null if there is none. */
const char *effdet_lib_output_name(size_t index);
/** What a status code means (static). */
const char *effdet_lib_status_message(int status);
/**
 * Test hook for callers' error handling: the n-th task run from now on by any model of this
 * process panics (0 cancels); the call it happens in returns EFFDET_PANIC, later calls work.
 * Not for production use.
 */
void effdet_lib_test_inject_panic(size_t n);
@DETECT@
#ifdef __cplusplus
}
#endif

#endif /* EFFDET_LIB_H */
"#;

const HEADER_DETECT_TEMPLATE: &str = r#"
/** The most detections effdet_lib_detect finds (the spec's max_detections). */
#define EFFDET_LIB_MAX_DETECTIONS @MAX_DETECTIONS@

/** One detection: box in image pixels, sigmoid score, 1-based class id (COCO ids). */
typedef struct effdet_lib_detection {
    float bbox[4]; /* x1, y1, x2, y2 */
    float score;
    uint32_t class_id;
} effdet_lib_detection;

/**
 * Detects objects in a row-major image of width x height pixels, `channels` bytes each
 * (1 grey, 3 RGB, 4 RGBA): the spec's preprocessing, the network, its post-processing;
 * keeps scores >= score_threshold (negative: keep all). Writes up to `capacity` detections,
 * best first, to `out` and the number found to *count; EFFDET_BUFFER_TOO_SMALL if that
 * exceeds capacity. One image per call (with EFFDET_LIB_BATCH > 1 the other images of the
 * pass are blank; batches of images go through effdet_lib_forward).
 */
int effdet_lib_detect(effdet_lib_model *model, const uint8_t *pixels, size_t width,
                      size_t height, size_t channels, float score_threshold,
                      effdet_lib_detection *out, size_t capacity, size_t *count);
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{compile_model, BuildRequest, WeightsChoice};
    use crate::passes::PassSet;

    fn d0_files(c_api: bool) -> Vec<(PathBuf, Vec<u8>)> {
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
            c_api,
            python: false,
            tuning: Default::default(),
        };
        let c = compile_model(&req, &mut |_| {}).unwrap();
        let opts = CrateOptions {
            name: "effdet-d0",
            header: c.header(),
            embed_limit: req.embed_limit,
            runtime_version: "0.1.0",
            c_api,
            python: false,
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
    fn c_api_adds_its_files_and_only_with_the_flag() {
        let plain = d0_files(false);
        assert!(!plain.iter().any(|(p, _)| p.starts_with("include")));
        assert!(!text(&plain, "Cargo.toml").contains("staticlib"));
        let files = d0_files(true);
        assert!(text(&files, "Cargo.toml").contains("crate-type = [\"rlib\", \"staticlib\"]"));
        assert!(text(&files, "src/lib.rs").ends_with("pub mod c_api;\n"));
        let h = text(&files, "include/effdet_d0.h");
        for needle in [
            "#define EFFDET_D0_INPUT_LEN 786432",
            "#define EFFDET_D0_NUM_OUTPUTS 10",
            "#define EFFDET_D0_OUTPUT_BOX_P7 9",
            "int effdet_d0_forward(",
            "int effdet_d0_detect(",
            "#define EFFDET_D0_MAX_DETECTIONS 100",
        ] {
            assert!(h.contains(needle), "header lacks {needle}");
        }
        let rust = text(&files, "src/c_api.rs");
        assert!(!rust.contains("effdet_lib") && !rust.contains('@'));
        assert!(rust.contains("pub unsafe extern \"C\" fn effdet_d0_detect("));
    }

    /// Every `unsafe` block of the generated C ABI has its `SAFETY:` line right above it.
    #[test]
    fn every_unsafe_block_says_why() {
        let files = d0_files(true);
        let rust = text(&files, "src/c_api.rs");
        let lines: Vec<&str> = rust.lines().collect();
        let mut blocks = 0;
        for (i, line) in lines.iter().enumerate() {
            if line.contains("unsafe {") {
                blocks += 1;
                let above = lines[..i]
                    .iter()
                    .rev()
                    .take_while(|l| l.trim_start().starts_with("//"))
                    .any(|l| l.contains("SAFETY:"));
                assert!(
                    above,
                    "line {}: `unsafe` without a SAFETY comment: {line}",
                    i + 1
                );
            }
        }
        assert!(blocks >= 10, "{blocks} unsafe blocks");
    }

    #[test]
    fn identifiers_and_comments_are_safe() {
        assert_eq!(c_ident("class_P3"), "CLASS_P3");
        assert_eq!(c_ident("out/0:x"), "OUT_0_X");
        assert_eq!(plain("a*/b\"c\\d\n"), "a*_/b_c_d_");
    }
}
