effdet_macros::model!(d0, spec = "../../../../specs/d0.yaml");

fn main() {}
