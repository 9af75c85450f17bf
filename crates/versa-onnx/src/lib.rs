//! ONNX models for Versa, run by tract: the [`OnnxLoader`] the version manager
//! drives, the [`Signature`] synthesised from each graph, TensorProto ↔ tensor
//! conversion ([`convert`]), and the [`InferencePool`]. No RPC in here.

pub mod convert;
pub mod dtype;
mod loader;
mod model;
mod plans;
mod pool;
pub mod signature;

pub use loader::OnnxLoader;
pub use model::{MODEL_FILE, ModelOptions, OnnxModel};
pub use plans::DEFAULT_BUILD_INTERVAL;
pub use pool::InferencePool;
pub use signature::{DEFAULT_SIGNATURE, PREDICT_METHOD, Signature, TensorSpec};
pub use tract_onnx::prelude::{
    Datum, DatumType, IntoArcTensor, IntoTValue, IntoTensor, TValue, TVec, Tensor, TractError, f16,
    tvec,
};
