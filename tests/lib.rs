//! Shared helpers of the end-to-end golden tests.
