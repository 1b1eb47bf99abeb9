//! (placeholder)

#[allow(dead_code)] // Used by the engine, which is being written.
pub(super) mod credentials;
