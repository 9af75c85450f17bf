//! How an output is compared, and the default chosen from its signature.

use crate::DType;

/// How an output is compared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// Class scores along the last axis: argmax agreement per row, top-k overlap.
    Classes { top_k: usize },
    /// Numbers: within `abs_tol` or `rel_tol` (relative to the baseline).
    Scores { abs_tol: f64, rel_tol: f64 },
    /// Equal element by element.
    Exact,
}

/// Default tolerances of [`Kind::Scores`].
pub const DEFAULT_ABS_TOL: f64 = 1e-5;
pub const DEFAULT_REL_TOL: f64 = 1e-3;
/// Default `k` of [`Kind::Classes`] (capped at the number of classes).
pub const DEFAULT_TOP_K: usize = 5;

/// The kind an output gets unless its config overrides it: floats whose
/// last axis (from the signature; `None` when unknown) has at least two
/// entries are class scores, other floats are scores, and everything else
/// is compared exactly.
pub fn default_kind(dtype: DType, last_axis: Option<usize>) -> Kind {
    match last_axis {
        _ if !dtype.is_float() => Kind::Exact,
        Some(n) if n >= 2 => Kind::Classes { top_k: DEFAULT_TOP_K.min(n) },
        _ => Kind::Scores { abs_tol: DEFAULT_ABS_TOL, rel_tol: DEFAULT_REL_TOL },
    }
}
