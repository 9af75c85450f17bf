//! Shadow traffic's judge: one output tensor of the candidate against the
//! baseline's, on the same input. Pure and allocation-light: the sidecar
//! calls it after both answers exist, off the request's path.
//!
//! - **Shape and dtype** must be equal — the exact element type, f32 is not
//!   f64 — else the output disagrees (and no value is compared).
//! - **Classes** (a float output whose last axis has several entries: per
//!   row, the scores of classes): per row along the last axis, argmax
//!   agreement (ties go to the lowest index) and the overlap of the top-k
//!   sets. The output agrees when every row's argmax agrees.
//! - **Scores** (anything else that is a number): absolute and relative
//!   difference per element; the output agrees when every element is
//!   within `abs_tol` or within `rel_tol` of the baseline's magnitude
//!   (NumPy's `isclose`, with both tolerances).
//! - **Exact**: equal element by element. Integers are compared as
//!   integers (every i64 and u64, not only those an f64 holds exactly),
//!   strings by their bytes; booleans and strings are always compared
//!   exactly, whatever the kind.
//! - **Non-finite** candidate values (NaN, ±Inf) are counted whatever the
//!   kind. A non-finite value on either side matches only the same
//!   infinity on the other, and nothing in a class output; NaN matches
//!   nothing. Any that does not match is a disagreement.

mod kind;

pub use kind::{DEFAULT_ABS_TOL, DEFAULT_REL_TOL, DEFAULT_TOP_K, Kind, default_kind};

/// The element type of an output: equal on both sides, or the output
/// disagrees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F16,
    F32,
    F64,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    Bool,
    String,
}

impl DType {
    pub fn is_float(self) -> bool {
        matches!(self, Self::F16 | Self::F32 | Self::F64)
    }
}

/// An output's values in row-major order, held as the widest type of
/// their family: floats as f64, signed integers as i64, unsigned as u64,
/// strings as their bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Values<'a> {
    Float(&'a [f64]),
    Int(&'a [i64]),
    UInt(&'a [u64]),
    Bool(&'a [bool]),
    Bytes(&'a [&'a [u8]]),
}

impl Values<'_> {
    pub fn len(&self) -> usize {
        match self {
            Self::Float(v) => v.len(),
            Self::Int(v) => v.len(),
            Self::UInt(v) => v.len(),
            Self::Bool(v) => v.len(),
            Self::Bytes(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether these are the values of a `dtype` output.
    fn hold(&self, dtype: DType) -> bool {
        use DType as D;
        match self {
            Self::Float(_) => dtype.is_float(),
            Self::Int(_) => matches!(dtype, D::I8 | D::I16 | D::I32 | D::I64),
            Self::UInt(_) => matches!(dtype, D::U8 | D::U16 | D::U32 | D::U64),
            Self::Bool(_) => dtype == D::Bool,
            Self::Bytes(_) => dtype == D::String,
        }
    }
}

/// One output tensor: its dtype, shape and values in row-major order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Output<'a> {
    pub dtype: DType,
    pub shape: &'a [usize],
    pub values: Values<'a>,
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
    /// Largest absolute and relative difference over finite pairs (for
    /// booleans and strings: 1 where they differ).
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
    /// The values do not match the shape or the dtype.
    Malformed,
    /// Rows whose argmax differs.
    Argmax {
        rows: u64,
    },
    /// Elements outside both tolerances (or unequal, for exact outputs).
    Values {
        elements: u64,
    },
    /// Elements where either side is non-finite and they do not match.
    NonFinite {
        elements: u64,
    },
}

impl Comparison {
    fn agreeing() -> Self {
        Self {
            agree: true,
            reason: None,
            non_finite: 0,
            rows: 0,
            argmax_agreed: 0,
            top_k_overlap: None,
            max_abs_diff: 0.0,
            max_rel_diff: 0.0,
        }
    }

    fn disagreeing(reason: Reason) -> Self {
        Self { agree: false, reason: Some(reason), ..Self::agreeing() }
    }
}

/// What comparing needs of an element type.
trait Element: Copy + PartialOrd {
    fn is_finite(self) -> bool {
        true
    }
    fn is_nan(self) -> bool {
        false
    }
    /// |self − other|, computed without losing integers' exactness first.
    fn abs_diff(self, other: Self) -> f64;
    /// |self|, for relative differences.
    fn magnitude(self) -> f64;
}

impl Element for f64 {
    fn is_finite(self) -> bool {
        f64::is_finite(self)
    }
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
    fn abs_diff(self, other: Self) -> f64 {
        (self - other).abs()
    }
    fn magnitude(self) -> f64 {
        self.abs()
    }
}

impl Element for i64 {
    fn abs_diff(self, other: Self) -> f64 {
        (i128::from(self) - i128::from(other)).unsigned_abs() as f64
    }
    fn magnitude(self) -> f64 {
        self.unsigned_abs() as f64
    }
}

impl Element for u64 {
    fn abs_diff(self, other: Self) -> f64 {
        self.abs_diff(other) as f64
    }
    fn magnitude(self) -> f64 {
        self as f64
    }
}

impl Element for bool {
    fn abs_diff(self, other: Self) -> f64 {
        f64::from(u8::from(self != other))
    }
    fn magnitude(self) -> f64 {
        1.0
    }
}

impl Element for &[u8] {
    fn abs_diff(self, other: Self) -> f64 {
        f64::from(u8::from(self != other))
    }
    fn magnitude(self) -> f64 {
        1.0
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
    if elements != Some(baseline.values.len())
        || baseline.values.len() != candidate.values.len()
        || !baseline.values.hold(baseline.dtype)
        || !candidate.values.hold(candidate.dtype)
    {
        return Comparison::disagreeing(Reason::Malformed);
    }
    let width = baseline.shape.last().copied().unwrap_or(1).max(1);
    match (baseline.values, candidate.values) {
        (Values::Float(b), Values::Float(c)) => compare_elements(kind, width, b, c),
        (Values::Int(b), Values::Int(c)) => compare_elements(kind, width, b, c),
        (Values::UInt(b), Values::UInt(c)) => compare_elements(kind, width, b, c),
        (Values::Bool(b), Values::Bool(c)) => compare_elements(Kind::Exact, width, b, c),
        (Values::Bytes(b), Values::Bytes(c)) => compare_elements(Kind::Exact, width, b, c),
        _ => Comparison::disagreeing(Reason::Malformed),
    }
}

fn compare_elements<T: Element>(kind: Kind, width: usize, b: &[T], c: &[T]) -> Comparison {
    let mut out = Comparison::agreeing();
    let mut unmatched_non_finite = 0u64;
    let mut outside = 0u64;
    for (&x, &y) in b.iter().zip(c) {
        if !y.is_finite() {
            out.non_finite += 1;
        }
        if !x.is_finite() || !y.is_finite() {
            let same_infinity = !x.is_nan() && x == y;
            if !same_infinity || matches!(kind, Kind::Classes { .. }) {
                unmatched_non_finite += 1;
            }
            continue;
        }
        let abs = x.abs_diff(y);
        let magnitude = x.magnitude();
        let rel = if magnitude == 0.0 {
            if abs == 0.0 { 0.0 } else { f64::INFINITY }
        } else {
            abs / magnitude
        };
        out.max_abs_diff = out.max_abs_diff.max(abs);
        out.max_rel_diff = out.max_rel_diff.max(rel);
        let within = match kind {
            Kind::Scores { abs_tol, rel_tol } => {
                x == y || abs <= abs_tol || abs <= rel_tol * magnitude
            }
            Kind::Exact | Kind::Classes { .. } => x == y,
        };
        if !within {
            outside += 1;
        }
    }
    match kind {
        Kind::Classes { top_k } => {
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
    if unmatched_non_finite > 0 {
        out.agree = false;
        out.reason = Some(Reason::NonFinite { elements: unmatched_non_finite });
    }
    out
}

/// The index of the largest value (the lowest on ties); `None` for an
/// empty row or one with a non-finite value (no class wins such a row).
fn argmax<T: Element>(row: &[T]) -> Option<usize> {
    if row.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let mut best: Option<(usize, T)> = None;
    for (i, &v) in row.iter().enumerate() {
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// The indices of the `k` largest values (ties to the lower index; NaN last).
fn top_k<T: Element>(row: &[T], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&i, &j| {
        let (a, b) = (row[i], row[j]);
        match (a.is_nan(), b.is_nan()) {
            (true, true) => i.cmp(&j),
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            (false, false) => {
                b.partial_cmp(&a).unwrap_or(std::cmp::Ordering::Equal).then(i.cmp(&j))
            }
        }
    });
    idx.truncate(k);
    idx
}

fn top_k_overlap<T: Element>(a: &[T], b: &[T], k: usize) -> f64 {
    let (ta, tb) = (top_k(a, k), top_k(b, k));
    let common = ta.iter().filter(|i| tb.contains(i)).count();
    common as f64 / k as f64
}

#[cfg(test)]
mod tests;
