//! Runs D0 compiled by build.rs on the fixture input and checks the ten head outputs.
//! Usage: `consumer-buildrs FIXTURE_DIR`.

use std::path::PathBuf;
use std::process::ExitCode;

mod d0 {
    include!(concat!(env!("OUT_DIR"), "/d0.rs"));
}

mod batch2 {
    include!(concat!(env!("OUT_DIR"), "/batch2.rs"));
}

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
            .ok_or("usage: consumer-buildrs FIXTURE_DIR")?,
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

    // `Build::batch(2)`: input and outputs with the batch first, against the reference.
    let mut small = batch2::Model::new();
    fixture::check_batch_model(batch2::BATCH, &batch2::INPUT_SHAPE, |input| {
        let outputs = small.forward(input).map_err(|e| e.to_string())?;
        Ok(batch2::OUTPUT_NAMES
            .iter()
            .map(|&n| (n.to_string(), outputs.shape(n).unwrap().to_vec(), outputs.get(n).unwrap().to_vec()))
            .collect())
    })
}
