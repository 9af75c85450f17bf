//! Shadow traffic's judge: one output tensor of the candidate against the
//! baseline's, on the same input. Pure and allocation-light: the sidecar
//! calls it after both answers exist, off the request's path.
//!
//! - **Shape and dtype** must be equal, else the output disagrees (and no
//!   value is compared).
//! - **Classes** (a float output whose last axis has several entries: per
//!   row, the scores of classes): per row along the last axis, argmax
//!   agreement (ties go to the lowest index) and the overlap of the top-k
//!   sets. The output agrees when every row's argmax agrees.
//! - **Scores** (anything else that is a number): absolute and relative
//!   difference per element; the output agrees when every element is
//!   within `abs_tol` or within `rel_tol` of the baseline's magnitude
//!   (NumPy's `isclose`, with both tolerances).
//! - **Exact** (integers, booleans, strings as their bytes' hash): equal
//!   element by element.
//! - **Non-finite** candidate values (NaN, ±Inf) are counted whatever the
//!   kind; where the baseline's value is finite they are a disagreement.

mod kind;

pub use kind::{DEFAULT_ABS_TOL, DEFAULT_REL_TOL, DEFAULT_TOP_K, Kind, default_kind};

/// The element type of an output, as far as comparing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// f16, f32, f64 (converted to f64 by the caller).
    Float,
    /// Any integer width (converted to f64 exactly up to 2^53).
    Int,
    Bool,
    /// Strings, as one value per element (a hash of its bytes).
    String,
}

/// One output tensor: its dtype, shape and values in row-major order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Output<'a> {
    pub dtype: DType,
    pub shape: &'a [usize],
    pub values: &'a [f64],
}

/// How one output compared.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Every test of its kind passed (and shape and dtype are equal).
    pub agree: bool,
    /// Why it disagrees, if it does.
    pub reason: Option<Reason>,
    /// NaN or infinite values in the candidate's output.
    pub non_finite: u64,
    /// Classes: rows compared and rows whose argmax agreed.
    pub rows: u64,
    pub argmax_agreed: u64,
    /// Classes: the mean over rows of |top-k ∩ top-k'| / k.
    pub top_k_overlap: Option<f64>,
    /// Largest absolute and relative difference over finite pairs.
    pub max_abs_diff: f64,
    pub max_rel_diff: f64,
}

/// Why an output disagrees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Shape {
        baseline: Vec<usize>,
        candidate: Vec<usize>,
    },
    DType {
        baseline: DType,
        candidate: DType,
    },
    /// The values do not match the shape.
    Malformed,
    /// Rows whose argmax differs.
    Argmax {
        rows: u64,
    },
    /// Elements outside both tolerances (or unequal, for exact outputs).
    Values {
        elements: u64,
    },
    /// Non-finite values where the baseline's are finite.
    NonFinite {
        elements: u64,
    },
}

impl Comparison {
    fn disagreeing(reason: Reason) -> Self {
        Self {
            agree: false,
            reason: Some(reason),
            non_finite: 0,
            rows: 0,
            argmax_agreed: 0,
            top_k_overlap: None,
            max_abs_diff: 0.0,
            max_rel_diff: 0.0,
        }
    }
}

/// Compares the candidate's output with the baseline's, as `kind` says.
pub fn compare(kind: Kind, baseline: Output<'_>, candidate: Output<'_>) -> Comparison {
    if baseline.shape != candidate.shape {
        return Comparison::disagreeing(Reason::Shape {
            baseline: baseline.shape.to_vec(),
            candidate: candidate.shape.to_vec(),
        });
    }
    if baseline.dtype != candidate.dtype {
        return Comparison::disagreeing(Reason::DType {
            baseline: baseline.dtype,
            candidate: candidate.dtype,
        });
    }
    let elements = baseline.shape.iter().try_fold(1usize, |n, d| n.checked_mul(*d));
    if elements != Some(baseline.values.len()) || baseline.values.len() != candidate.values.len() {
        return Comparison::disagreeing(Reason::Malformed);
    }
    let (b, c) = (baseline.values, candidate.values);
    let mut out = Comparison { agree: true, ..Comparison::disagreeing(Reason::Malformed) };
    out.reason = None;
    let mut bad_non_finite = 0u64;
    let mut outside = 0u64;
    for (&x, &y) in b.iter().zip(c) {
        if !y.is_finite() {
            out.non_finite += 1;
            if x.is_finite() {
                bad_non_finite += 1;
            }
            continue;
        }
        if !x.is_finite() {
            outside += 1;
            continue;
        }
        let abs = (x - y).abs();
        let rel =
            if x == 0.0 { if abs == 0.0 { 0.0 } else { f64::INFINITY } } else { abs / x.abs() };
        out.max_abs_diff = out.max_abs_diff.max(abs);
        out.max_rel_diff = out.max_rel_diff.max(rel);
        let within = match kind {
            Kind::Scores { abs_tol, rel_tol } => abs <= abs_tol || abs <= rel_tol * x.abs(),
            Kind::Exact | Kind::Classes { .. } => abs == 0.0,
        };
        if !within {
            outside += 1;
        }
    }
    match kind {
        Kind::Classes { top_k } => {
            let width = baseline.shape.last().copied().unwrap_or(1).max(1);
            let mut overlap_sum = 0.0;
            for (row_b, row_c) in b.chunks(width).zip(c.chunks(width)) {
                out.rows += 1;
                if argmax(row_b).is_some() && argmax(row_b) == argmax(row_c) {
                    out.argmax_agreed += 1;
                }
                overlap_sum += top_k_overlap(row_b, row_c, top_k.clamp(1, width));
            }
            out.top_k_overlap = (out.rows > 0).then(|| overlap_sum / out.rows as f64);
            let differing = out.rows - out.argmax_agreed;
            if differing > 0 {
                out.agree = false;
                out.reason = Some(Reason::Argmax { rows: differing });
            }
        }
        Kind::Scores { .. } | Kind::Exact => {
            if outside > 0 {
                out.agree = false;
                out.reason = Some(Reason::Values { elements: outside });
            }
        }
    }
    if bad_non_finite > 0 {
        out.agree = false;
        out.reason = Some(Reason::NonFinite { elements: bad_non_finite });
    }
    out
}

/// The index of the largest value (the lowest on ties); `None` for an
/// empty row or one with a NaN.
fn argmax(row: &[f64]) -> Option<usize> {
    if row.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut best: Option<(usize, f64)> = None;
    for (i, &v) in row.iter().enumerate() {
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// The indices of the `k` largest values (ties to the lower index; NaN last).
fn top_k(row: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&i, &j| {
        let (a, b) = (row[i], row[j]);
        match (a.is_nan(), b.is_nan()) {
            (true, true) => i.cmp(&j),
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            (false, false) => b.total_cmp(&a).then(i.cmp(&j)),
        }
    });
    idx.truncate(k);
    idx
}

fn top_k_overlap(a: &[f64], b: &[f64], k: usize) -> f64 {
    let (ta, tb) = (top_k(a, k), top_k(b, k));
    let common = ta.iter().filter(|i| tb.contains(i)).count();
    common as f64 / k as f64
}

#[cfg(test)]
mod tests;
