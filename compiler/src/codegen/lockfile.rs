//! The `Cargo.lock` every generated crate ships, so it builds with the dependency versions
//! effdetc was released with (`cargo build --locked`), and `--offline` once those are in the
//! cargo cache.
//!
//! The lock files are checked in (`lock/base.lock`, and `lock/python.lock` for `--python`),
//! made for a crate named `effdet-lock-template`; generation renames that package and puts
//! it back in cargo's order, so the output depends only on the crate name (byte-identical
//! generation). Regenerate them after changing a generated crate's dependencies with
//! `cargo run -p effdet-compiler --example regen_lockfiles` (needs the crates.io index);
//! `tests/golden_crates.rs` builds generated crates with `--locked`, which fails if they are
//! stale.

/// The name the checked-in lock files were made for.
pub const TEMPLATE_NAME: &str = "effdet-lock-template";

const BASE: &str = include_str!("lock/base.lock");
const PYTHON: &str = include_str!("lock/python.lock");

/// The lock file of a generated crate called `name` (with the Python binding's
/// dependencies when `python`).
pub fn lockfile(name: &str, python: bool) -> String {
    let template = if python { PYTHON } else { BASE };
    let (head, body) = template
        .split_once("\n[[package]]\n")
        .unwrap_or((template, ""));
    // Cargo lists packages sorted by name (then version and source: a stable sort by name
    // keeps the template's order among one name's versions).
    let mut blocks: Vec<String> = body
        .split("\n[[package]]\n")
        .map(|b| {
            let b = b.trim_end_matches('\n');
            match b.strip_prefix(&format!("name = \"{TEMPLATE_NAME}\"\n")) {
                Some(rest) => format!("name = \"{name}\"\n{rest}"),
                None => b.to_string(),
            }
        })
        .collect();
    let key = |b: &String| {
        b.lines()
            .next()
            .and_then(|l| l.strip_prefix("name = \""))
            .and_then(|l| l.strip_suffix('"'))
            .unwrap_or("")
            .to_string()
    };
    blocks.sort_by_key(key);
    let mut out = String::from(head);
    for b in blocks {
        out.push_str("\n[[package]]\n");
        out.push_str(&b);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_comes_back_unchanged_and_a_name_is_sorted_in() {
        assert_eq!(lockfile(TEMPLATE_NAME, false), BASE);
        assert_eq!(lockfile(TEMPLATE_NAME, true), PYTHON);
        let lock = lockfile("aaa-first", false);
        let first = lock.split("\n[[package]]\n").nth(1).unwrap();
        assert!(first.starts_with("name = \"aaa-first\"\n"), "{first}");
        assert!(!lock.contains(TEMPLATE_NAME));
        assert_eq!(
            lock.len(),
            BASE.len() - TEMPLATE_NAME.len() + "aaa-first".len()
        );
    }
}
