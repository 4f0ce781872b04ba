effdet_macros::model!(d0, spec = "specs/nope.yaml", random_weights = 0);

fn main() {}
