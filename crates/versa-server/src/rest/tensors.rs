//! REST tensors: the row (`instances` → `predictions`) and columnar
//! (`inputs` → `outputs`) JSON formats of TensorFlow Serving, converted
//! straight to and from tract tensors (no TensorProto in between). This
//! file reads requests; [`encode`] writes responses.

mod encode;
pub use encode::response_body;

use super::json::{Json, Numbers};
use crate::error::ServingError;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use versa_onnx::convert::{TensorBudget, checked_shape, tensor_from_vec};
use versa_onnx::{Datum, DatumType, Signature, Tensor, TensorSpec, f16};
use versa_proto::tensorflow::DataType;

/// Which format a request used; the response answers in the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Row,
    Columnar,
}

/// A parsed predict body.
#[derive(Debug)]
pub struct PredictBody<'a> {
    pub signature_name: String,
    pub format: Format,
    /// `instances` array or `inputs` value.
    pub payload: &'a Json<'a>,
}

fn bad(message: impl Into<String>) -> ServingError {
    ServingError::invalid_argument(message)
}

/// Splits a predict body into its parts (TensorFlow Serving's checks).
pub fn predict_body<'a>(body: &'a Json<'a>) -> Result<PredictBody<'a>, ServingError> {
    if !matches!(body, Json::Object(_)) {
        return Err(bad(format!("Request body must be a JSON object, got {}", body.kind())));
    }
    let signature_name = match body.get("signature_name") {
        None => String::new(),
        Some(Json::String(s)) => s.to_string(),
        Some(_) => return Err(bad("Expecting 'signature_name' to be a string")),
    };
    let (format, payload) = match (body.get("instances"), body.get("inputs")) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist",
            ));
        }
        (None, None) => return Err(bad("Missing 'inputs' or 'instances' key")),
        (Some(instances), None) => (Format::Row, instances),
        (None, Some(inputs)) => (Format::Columnar, inputs),
    };
    Ok(PredictBody { signature_name, format, payload })
}

/// `{"b64": "..."}`: a binary string value.
fn b64_of<'a>(v: &'a Json<'a>) -> Option<&'a str> {
    match v {
        Json::Object(members) if members.len() == 1 && members[0].0 == "b64" => match &members[0].1
        {
            Json::String(s) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

fn is_named_object(v: &Json<'_>) -> bool {
    matches!(v, Json::Object(_)) && b64_of(v).is_none()
}

/// The request's values per signature input, each with its leading shape
/// (the row count for the row format), in signature order. Each tensor is
/// charged to `budget` before it is built.
pub fn input_tensors(
    signature: &Signature,
    body: &PredictBody<'_>,
    budget: &mut TensorBudget<'_>,
) -> Result<Vec<Tensor>, ServingError> {
    match body.format {
        Format::Row => rows_to_tensors(signature, body.payload, budget),
        Format::Columnar => columns_to_tensors(signature, body.payload, budget),
    }
}

fn rows_to_tensors(
    signature: &Signature,
    instances: &Json<'_>,
    budget: &mut TensorBudget<'_>,
) -> Result<Vec<Tensor>, ServingError> {
    let rows = match instances {
        Json::Array(rows) => rows,
        // Plain rows of numbers: the whole list is the one input's tensor.
        Json::Numbers(numbers) => {
            if numbers.shape().first() == Some(&0) {
                return Err(bad("'instances' is an empty list/array"));
            }
            if signature.inputs.len() != 1 {
                return Err(bad(
                    "instances is a plain list, but expecting list of objects as multiple input tensors required as per tensorinfo_map",
                ));
            }
            return Ok(vec![tensor_from_json(&signature.inputs[0], &[instances], false, budget)?]);
        }
        _ => return Err(bad("Expecting 'instances' to be an list/array")),
    };
    if rows.is_empty() {
        return Err(bad("'instances' is an empty list/array"));
    }
    let named = is_named_object(&rows[0]);
    if !named {
        if signature.inputs.len() != 1 {
            return Err(bad(
                "instances is a plain list, but expecting list of objects as multiple input tensors required as per tensorinfo_map",
            ));
        }
        let values: Vec<&Json<'_>> = rows.iter().collect();
        return Ok(vec![tensor_from_json(&signature.inputs[0], &values, true, budget)?]);
    }
    let first_keys: Vec<&str> = match &rows[0] {
        Json::Object(members) => members.iter().map(|(k, _)| k.as_ref()).collect(),
        _ => Vec::new(),
    };
    crate::serving::check_input_names(signature, first_keys.into_iter())?;
    signature
        .inputs
        .iter()
        .map(|spec| {
            let mut column = Vec::with_capacity(rows.len());
            for (i, row) in rows.iter().enumerate() {
                let value = row.get(&spec.alias).filter(|_| is_named_object(row)).ok_or_else(|| {
                    bad(format!("Failed to process element: {i} of 'instances' list. JSON object: {} does not have named input: {}", row.preview(), spec.alias))
                })?;
                column.push(value);
            }
            tensor_from_json(spec, &column, true, budget)
        })
        .collect()
}

fn columns_to_tensors(
    signature: &Signature,
    inputs: &Json<'_>,
    budget: &mut TensorBudget<'_>,
) -> Result<Vec<Tensor>, ServingError> {
    let single_named =
        signature.inputs.len() == 1 && inputs.get(&signature.inputs[0].alias).is_some();
    if is_named_object(inputs) && (signature.inputs.len() != 1 || single_named) {
        let Json::Object(members) = inputs else {
            return Err(bad("Expecting 'inputs' to be an object"));
        };
        crate::serving::check_input_names(signature, members.iter().map(|(k, _)| k.as_ref()))?;
        return signature
            .inputs
            .iter()
            .map(|spec| {
                let value = inputs.get(&spec.alias).ok_or_else(|| {
                    bad(format!("'inputs' does not have named input: {}", spec.alias))
                })?;
                tensor_from_json(spec, &[value], false, budget)
            })
            .collect();
    }
    if signature.inputs.len() != 1 {
        return Err(bad(
            "inputs is a plain value/list, but expecting an object as multiple input tensors required as per tensorinfo_map",
        ));
    }
    Ok(vec![tensor_from_json(&signature.inputs[0], &[inputs], false, budget)?])
}

/// Values in row-major order: single values, or whole runs of numbers
/// still as their source text.
#[derive(Debug, Clone, Copy)]
enum Leaf<'v, 'a> {
    One(&'v Json<'a>),
    Run(&'v Numbers<'a>),
}

/// The shape of nested arrays and their leaves in row-major order. Every
/// list at one depth must have the same length, and values sit only at the
/// innermost depth.
fn flatten<'v, 'a>(
    value: &'v Json<'a>,
    depth: usize,
    shape: &mut Vec<usize>,
    leaves: &mut Vec<Leaf<'v, 'a>>,
) -> Result<(), String> {
    const LIST_NOT_VALUE: &str = "a list where a value was expected";
    const RAGGED: &str = "lists at the same depth have different lengths";
    const VALUE_NOT_LIST: &str = "a value where a list was expected";
    match value {
        Json::Array(items) => {
            if depth == shape.len() {
                if !leaves.is_empty() {
                    return Err(LIST_NOT_VALUE.into());
                }
                shape.push(items.len());
            } else if shape[depth] != items.len() {
                return Err(RAGGED.into());
            }
            items.iter().try_for_each(|item| flatten(item, depth + 1, shape, leaves))
        }
        // Already rectangular: the same checks as walking its first path
        // as a tree (every other path has the same lengths).
        Json::Numbers(numbers) => {
            for (level, &len) in numbers.shape().iter().enumerate() {
                let at = depth + level;
                if at == shape.len() {
                    if !leaves.is_empty() {
                        return Err(LIST_NOT_VALUE.into());
                    }
                    shape.push(len);
                } else if shape[at] != len {
                    return Err(RAGGED.into());
                }
                if len == 0 {
                    return Ok(());
                }
            }
            if depth + numbers.shape().len() != shape.len() {
                return Err(VALUE_NOT_LIST.into());
            }
            leaves.push(Leaf::Run(numbers));
            Ok(())
        }
        leaf => {
            if depth != shape.len() {
                return Err(VALUE_NOT_LIST.into());
            }
            leaves.push(Leaf::One(leaf));
            Ok(())
        }
    }
}

/// Builds one input tensor from JSON. `stacked`: each of `parts` is one row
/// (row format); otherwise `parts` holds the single whole value.
fn tensor_from_json(
    spec: &TensorSpec,
    parts: &[&Json<'_>],
    stacked: bool,
    budget: &mut TensorBudget<'_>,
) -> Result<Tensor, ServingError> {
    let mut shape = Vec::new();
    let mut leaves = Vec::new();
    let shape_error = |reason: String| {
        bad(format!(
            "Failed to process input '{}': {reason} (tensors must be rectangular)",
            spec.alias
        ))
    };
    if stacked {
        shape.push(parts.len());
        let mut row_shape: Option<Vec<usize>> = None;
        for part in parts {
            let (mut this, mut row_leaves) = (Vec::new(), Vec::new());
            flatten(part, 0, &mut this, &mut row_leaves).map_err(shape_error)?;
            leaves.append(&mut row_leaves);
            match &row_shape {
                None => row_shape = Some(this),
                Some(s) if *s == this => {}
                Some(_) => return Err(shape_error("rows have different shapes".into())),
            }
        }
        shape.extend(row_shape.unwrap_or_default());
    } else if let Some(whole) = parts.first() {
        flatten(whole, 0, &mut shape, &mut leaves).map_err(shape_error)?;
    }
    let dims: Vec<i64> = shape.iter().map(|&d| i64::try_from(d).unwrap_or(i64::MAX)).collect();
    let shape = checked_shape(&spec.alias, &dims, spec)?;
    convert_leaves(spec, &shape, &leaves, budget)
}

fn type_error(leaf: &Json<'_>, dtype: DataType) -> ServingError {
    let expected = dtype.as_str_name().trim_start_matches("DT_").to_ascii_lowercase();
    bad(format!(
        "JSON Value: {} Type: {} is not of expected type: {expected}",
        leaf.preview(),
        leaf.kind()
    ))
}

fn float_of(leaf: &Json<'_>, dtype: DataType) -> Result<f64, ServingError> {
    match leaf {
        Json::Number("NaN") => Ok(f64::NAN),
        Json::Number("Infinity") => Ok(f64::INFINITY),
        Json::Number("-Infinity") => Ok(f64::NEG_INFINITY),
        Json::Number(n) => n.parse().map_err(|_| type_error(leaf, dtype)),
        _ => Err(type_error(leaf, dtype)),
    }
}

fn int_of<T: std::str::FromStr>(leaf: &Json<'_>, dtype: DataType) -> Result<T, ServingError> {
    match leaf {
        Json::Number(n) => n.parse().map_err(|_| type_error(leaf, dtype)),
        _ => Err(type_error(leaf, dtype)),
    }
}

fn string_of(leaf: &Json<'_>, dtype: DataType) -> Result<String, ServingError> {
    if let Some(encoded) = b64_of(leaf) {
        let bytes = BASE64
            .decode(encoded)
            .map_err(|e| bad(format!("Unable to base64 decode {}: {e}", leaf.preview())))?;
        return String::from_utf8(bytes)
            .map_err(|_| bad("b64 value is not valid UTF-8: binary strings are not supported by ONNX string tensors"));
    }
    match leaf {
        Json::String(s) => Ok(s.to_string()),
        _ => Err(type_error(leaf, dtype)),
    }
}

/// Visits every value in row-major order; runs of numbers are decoded token
/// by token from the request text, with no value built per element.
fn for_each_value(
    leaves: &[Leaf<'_, '_>],
    mut f: impl FnMut(&Json<'_>) -> Result<(), ServingError>,
) -> Result<(), ServingError> {
    for leaf in leaves {
        match leaf {
            Leaf::One(value) => f(value)?,
            Leaf::Run(numbers) => numbers.tokens().try_for_each(|t| f(&Json::Number(t)))?,
        }
    }
    Ok(())
}

fn leaf_count(shape: &[usize]) -> usize {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).unwrap_or(usize::MAX)
}

fn internal(e: impl std::fmt::Display) -> ServingError {
    ServingError::new(versa_core::Code::Internal, format!("cannot build input tensor: {e}"))
}

/// Numbers go straight into the new tensor's buffer: no intermediate `Vec`.
/// `from_f64`: how a float dtype takes the values the parser already read;
/// integer dtypes (`None`) parse each token exactly instead.
fn numeric_tensor<T: Datum>(
    shape: &[usize],
    leaves: &[Leaf<'_, '_>],
    convert: impl Fn(&Json<'_>) -> Result<T, ServingError>,
    from_f64: Option<fn(f64) -> T>,
) -> Result<Tensor, ServingError> {
    let mut tensor = Tensor::zero_dt(T::datum_type(), shape).map_err(internal)?;
    let mut view = tensor.try_as_plain_ram_mut().map_err(internal)?;
    let mut slots = view.as_slice_mut::<T>().map_err(internal)?.iter_mut();
    let mut put = |value: T| {
        *slots.next().ok_or_else(|| internal("more values than the shape holds"))? = value;
        Ok::<_, ServingError>(())
    };
    for leaf in leaves {
        match (leaf, from_f64) {
            (Leaf::One(value), _) => put(convert(value)?)?,
            (Leaf::Run(numbers), Some(cast)) => {
                numbers.values().iter().try_for_each(|&v| put(cast(v)))?;
            }
            (Leaf::Run(numbers), None) => {
                numbers.tokens().try_for_each(|t| put(convert(&Json::Number(t))?))?;
            }
        }
    }
    if slots.next().is_some() {
        return Err(internal("fewer values than the shape holds"));
    }
    Ok(tensor)
}

/// Values that are not plain numbers (bool, string) through a `Vec`.
fn collected_tensor<T: Datum>(
    shape: &[usize],
    leaves: &[Leaf<'_, '_>],
    convert: impl Fn(&Json<'_>) -> Result<T, ServingError>,
) -> Result<Tensor, ServingError> {
    let mut values = Vec::with_capacity(leaf_count(shape));
    for_each_value(leaves, |value| {
        values.push(convert(value)?);
        Ok(())
    })?;
    if values.len() != leaf_count(shape) {
        return Err(internal("the values do not fill the shape"));
    }
    Ok(tensor_from_vec(shape, values))
}

fn convert_leaves(
    spec: &TensorSpec,
    shape: &[usize],
    leaves: &[Leaf<'_, '_>],
    budget: &mut TensorBudget<'_>,
) -> Result<Tensor, ServingError> {
    let dt = spec.dtype;
    match versa_onnx::dtype::from_tf(dt) {
        // Strings: their headers now, their bytes as each is decoded.
        Some(DatumType::String) => budget.charge_strings(&spec.alias, leaf_count(shape), 0)?,
        Some(datum) => budget.charge_elements(&spec.alias, datum, shape)?,
        None => {}
    }
    match dt {
        DataType::DtFloat => {
            numeric_tensor(shape, leaves, |l| float_of(l, dt).map(|v| v as f32), Some(|v| v as f32))
        }
        DataType::DtDouble => numeric_tensor(shape, leaves, |l| float_of(l, dt), Some(|v| v)),
        DataType::DtHalf => numeric_tensor(
            shape,
            leaves,
            |l| float_of(l, dt).map(f16::from_f64),
            Some(f16::from_f64),
        ),
        DataType::DtInt8 => numeric_tensor(shape, leaves, |l| int_of::<i8>(l, dt), None),
        DataType::DtInt16 => numeric_tensor(shape, leaves, |l| int_of::<i16>(l, dt), None),
        DataType::DtInt32 => numeric_tensor(shape, leaves, |l| int_of::<i32>(l, dt), None),
        DataType::DtInt64 => numeric_tensor(shape, leaves, |l| int_of::<i64>(l, dt), None),
        DataType::DtUint8 => numeric_tensor(shape, leaves, |l| int_of::<u8>(l, dt), None),
        DataType::DtUint16 => numeric_tensor(shape, leaves, |l| int_of::<u16>(l, dt), None),
        DataType::DtUint32 => numeric_tensor(shape, leaves, |l| int_of::<u32>(l, dt), None),
        DataType::DtUint64 => numeric_tensor(shape, leaves, |l| int_of::<u64>(l, dt), None),
        DataType::DtBool => collected_tensor(shape, leaves, |l| match l {
            Json::Bool(b) => Ok(*b),
            _ => Err(type_error(l, dt)),
        }),
        DataType::DtString => {
            let alias = spec.alias.as_str();
            let budget = std::cell::RefCell::new(budget);
            collected_tensor(shape, leaves, |l| {
                let s = string_of(l, dt)?;
                budget.borrow_mut().charge(alias, Some(s.len()))?;
                Ok(s)
            })
        }
        other => Err(bad(format!(
            "input '{}' has unsupported dtype {}",
            spec.alias,
            other.as_str_name()
        ))),
    }
}

#[cfg(test)]
mod tests;
