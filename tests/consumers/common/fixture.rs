//! What every consumer crate shares (pulled in with `#[path]`): reading the golden fixture's
//! `.npy` files and checking outputs against them with the suite's tolerance,
//! `max |ours − ref| ≤ 1e-4 · max(1, max |ref − mean(ref)|)`. No dependencies, so the
//! consumers depend on nothing but the way in they test.

#[path = "../../compare.rs"]
mod compare;

use std::path::Path;

/// The ten head outputs of D0, in the model's order.
pub const HEADS: [&str; 10] = [
    "class_P3", "class_P4", "class_P5", "class_P6", "class_P7", "box_P3", "box_P4", "box_P5",
    "box_P6", "box_P7",
];

/// Reads a little-endian f32 `.npy` (format 1.0–3.0, C order): (shape, values).
pub fn read_npy(path: &Path) -> Result<(Vec<usize>, Vec<f32>), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bad = |what: &str| format!("{}: {what}", path.display());
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not an .npy file"));
    }
    let (len, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        let b = bytes.get(8..12).ok_or_else(|| bad("truncated header"))?;
        (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
    };
    let header = bytes
        .get(start..start + len)
        .map(String::from_utf8_lossy)
        .ok_or_else(|| bad("truncated header"))?;
    if !header.contains("'<f4'") || header.contains("'fortran_order': True") {
        return Err(bad("expected little-endian f32 in C order"));
    }
    let dims = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("no shape"))?;
    let shape: Vec<usize> = dims
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse().map_err(|_| bad("bad shape")))
        .collect::<Result<_, _>>()?;
    let data = &bytes[start + len..];
    let n: usize = shape.iter().product();
    if data.len() != 4 * n {
        return Err(bad("data length does not match the shape"));
    }
    let values = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((shape, values))
}

/// Compares one output with the fixture's; returns (max error, tolerance).
pub fn check(
    fixture: &Path,
    name: &str,
    shape: &[usize],
    ours: &[f32],
) -> Result<(f64, f64), String> {
    let (ref_shape, reference) = read_npy(&fixture.join(format!("{name}.npy")))?;
    if ref_shape != shape || reference.len() != ours.len() {
        return Err(format!(
            "{name}: shape {shape:?}, the fixture's is {ref_shape:?}"
        ));
    }
    // The one comparison of every golden test (NaN or infinity on either side fails).
    compare::within(name, ours, &reference, 1.0)
}

/// Checks every head output `get` returns (`(shape, values)` by name); prints one line per
/// output and fails on the first mismatch.
pub fn check_all<'a>(
    fixture: &Path,
    mut get: impl FnMut(&str) -> Option<(&'a [usize], &'a [f32])>,
) -> Result<(), String> {
    for name in HEADS {
        let (shape, values) = get(name).ok_or_else(|| format!("no output `{name}`"))?;
        let (err, tol) = check(fixture, name, shape, values)?;
        println!("ok {name} max_error={err:e} tolerance={tol:e}");
    }
    Ok(())
}

/// Outputs by name: (name, shape, values).
pub type Named = Vec<(String, Vec<usize>, Vec<f32>)>;

/// Checks a model compiled with a batch of 2 from `tests/onnx/models/tf_d0_ts17_batch.onnx`:
/// its constants, then `forward` on the model's reference input against its reference
/// outputs (both with the batch first). Prints `ok batch <name>` per output.
#[allow(dead_code)]
pub fn check_batch_model(
    batch: usize,
    input_shape: &[usize],
    mut forward: impl FnMut(&[f32]) -> Result<Named, String>,
) -> Result<(), String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../onnx/models");
    let (shape, input) = read_npy(&dir.join("tf_d0_ts17_batch.input.npy"))?;
    if batch != 2 || input_shape != shape || shape[0] != 2 {
        return Err(format!(
            "batch {batch}, input shape {input_shape:?}; the reference input is {shape:?}"
        ));
    }
    for (name, shape, values) in forward(&input)? {
        let (err, tol) = check(&dir, &format!("tf_d0_ts17_batch.{name}"), &shape, &values)?;
        println!("ok batch {name} max_error={err:e} tolerance={tol:e}");
    }
    Ok(())
}

/// The synthetic RGB image every consumer (and the C program) detects on: 96×64, row-major,
/// pixel (x, y, c) = (7x + 13y + 50c) mod 256.
pub fn synthetic_image() -> (usize, usize, Vec<u8>) {
    let (w, h) = (96usize, 64usize);
    let pixels = (0..h * w * 3)
        .map(|i| {
            let (y, x, c) = (i / (w * 3), (i / 3) % w, i % 3);
            ((x * 7 + y * 13 + c * 50) % 256) as u8
        })
        .collect();
    (w, h, pixels)
}

/// Checks a detection count and prints it: effdet keeps the top `max_detections` (100) with no
/// score threshold, so a synthetic image still yields some.
pub fn check_detections(count: usize) -> Result<(), String> {
    if (1..=100).contains(&count) {
        println!("ok detect: {count} detections");
        Ok(())
    } else {
        Err(format!("detect found {count} detections, expected 1..=100"))
    }
}
