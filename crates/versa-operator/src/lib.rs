//! The ModelDeployment operator: dereference (spec, Pods, sidecars) →
//! validate → plan (pure) → apply (owned resources, per-Pod config reloads) →
//! status.

pub mod analysis;
pub mod canary_pass;
pub mod canary_serving;
pub mod check;
pub mod children;
pub mod context;
pub mod controller;
pub mod error;
pub mod fleet;
pub mod leader;
pub mod metrics;
pub mod ownership;
pub mod plan;
pub mod pod_security;
pub mod report;
pub mod resources;
pub mod rollout;
pub mod rollout_report;
pub mod sidecar;
pub mod snapshots;
pub mod status;
pub mod strategy;
pub mod telemetry;
pub mod validate;
