effdet_macros::model!(d0, spec = "../../../../specs/d0.yaml", random_weights = 0, max_memory_mib = 1);

fn main() {}
