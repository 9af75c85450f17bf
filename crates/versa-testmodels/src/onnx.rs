//! A tiny builder for ONNX graphs on top of tract's ONNX protobuf types.

use prost::Message;
use tract_onnx::pb::{
    self, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TypeProto,
    ValueInfoProto, attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto,
    type_proto,
};

/// A dimension of a graph input or output.
#[derive(Debug, Clone, Copy)]
pub enum Dim {
    Fixed(i64),
    /// A named symbolic dimension, e.g. the batch.
    Param(&'static str),
}

/// The batch dimension every generated model uses.
pub const BATCH: Dim = Dim::Param("batch");

pub fn value_info(name: &str, elem: DataType, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            denotation: String::new(),
            value: Some(match d {
                Dim::Fixed(n) => tensor_shape_proto::dimension::Value::DimValue(*n),
                Dim::Param(p) => tensor_shape_proto::dimension::Value::DimParam((*p).to_owned()),
            }),
        })
        .collect();
    ValueInfoProto {
        name: name.to_owned(),
        r#type: Some(TypeProto {
            denotation: String::new(),
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
        }),
        doc_string: String::new(),
    }
}

pub fn node(
    op: &str,
    inputs: &[&str],
    outputs: &[&str],
    attributes: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| (*s).to_owned()).collect(),
        output: outputs.iter().map(|s| (*s).to_owned()).collect(),
        name: format!("{op}_{}", outputs.first().copied().unwrap_or("out")),
        op_type: op.to_owned(),
        attribute: attributes,
        ..NodeProto::default()
    }
}

pub fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        r#type: AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..AttributeProto::default()
    }
}

pub fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        r#type: AttributeType::Int as i32,
        i: value,
        ..AttributeProto::default()
    }
}

pub fn f32_tensor(name: &str, dims: &[i64], values: Vec<f32>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_owned(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        float_data: values,
        ..pb::TensorProto::default()
    }
}

pub fn i64_tensor(name: &str, dims: &[i64], values: Vec<i64>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_owned(),
        dims: dims.to_vec(),
        data_type: DataType::Int64 as i32,
        int64_data: values,
        ..pb::TensorProto::default()
    }
}

pub fn i32_tensor(name: &str, dims: &[i64], values: Vec<i32>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_owned(),
        dims: dims.to_vec(),
        data_type: DataType::Int32 as i32,
        int32_data: values,
        ..pb::TensorProto::default()
    }
}

/// Wraps a graph into a model (IR 8, opset 13) and encodes it.
pub fn encode(graph: GraphProto) -> Vec<u8> {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 13 }],
        producer_name: "versa-testmodels".to_owned(),
        graph: Some(graph),
        ..ModelProto::default()
    }
    .encode_to_vec()
}

pub fn graph(
    name: &str,
    nodes: Vec<NodeProto>,
    initializers: Vec<pb::TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
) -> GraphProto {
    GraphProto {
        name: name.to_owned(),
        node: nodes,
        initializer: initializers,
        input: inputs,
        output: outputs,
        ..GraphProto::default()
    }
}

/// Deterministic pseudo-random weights in [-scale, scale] (xorshift), so
/// every run of the generator writes the same bytes.
pub fn weights(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let unit = (state >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
            (unit * 2.0 - 1.0) * scale
        })
        .collect()
}
