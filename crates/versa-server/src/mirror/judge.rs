//! A copy's answer against the one the client got: every output of the
//! baseline's answer compared with the mirror's output of the same alias,
//! as the mirror's config or the baseline's signature says.

use std::collections::BTreeMap;
use versa_compare::{Comparison, DType, Kind, Output, compare, default_kind};
use versa_onnx::{DatumType, Signature, TValue, Tensor};

/// How one output of the baseline's answer fared.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputVerdict {
    Compared(Comparison),
    /// The mirror's answer has no output of this alias.
    Missing,
}

/// Every output of one copy.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub outputs: Vec<(String, OutputVerdict)>,
}

impl Verdict {
    pub fn agrees(&self) -> bool {
        self.outputs.iter().all(|(_, v)| matches!(v, OutputVerdict::Compared(c) if c.agree))
    }

    /// NaN or infinite values in the mirror's answer, over every output.
    pub fn non_finite(&self) -> u64 {
        self.outputs
            .iter()
            .map(|(_, v)| match v {
                OutputVerdict::Compared(c) => c.non_finite,
                OutputVerdict::Missing => 0,
            })
            .sum()
    }

    /// The first disagreement, in words (for logs).
    pub fn first_disagreement(&self) -> Option<String> {
        self.outputs.iter().find_map(|(alias, v)| match v {
            OutputVerdict::Missing => {
                Some(format!("output {alias}: missing from the mirror's answer"))
            }
            OutputVerdict::Compared(c) if !c.agree => {
                Some(format!("output {alias}: {:?}", c.reason))
            }
            OutputVerdict::Compared(_) => None,
        })
    }
}

/// Why a copy could not be judged (counted as an error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JudgeError {
    #[error(
        "the mirror config compares output '{0}', which the baseline's signature does not have"
    )]
    UnknownOutput(String),
    #[error("output '{alias}' has dtype {dtype:?}, which a mirror cannot compare")]
    Unsupported { alias: String, dtype: DatumType },
    #[error("the baseline produced {produced} outputs, its signature has {declared}")]
    Malformed { produced: usize, declared: usize },
}

/// A tensor as the comparator reads it: dtype class and values as f64
/// (strings as a hash of their bytes).
fn values_of(alias: &str, tensor: &Tensor) -> Result<(DType, Vec<f64>), JudgeError> {
    let unsupported =
        || JudgeError::Unsupported { alias: alias.to_owned(), dtype: tensor.datum_type() };
    let as_f64 = || -> Result<Vec<f64>, JudgeError> {
        let cast = tensor.cast_to::<f64>().map_err(|_| unsupported())?;
        Ok(slice::<f64>(&cast).ok_or_else(unsupported)?.to_vec())
    };
    use DatumType as D;
    match tensor.datum_type() {
        D::F16 | D::F32 | D::F64 => Ok((DType::Float, as_f64()?)),
        D::I8 | D::I16 | D::I32 | D::I64 | D::U8 | D::U16 | D::U32 | D::U64 => {
            Ok((DType::Int, as_f64()?))
        }
        D::Bool => {
            let values = slice::<bool>(tensor).ok_or_else(unsupported)?;
            Ok((DType::Bool, values.iter().map(|&b| f64::from(u8::from(b))).collect()))
        }
        D::String => {
            let values = slice::<String>(tensor).ok_or_else(unsupported)?;
            Ok((DType::String, values.iter().map(|s| f64::from(fnv32(s.as_bytes()))).collect()))
        }
        _ => Err(unsupported()),
    }
}

/// A tensor's values in memory, if they are of type `T`.
fn slice<T: versa_onnx::Datum>(tensor: &Tensor) -> Option<&[T]> {
    tensor.try_as_plain_ram().ok()?.as_slice::<T>().ok()
}

/// FNV-1a, 32 bits: exact as an f64.
fn fnv32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// The kind an output is compared with: the config's, else the default
/// for its dtype and the last axis its signature declares.
fn kind_for(overrides: &BTreeMap<String, Kind>, alias: &str, dtype: DType, shape: &[i64]) -> Kind {
    if let Some(kind) = overrides.get(alias) {
        return *kind;
    }
    let last_axis = shape.last().and_then(|&d| usize::try_from(d).ok());
    default_kind(dtype, last_axis)
}

/// Compares the mirror's answer (`candidate`, in the order of its
/// signature) with the baseline's (`baseline`, in the order of its own).
pub fn judge(
    baseline_signature: &Signature,
    baseline: &[TValue],
    candidate_signature: &Signature,
    candidate: &[TValue],
    overrides: &BTreeMap<String, Kind>,
) -> Result<Verdict, JudgeError> {
    if baseline.len() != baseline_signature.outputs.len() {
        return Err(JudgeError::Malformed {
            produced: baseline.len(),
            declared: baseline_signature.outputs.len(),
        });
    }
    if let Some(unknown) = overrides.keys().find(|a| baseline_signature.output(a).is_none()) {
        return Err(JudgeError::UnknownOutput(unknown.clone()));
    }
    let mut outputs = Vec::with_capacity(baseline.len());
    for (spec, ours) in baseline_signature.outputs.iter().zip(baseline) {
        let alias = spec.alias.as_str();
        let theirs = candidate_signature.output(alias).and_then(|(ix, _)| candidate.get(ix));
        let Some(theirs) = theirs else {
            outputs.push((alias.to_owned(), OutputVerdict::Missing));
            continue;
        };
        let (b_type, b_values) = values_of(alias, ours)?;
        let (c_type, c_values) = values_of(alias, theirs)?;
        let kind = kind_for(overrides, alias, b_type, &spec.shape);
        let comparison = compare(
            kind,
            Output { dtype: b_type, shape: ours.shape(), values: &b_values },
            Output { dtype: c_type, shape: theirs.shape(), values: &c_values },
        );
        outputs.push((alias.to_owned(), OutputVerdict::Compared(comparison)));
    }
    Ok(Verdict { outputs })
}

/// The first `n` values of a tensor, for a logged disagreement.
pub(super) fn preview(tensor: &Tensor, n: usize) -> String {
    match values_of("", tensor) {
        Ok((_, values)) => {
            let shown: Vec<String> = values.iter().take(n).map(|v| format!("{v}")).collect();
            let more = if values.len() > n { ", …" } else { "" };
            format!("{:?} [{}{more}]", tensor.shape(), shown.join(", "))
        }
        Err(_) => format!("{:?} ({:?})", tensor.shape(), tensor.datum_type()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use versa_onnx::{IntoTValue, TensorSpec};
    use versa_proto::tensorflow::DataType;

    fn signature(outputs: &[(&str, DataType, &[i64])]) -> Signature {
        Signature {
            inputs: vec![],
            outputs: outputs
                .iter()
                .map(|(a, d, s)| TensorSpec {
                    alias: (*a).to_owned(),
                    dtype: *d,
                    shape: s.to_vec(),
                })
                .collect(),
        }
    }

    fn f32s(shape: &[usize], v: &[f32]) -> TValue {
        versa_onnx::convert::tensor_from_vec(shape, v.to_vec()).into_tvalue()
    }

    #[test]
    fn class_scores_and_labels_get_their_defaults() {
        let sig = signature(&[
            ("probs", DataType::DtFloat, &[-1, 3]),
            ("label", DataType::DtInt64, &[-1]),
        ]);
        let label = |v: i64| versa_onnx::convert::tensor_from_vec(&[1], vec![v]).into_tvalue();
        let base = [f32s(&[1, 3], &[0.1, 0.7, 0.2]), label(1)];
        let close = [f32s(&[1, 3], &[0.2, 0.6, 0.2]), label(1)];
        let verdict = judge(&sig, &base, &sig, &close, &BTreeMap::new()).expect("judged");
        assert!(verdict.agrees(), "{verdict:?}");
        let flipped = [f32s(&[1, 3], &[0.7, 0.1, 0.2]), label(0)];
        let verdict = judge(&sig, &base, &sig, &flipped, &BTreeMap::new()).expect("judged");
        assert!(!verdict.agrees());
        assert_eq!(verdict.outputs.len(), 2);
        assert!(verdict.first_disagreement().expect("one").contains("probs"));
    }

    #[test]
    fn overrides_missing_outputs_and_non_finite_values() {
        let sig = signature(&[("y", DataType::DtFloat, &[-1, 2])]);
        let base = [f32s(&[1, 2], &[1.0, 2.0])];
        let near = [f32s(&[1, 2], &[1.01, 2.0])];
        let loose = BTreeMap::from([("y".to_owned(), Kind::Scores { abs_tol: 0.1, rel_tol: 0.0 })]);
        assert!(judge(&sig, &base, &sig, &near, &loose).expect("judged").agrees());
        let strict = BTreeMap::from([("y".to_owned(), Kind::Exact)]);
        assert!(!judge(&sig, &base, &sig, &near, &strict).expect("judged").agrees());
        let nan = [f32s(&[1, 2], &[f32::NAN, 2.0])];
        let verdict = judge(&sig, &base, &sig, &nan, &BTreeMap::new()).expect("judged");
        assert_eq!(verdict.non_finite(), 1);
        assert!(!verdict.agrees());
        let other = signature(&[("z", DataType::DtFloat, &[-1, 2])]);
        let verdict = judge(&sig, &base, &other, &base, &BTreeMap::new()).expect("judged");
        assert_eq!(verdict.outputs[0].1, OutputVerdict::Missing);
        let unknown = BTreeMap::from([("nope".to_owned(), Kind::Exact)]);
        assert_eq!(
            judge(&sig, &base, &sig, &base, &unknown).expect_err("unknown"),
            JudgeError::UnknownOutput("nope".into())
        );
    }
}
