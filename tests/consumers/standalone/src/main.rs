//! Runs the generated D0 crate on the fixture input and checks the ten head outputs, then
//! detects on a synthetic image and writes the detections (for the C ABI test to compare).
//! Usage: `consumer-standalone FIXTURE_DIR DETECTIONS_OUT`.

use std::path::PathBuf;
use std::process::ExitCode;

#[path = "../../common/fixture.rs"]
mod fixture;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: consumer-standalone FIXTURE_DIR DETECTIONS_OUT";
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let dets_out = PathBuf::from(args.next().ok_or(usage)?);
    let (shape, input) = fixture::read_npy(&dir.join("input.npy"))?;
    if shape != effdet_d0::INPUT_SHAPE {
        return Err(format!(
            "input shape {shape:?}, the model takes {:?}",
            effdet_d0::INPUT_SHAPE
        ));
    }
    let mut model = effdet_d0::Model::new();
    let outputs = model.forward(&input).map_err(|e| e.to_string())?;
    fixture::check_all(&dir, |name| {
        Some((outputs.shape(name)?, outputs.get(name)?))
    })?;

    // The synthetic image the C program detects on too (tests/consumers/c/main.c).
    let (width, height, data) = fixture::synthetic_image();
    let image = effdet_d0::Image {
        width,
        height,
        channels: 3,
        data: &data,
    };
    let found = model
        .detect(&image, &effdet_d0::detect_options())
        .map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    for d in &found {
        for v in d.bbox.iter().chain([&d.score]) {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        bytes.extend_from_slice(&(d.class as f32).to_le_bytes());
    }
    std::fs::write(&dets_out, bytes).map_err(|e| format!("{}: {e}", dets_out.display()))?;
    fixture::check_detections(found.len())
}
