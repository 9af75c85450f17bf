//! Naming a servable version.

use std::fmt;

/// One version of one model: the unit the manager loads and unloads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServableId {
    pub name: String,
    pub version: i64,
}

impl ServableId {
    pub fn new(name: impl Into<String>, version: i64) -> Self {
        Self { name: name.into(), version }
    }
}

/// Printed as TensorFlow Serving prints it in logs and errors:
/// `{name: fraud version: 42}`.
impl fmt::Display for ServableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{name: {} version: {}}}", self.name, self.version)
    }
}
