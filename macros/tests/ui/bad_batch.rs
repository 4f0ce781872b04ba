effdet_macros::model!(d0, spec = "../../../../specs/d0.yaml", random_weights = 0, batch = 0);

fn main() {}
