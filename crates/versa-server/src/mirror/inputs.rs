//! A copy's inputs as the mirror version takes them: the client sent them
//! in the baseline's signature order; they are put in the mirror version's
//! by alias, or refused when that version would refuse them (an alias one
//! side lacks, another dtype, a shape its signature does not accept).

use versa_onnx::{Signature, TValue, TVec, TensorSpec};
use versa_proto::tensorflow::DataType;

/// Why a copy's inputs do not fit the mirror version (counted as an error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum Incompatible {
    #[error("the mirror version takes input '{0}', which the baseline's signature does not have")]
    Missing(String),
    #[error("the mirror version has no input '{0}', which the baseline takes")]
    Extra(String),
    #[error("input '{alias}' is {baseline:?} for the baseline, {mirror:?} for the mirror version")]
    DType { alias: String, baseline: DataType, mirror: DataType },
    #[error("input '{alias}' has shape {shape:?}, the mirror version takes {declared:?}")]
    Shape { alias: String, shape: Vec<usize>, declared: Vec<i64> },
    #[error("the copy holds {held} inputs, the baseline's signature has {declared}")]
    Malformed { held: usize, declared: usize },
}

/// Whether a tensor of `shape` fits a signature's `declared` one (-1: any).
fn fits(shape: &[usize], declared: &[i64]) -> bool {
    shape.len() == declared.len()
        && shape.iter().zip(declared).all(|(&n, &d)| d < 0 || usize::try_from(d) == Ok(n))
}

/// The inputs (in `baseline`'s order) in `mirror`'s order, checked against it.
pub(super) fn for_mirror(
    baseline: &Signature,
    mirror: &Signature,
    inputs: TVec<TValue>,
) -> Result<TVec<TValue>, Incompatible> {
    if inputs.len() != baseline.inputs.len() {
        return Err(Incompatible::Malformed {
            held: inputs.len(),
            declared: baseline.inputs.len(),
        });
    }
    if let Some(extra) = baseline.inputs.iter().find(|b| mirror.input(&b.alias).is_none()) {
        return Err(Incompatible::Extra(extra.alias.clone()));
    }
    let mut slots: Vec<Option<TValue>> = inputs.into_iter().map(Some).collect();
    let mut ordered = TVec::with_capacity(mirror.inputs.len());
    for TensorSpec { alias, dtype, shape: declared } in &mirror.inputs {
        let Some((ix, ours)) = baseline.input(alias) else {
            return Err(Incompatible::Missing(alias.clone()));
        };
        if ours.dtype != *dtype {
            return Err(Incompatible::DType {
                alias: alias.clone(),
                baseline: ours.dtype,
                mirror: *dtype,
            });
        }
        let value = slots[ix].take().ok_or_else(|| Incompatible::Missing(alias.clone()))?;
        if !fits(value.shape(), declared) {
            return Err(Incompatible::Shape {
                alias: alias.clone(),
                shape: value.shape().to_vec(),
                declared: declared.clone(),
            });
        }
        ordered.push(value);
    }
    Ok(ordered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use versa_onnx::IntoTValue;

    fn sig(inputs: &[(&str, DataType, &[i64])]) -> Signature {
        let spec = |(a, d, s): &(&str, DataType, &[i64])| TensorSpec {
            alias: (*a).to_owned(),
            dtype: *d,
            shape: s.to_vec(),
        };
        Signature { inputs: inputs.iter().map(spec).collect(), outputs: vec![] }
    }

    fn f32s(shape: &[usize], v: f32) -> TValue {
        let n = shape.iter().product();
        versa_onnx::convert::tensor_from_vec(shape, vec![v; n]).into_tvalue()
    }

    fn first(t: &TValue) -> f32 {
        t.try_as_plain_ram().expect("plain").as_slice::<f32>().expect("f32")[0]
    }

    const F: DataType = DataType::DtFloat;

    #[test]
    fn mirror_inputs_are_put_in_the_mirror_versions_order_by_alias() {
        let baseline = sig(&[("a", F, &[-1, 2]), ("b", F, &[-1, 3])]);
        let mirror = sig(&[("b", F, &[-1, 3]), ("a", F, &[-1, 2])]);
        let inputs: TVec<TValue> = [f32s(&[1, 2], 1.0), f32s(&[1, 3], 2.0)].into_iter().collect();
        let ordered = for_mirror(&baseline, &mirror, inputs).expect("compatible");
        assert_eq!((first(&ordered[0]), first(&ordered[1])), (2.0, 1.0));
        assert_eq!(ordered[0].shape(), &[1, 3]);
    }

    #[test]
    fn mirror_inputs_the_mirror_version_would_refuse_are_refused() {
        let baseline = sig(&[("a", F, &[-1, 2])]);
        let one = || -> TVec<TValue> { [f32s(&[1, 2], 1.0)].into_iter().collect() };
        let renamed = sig(&[("x", F, &[-1, 2])]);
        assert_eq!(for_mirror(&baseline, &renamed, one()), Err(Incompatible::Extra("a".into())));
        let more = sig(&[("a", F, &[-1, 2]), ("c", F, &[-1])]);
        assert_eq!(for_mirror(&baseline, &more, one()), Err(Incompatible::Missing("c".into())));
        let ints = sig(&[("a", DataType::DtInt64, &[-1, 2])]);
        assert!(matches!(for_mirror(&baseline, &ints, one()), Err(Incompatible::DType { .. })));
        let wider = sig(&[("a", F, &[-1, 3])]);
        let e = for_mirror(&baseline, &wider, one()).expect_err("shape");
        assert!(e.to_string().contains("[1, 2]"), "{e}");
        let two: TVec<TValue> = [f32s(&[1, 2], 1.0), f32s(&[1, 2], 1.0)].into_iter().collect();
        assert!(matches!(
            for_mirror(&baseline, &baseline, two),
            Err(Incompatible::Malformed { held: 2, declared: 1 })
        ));
    }
}
