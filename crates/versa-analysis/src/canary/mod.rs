//! The canary step machine.
