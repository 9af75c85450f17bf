//! Batching settings: TensorFlow Serving's `BatchingParameters`, with its
//! defaults and checks, and the sizes batches are padded to.

use std::time::Duration;
use versa_proto::serving::BatchingParameters;

/// Batching settings, with TensorFlow Serving's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOptions {
    pub max_batch_size: usize,
    pub batch_timeout: Duration,
    pub max_enqueued_batches: usize,
    /// Batches running at once (0: one per core).
    pub num_batch_threads: usize,
    /// Sizes batches are padded up to (empty: no padding).
    pub allowed_batch_sizes: Vec<usize>,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            max_batch_size: 1000,
            batch_timeout: Duration::ZERO,
            max_enqueued_batches: 10,
            num_batch_threads: 0,
            allowed_batch_sizes: Vec::new(),
        }
    }
}

impl BatchOptions {
    /// Reads `BatchingParameters` (spec §7) with upstream's defaults and checks.
    pub fn from_parameters(p: &BatchingParameters) -> Result<Self, String> {
        let positive = |name: &str, v: Option<i64>, default: usize| -> Result<usize, String> {
            match v {
                None => Ok(default),
                Some(v) if v > 0 => usize::try_from(v).map_err(|e| e.to_string()),
                Some(v) => Err(format!("{name} must be positive, got {v}")),
            }
        };
        let defaults = Self::default();
        let max_batch_size = positive("max_batch_size", p.max_batch_size, defaults.max_batch_size)?;
        let timeout = p.batch_timeout_micros.unwrap_or(0);
        if timeout < 0 {
            return Err(format!("batch_timeout_micros must not be negative, got {timeout}"));
        }
        let allowed: Vec<usize> = p
            .allowed_batch_sizes
            .iter()
            .map(|v| {
                usize::try_from(*v).map_err(|_| format!("allowed_batch_sizes: {v} is negative"))
            })
            .collect::<Result<_, _>>()?;
        if allowed.windows(2).any(|w| w[0] >= w[1]) || allowed.first() == Some(&0) {
            return Err("allowed_batch_sizes must be positive and increasing".into());
        }
        if let Some(last) = allowed.last()
            && *last != max_batch_size
        {
            return Err(format!(
                "Last entry in allowed_batch_sizes must match max_batch_size; last entry was {last}; expected {max_batch_size}"
            ));
        }
        if p.pad_variable_length_inputs {
            return Err("pad_variable_length_inputs is not supported: batches need equal non-batch dimensions".into());
        }
        if p.enable_large_batch_splitting == Some(true) {
            return Err("enable_large_batch_splitting is not supported".into());
        }
        Ok(Self {
            max_batch_size,
            batch_timeout: Duration::from_micros(timeout.unsigned_abs()),
            max_enqueued_batches: positive(
                "max_enqueued_batches",
                p.max_enqueued_batches,
                defaults.max_enqueued_batches,
            )?,
            num_batch_threads: positive(
                "num_batch_threads",
                p.num_batch_threads,
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            )?,
            allowed_batch_sizes: allowed,
        })
    }

    /// The size a batch of `rows` runs at: the next allowed size; without
    /// allowed sizes, the next power of two (capped at max_batch_size).
    /// tract runs fastest on a plan optimised for one concrete batch size,
    /// and the model keeps a bounded cache of such plans: a handful of
    /// sizes keeps every batch on a cached plan, where every size from 1 to
    /// max_batch_size would rebuild plans over and over.
    pub(super) fn padded(&self, rows: usize) -> usize {
        if self.allowed_batch_sizes.is_empty() {
            return rows.next_power_of_two().min(self.max_batch_size).max(rows);
        }
        self.allowed_batch_sizes.iter().copied().find(|s| *s >= rows).unwrap_or(rows)
    }
}
