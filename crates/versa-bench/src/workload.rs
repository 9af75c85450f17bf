//! The models benchmarked and the requests sent to them.

use versa_proto::serving::{ModelSpec, PredictRequest};
use versa_proto::tensorflow::{DataType, TensorProto, TensorShapeProto, tensor_shape_proto};

/// The name every benchmark serves its model under.
pub(crate) const MODEL_NAME: &str = "bench";

/// A model and the batch-1 input every request carries.
#[derive(Debug, Clone)]
pub(crate) struct Workload {
    pub(crate) name: String,
    pub(crate) bytes: Vec<u8>,
    pub(crate) input: String,
    /// Shape of one sample (without the batch dimension).
    pub(crate) sample_shape: Vec<usize>,
}

impl Workload {
    pub(crate) fn named(name: &str) -> anyhow::Result<Self> {
        let (bytes, input, sample_shape) = match name {
            "mlp" => (versa_testmodels::mlp(&[784, 512, 256, 10]), "input", vec![784]),
            "small_cnn" => (versa_testmodels::small_cnn(), "image", vec![1, 28, 28]),
            "mobilenet" => (versa_testmodels::mobilenet_v2_like(), "image", vec![3, 224, 224]),
            other => anyhow::bail!("unknown model {other} (mlp, small_cnn, mobilenet)"),
        };
        Ok(Self { name: name.to_owned(), bytes, input: input.to_owned(), sample_shape })
    }

    pub(crate) fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }

    /// Batch-1 shape.
    pub(crate) fn shape(&self) -> Vec<usize> {
        std::iter::once(1).chain(self.sample_shape.iter().copied()).collect()
    }

    /// The input as a tract tensor (for the raw baseline).
    pub(crate) fn tensor(&self) -> versa_onnx::Tensor {
        versa_onnx::convert::tensor_from_vec(&self.shape(), self.values())
    }

    /// The batch-1 input's values, row-major.
    pub(crate) fn values(&self) -> Vec<f32> {
        (0..self.sample_len()).map(|i| (i % 17) as f32 / 17.0).collect()
    }

    /// A gRPC Predict request as TensorFlow's Python client builds it from a
    /// NumPy array: values packed in `tensor_content`.
    pub(crate) fn grpc_request(&self) -> PredictRequest {
        let tensor = TensorProto {
            dtype: DataType::DtFloat as i32,
            tensor_shape: Some(TensorShapeProto {
                dim: self
                    .shape()
                    .iter()
                    .map(|&size| tensor_shape_proto::Dim { size: size as i64, name: String::new() })
                    .collect(),
                unknown_rank: false,
            }),
            tensor_content: self.values().iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..TensorProto::default()
        };
        PredictRequest {
            model_spec: Some(ModelSpec { name: MODEL_NAME.into(), ..ModelSpec::default() }),
            inputs: [(self.input.clone(), tensor)].into_iter().collect(),
            ..PredictRequest::default()
        }
    }

    /// A REST predict body in row format: `{"instances": [<one sample>]}`.
    pub(crate) fn rest_body(&self) -> String {
        fn nest(values: &[f32], shape: &[usize], out: &mut String) {
            match shape.split_first() {
                None => out.push_str(&values[0].to_string()),
                Some((&n, rest)) => {
                    let stride: usize = rest.iter().product();
                    out.push('[');
                    for i in 0..n {
                        if i > 0 {
                            out.push(',');
                        }
                        nest(&values[i * stride..], rest, out);
                    }
                    out.push(']');
                }
            }
        }
        let mut body = String::from("{\"instances\": [");
        nest(&self.values(), &self.sample_shape, &mut body);
        body.push_str("]}");
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(sample_shape: Vec<usize>) -> Workload {
        Workload { name: "t".into(), bytes: vec![], input: "x".into(), sample_shape }
    }

    #[test]
    fn rest_body_nests_one_sample_by_its_shape() {
        assert_eq!(workload(vec![3]).rest_body(), r#"{"instances": [[0,0.05882353,0.11764706]]}"#);
        assert_eq!(
            workload(vec![2, 2]).rest_body(),
            r#"{"instances": [[[0,0.05882353],[0.11764706,0.1764706]]]}"#
        );
    }

    #[test]
    fn grpc_request_packs_batch_one_in_tensor_content() {
        let request = workload(vec![2, 3]).grpc_request();
        let tensor = &request.inputs["x"];
        let dims: Vec<i64> = tensor
            .tensor_shape
            .as_ref()
            .map(|s| s.dim.iter().map(|d| d.size).collect())
            .unwrap_or_default();
        assert_eq!(dims, vec![1, 2, 3]);
        assert_eq!(tensor.tensor_content.len(), 6 * 4);
    }
}
