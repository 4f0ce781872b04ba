//! The op kernels of generated models, as Rust source: activations over a tensor, 1×1 convs (register-tiled GEMM
//! micro-kernels), dense convs, depthwise convs (row- and channel-vectorized), BiFPN fusion (alone or feeding
//! its depthwise conv), squeeze-excite, the MBConv expand→depthwise fusion, separable convs (depthwise→1×1 band by band) and the generic ops of imported graphs.
//!
//! Each file here is compiled twice: into the compiler, where the weight packing
//! (`conv1x1::pack`), the plan's fusion rules (`mbconv::worth_fusing`), `--tune`'s timings
//! and the kernels' unit tests use it; and into every generated model, which carries this
//! source ([`SOURCES`]: `src/kernels/` in a generated crate, inline for `include!` and the
//! proc-macro) instead of a runtime library of op kernels. The runtime supplies
//! only what all of them share: the ISA, the `#[inline(always)]` vector primitives, the
//! activations, the thread pool and the scratch buffers (`effdet_runtime::kernels`).
//!
//! So that one text compiles in both places, a kernel names the runtime by its absolute
//! path (`::effdet_runtime::kernels::…`) and its sibling kernels by `super::…` (in the
//! compiler this module is `crate::kernels`; in a generated model it is the model's own
//! `kernels` module). Unit tests sit at the end of each file in one `#[cfg(test)] mod tests`
//! (checked by a test below), which generated models leave out.

#![allow(unsafe_code)]

pub mod activation;
pub mod conv1x1;
pub mod dense;
pub mod depthwise;
#[cfg(target_arch = "x86_64")]
pub mod depthwise_lanes;
pub mod fuse;
pub mod fuse_depthwise;
pub mod generic;
pub mod mbconv;
pub mod se;
pub mod separable;

/// Every kernel file: (module name, `cfg` it is compiled under if any, source text).
pub const SOURCES: &[(&str, Option<&str>, &str)] = &[
    ("activation", None, include_str!("activation.rs")),
    ("conv1x1", None, include_str!("conv1x1.rs")),
    ("dense", None, include_str!("dense.rs")),
    ("depthwise", None, include_str!("depthwise.rs")),
    (
        "depthwise_lanes",
        Some("target_arch = \"x86_64\""),
        include_str!("depthwise_lanes.rs"),
    ),
    ("fuse", None, include_str!("fuse.rs")),
    ("fuse_depthwise", None, include_str!("fuse_depthwise.rs")),
    ("generic", None, include_str!("generic.rs")),
    ("mbconv", None, include_str!("mbconv.rs")),
    ("se", None, include_str!("se.rs")),
    ("separable", None, include_str!("separable.rs")),
];

/// Where a kernel file's unit tests start: they are its last item.
const TESTS: &str = "\n#[cfg(test)]\nmod tests {\n";

/// `text` without its unit tests (everything from [`TESTS`] on).
fn without_tests(text: &str) -> &str {
    match text.find(TESTS) {
        Some(i) => &text[..=i],
        None => text,
    }
}

/// Why a module of inline kernels allows dead code: a model calls the kernels its plan
/// needs, and the source is the same for all of them.
const MOD_ATTRS: &str = "// The same kernel source for every model: each calls what its plan needs.\n#[allow(dead_code)]\n";

/// The files of a generated crate's `src/kernels/`: `mod.rs` declaring each kernel, then
/// each kernel's source as it is here, without its unit tests.
pub fn crate_files() -> Vec<(String, String)> {
    let mut mod_rs = String::from(
        "//! The op kernels of this model, written by effdetc (its `kernels` module), on\n//! `effdet_runtime`'s ISA detection, vector primitives, activations, thread pool and\n//! scratch buffers.\n\n",
    );
    let mut files = Vec::new();
    for (name, cfg, text) in SOURCES {
        if let Some(cfg) = cfg {
            mod_rs.push_str(&format!("#[cfg({cfg})]\n"));
        }
        mod_rs.push_str(&format!("pub mod {name};\n"));
        files.push((
            format!("src/kernels/{name}.rs"),
            without_tests(text).to_string(),
        ));
    }
    files.insert(0, ("src/kernels/mod.rs".to_string(), mod_rs));
    files
}

/// The declaration of the kernels module in a crate's `src/model.rs`, whose files
/// [`crate_files`] writes (a `#[path]` relative to `src/`).
pub fn module_declaration() -> String {
    format!("{MOD_ATTRS}#[path = \"kernels/mod.rs\"]\nmod kernels;\n")
}

/// The kernels module inline, for code that must be one file (`include!` from a build
/// script, the proc-macro): `mod kernels { pub mod conv1x1 { … } … }`, each kernel's source
/// indented, without its unit tests.
pub fn module_inline() -> String {
    let mut out = format!("{MOD_ATTRS}mod kernels {{\n");
    for (name, cfg, text) in SOURCES {
        if let Some(cfg) = cfg {
            out.push_str(&format!("    #[cfg({cfg})]\n"));
        }
        out.push_str(&format!("    pub mod {name} {{\n"));
        out.push_str(&crate::codegen::indent(without_tests(text), "        "));
        out.push_str("    }\n");
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::effdet_runtime::kernels::{Act, Isa, Par};

    /// The items of `text` as tokens (comments dropped, literals kept exactly).
    fn items(text: &str) -> Vec<String> {
        let file = syn::parse_file(text).expect("parses");
        file.items
            .iter()
            .map(|i| quote::quote!(#i).to_string())
            .collect()
    }

    #[test]
    fn tests_are_each_files_last_item_and_are_left_out() {
        for (name, _, text) in SOURCES {
            let cut = without_tests(text);
            let all = items(text);
            let kept = items(cut);
            // Exactly one item (the tests module) is dropped, and it was the last one.
            assert_eq!(
                kept.len() + 1,
                all.len(),
                "{name}: tests are not the last item"
            );
            assert_eq!(kept[..], all[..kept.len()], "{name}");
            assert!(
                all.last().unwrap().starts_with("# [cfg (test)] mod tests"),
                "{name}"
            );
            assert!(
                !cut.contains("#[cfg(test)]"),
                "{name}: test-only code outside `tests`"
            );
        }
    }

    #[test]
    fn the_inline_module_has_every_kernel_token_for_token() {
        let inline = syn::parse_file(&module_inline()).expect("the inline module parses");
        let [syn::Item::Mod(kernels)] = &inline.items[..] else {
            panic!("one `mod kernels`");
        };
        let (_, content) = kernels.content.as_ref().expect("inline");
        assert_eq!(content.len(), SOURCES.len());
        for (item, (name, _, text)) in content.iter().zip(SOURCES) {
            let syn::Item::Mod(m) = item else {
                panic!("{name}: not a module")
            };
            assert_eq!(m.ident, name);
            let inner: Vec<String> = m
                .content
                .as_ref()
                .unwrap()
                .1
                .iter()
                .map(|i| quote::quote!(#i).to_string())
                .collect();
            // Indenting changed no literal: the same tokens as the file itself.
            assert_eq!(inner, items(without_tests(text)), "{name}");
        }
    }

    #[test]
    fn crate_files_declare_every_kernel() {
        let files = crate_files();
        assert_eq!(files.len(), SOURCES.len() + 1);
        let mod_rs = &files[0].1;
        for (name, _, _) in SOURCES {
            assert!(mod_rs.contains(&format!("pub mod {name};\n")), "{name}");
        }
        assert!(mod_rs.contains("#[cfg(target_arch = \"x86_64\")]\npub mod depthwise_lanes;"));
        // Each file is the source itself, byte for byte, up to its tests.
        for ((path, text), (name, _, src)) in files[1..].iter().zip(SOURCES) {
            assert_eq!(path, &format!("src/kernels/{name}.rs"));
            assert!(src.starts_with(text.as_str()) && !text.contains("mod tests {"));
        }
    }

    #[test]
    #[should_panic(expected = "fuse: the size [4611686018427387904, 4] overflows usize")]
    fn an_overflowing_shape_panics_before_any_access() {
        // c · oh · ow wraps to a small number in release arithmetic; the check must not.
        let mut y = [0.0f32; 16];
        fuse::fuse(
            Isa::Scalar,
            Par::serial(),
            &[(&[0.0; 16], fuse::Sample::Identity)],
            &[1.0],
            &mut y,
            4,
            1 << 62,
            4,
            Act::None,
        );
    }

    #[test]
    #[should_panic(expected = "depthwise")]
    fn depthwise_checks_its_sizes_with_checked_arithmetic() {
        let mut y = [0.0f32; 4];
        depthwise::depthwise(
            Isa::Scalar,
            Par::serial(),
            &[0.0; 4],
            &[0.0; 9],
            &[0.0],
            &mut y,
            usize::MAX / 2,
            2,
            2,
            1,
            1,
            [0; 4],
            Act::None,
        );
    }
}
