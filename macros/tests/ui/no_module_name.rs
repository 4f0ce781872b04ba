effdet_macros::model!(spec = "../../../../specs/d0.yaml", random_weights = 0);

fn main() {}
