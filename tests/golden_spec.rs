//! The spec front end plus the reference interpreter against the reference implementation's
//! outputs (effdet `tf_efficientdet_d0`, fixture weights), and the other variants' graphs
//! executing end to end.

use std::path::Path;
use std::sync::Arc;

use effdet_compiler::interp::{self, Tensor};
use effdet_compiler::model::{self, LoadOptions};
use effdet_compiler::weights;
use effdet_tests::{assert_close, fixture_dir, read_npy};

fn spec(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../specs")
        .join(name)
}

#[test]
fn d0_spec_reproduces_the_reference_outputs() {
    let fx = fixture_dir("tf_efficientdet_d0");
    let mut m = model::load(&spec("d0.yaml"), &LoadOptions::default()).unwrap();
    weights::bind_safetensors(&mut m.graph, &fx.join("weights.safetensors")).unwrap();
    let (shape, data) = read_npy(&fx.join("input.npy"));
    let outputs = interp::run(&m.graph, &[Tensor::new(shape, data)]).unwrap();
    assert_eq!(outputs.len(), 10);
    for (name, t) in &outputs {
        let (ref_shape, reference) = read_npy(&fx.join(format!("{name}.npy")));
        assert_eq!(t.shape, ref_shape, "{name}");
        assert_close(name, &t.data, &reference);
    }
}

/// Deterministic pseudo-random values in [-0.5, 0.5) (BN variances in [0.5, 1.5)).
fn bind_random(graph: &mut effdet_compiler::ir::Graph) {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for p in &mut graph.params {
        let n = p.len();
        let offset = if p.name.ends_with("running_var") {
            1.0
        } else {
            0.0
        };
        let scale = if p.name.contains("conv") { 0.2 } else { 1.0 };
        let v: Vec<f32> = (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                offset + scale * ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
            })
            .collect();
        p.data = Some(Arc::from(v));
    }
}

/// Lite0 (non-power-of-two pyramid: P7 is 3×3, upsampled to 5×5 with rows 0,0,1,1,2) and D1
/// run end to end with finite outputs of effdet's shapes; D1 within the interpreter's
/// time budget.
#[test]
fn lite0_and_d1_run_end_to_end() {
    for (variant, size, p7) in [("lite0", 320, 3), ("d1", 640, 5)] {
        let mut m =
            model::load(&spec(&format!("{variant}.yaml")), &LoadOptions::default()).unwrap();
        bind_random(&mut m.graph);
        let input = Tensor::new(vec![1, 3, size, size], vec![0.25; 3 * size * size]);
        let start = std::time::Instant::now();
        let outputs = interp::run(&m.graph, &[input]).unwrap();
        let secs = start.elapsed().as_secs_f64();
        assert!(secs < 60.0, "{variant} took {secs:.1} s");
        let names: Vec<&str> = outputs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names[0], "class_P3");
        assert_eq!(names[9], "box_P7");
        let (_, p7_class) = &outputs[4];
        assert_eq!(p7_class.shape, [1, 810, p7, p7], "{variant}");
        for (name, t) in &outputs {
            assert!(
                t.data.iter().all(|v| v.is_finite()),
                "{variant} {name} not finite"
            );
        }
    }
}

/// The Keras (xuannianz) D0 through tf2onnx, NHWC with its BiFPN sums written as
/// stack → transpose → reduce: the graph as imported and after every pass both reproduce
/// the Keras outputs, and the passes leave no transpose between convs and as many fused
/// sums and squeeze-excites as the spec's D0.
#[test]
fn keras_tf2onnx_d0_reproduces_its_outputs_fused_and_unfused() {
    use effdet_compiler::passes::{self, PassSet};
    let fx = fixture_dir("keras_d0_seed5");
    let mut m = model::load(&fx.join("model.onnx"), &LoadOptions::default()).unwrap();
    let (shape, data) = read_npy(&fx.join("input.npy"));
    assert_eq!(shape, [1, 512, 512, 3]);
    let input = [Tensor::new(shape, data)];
    let check = |graph: &effdet_compiler::ir::Graph, what: &str| {
        let outputs = interp::run(graph, &input).unwrap();
        assert_eq!(outputs.len(), 2);
        for (name, t) in &outputs {
            let (ref_shape, reference) = read_npy(&fx.join(format!("{name}.npy")));
            assert_eq!(t.shape, ref_shape, "{what} {name}");
            assert_close(&format!("{what} {name}"), &t.data, &reference);
        }
    };
    check(&m.graph, "unfused");
    passes::run(&mut m.graph, &PassSet::all()).unwrap();
    check(&m.graph, "fused");
    let counts = m.graph.op_counts();
    let mut spec_d0 = model::load(&spec("d0.yaml"), &LoadOptions::default()).unwrap();
    passes::run(&mut spec_d0.graph, &PassSet::all()).unwrap();
    let spec_counts = spec_d0.graph.op_counts();
    for kind in ["fused_sum", "squeeze_excite", "conv", "depthwise_conv"] {
        assert_eq!(counts.get(kind), spec_counts.get(kind), "{kind}");
    }
    for kind in ["batch_norm", "reduce_sum", "mul", "sigmoid", "swish"] {
        assert_eq!(counts.get(kind), None, "{kind} left: {counts:?}");
    }
    // The transposes left: the NHWC input's, and each head output's NCHW → NHWC before its
    // reshape; none is read by a conv but the stem.
    use effdet_compiler::ir::Op;
    let g = &m.graph;
    let mut transposes = 0;
    for id in g.topo_order() {
        for i in g.inputs_of(id) {
            if let Op::Transpose { .. } = g.node(i).op {
                transposes += 1;
                let from_input = matches!(g.node(g.inputs_of(i)[0]).op, Op::Input);
                let to_output = matches!(g.node(id).op, Op::Reshape { .. });
                assert!(
                    from_input || to_output,
                    "transpose `{}` between convs",
                    g.node(i).name
                );
            }
        }
    }
    assert_eq!(transposes, 11, "the input's and the ten head outputs'");
}
