//! The `Loader` trait: the expensive part of serving a version (reading and
//! preparing a model), driven by the manager.

use crate::{ServableError, ServableId};
use std::path::Path;

/// Loads servable versions from their directories.
///
/// Every method is blocking: the manager calls them on blocking threads,
/// never on the async reactor. A loader is shared by every model the manager
/// serves.
pub trait Loader: Send + Sync + 'static {
    /// What a loaded version is (for ONNX: an optimised, runnable model).
    type Servable: Send + Sync + 'static;

    /// Bytes of memory a version will take once loaded, used against the
    /// manager's memory limit. The default claims nothing.
    fn estimate_resources(&self, _id: &ServableId, _path: &Path) -> Result<u64, ServableError> {
        Ok(0)
    }

    /// Loads a version from `path`. Called again on failure, up to the
    /// manager's retry limit.
    fn load(&self, id: &ServableId, path: &Path) -> Result<Self::Servable, ServableError>;

    /// Releases a loaded version once no request holds it any more. The
    /// default just drops it.
    fn unload(&self, _id: &ServableId, servable: Self::Servable) {
        drop(servable);
    }
}
