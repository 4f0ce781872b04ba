//! Property tests: the importer never panics, whatever the bytes. Three generators:
//! arbitrary bytes; byte-level mutations (flips, truncation, splices) of real models; and
//! message-level mutations (op types, attributes, dims, input names, initializer data) of
//! real models, which get past protobuf decoding into the structure checks, the folding and
//! every op handler. A graph that imports must also run in the interpreter, go through every
//! pass and be planned without panicking. The seeds include the fixtures' Keras export
//! (tf2onnx: NHWC transposes, the stacked weighted sums) for the layout passes and the
//! planner's views.
//!
//! CI runs a few hundred cases per property; for a long run set `PROPTEST_CASES`, e.g.
//! `PROPTEST_CASES=20000 cargo test -p effdet-compiler --test onnx_fuzz --release`.

mod onnx_common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use effdet_compiler::interp::{self, Tensor};
use effdet_compiler::onnx::{import_bytes, proto::ModelProto, supported_ops};
use effdet_compiler::passes::{self, PassSet};
use effdet_compiler::plan::Plan;
use onnx_common::build;
use proptest::prelude::*;
use prost::Message;

/// Seed models: the small in-code net, plus the checked-in exporter models when present
/// (the TorchScript opset-13 one computes its pads in-graph: the folding's best exercise).
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut s = vec![build::bytes(&build::small_net())];
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/onnx/models"));
        let keras = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/fixtures/keras_d0_seed5/model.onnx"
        ));
        for path in ["pt_d0_ts17", "tf_d0_ts13", "tf_d0_export18"]
            .iter()
            .map(|name| dir.join(format!("{name}.onnx")))
            .chain([keras])
        {
            s.push(std::fs::read(&path).unwrap_or_else(|e| panic!("seed {}: {e}", path.display())));
        }
        s
    })
}

/// Imports, and when that works and the input is small, runs the graph on zeros.
fn import_and_run(bytes: &[u8]) {
    let Ok(g) = import_bytes(bytes, Path::new("fuzz.onnx"), None) else {
        return;
    };
    let inputs: Vec<Tensor> = g
        .inputs
        .iter()
        .map(|&i| Tensor::zeros(&g.node(i).shape))
        .collect();
    let small = g
        .graph
        .node_weights()
        .all(|n| n.shape.iter().product::<usize>() <= 1 << 20);
    // Bound the work of a run: conv MACs of the imported graph.
    if small && g.macs() <= 50_000_000 {
        let _ = interp::run(&g, &inputs);
    }
    // The passes and the planner take any graph the importer accepts.
    if g.graph.node_count() < 5000 {
        let mut fused = g.clone();
        if passes::run(&mut fused, &PassSet::all()).is_ok() {
            let _ = Plan::build(&fused);
        }
    }
}

/// One message-level mutation of a model.
#[derive(Clone, Debug)]
enum Edit {
    OpType(usize, usize),
    AttrInts(usize, Vec<i64>),
    AttrInt(usize, i64),
    SwapInput(usize, usize),
    DropInput(usize),
    InitDims(usize, Vec<i64>),
    InitTruncate(usize, usize),
    InitInts(usize, Vec<i64>),
    InputDims(Vec<i64>),
    Opset(i64),
    DropNode(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let ints = prop::collection::vec(prop_oneof![-3i64..10, any::<i64>()], 0..9);
    prop_oneof![
        (any::<usize>(), any::<usize>()).prop_map(|(n, o)| Edit::OpType(n, o)),
        (any::<usize>(), ints.clone()).prop_map(|(n, v)| Edit::AttrInts(n, v)),
        (any::<usize>(), prop_oneof![-3i64..10, any::<i64>()])
            .prop_map(|(n, v)| Edit::AttrInt(n, v)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapInput(a, b)),
        any::<usize>().prop_map(Edit::DropInput),
        (any::<usize>(), ints.clone()).prop_map(|(n, v)| Edit::InitDims(n, v)),
        (any::<usize>(), any::<usize>()).prop_map(|(n, k)| Edit::InitTruncate(n, k)),
        (any::<usize>(), ints.clone()).prop_map(|(n, v)| Edit::InitInts(n, v)),
        ints.prop_map(Edit::InputDims),
        (0i64..25).prop_map(Edit::Opset),
        any::<usize>().prop_map(Edit::DropNode),
    ]
}

fn apply(m: &mut ModelProto, e: &Edit) {
    let ops = supported_ops();
    let opset = &mut m.opset_import;
    let Some(g) = m.graph.as_mut() else { return };
    let nn = g.node.len().max(1);
    let ni = g.initializer.len().max(1);
    match e {
        Edit::OpType(n, o) => {
            if let Some(node) = g.node.get_mut(n % nn) {
                node.op_type = Some(ops[o % ops.len()].to_string());
            }
        }
        Edit::AttrInts(n, v) => {
            if let Some(a) = g.node.get_mut(n % nn).and_then(|x| x.attribute.first_mut()) {
                a.ints = v.clone();
            }
        }
        Edit::AttrInt(n, v) => {
            if let Some(a) = g.node.get_mut(n % nn).and_then(|x| x.attribute.last_mut()) {
                a.i = Some(*v);
            }
        }
        Edit::SwapInput(a, b) => {
            let names: Vec<String> = g.node.iter().flat_map(|x| x.output.clone()).collect();
            if let (Some(node), Some(name)) =
                (g.node.get_mut(a % nn), names.get(b % names.len().max(1)))
            {
                if let Some(i) = node.input.first_mut() {
                    *i = name.clone();
                }
            }
        }
        Edit::DropInput(n) => {
            if let Some(node) = g.node.get_mut(n % nn) {
                node.input.pop();
            }
        }
        Edit::InitDims(n, v) => {
            if let Some(t) = g.initializer.get_mut(n % ni) {
                t.dims = v.clone();
            }
        }
        Edit::InitTruncate(n, k) => {
            if let Some(t) = g.initializer.get_mut(n % ni) {
                if let Some(raw) = t.raw_data.as_mut() {
                    raw.truncate(k % (raw.len() + 1));
                }
                t.float_data.truncate(k % (t.float_data.len() + 1));
                t.int64_data.truncate(k % (t.int64_data.len() + 1));
            }
        }
        Edit::InitInts(n, v) => {
            // Only integer initializers: they drive the shape arithmetic.
            let ints: Vec<usize> = (0..g.initializer.len())
                .filter(|&i| g.initializer[i].data_type() == 7)
                .collect();
            if let Some(&i) = ints.get(n % ints.len().max(1)) {
                let t = &mut g.initializer[i];
                t.raw_data = None;
                t.int64_data = v.clone();
                t.dims = vec![v.len() as i64];
            }
        }
        Edit::InputDims(v) => {
            use effdet_compiler::onnx::proto::{
                tensor_shape_proto::dimension::Value as Dim, type_proto,
            };
            if let Some(type_proto::Value::TensorType(t)) = g
                .input
                .first_mut()
                .and_then(|i| i.r#type.as_mut())
                .and_then(|t| t.value.as_mut())
            {
                if let Some(s) = t.shape.as_mut() {
                    for (d, &v) in s.dim.iter_mut().zip(v) {
                        d.value = Some(Dim::DimValue(v));
                    }
                }
            }
        }
        Edit::Opset(v) => {
            if let Some(o) = opset.first_mut() {
                o.version = Some(*v);
            }
        }
        Edit::DropNode(n) => {
            if n % nn < g.node.len() {
                g.node.remove(n % nn);
            }
        }
    }
}

/// Decoded seeds, so message-level mutation does not re-decode megabytes per case.
fn decoded() -> &'static [ModelProto] {
    static DECODED: OnceLock<Vec<ModelProto>> = OnceLock::new();
    DECODED.get_or_init(|| {
        seeds()
            .iter()
            .filter_map(|b| ModelProto::decode(&b[..]).ok())
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        import_and_run(&bytes);
    }

    #[test]
    fn mutated_bytes_never_panic(
        seed in any::<usize>(),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..16),
        cut in any::<usize>(),
    ) {
        // Only the small seed for byte-level mutation: flips in a big model land in weights.
        let mut b = seeds()[seed % seeds().len().min(1)].clone();
        for (pos, v) in flips {
            let n = b.len().max(1);
            if let Some(x) = b.get_mut(pos % n) {
                *x = v;
            }
        }
        b.truncate(b.len() - cut % (b.len() / 8 + 1));
        import_and_run(&b);
    }

    #[test]
    fn mutated_messages_never_panic(
        seed in any::<usize>(),
        edits in prop::collection::vec(edit(), 1..4),
    ) {
        let models = decoded();
        let mut m = models[seed % models.len()].clone();
        for e in &edits {
            apply(&mut m, e);
        }
        import_and_run(&m.encode_to_vec());
    }
}
