//! A copy's answer against the one the client got: every output of the
//! baseline's answer compared with the mirror's output of the same alias,
//! as the mirror's config or the baseline's signature says.

use std::collections::BTreeMap;
use versa_compare::{Comparison, DType, Kind, Output, Values, compare, default_kind};
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

/// A tensor's values as the comparator reads them (see [`Values`]).
#[derive(Debug)]
enum Held<'t> {
    Float(Vec<f64>),
    Int(Vec<i64>),
    UInt(Vec<u64>),
    Bool(&'t [bool]),
    Bytes(Vec<&'t [u8]>),
}

impl Held<'_> {
    fn values(&self) -> Values<'_> {
        match self {
            Self::Float(v) => Values::Float(v),
            Self::Int(v) => Values::Int(v),
            Self::UInt(v) => Values::UInt(v),
            Self::Bool(v) => Values::Bool(v),
            Self::Bytes(v) => Values::Bytes(v),
        }
    }

    /// The first `n` values, in words.
    fn preview(&self, n: usize) -> Vec<String> {
        fn shown<T: std::fmt::Debug>(v: &[T], n: usize) -> Vec<String> {
            v.iter().take(n).map(|x| format!("{x:?}")).collect()
        }
        match self {
            Self::Float(v) => shown(v, n),
            Self::Int(v) => shown(v, n),
            Self::UInt(v) => shown(v, n),
            Self::Bool(v) => shown(v, n),
            Self::Bytes(v) => {
                v.iter().take(n).map(|b| format!("{:?}", String::from_utf8_lossy(b))).collect()
            }
        }
    }
}

/// A tensor as the comparator reads it: its exact dtype, and its values
/// widened within their family (integers stay integers).
fn values_of<'t>(alias: &str, tensor: &'t Tensor) -> Result<(DType, Held<'t>), JudgeError> {
    let unsupported =
        || JudgeError::Unsupported { alias: alias.to_owned(), dtype: tensor.datum_type() };
    fn cast<T: versa_onnx::Datum + Copy>(tensor: &Tensor) -> Option<Vec<T>> {
        let cast = tensor.cast_to::<T>().ok()?;
        Some(slice::<T>(&cast)?.to_vec())
    }
    use DatumType as D;
    let dtype = match tensor.datum_type() {
        D::F16 => DType::F16,
        D::F32 => DType::F32,
        D::F64 => DType::F64,
        D::I8 => DType::I8,
        D::I16 => DType::I16,
        D::I32 => DType::I32,
        D::I64 => DType::I64,
        D::U8 => DType::U8,
        D::U16 => DType::U16,
        D::U32 => DType::U32,
        D::U64 => DType::U64,
        D::Bool => DType::Bool,
        D::String => DType::String,
        _ => return Err(unsupported()),
    };
    let held = match dtype {
        DType::F16 | DType::F32 | DType::F64 => cast::<f64>(tensor).map(Held::Float),
        DType::I8 | DType::I16 | DType::I32 | DType::I64 => cast::<i64>(tensor).map(Held::Int),
        DType::U8 | DType::U16 | DType::U32 | DType::U64 => cast::<u64>(tensor).map(Held::UInt),
        DType::Bool => slice::<bool>(tensor).map(Held::Bool),
        DType::String => {
            slice::<String>(tensor).map(|v| Held::Bytes(v.iter().map(|s| s.as_bytes()).collect()))
        }
    };
    Ok((dtype, held.ok_or_else(unsupported)?))
}

/// A tensor's values in memory, if they are of type `T`.
fn slice<T: versa_onnx::Datum>(tensor: &Tensor) -> Option<&[T]> {
    tensor.try_as_plain_ram().ok()?.as_slice::<T>().ok()
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
            Output { dtype: b_type, shape: ours.shape(), values: b_values.values() },
            Output { dtype: c_type, shape: theirs.shape(), values: c_values.values() },
        );
        outputs.push((alias.to_owned(), OutputVerdict::Compared(comparison)));
    }
    Ok(Verdict { outputs })
}

/// The first `n` values of a tensor, for a logged disagreement.
pub(super) fn preview(tensor: &Tensor, n: usize) -> String {
    match values_of("", tensor) {
        Ok((_, values)) => {
            let shown = values.preview(n);
            let more = if values.values().len() > n { ", …" } else { "" };
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
    #[test]
    fn mirror_outputs_compare_exact_dtypes_big_integers_and_string_bytes() {
        let sig = signature(&[("id", DataType::DtInt64, &[-1])]);
        let ids = |v: i64| versa_onnx::convert::tensor_from_vec(&[1], vec![v]).into_tvalue();
        let big = 1i64 << 53;
        let verdict = judge(&sig, &[ids(big + 1)], &sig, &[ids(big)], &BTreeMap::new());
        assert!(!verdict.expect("judged").agrees(), "2^53 + 1 is not 2^53");
        assert!(
            judge(&sig, &[ids(big + 1)], &sig, &[ids(big + 1)], &BTreeMap::new())
                .expect("judged")
                .agrees()
        );
        let sig = signature(&[("y", DataType::DtFloat, &[-1])]);
        let f64s = versa_onnx::convert::tensor_from_vec(&[1], vec![1.0f64]).into_tvalue();
        let verdict = judge(&sig, &[f32s(&[1], &[1.0])], &sig, &[f64s], &BTreeMap::new());
        let verdict = verdict.expect("judged");
        assert!(verdict.first_disagreement().expect("one").contains("DType"), "{verdict:?}");
        let sig = signature(&[("s", DataType::DtString, &[-1])]);
        let text =
            |v: &str| versa_onnx::convert::tensor_from_vec(&[1], vec![v.to_owned()]).into_tvalue();
        assert!(
            !judge(&sig, &[text("é")], &sig, &[text("e")], &BTreeMap::new())
                .expect("judged")
                .agrees()
        );
        assert!(
            judge(&sig, &[text("é")], &sig, &[text("é")], &BTreeMap::new())
                .expect("judged")
                .agrees()
        );
        assert_eq!(preview(&text("é"), 4), "[1] [\"é\"]");
    }
}
