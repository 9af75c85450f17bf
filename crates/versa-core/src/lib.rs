//! Versa's model version management, the heart of the serving sidecar.
//!
//! A version's way: a directory appears under a model's base path → the
//! [`source`] emits the model's aspired versions → the [`manager`] asks the
//! model's [`policy`] what to do and loads through a [`Loader`] → the version
//! becomes AVAILABLE in the [`serving_map`], where requests resolve by
//! version, label or latest → later un-aspired → UNLOADING (waits for in-flight
//! requests) → END. The [`monitor`] records every step.
//!
//! This crate knows nothing of RPC, HTTP, ML runtimes or Kubernetes.

pub mod discovery;
mod id;
pub mod labels;
mod loader;
pub mod manager;
pub mod monitor;
pub mod policy;
pub mod routing;
pub mod serving_map;
pub mod source;
mod state;
mod status;
#[cfg(any(test, feature = "test-double"))]
pub mod test_double;

pub use discovery::{AspiredVersion, VersionPolicy};
pub use id::ServableId;
pub use labels::{LabelMap, LabelRules};
pub use loader::Loader;
pub use manager::{AspiredVersionsManager, ManagerOptions, run_in_background};
pub use monitor::{ServableStateMonitor, WaitTimeout};
pub use policy::TransitionPolicy;
pub use routing::TrafficSplit;
pub use serving_map::{
    ResolveError, Routed, RoutingTable, ServableHandle, ServingMap, VersionChoice,
};
pub use source::{AspiredVersionsSink, FileSystemSource, PollInterval, ServableToMonitor};
pub use state::{ManagerState, ServableState, ServableStateEvent};
pub use status::{Code, ServableError};
