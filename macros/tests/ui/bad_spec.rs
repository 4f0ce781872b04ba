effdet_macros::model!(d0, spec = "../../../../macros/tests/ui/bad_spec.yaml", random_weights = 0);

fn main() {}
