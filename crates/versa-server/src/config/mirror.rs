//! A model's `mirror` (shadow traffic), validated into a [`MirrorSpec`].

use crate::error::ServingError;
use std::collections::BTreeMap;
use std::time::Duration;
use versa_compare::Kind;
use versa_core::TransitionPolicy;
use versa_proto::serving::{
    VersaMirror, VersaMirrorSampling, versa_mirror, versa_output_comparison,
};

/// Default and largest `max_in_flight`.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 8;
pub const MAX_MAX_IN_FLIGHT: usize = 1024;
/// Default and largest `timeout_ms`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1000);
pub const MAX_TIMEOUT_MS: u32 = 60_000;
/// Largest `log_disagreements_per_minute`.
pub const MAX_LOGGED_PER_MINUTE: u32 = 600;

/// Which version runs the copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorTarget {
    Label(String),
    Version(i64),
}

/// How requests are chosen for copying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampling {
    /// By route key when there is one, else at random.
    RouteKey,
    Random,
}

/// A validated mirror.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorSpec {
    pub target: MirrorTarget,
    pub percent: u32,
    pub sampling: Sampling,
    pub max_in_flight: usize,
    pub timeout: Duration,
    /// Output alias → comparison overriding the signature's default.
    pub outputs: BTreeMap<String, Kind>,
    pub log_per_minute: u32,
}

// `Kind` holds floats; a spec's tolerances are checked finite, so equality is total.
impl Eq for MirrorSpec {}

impl MirrorSpec {
    /// Whether the spec copies anything at all.
    pub fn is_active(&self) -> bool {
        self.percent > 0
    }
}

fn invalid(model: &str, what: impl std::fmt::Display) -> ServingError {
    ServingError::invalid_argument(format!("Model {model}: mirror {what}"))
}

fn kind_of(
    model: &str,
    alias: &str,
    comparison: &versa_proto::serving::VersaOutputComparison,
) -> Result<Kind, ServingError> {
    use versa_output_comparison::Kind as Proto;
    match &comparison.kind {
        None => Err(invalid(
            model,
            format!("output '{alias}' names no comparison (classes, scores or exact)"),
        )),
        Some(Proto::Exact(_)) => Ok(Kind::Exact),
        Some(Proto::Classes(c)) => Ok(Kind::Classes {
            top_k: if c.top_k == 0 { versa_compare::DEFAULT_TOP_K } else { c.top_k as usize },
        }),
        Some(Proto::Scores(s)) => {
            for (name, value) in [("abs_tol", s.abs_tol), ("rel_tol", s.rel_tol)] {
                if !value.is_finite() || value < 0.0 {
                    return Err(invalid(
                        model,
                        format!(
                            "output '{alias}': {name} must be a finite number ≥ 0, got {value}"
                        ),
                    ));
                }
            }
            let or = |v: f64, default: f64| if v == 0.0 { default } else { v };
            Ok(Kind::Scores {
                abs_tol: or(s.abs_tol, versa_compare::DEFAULT_ABS_TOL),
                rel_tol: or(s.rel_tol, versa_compare::DEFAULT_REL_TOL),
            })
        }
    }
}

/// Validates a model's mirror: its target is a label of the model or a
/// version, its bounds are in range, and the model keeps two versions
/// loaded at once (not ResourcePreserving).
pub fn mirror_of(
    model: &str,
    mirror: Option<&VersaMirror>,
    labels: &BTreeMap<String, i64>,
    transition: TransitionPolicy,
) -> Result<Option<MirrorSpec>, ServingError> {
    let Some(mirror) = mirror else { return Ok(None) };
    let target = match &mirror.target {
        None => return Err(invalid(model, "names no target: set label or version")),
        Some(versa_mirror::Target::Label(label)) => {
            if !labels.contains_key(label) {
                let known: Vec<&str> = labels.keys().map(String::as_str).collect();
                return Err(invalid(
                    model,
                    format!(
                        "label '{label}' is not one of its version_labels {{{}}}",
                        known.join(", ")
                    ),
                ));
            }
            MirrorTarget::Label(label.clone())
        }
        Some(versa_mirror::Target::Version(v)) if *v > 0 => MirrorTarget::Version(*v),
        Some(versa_mirror::Target::Version(v)) => {
            return Err(invalid(model, format!("version must be positive, got {v}")));
        }
    };
    if mirror.percent > 100 {
        return Err(invalid(model, format!("percent must be 0 to 100, got {}", mirror.percent)));
    }
    if transition == TransitionPolicy::ResourcePreserving {
        return Err(invalid(
            model,
            "needs two versions loaded at once, and transition_policy RESOURCE_PRESERVING never loads a second one beside the first: use AVAILABILITY_PRESERVING",
        ));
    }
    let max_in_flight = match mirror.max_in_flight as usize {
        0 => DEFAULT_MAX_IN_FLIGHT,
        n if n > MAX_MAX_IN_FLIGHT => {
            return Err(invalid(
                model,
                format!("max_in_flight is at most {MAX_MAX_IN_FLIGHT}, got {n}"),
            ));
        }
        n => n,
    };
    let timeout = match mirror.timeout_ms {
        0 => DEFAULT_TIMEOUT,
        ms if ms > MAX_TIMEOUT_MS => {
            return Err(invalid(
                model,
                format!("timeout_ms is at most {MAX_TIMEOUT_MS}, got {ms}"),
            ));
        }
        ms => Duration::from_millis(u64::from(ms)),
    };
    if mirror.log_disagreements_per_minute > MAX_LOGGED_PER_MINUTE {
        return Err(invalid(
            model,
            format!(
                "log_disagreements_per_minute is at most {MAX_LOGGED_PER_MINUTE}, got {}",
                mirror.log_disagreements_per_minute
            ),
        ));
    }
    let outputs = mirror
        .outputs
        .iter()
        .map(|(alias, c)| Ok((alias.clone(), kind_of(model, alias, c)?)))
        .collect::<Result<BTreeMap<_, _>, ServingError>>()?;
    let sampling = match VersaMirrorSampling::try_from(mirror.sampling) {
        Ok(VersaMirrorSampling::MirrorSamplingRandom) => Sampling::Random,
        _ => Sampling::RouteKey,
    };
    Ok(Some(MirrorSpec {
        target,
        percent: mirror.percent,
        sampling,
        max_in_flight,
        timeout,
        outputs,
        log_per_minute: mirror.log_disagreements_per_minute,
    }))
}
