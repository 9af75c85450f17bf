//! [`TensorBudget`]: the memory a request's input tensors may take together,
//! charged from shapes before any tensor is allocated.

use super::TensorError;
use crate::dtype;
use tract_onnx::prelude::DatumType;
use versa_proto::tensorflow::{DataType, TensorProto};

/// What one string element costs besides its bytes.
const STRING_HEADER: usize = std::mem::size_of::<String>();

/// Reserves bytes beyond one request (a server-wide bound), or says why not.
pub type Reserve<'a> = &'a (dyn Fn(usize) -> Result<(), String> + Sync);

/// Bytes the inputs of one request may take once converted. Each charge
/// can also be reserved from a wider pool ([`TensorBudget::reserving`]), so
/// nothing is allocated that the server as a whole cannot hold.
#[derive(Clone)]
pub struct TensorBudget<'a> {
    limit: usize,
    used: usize,
    /// What sets the limit (a flag name), for errors.
    setting: &'static str,
    reserve: Option<Reserve<'a>>,
}

impl std::fmt::Debug for TensorBudget<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorBudget")
            .field("limit", &self.limit)
            .field("used", &self.used)
            .field("setting", &self.setting)
            .finish_non_exhaustive()
    }
}

impl<'a> TensorBudget<'a> {
    /// A budget of `limit` bytes, set by `setting` (named in errors).
    pub fn new(limit: usize, setting: &'static str) -> Self {
        Self { limit, used: 0, setting, reserve: None }
    }

    /// Every charge is also reserved with `reserve` before it counts.
    pub fn reserving(mut self, reserve: Reserve<'a>) -> Self {
        self.reserve = Some(reserve);
        self
    }

    /// No limit (tests, tools).
    pub fn unlimited() -> Self {
        Self::new(usize::MAX, "")
    }

    pub fn used(&self) -> usize {
        self.used
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Charges `bytes` for input `alias` (`None`: a size that overflows).
    pub fn charge(&mut self, alias: &str, bytes: Option<usize>) -> Result<(), TensorError> {
        let total = bytes.and_then(|b| b.checked_add(self.used).map(|t| (b, t)));
        match total {
            Some((bytes, total)) if total <= self.limit => {
                if let Some(reserve) = self.reserve {
                    reserve(bytes).map_err(|reason| TensorError::Shed { reason })?;
                }
                self.used = total;
                Ok(())
            }
            _ => Err(TensorError::TooLarge {
                alias: alias.to_owned(),
                bytes: bytes.unwrap_or(usize::MAX),
                limit: self.limit,
                setting: self.setting,
            }),
        }
    }

    /// Charges a tensor of fixed-size elements of `datum` and `shape`.
    pub fn charge_elements(
        &mut self,
        alias: &str,
        datum: DatumType,
        shape: &[usize],
    ) -> Result<(), TensorError> {
        let width = if datum == DatumType::String { STRING_HEADER } else { datum.size_of() };
        self.charge(alias, elements(shape).and_then(|n| n.checked_mul(width)))
    }

    /// Charges `count` strings holding `bytes` bytes in all.
    pub fn charge_strings(
        &mut self,
        alias: &str,
        count: usize,
        bytes: usize,
    ) -> Result<(), TensorError> {
        self.charge(alias, count.checked_mul(STRING_HEADER).and_then(|h| h.checked_add(bytes)))
    }

    /// Charges what converting `proto` to a tensor of `shape` will build:
    /// every element, broadcast ones included; strings with their bytes.
    pub(super) fn charge_proto(
        &mut self,
        alias: &str,
        proto: &TensorProto,
        dt: DataType,
        shape: &[usize],
    ) -> Result<(), TensorError> {
        match dtype::from_tf(dt) {
            Some(DatumType::String) if proto.tensor_content.is_empty() => {
                let n = elements(shape);
                match proto.string_val.as_slice() {
                    // One value broadcast over the shape.
                    [one] if n != Some(1) => {
                        self.charge(alias, n.and_then(|n| n.checked_mul(STRING_HEADER + one.len())))
                    }
                    values => {
                        self.charge_strings(alias, values.len(), values.iter().map(Vec::len).sum())
                    }
                }
            }
            Some(datum) => self.charge_elements(alias, datum, shape),
            // Refused as unsupported before anything is built.
            None => Ok(()),
        }
    }
}

fn elements(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broadcast_is_charged_for_every_element_it_makes() {
        let mut budget = TensorBudget::new(1 << 20, "--limit");
        let one = TensorProto { float_val: vec![0.0], ..TensorProto::default() };
        let err =
            budget.charge_proto("x", &one, DataType::DtFloat, &[67_108_864, 4]).expect_err("1 GiB");
        assert_eq!(
            err.to_string(),
            "input 'x' would take 1073741824 bytes of memory, more than the 1048576 bytes a request's inputs may take together (--limit)"
        );
        let text = TensorProto { string_val: vec![b"ab".to_vec()], ..TensorProto::default() };
        let err = budget.charge_proto("s", &text, DataType::DtString, &[1 << 20]).expect_err("big");
        assert!(matches!(err, TensorError::TooLarge { bytes, .. } if bytes == (1 << 20) * 26));
        assert_eq!(budget.used(), 0, "nothing charged by refused inputs");
        budget.charge_proto("x", &one, DataType::DtFloat, &[16, 4]).expect("fits");
        assert_eq!(budget.used(), 256);
    }

    #[test]
    fn charges_are_reserved_beyond_the_request_too() {
        let pool = std::sync::atomic::AtomicUsize::new(100);
        let reserve = |n: usize| {
            pool.fetch_update(
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
                |left| left.checked_sub(n),
            )
            .map(drop)
            .map_err(|_| "the server is full".to_owned())
        };
        let mut budget = TensorBudget::new(1000, "--limit").reserving(&reserve);
        budget.charge_elements("x", DatumType::F32, &[20]).expect("80 bytes");
        let err = budget.charge_elements("y", DatumType::F32, &[20]).expect_err("pool is out");
        assert_eq!(err, TensorError::Shed { reason: "the server is full".into() });
        assert_eq!(err.code(), versa_core::Code::ResourceExhausted);
        assert_eq!(budget.used(), 80);
    }

    #[test]
    fn overflowing_sizes_are_refused_not_wrapped() {
        let mut budget = TensorBudget::unlimited();
        let err = budget
            .charge_elements("x", DatumType::F64, &[usize::MAX / 2, 4])
            .expect_err("overflow");
        assert!(matches!(err, TensorError::TooLarge { bytes: usize::MAX, .. }));
    }
}
