//! Runs D0 compiled by `effdet_macros::model!` on the fixture input and checks the ten head
//! outputs. Usage: `consumer-macro FIXTURE_DIR`.

use std::path::PathBuf;
use std::process::ExitCode;

// Paths are relative to this crate's directory; the golden fixture lives beside the
// repository, in shared/.
effdet_macros::model!(
    d0,
    spec = "../../../specs/d0.yaml",
    weights = "../../../../shared/fixtures/tf_efficientdet_d0/weights.safetensors"
);

// A small ONNX export with a symbolic batch axis, compiled for two images per pass.
effdet_macros::model!(batch2, model = "../../onnx/models/tf_d0_ts17_batch.onnx", batch = 2);

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
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: consumer-macro FIXTURE_DIR")?,
    );
    let (shape, input) = fixture::read_npy(&dir.join("input.npy"))?;
    if shape != d0::INPUT_SHAPE {
        return Err(format!(
            "input shape {shape:?}, the model takes {:?}",
            d0::INPUT_SHAPE
        ));
    }
    let mut model = d0::Model::new();
    let outputs = model.forward(&input).map_err(|e| e.to_string())?;
    fixture::check_all(&dir, |name| {
        Some((outputs.shape(name)?, outputs.get(name)?))
    })?;

    let (width, height, data) = fixture::synthetic_image();
    let image = d0::Image {
        width,
        height,
        channels: 3,
        data: &data,
    };
    let found = model
        .detect(&image, &d0::detect_options())
        .map_err(|e| e.to_string())?;
    fixture::check_detections(found.len())?;

    // `batch = 2`: input and outputs with the batch first, against the reference.
    let mut small = batch2::Model::new();
    fixture::check_batch_model(batch2::BATCH, &batch2::INPUT_SHAPE, |input| {
        let outputs = small.forward(input).map_err(|e| e.to_string())?;
        Ok(batch2::OUTPUT_NAMES
            .iter()
            .map(|&n| (n.to_string(), outputs.shape(n).unwrap().to_vec(), outputs.get(n).unwrap().to_vec()))
            .collect())
    })
}
