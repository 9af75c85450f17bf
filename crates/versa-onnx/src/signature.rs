//! The signature synthesised from an ONNX graph: what TensorFlow Serving
//! clients see in GetModelMetadata.

use std::collections::HashMap;
use versa_proto::tensorflow::{self, DataType, TensorInfo, TensorShapeProto, tensor_shape_proto};

/// The only signature an ONNX model has.
pub const DEFAULT_SIGNATURE: &str = "serving_default";
/// The method every synthesised signature declares.
pub const PREDICT_METHOD: &str = "tensorflow/serving/predict";

/// One input or output of a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Alias clients use; the ONNX tensor name.
    pub alias: String,
    pub dtype: DataType,
    /// Dimensions; -1 where the size varies between calls.
    pub shape: Vec<i64>,
}

impl TensorSpec {
    fn tensor_info(&self) -> TensorInfo {
        TensorInfo {
            encoding: Some(tensorflow::tensor_info::Encoding::Name(self.alias.clone())),
            dtype: self.dtype as i32,
            tensor_shape: Some(shape_proto(&self.shape)),
        }
    }
}

/// A model's inputs and outputs, in graph order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

impl Signature {
    pub fn input(&self, alias: &str) -> Option<(usize, &TensorSpec)> {
        self.inputs.iter().enumerate().find(|(_, s)| s.alias == alias)
    }

    pub fn output(&self, alias: &str) -> Option<(usize, &TensorSpec)> {
        self.outputs.iter().enumerate().find(|(_, s)| s.alias == alias)
    }

    /// The signature as TensorFlow's `SignatureDef`.
    pub fn to_signature_def(&self) -> tensorflow::SignatureDef {
        let map = |specs: &[TensorSpec]| -> HashMap<String, TensorInfo> {
            specs.iter().map(|s| (s.alias.clone(), s.tensor_info())).collect()
        };
        tensorflow::SignatureDef {
            inputs: map(&self.inputs),
            outputs: map(&self.outputs),
            method_name: PREDICT_METHOD.to_owned(),
            defaults: HashMap::new(),
        }
    }
}

/// A shape as `TensorShapeProto` (-1 for unknown dimensions).
pub fn shape_proto(dims: &[i64]) -> TensorShapeProto {
    TensorShapeProto {
        dim: dims
            .iter()
            .map(|&size| tensor_shape_proto::Dim { size, name: String::new() })
            .collect(),
        unknown_rank: false,
    }
}
