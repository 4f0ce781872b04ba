// Cargo.toml exists (trybuild's project) but is no weights file.
effdet_macros::model!(d0, spec = "../../../../specs/d0.yaml", weights = "Cargo.toml");

fn main() {}
