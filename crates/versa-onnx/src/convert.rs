//! TensorProto ↔ tract tensors, for every dtype ONNX and TensorFlow share.
//!
//! Values come from `tensor_content` (raw little-endian bytes) or from the
//! typed `*_val` field of the dtype. A typed field with exactly one value
//! fills the whole shape (TensorFlow's broadcast rule); otherwise the number
//! of values must equal the number of elements.

use crate::dtype;
use crate::signature::{TensorSpec, shape_proto};
use tract_onnx::prelude::tract_ndarray::{ArrayD, IxDyn};
use tract_onnx::prelude::{Datum, DatumType, IntoTensor, Tensor, f16};
use versa_core::Code;
use versa_proto::tensorflow::{DataType, TensorProto};

mod budget;
pub use budget::{Reserve, TensorBudget};

/// Why a tensor could not be converted. Always the caller's input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    #[error("input '{alias}' expects {expected} but {got} was provided")]
    DtypeMismatch { alias: String, expected: String, got: String },
    #[error("'{alias}' has dtype {dtype}, which ONNX models cannot take or produce")]
    UnsupportedDtype { alias: String, dtype: String },
    #[error(
        "input '{alias}' has shape {got:?} but the signature expects {expected:?} (-1: any size)"
    )]
    ShapeMismatch { alias: String, expected: Vec<i64>, got: Vec<i64> },
    #[error("input '{alias}' has an invalid shape {shape:?}: {reason}")]
    InvalidShape { alias: String, shape: Vec<i64>, reason: String },
    #[error("input '{alias}' has {count} values for shape {shape:?} ({elements} elements)")]
    ValueCount { alias: String, count: usize, shape: Vec<usize>, elements: usize },
    #[error(
        "input '{alias}' has {bytes} bytes of tensor_content; shape {shape:?} of {dtype} needs {expected}"
    )]
    ContentSize { alias: String, bytes: usize, expected: usize, shape: Vec<usize>, dtype: String },
    #[error("input '{alias}' has a value out of range for {dtype}: {value}")]
    OutOfRange { alias: String, dtype: String, value: i64 },
    #[error("input '{alias}' has a string that is not valid UTF-8")]
    InvalidString { alias: String },
    #[error("cannot encode output '{alias}': {reason}")]
    Output { alias: String, reason: String },
    #[error(
        "input '{alias}' would take {bytes} bytes of memory, more than the {limit} bytes a request's inputs may take together{}",
        setting_suffix(setting)
    )]
    TooLarge { alias: String, bytes: usize, limit: usize, setting: &'static str },
    /// The server as a whole cannot hold the request's inputs now.
    #[error("{reason}")]
    Shed { reason: String },
}

fn setting_suffix(setting: &str) -> String {
    if setting.is_empty() { String::new() } else { format!(" ({setting})") }
}

impl TensorError {
    pub fn code(&self) -> Code {
        match self {
            TensorError::Output { .. } => Code::Internal,
            TensorError::Shed { .. } => Code::ResourceExhausted,
            _ => Code::InvalidArgument,
        }
    }
}

/// Builds a tensor of `shape` from owned values whose count the caller checked.
pub fn tensor_from_vec<T: Datum>(shape: &[usize], values: Vec<T>) -> Tensor {
    ArrayD::from_shape_vec(IxDyn(shape), values)
        .expect("value count checked against the shape")
        .into_tensor()
}

/// Checks a request shape against a signature shape and returns it as sizes.
pub fn checked_shape(
    alias: &str,
    dims: &[i64],
    spec: &TensorSpec,
) -> Result<Vec<usize>, TensorError> {
    let invalid = |reason: &str| TensorError::InvalidShape {
        alias: alias.to_owned(),
        shape: dims.to_vec(),
        reason: reason.to_owned(),
    };
    let mismatch = || TensorError::ShapeMismatch {
        alias: alias.to_owned(),
        expected: spec.shape.clone(),
        got: dims.to_vec(),
    };
    if dims.len() != spec.shape.len() {
        return Err(mismatch());
    }
    let mut shape = Vec::with_capacity(dims.len());
    let mut elements: usize = 1;
    // The product with zero dimensions counted as one: what strides span.
    // `[0, 2^40, 2^40]` has no elements but strides no index type holds;
    // and tract sizes a buffer by multiplying the element size by each
    // dimension in turn, so `[i64::MAX, 0]` of strings overflows there
    // before the zero is reached: the span in bytes of the largest element
    // type must fit too.
    const LARGEST_ELEMENT: usize = 32;
    let mut span: usize = 1;
    for (&got, &want) in dims.iter().zip(&spec.shape) {
        let size = usize::try_from(got).map_err(|_| invalid("dimensions must be >= 0"))?;
        if want >= 0 && want != got {
            return Err(mismatch());
        }
        elements = elements.checked_mul(size).ok_or_else(|| invalid("too many elements"))?;
        span = span
            .checked_mul(size.max(1))
            .filter(|s| s.checked_mul(LARGEST_ELEMENT).is_some_and(|b| isize::try_from(b).is_ok()))
            .ok_or_else(|| invalid("dimensions too large"))?;
        shape.push(size);
    }
    Ok(shape)
}

/// A tensor from typed values in one aligned copy (no intermediate `Vec`)
/// when their count is the shape's; otherwise as [`expand`] says.
fn tensor_from_slice<T: Datum + Copy>(
    alias: &str,
    values: &[T],
    shape: &[usize],
) -> Result<Tensor, TensorError> {
    if values.len() == shape.iter().product::<usize>() {
        return Ok(Tensor::from_shape(shape, values).expect("count checked"));
    }
    Ok(tensor_from_vec(shape, expand(alias, values.to_vec(), shape)?))
}

/// Fills `n` elements from typed values: equal count, or one value broadcast.
fn expand<T: Clone>(alias: &str, values: Vec<T>, shape: &[usize]) -> Result<Vec<T>, TensorError> {
    let n: usize = shape.iter().product();
    match values.len() {
        len if len == n => Ok(values),
        1 => Ok(vec![values[0].clone(); n]),
        count => Err(TensorError::ValueCount {
            alias: alias.to_owned(),
            count,
            shape: shape.to_vec(),
            elements: n,
        }),
    }
}

fn narrow<T: TryFrom<i64>>(
    alias: &str,
    dtype: DataType,
    values: impl Iterator<Item = i64>,
) -> Result<Vec<T>, TensorError> {
    values
        .map(|v| {
            T::try_from(v).map_err(|_| TensorError::OutOfRange {
                alias: alias.to_owned(),
                dtype: dtype.as_str_name().to_owned(),
                value: v,
            })
        })
        .collect()
}

fn from_le<T, const N: usize>(bytes: &[u8], decode: fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|chunk| {
            let mut raw = [0u8; N];
            raw.copy_from_slice(chunk);
            decode(raw)
        })
        .collect()
}

/// Converts a request tensor for a signature input, charging what it will
/// take to `budget` before building it.
pub fn tensor_from_proto(
    proto: &TensorProto,
    spec: &TensorSpec,
    budget: &mut TensorBudget<'_>,
) -> Result<Tensor, TensorError> {
    let alias = spec.alias.as_str();
    if proto.dtype != spec.dtype as i32 {
        return Err(TensorError::DtypeMismatch {
            alias: alias.to_owned(),
            expected: spec.dtype.as_str_name().to_owned(),
            got: dtype::name(proto.dtype),
        });
    }
    let dims: Vec<i64> = match &proto.tensor_shape {
        Some(s) if s.unknown_rank => {
            return Err(TensorError::InvalidShape {
                alias: alias.to_owned(),
                shape: vec![],
                reason: "unknown_rank is set".into(),
            });
        }
        Some(s) => s.dim.iter().map(|d| d.size).collect(),
        None => Vec::new(),
    };
    let shape = checked_shape(alias, &dims, spec)?;
    budget.charge_proto(alias, proto, spec.dtype, &shape)?;
    if proto.tensor_content.is_empty() {
        from_typed_values(proto, spec.dtype, alias, &shape)
    } else {
        from_content(&proto.tensor_content, spec.dtype, alias, &shape)
    }
}

fn from_typed_values(
    p: &TensorProto,
    dt: DataType,
    alias: &str,
    shape: &[usize],
) -> Result<Tensor, TensorError> {
    let ints = || p.int_val.iter().map(|&v| i64::from(v));
    Ok(match dt {
        DataType::DtFloat => tensor_from_slice(alias, &p.float_val, shape)?,
        DataType::DtDouble => tensor_from_slice(alias, &p.double_val, shape)?,
        DataType::DtHalf => {
            let halves = narrow::<u16>(alias, dt, p.half_val.iter().map(|&v| i64::from(v)))?;
            tensor_from_vec(
                shape,
                expand(alias, halves.into_iter().map(f16::from_bits).collect(), shape)?,
            )
        }
        DataType::DtInt8 => {
            tensor_from_vec(shape, expand(alias, narrow::<i8>(alias, dt, ints())?, shape)?)
        }
        DataType::DtInt16 => {
            tensor_from_vec(shape, expand(alias, narrow::<i16>(alias, dt, ints())?, shape)?)
        }
        DataType::DtInt32 => tensor_from_slice(alias, &p.int_val, shape)?,
        DataType::DtUint8 => {
            tensor_from_vec(shape, expand(alias, narrow::<u8>(alias, dt, ints())?, shape)?)
        }
        DataType::DtUint16 => {
            tensor_from_vec(shape, expand(alias, narrow::<u16>(alias, dt, ints())?, shape)?)
        }
        DataType::DtInt64 => tensor_from_slice(alias, &p.int64_val, shape)?,
        DataType::DtUint32 => tensor_from_slice(alias, &p.uint32_val, shape)?,
        DataType::DtUint64 => tensor_from_slice(alias, &p.uint64_val, shape)?,
        DataType::DtBool => tensor_from_slice(alias, &p.bool_val, shape)?,
        DataType::DtString => {
            let strings = p
                .string_val
                .iter()
                .map(|b| {
                    String::from_utf8(b.clone())
                        .map_err(|_| TensorError::InvalidString { alias: alias.to_owned() })
                })
                .collect::<Result<Vec<_>, _>>()?;
            tensor_from_vec(shape, expand(alias, strings, shape)?)
        }
        other => {
            return Err(TensorError::UnsupportedDtype {
                alias: alias.to_owned(),
                dtype: other.as_str_name().to_owned(),
            });
        }
    })
}

fn from_content(
    bytes: &[u8],
    dt: DataType,
    alias: &str,
    shape: &[usize],
) -> Result<Tensor, TensorError> {
    let n: usize = shape.iter().product();
    let width = match dtype::from_tf(dt) {
        Some(DatumType::String) | None => {
            return Err(TensorError::UnsupportedDtype {
                alias: alias.to_owned(),
                dtype: format!("{} in tensor_content", dt.as_str_name()),
            });
        }
        Some(datum) => datum.size_of(),
    };
    let expected = n.saturating_mul(width);
    if bytes.len() != expected {
        return Err(TensorError::ContentSize {
            alias: alias.to_owned(),
            bytes: bytes.len(),
            expected,
            shape: shape.to_vec(),
            dtype: dt.as_str_name().to_owned(),
        });
    }
    if cfg!(target_endian = "little") && dt != DataType::DtBool {
        // The wire layout is the memory layout: one copy into the tensor.
        let datum = dtype::from_tf(dt).expect("checked above");
        let mut tensor = Tensor::zero_dt(datum, shape).map_err(|e| TensorError::InvalidShape {
            alias: alias.to_owned(),
            shape: shape.iter().map(|&d| d as i64).collect(),
            reason: e.to_string(),
        })?;
        tensor.as_bytes_mut().copy_from_slice(bytes);
        return Ok(tensor);
    }
    Ok(match dt {
        DataType::DtFloat => tensor_from_vec(shape, from_le(bytes, f32::from_le_bytes)),
        DataType::DtDouble => tensor_from_vec(shape, from_le(bytes, f64::from_le_bytes)),
        DataType::DtHalf => {
            tensor_from_vec(shape, from_le(bytes, |b| f16::from_bits(u16::from_le_bytes(b))))
        }
        DataType::DtInt8 => tensor_from_vec(shape, from_le(bytes, i8::from_le_bytes)),
        DataType::DtInt16 => tensor_from_vec(shape, from_le(bytes, i16::from_le_bytes)),
        DataType::DtInt32 => tensor_from_vec(shape, from_le(bytes, i32::from_le_bytes)),
        DataType::DtInt64 => tensor_from_vec(shape, from_le(bytes, i64::from_le_bytes)),
        DataType::DtUint8 => tensor_from_vec(shape, bytes.to_vec()),
        DataType::DtUint16 => tensor_from_vec(shape, from_le(bytes, u16::from_le_bytes)),
        DataType::DtUint32 => tensor_from_vec(shape, from_le(bytes, u32::from_le_bytes)),
        DataType::DtUint64 => tensor_from_vec(shape, from_le(bytes, u64::from_le_bytes)),
        DataType::DtBool => {
            tensor_from_vec(shape, bytes.iter().map(|&b| b != 0).collect::<Vec<bool>>())
        }
        other => {
            return Err(TensorError::UnsupportedDtype {
                alias: alias.to_owned(),
                dtype: other.as_str_name().to_owned(),
            });
        }
    })
}

fn values<'t, T: Datum>(alias: &str, tensor: &'t Tensor) -> Result<&'t [T], TensorError> {
    let view = tensor
        .try_as_plain_ram()
        .map_err(|e| TensorError::Output { alias: alias.to_owned(), reason: e.to_string() })?;
    view.as_slice::<T>()
        .map_err(|e| TensorError::Output { alias: alias.to_owned(), reason: e.to_string() })
}

fn le_bytes<T: Copy, const N: usize>(values: &[T], encode: fn(T) -> [u8; N]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * N);
    for &v in values {
        out.extend_from_slice(&encode(v));
    }
    out
}

/// Encodes a model output. With `as_content`, numeric values go to
/// `tensor_content` (`--enable_serialization_as_tensor_content`); otherwise to
/// the typed `*_val` field, as TensorFlow Serving does by default.
pub fn tensor_to_proto(
    alias: &str,
    tensor: &Tensor,
    as_content: bool,
) -> Result<TensorProto, TensorError> {
    let dt = dtype::to_tf(tensor.datum_type()).ok_or_else(|| TensorError::UnsupportedDtype {
        alias: alias.to_owned(),
        dtype: format!("{:?}", tensor.datum_type()),
    })?;
    let dims: Vec<i64> = tensor.shape().iter().map(|&d| d as i64).collect();
    let mut p = TensorProto {
        dtype: dt as i32,
        tensor_shape: Some(shape_proto(&dims)),
        ..TensorProto::default()
    };
    let content = as_content && dt != DataType::DtString;
    macro_rules! put {
        ($t:ty, $field:ident, $conv:expr, $le:expr) => {{
            let v = values::<$t>(alias, tensor)?;
            if content && cfg!(target_endian = "little") {
                // The memory layout is the wire layout (bool: one byte, 0 or 1).
                p.tensor_content = tensor.as_bytes().to_vec();
            } else if content {
                p.tensor_content = le_bytes(v, $le);
            } else {
                p.$field = v.iter().map($conv).collect();
            }
        }};
    }
    match dt {
        DataType::DtFloat => put!(f32, float_val, |&x| x, f32::to_le_bytes),
        DataType::DtDouble => put!(f64, double_val, |&x| x, f64::to_le_bytes),
        DataType::DtHalf => put!(f16, half_val, |x: &f16| i32::from(x.to_bits()), |x: f16| x
            .to_bits()
            .to_le_bytes()),
        DataType::DtInt8 => put!(i8, int_val, |&x| i32::from(x), i8::to_le_bytes),
        DataType::DtInt16 => put!(i16, int_val, |&x| i32::from(x), i16::to_le_bytes),
        DataType::DtInt32 => put!(i32, int_val, |&x| x, i32::to_le_bytes),
        DataType::DtInt64 => put!(i64, int64_val, |&x| x, i64::to_le_bytes),
        DataType::DtUint8 => put!(u8, int_val, |&x| i32::from(x), u8::to_le_bytes),
        DataType::DtUint16 => put!(u16, int_val, |&x| i32::from(x), u16::to_le_bytes),
        DataType::DtUint32 => put!(u32, uint32_val, |&x| x, u32::to_le_bytes),
        DataType::DtUint64 => put!(u64, uint64_val, |&x| x, u64::to_le_bytes),
        DataType::DtBool => put!(bool, bool_val, |&x| x, |x: bool| [u8::from(x)]),
        DataType::DtString => {
            p.string_val =
                values::<String>(alias, tensor)?.iter().map(|s| s.as_bytes().to_vec()).collect();
        }
        other => {
            return Err(TensorError::UnsupportedDtype {
                alias: alias.to_owned(),
                dtype: other.as_str_name().to_owned(),
            });
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests;
