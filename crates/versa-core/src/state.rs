//! The public life cycle of a servable version.

use crate::{ServableError, ServableId};
use std::time::SystemTime;

/// The state of a version as clients see it (`ModelVersionStatus.State`).
///
/// A version only ever moves forward: `Start → Loading → Available →
/// Unloading → End`; an error jumps straight to `End` with the error kept as
/// the version's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i32)]
pub enum ManagerState {
    /// Managed (aspired) but not yet loading.
    Start = 10,
    /// `Loader::load` is running (including retries and warm-up).
    Loading = 20,
    /// In the serving map: requests can reach it.
    Available = 30,
    /// Leaving the serving map; in-flight requests are finishing.
    Unloading = 40,
    /// Unloaded, never loaded, or failed (see the health).
    End = 50,
}

impl ManagerState {
    /// The value on the wire (`ModelVersionStatus.State`).
    pub fn value(self) -> i32 {
        self as i32
    }

    /// The name on the wire, e.g. `AVAILABLE`.
    pub fn name(self) -> &'static str {
        match self {
            ManagerState::Start => "START",
            ManagerState::Loading => "LOADING",
            ManagerState::Available => "AVAILABLE",
            ManagerState::Unloading => "UNLOADING",
            ManagerState::End => "END",
        }
    }
}

/// One published step of a version's life: the state it reached and its
/// health (`Ok` unless it ended in error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServableState {
    pub id: ServableId,
    pub state: ManagerState,
    pub health: Result<(), ServableError>,
}

/// A state together with when it was published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServableStateEvent {
    pub state: ServableState,
    pub at: SystemTime,
}
