//! Compile-fail tests: bad `model!` input is a `compile_error!` at the argument at fault.
//!
//! trybuild compiles each `ui/*.rs` as a binary of a project in `target/tests/trybuild/`,
//! whose directory is the `CARGO_MANIFEST_DIR` the macro resolves paths against: the cases
//! that need a real file reach the repository with `../../../../` (the default target
//! directory). Regenerate the expected `.stderr` files with `TRYBUILD=overwrite`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
