//! The tiny runtime shared by every crate that `effdetc` generates.
//!
//! It has no dependencies: generated crates must build offline from a copy of their own
//! directory, and whatever they share lives here.
