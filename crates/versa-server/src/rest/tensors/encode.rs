//! Writing a predict response: output tensors as the JSON of the request's
//! format (rows or columns).

use super::super::json::{write_f32, write_f64, write_int, write_string};
use super::Format;
use crate::error::ServingError;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use versa_onnx::{DatumType, Tensor, f16};

fn bad(message: impl Into<String>) -> ServingError {
    ServingError::invalid_argument(message)
}

/// Appends `shape`-nested elements starting at flat index `offset`.
fn nest(out: &mut String, shape: &[usize], offset: usize, leaf: &dyn Fn(&mut String, usize)) {
    let Some((&len, inner)) = shape.split_first() else {
        leaf(out, offset);
        return;
    };
    let stride: usize = inner.iter().product();
    out.push('[');
    for i in 0..len {
        if i > 0 {
            out.push(',');
        }
        nest(out, inner, offset + i * stride, leaf);
    }
    out.push(']');
}

/// Appends the part of `tensor` starting at `offset`, nested along `shape`.
fn write_region(
    out: &mut String,
    alias: &str,
    tensor: &Tensor,
    shape: &[usize],
    offset: usize,
) -> Result<(), ServingError> {
    let internal = |e: String| {
        ServingError::new(
            versa_core::Code::Internal,
            format!("cannot encode output '{alias}': {e}"),
        )
    };
    let view = tensor.try_as_plain_ram().map_err(|e| internal(e.to_string()))?;
    macro_rules! slice {
        ($t:ty) => {
            view.as_slice::<$t>().map_err(|e| internal(e.to_string()))?
        };
    }
    match tensor.datum_type() {
        DatumType::F32 => {
            let v = slice!(f32);
            nest(out, shape, offset, &|o, i| write_f32(o, v[i]));
        }
        DatumType::F64 => {
            let v = slice!(f64);
            nest(out, shape, offset, &|o, i| write_f64(o, v[i]));
        }
        DatumType::F16 => {
            let v = slice!(f16);
            nest(out, shape, offset, &|o, i| write_f32(o, v[i].to_f32()));
        }
        DatumType::I8 => {
            let v = slice!(i8);
            nest(out, shape, offset, &|o, i| write_int(o, v[i]));
        }
        DatumType::I16 => {
            let v = slice!(i16);
            nest(out, shape, offset, &|o, i| write_int(o, v[i]));
        }
        DatumType::I32 => {
            let v = slice!(i32);
            nest(out, shape, offset, &|o, i| write_int(o, v[i]));
        }
        DatumType::I64 => {
            let v = slice!(i64);
            nest(out, shape, offset, &|o, i| write_int(o, v[i]));
        }
        DatumType::U8 => {
            let v = slice!(u8);
            nest(out, shape, offset, &|o, i| write_int(o, v[i]));
        }
        DatumType::U16 => {
            let v = slice!(u16);
            nest(out, shape, offset, &|o, i| write_int(o, v[i]));
        }
        DatumType::U32 => {
            let v = slice!(u32);
            nest(out, shape, offset, &|o, i| write_int(o, v[i]));
        }
        DatumType::U64 => {
            let v = slice!(u64);
            nest(out, shape, offset, &|o, i| write_int(o, v[i]));
        }
        DatumType::Bool => {
            let v = slice!(bool);
            nest(out, shape, offset, &|o, i| o.push_str(if v[i] { "true" } else { "false" }));
        }
        DatumType::String => {
            let v = slice!(String);
            let binary = alias.ends_with("_bytes");
            nest(out, shape, offset, &|o, i| {
                if binary {
                    o.push_str("{\"b64\":");
                    write_string(o, &BASE64.encode(v[i].as_bytes()));
                    o.push('}');
                } else {
                    write_string(o, &v[i]);
                }
            });
        }
        other => return Err(internal(format!("unsupported type {other:?}"))),
    }
    Ok(())
}

fn write_whole(out: &mut String, alias: &str, tensor: &Tensor) -> Result<(), ServingError> {
    write_region(out, alias, tensor, tensor.shape(), 0)
}

fn write_row(
    out: &mut String,
    alias: &str,
    tensor: &Tensor,
    row: usize,
) -> Result<(), ServingError> {
    let inner = &tensor.shape()[1..];
    write_region(out, alias, tensor, inner, row * inner.iter().product::<usize>())
}

/// The response body for `outputs` (alias, tensor — owned or shared) in
/// the request's format.
pub fn response_body<T: std::borrow::Borrow<Tensor>>(
    format: Format,
    outputs: &[(String, T)],
) -> Result<String, ServingError> {
    let outputs: Vec<(&str, &Tensor)> =
        outputs.iter().map(|(alias, t)| (alias.as_str(), t.borrow())).collect();
    let outputs = outputs.as_slice();
    let mut out =
        String::with_capacity(64 + outputs.iter().map(|(_, t)| t.len() * 12).sum::<usize>());
    match format {
        Format::Columnar => {
            out.push_str("{\"outputs\":");
            if let [(alias, tensor)] = outputs {
                write_whole(&mut out, alias, tensor)?;
            } else {
                out.push('{');
                for (i, (alias, tensor)) in outputs.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_string(&mut out, alias);
                    out.push(':');
                    write_whole(&mut out, alias, tensor)?;
                }
                out.push('}');
            }
        }
        Format::Row => {
            let rows = match outputs.first().map(|(_, t)| t.shape().first().copied()) {
                Some(Some(n)) => n,
                Some(None) => {
                    return Err(bad(
                        "Tensor with no batch dimension (a scalar) cannot be returned in the row format; use the columnar 'inputs' format",
                    ));
                }
                None => 0,
            };
            for (alias, tensor) in outputs {
                if tensor.shape().first().copied() != Some(rows) {
                    return Err(bad(format!(
                        "Tensor name: {alias} has inconsistent batch size: {} expecting: {rows}",
                        tensor.shape().first().copied().unwrap_or(0)
                    )));
                }
            }
            out.push_str("{\"predictions\":[");
            for row in 0..rows {
                if row > 0 {
                    out.push(',');
                }
                if let [(alias, tensor)] = outputs {
                    write_row(&mut out, alias, tensor, row)?;
                } else {
                    out.push('{');
                    for (i, (alias, tensor)) in outputs.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        write_string(&mut out, alias);
                        out.push(':');
                        write_row(&mut out, alias, tensor, row)?;
                    }
                    out.push('}');
                }
            }
            out.push(']');
        }
    }
    out.push('}');
    Ok(out)
}
