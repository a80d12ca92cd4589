//! `model.onnx`: the whole network, from grey pixels to probabilities, for ONNX Runtime and
//! every other ONNX reader. Written through `onnx-protobuf`, the messages generated from
//! ONNX's own `onnx.proto`.
//!
//! Input `pixels`: float `[batch, 1, 28, 28]`, grey levels 0-255 (0 = paper, 255 = ink), as
//! `infer::preprocess` makes them; the normalisation is the graph's first three nodes, the
//! same operations `infer::normalise` does. Output `probabilities`: float `[batch, 10]`.
//! Opset 17: GELU is spelt out with `Erf` (ONNX's `Gelu` came with opset 20), BatchNorm stays
//! `BatchNormalization` with the trained statistics.

use std::collections::HashMap;

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::{Dimension, dimension};
use onnx_protobuf::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, type_proto,
};
use protobuf::{EnumOrUnknown, MessageField};

use super::torch_tensors;
use infer::{IMAGE_SIZE, NUM_CLASSES, PIXEL_MEAN, PIXEL_STD};

const OPSET: i64 = 17;
/// The IR version that goes with opset 17.
const IR_VERSION: i64 = 8;
/// BatchNorm's epsilon, as burn's BatchNorm (and infer) use it.
const EPSILON: f32 = 1e-5;

/// The ONNX model of a burn record of this model; `metadata` goes into its properties.
pub fn to_bytes(model_bin: &[u8], metadata: HashMap<String, String>) -> anyhow::Result<Vec<u8>> {
    let mut graph = Graph::default();
    for tensor in torch_tensors(model_bin)? {
        graph.constant(&tensor.name, &tensor.shape, &tensor.values);
    }
    graph.constant("grey_max", &[], &[255.0]);
    graph.constant("pixel_mean", &[], &[PIXEL_MEAN]);
    graph.constant("pixel_std", &[], &[PIXEL_STD]);
    graph.constant("half", &[], &[0.5]);
    graph.constant("one", &[], &[1.0]);
    graph.constant("inv_sqrt2", &[], &[std::f32::consts::FRAC_1_SQRT_2]);

    let scaled = graph.node("Div", &["pixels", "grey_max"], vec![]);
    let centred = graph.node("Sub", &[&scaled, "pixel_mean"], vec![]);
    let mut x = graph.node("Div", &[&centred, "pixel_std"], vec![]);
    for block in ["1", "2"] {
        let (conv, norm) = (format!("conv{block}"), format!("norm{block}"));
        let w = |layer: &str, name: &str| format!("{layer}.{name}");
        x = graph.node("Conv", &[&x, &w(&conv, "weight"), &w(&conv, "bias")], vec![ints("kernel_shape", &[3, 3])]);
        let inputs = [&x, &w(&norm, "weight"), &w(&norm, "bias"), &w(&norm, "running_mean"), &w(&norm, "running_var")];
        x = graph.node("BatchNormalization", &inputs.map(String::as_str), vec![float("epsilon", EPSILON)]);
        x = graph.gelu(&x);
        x = graph.node("MaxPool", &[&x], vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])]);
    }
    x = graph.node("Flatten", &[&x], vec![int("axis", 1)]);
    for (layer, relu) in [("fc1", true), ("fc2", true), ("fc3", false)] {
        let (weight, bias) = (format!("{layer}.weight"), format!("{layer}.bias"));
        // PyTorch's layout, [outputs, inputs]: Gemm transposes it.
        x = graph.node("Gemm", &[&x, &weight, &bias], vec![int("transB", 1)]);
        if relu {
            x = graph.node("Relu", &[&x], vec![]);
        }
    }
    let probabilities = graph.node("Softmax", &[&x], vec![int("axis", 1)]);
    graph.rename_output(&probabilities, "probabilities");

    let image = IMAGE_SIZE as i64;
    let model = ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET, ..Default::default() }],
        producer_name: "mnist-pipeline xtask".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: "MNIST digit classifier: grey pixels 0-255 (0 = paper) in, class probabilities out".into(),
        graph: MessageField::some(GraphProto {
            name: "mnist".into(),
            node: graph.nodes,
            initializer: graph.initializers,
            input: vec![value_info("pixels", &[None, Some(1), Some(image), Some(image)])],
            output: vec![value_info("probabilities", &[None, Some(NUM_CLASSES as i64)])],
            ..Default::default()
        }),
        metadata_props: metadata
            .into_iter()
            .map(|(key, value)| StringStringEntryProto { key, value, ..Default::default() })
            .collect(),
        ..Default::default()
    };
    Ok(model.write_to_bytes()?)
}

/// The graph as it is built: constants, and nodes each with one output named after its index.
#[derive(Default)]
struct Graph {
    initializers: Vec<TensorProto>,
    nodes: Vec<NodeProto>,
}

impl Graph {
    fn constant(&mut self, name: &str, shape: &[usize], values: &[f32]) {
        self.initializers.push(TensorProto {
            name: name.into(),
            dims: shape.iter().map(|&d| d as i64).collect(),
            data_type: DataType::FLOAT as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
    }

    /// Adds an `op` node over `inputs`; the name of its output.
    fn node(&mut self, op: &str, inputs: &[&str], attribute: Vec<AttributeProto>) -> String {
        let output = format!("{}_{}", op.to_lowercase(), self.nodes.len());
        self.nodes.push(NodeProto {
            name: output.clone(),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            attribute,
            ..Default::default()
        });
        output
    }

    /// Exact GELU as infer computes it: `0.5 x (1 + erf(x / sqrt 2))`.
    fn gelu(&mut self, x: &str) -> String {
        let scaled = self.node("Mul", &[x, "inv_sqrt2"], vec![]);
        let erf = self.node("Erf", &[&scaled], vec![]);
        let one_plus = self.node("Add", &["one", &erf], vec![]);
        let half_x = self.node("Mul", &["half", x], vec![]);
        self.node("Mul", &[&half_x, &one_plus], vec![])
    }

    fn rename_output(&mut self, from: &str, to: &str) {
        for node in &mut self.nodes {
            for output in &mut node.output {
                if output == from {
                    *output = to.into();
                }
            }
        }
    }
}

fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto { name: name.into(), type_: EnumOrUnknown::new(AttributeType::INT), i: value, ..Default::default() }
}

fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: EnumOrUnknown::new(AttributeType::INTS),
        ints: values.to_vec(),
        ..Default::default()
    }
}

fn float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: EnumOrUnknown::new(AttributeType::FLOAT),
        f: value,
        ..Default::default()
    }
}

/// A float tensor input or output; `None` dimensions are the batch, named `batch`.
fn value_info(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(size) => dimension::Value::DimValue(*size),
                None => dimension::Value::DimParam("batch".into()),
            }),
            ..Default::default()
        })
        .collect();
    let tensor = type_proto::Tensor {
        elem_type: DataType::FLOAT as i32,
        shape: MessageField::some(TensorShapeProto { dim, ..Default::default() }),
        ..Default::default()
    };
    ValueInfoProto {
        name: name.into(),
        type_: MessageField::some(TypeProto {
            value: Some(type_proto::Value::TensorType(tensor)),
            ..Default::default()
        }),
        ..Default::default()
    }
}
