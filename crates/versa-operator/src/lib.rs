//! The ModelDeployment operator: dereference (spec, Pods, sidecars) →
//! validate → plan (pure) → apply (owned resources, per-Pod config reloads) →
//! status.

pub mod plan;
pub mod validate;
