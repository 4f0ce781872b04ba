effdet_macros::model!(d0, spec = "../../../../specs/d0.yaml", weigths = "w.safetensors");

fn main() {}
