//! What copies may hold at once: places among the copies in flight (per
//! model and in all) and the bytes of the tensors they hold. A copy over
//! any bound is shed, never queued.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use versa_onnx::{DatumType, TValue};

/// What one string element costs besides its bytes.
const STRING_HEADER: usize = std::mem::size_of::<String>();

/// Which bound a copy is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Over {
    /// Its model's `max_in_flight`, or `--max_mirror_in_flight`.
    InFlight,
    /// `--max_mirror_bytes`.
    Bytes,
}

/// The server-wide bounds and what copies hold of them now.
#[derive(Debug)]
pub(super) struct Bounds {
    max_total: usize,
    total: Arc<AtomicUsize>,
    max_bytes: usize,
    bytes: Arc<AtomicUsize>,
}

/// Holds a place among the copies in flight, and its bytes; given back
/// when dropped.
pub(super) struct Place {
    model: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
    held: Arc<AtomicUsize>,
    bytes: usize,
    gauge: prometheus::IntGauge,
}

impl std::fmt::Debug for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Place").field("bytes", &self.bytes).finish_non_exhaustive()
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.model.fetch_sub(1, Ordering::AcqRel);
        self.total.fetch_sub(1, Ordering::AcqRel);
        self.held.fetch_sub(self.bytes, Ordering::AcqRel);
        self.gauge.dec();
    }
}

/// Adds `n` to `counter` if it stays within `limit`.
fn take(counter: &AtomicUsize, n: usize, limit: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            used.checked_add(n).filter(|&after| after <= limit)
        })
        .is_ok()
}

impl Bounds {
    pub(super) fn new(max_total: usize, max_bytes: usize) -> Self {
        Self { max_total, total: Arc::default(), max_bytes, bytes: Arc::default() }
    }

    pub(super) fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// A place for a copy holding `bytes` bytes, counted in `model` (of
    /// `model_limit` places) and in the totals; or the bound it is over.
    pub(super) fn take(
        &self,
        model: Arc<AtomicUsize>,
        model_limit: usize,
        bytes: usize,
        gauge: prometheus::IntGauge,
    ) -> Result<Place, Over> {
        if !take(&model, 1, model_limit) {
            return Err(Over::InFlight);
        }
        if !take(&self.total, 1, self.max_total) {
            model.fetch_sub(1, Ordering::AcqRel);
            return Err(Over::InFlight);
        }
        if !take(&self.bytes, bytes, self.max_bytes) {
            model.fetch_sub(1, Ordering::AcqRel);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Over::Bytes);
        }
        gauge.inc();
        Ok(Place {
            model,
            total: Arc::clone(&self.total),
            held: Arc::clone(&self.bytes),
            bytes,
            gauge,
        })
    }
}

/// The memory the values of `tensors` take (strings with their bytes).
pub(super) fn bytes_of<'a>(tensors: impl IntoIterator<Item = &'a TValue>) -> usize {
    tensors
        .into_iter()
        .map(|t| match t.datum_type() {
            DatumType::String => {
                let strings = t.try_as_plain_ram().ok().and_then(|d| d.as_slice::<String>().ok());
                strings.map_or(0, |s| s.iter().map(|s| STRING_HEADER + s.len()).sum())
            }
            datum => t.len().saturating_mul(datum.size_of()),
        })
        .fold(0, usize::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;
    use versa_onnx::IntoTValue;

    fn gauge() -> prometheus::IntGauge {
        prometheus::IntGauge::new("g", "g").expect("gauge")
    }

    #[test]
    fn mirror_places_are_bounded_by_count_and_bytes_and_given_back() {
        let bounds = Bounds::new(2, 100);
        let model = Arc::new(AtomicUsize::new(0));
        let first = bounds.take(Arc::clone(&model), 8, 60, gauge()).expect("fits");
        assert_eq!(bounds.take(Arc::clone(&model), 8, 41, gauge()).err(), Some(Over::Bytes));
        let second = bounds.take(Arc::clone(&model), 8, 40, gauge()).expect("fits exactly");
        assert_eq!(bounds.take(Arc::clone(&model), 8, 0, gauge()).err(), Some(Over::InFlight));
        drop(first);
        assert_eq!(model.load(Ordering::Acquire), 1, "a refused copy holds nothing");
        let third = bounds.take(Arc::clone(&model), 8, 60, gauge()).expect("given back");
        drop((second, third));
        assert_eq!(bounds.bytes.load(Ordering::Acquire), 0);
        assert_eq!(bounds.total.load(Ordering::Acquire), 0);
    }

    #[test]
    fn mirror_copies_count_tensor_bytes_and_string_contents() {
        let floats = versa_onnx::convert::tensor_from_vec(&[2, 3], vec![0f32; 6]).into_tvalue();
        let strings =
            versa_onnx::convert::tensor_from_vec(&[2], vec!["ab".to_owned(), String::new()])
                .into_tvalue();
        assert_eq!(bytes_of([&floats]), 24);
        assert_eq!(bytes_of([&floats, &strings]), 24 + 2 * STRING_HEADER + 2);
    }
}
