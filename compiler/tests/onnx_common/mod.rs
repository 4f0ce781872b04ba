//! Helpers shared by the ONNX integration tests: npy reading, the fixture tolerance, and
//! builders for small models made with the prost types.
#![allow(dead_code)] // Each test binary uses a different part.

use std::path::Path;

use effdet_compiler::interp::Tensor;

/// Reads an f32 `.npy` file.
pub fn read_npy(path: &Path) -> Tensor {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).expect("npy header");
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    Tensor::new(shape, npy.into_vec::<f32>().expect("f32 data"))
}

#[path = "../../../tests/compare.rs"]
mod compare;

/// The fixtures' tolerance (the shared rule of `tests/compare.rs`).
pub fn tolerance(reference: &[f32]) -> f32 {
    compare::tolerance(reference) as f32
}

/// Max |ours − ref| of one output after checking the shapes agree; infinite for NaN or
/// infinity on either side (`tests/compare.rs`).
pub fn max_error(name: &str, ours: &Tensor, reference: &Tensor) -> f32 {
    assert_eq!(ours.shape, reference.shape, "{name}: shape");
    compare::max_error(&ours.data, &reference.data) as f32
}

/// Runs `graph` on `input` and checks every output against `dir/<prefix><output>.npy`;
/// returns `(name, max error, tolerance)` per output.
pub fn check_outputs(
    graph: &effdet_compiler::ir::Graph,
    input: Tensor,
    dir: &Path,
    prefix: &str,
) -> Vec<(String, f32, f32)> {
    let outputs = effdet_compiler::interp::run(graph, &[input]).expect("run");
    let mut report = Vec::new();
    for (name, ours) in &outputs {
        let reference = read_npy(&dir.join(format!("{prefix}{name}.npy")));
        let err = max_error(name, ours, &reference);
        let tol = tolerance(&reference.data);
        eprintln!("{prefix}{name}: max error {err:.3e} (tolerance {tol:.1e})");
        report.push((name.clone(), err, tol));
    }
    for (name, err, tol) in &report {
        assert!(
            err <= tol,
            "{prefix}{name}: max error {err} > tolerance {tol}"
        );
    }
    report
}

pub mod build {
    //! Small ONNX models built in code, for the error and fuzz tests.

    use effdet_compiler::onnx::proto::{
        tensor_shape_proto::{dimension::Value as Dim, Dimension},
        type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
        TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
    };
    use prost::Message;

    pub fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            name: Some(name.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    pub fn with_ints(mut n: NodeProto, name: &str, ints: &[i64]) -> NodeProto {
        n.attribute.push(AttributeProto {
            name: Some(name.into()),
            ints: ints.to_vec(),
            r#type: Some(7),
            ..Default::default()
        });
        n
    }

    pub fn with_str(mut n: NodeProto, name: &str, s: &str) -> NodeProto {
        n.attribute.push(AttributeProto {
            name: Some(name.into()),
            s: Some(s.as_bytes().to_vec()),
            r#type: Some(3),
            ..Default::default()
        });
        n
    }

    /// A float tensor value with dims given as numbers or symbolic names.
    pub fn value(name: &str, dims: &[&str]) -> ValueInfoProto {
        let dim = dims
            .iter()
            .map(|d| Dimension {
                value: Some(match d.parse::<i64>() {
                    Ok(v) => Dim::DimValue(v),
                    Err(_) => Dim::DimParam(d.to_string()),
                }),
                ..Default::default()
            })
            .collect();
        ValueInfoProto {
            name: Some(name.into()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(1),
                    shape: Some(TensorShapeProto { dim }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn floats(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
        TensorProto {
            name: Some(name.into()),
            dims: dims.to_vec(),
            data_type: Some(1),
            float_data: data.to_vec(),
            ..Default::default()
        }
    }

    pub fn ints(name: &str, dims: &[i64], data: &[i64]) -> TensorProto {
        TensorProto {
            name: Some(name.into()),
            dims: dims.to_vec(),
            data_type: Some(7),
            int64_data: data.to_vec(),
            ..Default::default()
        }
    }

    pub fn model(
        opset: i64,
        nodes: Vec<NodeProto>,
        inits: Vec<TensorProto>,
        inputs: Vec<ValueInfoProto>,
        outputs: &[&str],
    ) -> ModelProto {
        ModelProto {
            ir_version: Some(8),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(opset),
            }],
            graph: Some(GraphProto {
                name: Some("t".into()),
                node: nodes,
                initializer: inits,
                input: inputs,
                output: outputs.iter().map(|o| value(o, &[])).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A small conv net in the TorchScript exporter's style: TF-'same' pads computed
    /// in-graph from `Shape`, a `Pad`, a strided conv, swish, SE-style `ReduceMean`,
    /// a -inf padded max pool, a nearest `Resize` and a stack-and-sum.
    pub fn small_net() -> ModelProto {
        let mut nodes = vec![
            node("Shape", "shape", &["x"], &["s"]),
            node("Gather", "gather_h", &["s", "two"], &["h"]),
            node("Cast", "cast_h", &["h"], &["hf"]),
            node("Div", "div", &["hf", "stride_f"], &["q"]),
            node("Ceil", "ceil", &["q"], &["qc"]),
            node("Cast", "cast_q", &["qc"], &["qi"]),
            node("Sub", "sub1", &["qi", "one"], &["o1"]),
            node("Mul", "mul_s", &["o1", "stride"], &["o2"]),
            node("Add", "add_k", &["o2", "kernel"], &["o3"]),
            node("Sub", "sub_in", &["o3", "h"], &["total"]),
            node("Max", "clip0", &["total", "zero"], &["total0"]),
            node("Div", "half", &["total0", "stride"], &["before"]),
            node("Sub", "after_", &["total0", "before"], &["after"]),
            node("Unsqueeze", "u_b", &["before", "axis0"], &["b1"]),
            node("Unsqueeze", "u_a", &["after", "axis0"], &["a1"]),
            node(
                "Concat",
                "pads",
                &["zeros4", "b1", "b1", "zeros2", "a1", "a1"],
                &["p"],
            ),
            node("Pad", "pad", &["x", "p", "padval"], &["xp"]),
            node("Conv", "conv", &["xp", "w", "b"], &["c"]),
            node("Sigmoid", "sig", &["c"], &["cs"]),
            node("Mul", "swish", &["c", "cs"], &["y"]),
            node("ReduceMean", "se", &["y"], &["m"]),
            node("Mul", "scale", &["y", "m"], &["ys"]),
            node("Pad", "pad_max", &["ys", "pool_pads", "neg_inf"], &["yp"]),
            node("Resize", "up", &["pooled", "", "", "up_size"], &["r"]),
            node("Unsqueeze", "s0", &["ys", "last"], &["e0"]),
            node("Unsqueeze", "s1", &["r", "last"], &["e1"]),
            node("Concat", "stack", &["e0", "e1"], &["st"]),
            node("ReduceSum", "sum", &["st", "last"], &["out"]),
        ];
        for (i, to) in [(2, 1), (5, 7)] {
            nodes[i].attribute.push(AttributeProto {
                name: Some("to".into()),
                i: Some(to),
                r#type: Some(2),
                ..Default::default()
            });
        }
        nodes[15] = with_ints(nodes[15].clone(), "axis", &[]);
        nodes[15].attribute[0].i = Some(0);
        nodes[15].attribute[0].r#type = Some(2);
        nodes[17] = with_ints(nodes[17].clone(), "strides", &[2, 2]);
        nodes[20] = with_ints(nodes[20].clone(), "axes", &[2, 3]);
        nodes[26] = with_ints(nodes[26].clone(), "axis", &[]);
        nodes[26].attribute[0].i = Some(-1);
        nodes[26].attribute[0].r#type = Some(2);
        nodes[27].attribute.push(AttributeProto {
            name: Some("keepdims".into()),
            i: Some(0),
            r#type: Some(2),
            ..Default::default()
        });
        let resize = with_str(
            nodes[23].clone(),
            "coordinate_transformation_mode",
            "asymmetric",
        );
        nodes[23] = with_str(resize, "nearest_mode", "floor");
        let mut pool = with_ints(
            node("MaxPool", "pool", &["yp"], &["pooled"]),
            "kernel_shape",
            &[3, 3],
        );
        pool = with_ints(pool, "strides", &[2, 2]);
        nodes.insert(23, pool);
        let w: Vec<f32> = (0..4 * 3 * 3 * 3)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) / 10.0)
            .collect();
        let inits = vec![
            ints("two", &[], &[2]),
            floats("stride_f", &[], &[2.0]),
            ints("one", &[], &[1]),
            ints("stride", &[], &[2]),
            ints("kernel", &[], &[3]),
            ints("zero", &[], &[0]),
            ints("axis0", &[1], &[0]),
            ints("zeros4", &[2], &[0, 0]),
            ints("zeros2", &[2], &[0, 0]),
            floats("padval", &[], &[0.0]),
            floats("w", &[4, 3, 3, 3], &w),
            floats("b", &[4], &[0.1, -0.2, 0.3, 0.0]),
            ints("pool_pads", &[8], &[0, 0, 0, 0, 0, 0, 1, 1]),
            floats("neg_inf", &[], &[f32::NEG_INFINITY]),
            ints("up_size", &[4], &[1, 4, 8, 8]),
            ints("last", &[1], &[-1]),
        ];
        model(
            13,
            nodes,
            inits,
            vec![value("x", &["1", "3", "16", "16"])],
            &["out"],
        )
    }

    pub fn bytes(m: &ModelProto) -> Vec<u8> {
        m.encode_to_vec()
    }
}
