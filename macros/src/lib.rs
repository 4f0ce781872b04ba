//! The proc-macro way into effdet: `effdet_macros::model!` compiles an EfficientDet spec (or
//! ONNX file) while your crate compiles and expands to a module with the same API as a
//! crate `effdetc build` writes.
//!
//! ```ignore
//! effdet_macros::model!(d0, spec = "specs/d0.yaml", weights = "weights/d0.safetensors");
//!
//! fn main() -> Result<(), d0::Error> {
//!     let mut model = d0::Model::new();
//!     let input = vec![0.0f32; d0::INPUT_SHAPE.iter().product()];
//!     let outputs = model.forward(&input)?;
//!     println!("{:?}", outputs.shape("class_P3"));
//!     Ok(())
//! }
//! ```
//!
//! The consuming crate depends on `effdet-macros` and on `effdet-runtime` (the module's code
//! names `::effdet_runtime`, which a proc-macro crate cannot re-export).
//!
//! # Arguments
//!
//! The module name first, then `key = value` pairs in any order:
//!
//! | key | value | |
//! |---|---|---|
//! | `spec` (or `model`) | `"path"` | a YAML spec or an `.onnx` file (by extension); required, one of the two |
//! | `weights` | `"path"` | a `state_dict` with effdet's names, safetensors or a PyTorch checkpoint (`.pth`/`.pt`) (specs) |
//! | `random_weights` | integer | random weights from this seed, for benchmarks (specs) |
//! | `fuse` | `true`/`false` | `false` runs no fusion pass (default `true`) |
//! | `passes` | `"a,b"` | only these passes (as `effdetc build --passes`) |
//! | `input_shape` | `[1, 3, H, W]` | the input shape of an ONNX model that leaves it open |
//! | `batch` | integer | images per forward pass, 1..=1024 (default 1): input `[N, 3, H, W]`, `Model::detect_batch` |
//! | `max_memory_mib` | integer | the memory budget (default 4096), as `effdetc --max-memory-mib` |
//! | `max_gmacs` | integer | the multiply-accumulate budget in G (default 2000), as `effdetc --max-gmacs` |
//! | `detect_spec` | `"path"` | a spec giving an ONNX model `Model::detect` |
//!
//! Paths are relative to the calling crate's directory (`CARGO_MANIFEST_DIR`). A misspelled
//! key, a missing file, a bad spec or mismatched weights is a `compile_error!` pointing at
//! the argument at fault, never a panic.
//!
//! # Rebuilds
//!
//! The expansion `include_bytes!`s the spec, the weights and the detect spec, so cargo
//! rebuilds the calling crate (and re-expands the macro) when any of them changes, and only
//! then: a proc-macro has no stable way to track files otherwise.
//!
//! # Weights
//!
//! The packed weights are embedded in the expansion as one byte-string literal in a 64-byte
//! aligned static, read in place at run time; the macro writes no file anywhere (it has no
//! `OUT_DIR` and must not write into your tree). Measured on D0 (15.8 MB packed), against
//! writing a content-addressed file outside the tree and `include_bytes!`ing it: +0.2 s per
//! build of the calling crate (release 2.0 s vs 1.8 s) and +40–80 MB of rustc memory (477 vs
//! ~400 MB). The file would also have to be dated before the build (cargo compares dep-info
//! files with the build's start, so a file written during the build leaves the crate stale
//! forever) and could vanish with the temporary directory. For models whose packed weights
//! run to hundreds of MiB, prefer the build-script way (`effdet_compiler::Build`), which can
//! keep them in a file.

use std::path::{Path, PathBuf};

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Ident, LitBool, LitInt, LitStr, Token};

use effdet_compiler::codegen::{emit, WeightsSource};
use effdet_compiler::compile::{self, BuildRequest, Input, WeightsChoice};
use effdet_compiler::passes::PassSet;

/// Compiles an EfficientDet model into `pub mod NAME { ... }`; see the crate docs for the
/// arguments.
///
/// ```ignore
/// effdet_macros::model!(d0, spec = "specs/d0.yaml", weights = "weights/d0.safetensors");
/// ```
#[proc_macro]
pub fn model(input: TokenStream) -> TokenStream {
    let args = syn::parse_macro_input!(input as Args);
    // The compiler reports bad input as errors; a panic would be a compiler bug, and even
    // then the user gets a compile error at the macro call rather than "proc macro panicked".
    let expanded = std::panic::catch_unwind(|| expand(&args)).unwrap_or_else(|_| {
        Err(syn::Error::new(
            Span::call_site(),
            "effdet: internal compiler error while compiling the model (please report it)",
        ))
    });
    match expanded {
        Ok(tokens) => tokens,
        Err(e) => e.to_compile_error().into(),
    }
}

const KEYS: &[&str] = &[
    "spec",
    "model",
    "weights",
    "random_weights",
    "fuse",
    "passes",
    "input_shape",
    "batch",
    "max_memory_mib",
    "max_gmacs",
    "detect_spec",
];

/// One `key = value` argument.
enum Value {
    Str(LitStr),
    Int(LitInt),
    Bool(LitBool),
    Shape(Vec<LitInt>, Span),
}

struct Arg {
    key: Ident,
    value: Value,
}

impl Parse for Arg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let key: Ident = input.parse()?;
        let name = key.to_string();
        if !KEYS.contains(&name.as_str()) {
            let hint = KEYS
                .iter()
                .filter(|k| edit_distance(k, &name) <= 2)
                .min_by_key(|k| edit_distance(k, &name))
                .map(|k| format!("; did you mean `{k}`?"))
                .unwrap_or_default();
            return Err(syn::Error::new(
                key.span(),
                format!(
                    "unknown argument `{name}`{hint} (expected one of: {})",
                    KEYS.join(", ")
                ),
            ));
        }
        input.parse::<Token![=]>()?;
        let value = match name.as_str() {
            "random_weights" | "batch" | "max_memory_mib" | "max_gmacs" => {
                Value::Int(input.parse()?)
            }
            "fuse" => Value::Bool(input.parse()?),
            "input_shape" => {
                let content;
                let bracket = syn::bracketed!(content in input);
                let dims = Punctuated::<LitInt, Token![,]>::parse_terminated(&content)?;
                Value::Shape(dims.into_iter().collect(), bracket.span.join())
            }
            _ => Value::Str(input.parse()?),
        };
        Ok(Arg { key, value })
    }
}

/// `NAME, key = value, ...`
struct Args {
    name: Ident,
    args: Vec<Arg>,
}

impl Parse for Args {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let name: Ident = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected the module name first: `model!(d0, spec = \"specs/d0.yaml\", weights = \"w.safetensors\")`",
            )
        })?;
        if input.peek(Token![=]) {
            return Err(syn::Error::new(
                name.span(),
                format!("expected the module name first: `model!(d0, {name} = ...)`"),
            ));
        }
        let mut args = Vec::new();
        while !input.is_empty() {
            input.parse::<Token![,]>()?;
            if input.is_empty() {
                break;
            }
            let arg: Arg = input.parse()?;
            if let Some(prev) = args.iter().find(|a: &&Arg| a.key == arg.key) {
                let mut e = syn::Error::new(
                    arg.key.span(),
                    format!("argument `{}` given twice", arg.key),
                );
                e.combine(syn::Error::new(prev.key.span(), "first given here"));
                return Err(e);
            }
            args.push(arg);
        }
        Ok(Args { name, args })
    }
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// A path argument: as written (for messages), resolved (for reading), and the expression
/// that names it from the calling crate (for `include_bytes!`).
struct PathArg {
    lit: LitStr,
    resolved: PathBuf,
}

impl PathArg {
    fn new(lit: &LitStr, base: &Path) -> syn::Result<PathArg> {
        let written = lit.value();
        if written.is_empty() {
            return Err(syn::Error::new(lit.span(), "empty path"));
        }
        let p = Path::new(&written);
        let resolved = if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        };
        if !resolved.is_file() {
            return Err(syn::Error::new(
                lit.span(),
                format!(
                    "`{written}`: no such file (paths are relative to the calling crate's directory, CARGO_MANIFEST_DIR)"
                ),
            ));
        }
        Ok(PathArg {
            lit: lit.clone(),
            resolved,
        })
    }

    /// `include_bytes!` of the file, so the calling crate is rebuilt when it changes.
    fn track(&self) -> proc_macro2::TokenStream {
        let path = self.resolved.to_string_lossy().into_owned();
        quote!(
            const _: &[u8] = include_bytes!(#path);
        )
    }

    /// `message` with the resolved path replaced by the path as written.
    fn localize(&self, message: &str) -> String {
        message.replace(&*self.resolved.to_string_lossy(), &self.lit.value())
    }
}

fn expand(args: &Args) -> syn::Result<TokenStream> {
    let base = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .ok_or_else(|| {
            syn::Error::new(
                Span::call_site(),
                "CARGO_MANIFEST_DIR is not set: effdet_macros::model! resolves paths against it (build with cargo)",
            )
        })?;
    let get = |key: &str| args.args.iter().find(|a| a.key == key);
    let str_arg = |key: &str| -> syn::Result<Option<PathArg>> {
        match get(key).map(|a| &a.value) {
            Some(Value::Str(s)) => PathArg::new(s, &base).map(Some),
            _ => Ok(None),
        }
    };

    let model = match (get("spec"), get("model")) {
        (Some(_), Some(m)) => {
            return Err(syn::Error::new(
                m.key.span(),
                "give the model once: `spec` and `model` are the same argument",
            ))
        }
        (Some(_), None) => str_arg("spec")?,
        (None, Some(_)) => str_arg("model")?,
        (None, None) => None,
    };
    let Some(model) = model else {
        return Err(syn::Error::new(
            args.name.span(),
            "missing `spec = \"specs/NAME.yaml\"` (a YAML spec or an `.onnx` file)",
        ));
    };
    let onnx = model
        .resolved
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));

    let weights_file = str_arg("weights")?;
    let random = match get("random_weights").map(|a| &a.value) {
        Some(Value::Int(i)) => Some((i.base10_parse::<u64>()?, i.span())),
        _ => None,
    };
    let weights = match (&weights_file, random, onnx) {
        (Some(_), Some((_, span)), _) => {
            return Err(syn::Error::new(
                span,
                "`weights` and `random_weights` exclude each other",
            ))
        }
        (Some(w), None, false) => WeightsChoice::File(w.resolved.clone()),
        (None, Some((seed, _)), false) => WeightsChoice::Random(seed),
        (None, None, true) => WeightsChoice::Model,
        (Some(w), None, true) => {
            return Err(syn::Error::new(
                w.lit.span(),
                "an ONNX model carries its own weights; drop `weights`",
            ))
        }
        (None, Some((_, span)), true) => {
            return Err(syn::Error::new(
                span,
                "an ONNX model carries its own weights; drop `random_weights`",
            ))
        }
        (None, None, false) => {
            return Err(syn::Error::new(
                model.lit.span(),
                "a spec has no weights: add `weights = \"FILE.safetensors\"` or `\"FILE.pth\"` (a state_dict with effdet's parameter names), or `random_weights = SEED` for benchmarks",
            ))
        }
    };

    let mut passes = PassSet::all();
    if let Some(Value::Bool(b)) = get("fuse").map(|a| &a.value) {
        if !b.value {
            passes = PassSet::none();
        }
    }
    if let Some(Value::Str(list)) = get("passes").map(|a| &a.value) {
        if get("fuse").is_some() {
            return Err(syn::Error::new(
                list.span(),
                "`passes` and `fuse` exclude each other",
            ));
        }
        passes = PassSet::parse(&list.value()).map_err(|e| syn::Error::new(list.span(), e))?;
    }
    let input_shape = match get("input_shape").map(|a| &a.value) {
        Some(Value::Shape(dims, span)) => {
            let dims = dims
                .iter()
                .map(|d| d.base10_parse::<usize>())
                .collect::<syn::Result<Vec<usize>>>()?;
            if dims.len() != 4 || dims.contains(&0) {
                return Err(syn::Error::new(
                    *span,
                    "expected four positive dimensions `[N, C, H, W]`",
                ));
            }
            Some(dims)
        }
        _ => None,
    };
    let batch = match get("batch").map(|a| &a.value) {
        Some(Value::Int(n)) => {
            let v = n.base10_parse::<usize>()?;
            if !(1..=effdet_compiler::model::MAX_BATCH).contains(&v) {
                return Err(syn::Error::new(
                    n.span(),
                    format!(
                        "`batch` is the number of images per forward pass: 1..={}",
                        effdet_compiler::model::MAX_BATCH
                    ),
                ));
            }
            Some(v)
        }
        _ => None,
    };
    let budget_arg = |key: &str| -> syn::Result<Option<(u64, Span)>> {
        match get(key).map(|a| &a.value) {
            Some(Value::Int(n)) => Ok(Some((n.base10_parse::<u64>()?, n.span()))),
            _ => Ok(None),
        }
    };
    let (memory, gmacs) = (budget_arg("max_memory_mib")?, budget_arg("max_gmacs")?);
    let limits = effdet_compiler::budget::Limits::with(memory.map(|m| m.0), gmacs.map(|g| g.0))
        .map_err(|e| {
            let span = memory.or(gmacs).map_or_else(Span::call_site, |(_, s)| s);
            syn::Error::new(span, e)
        })?;
    let detect_spec = str_arg("detect_spec")?;

    let req = BuildRequest {
        model: model.resolved.clone(),
        weights,
        out_dir: None,
        name: None,
        passes,
        input_shape,
        batch,
        limits,
        embed_limit: usize::MAX,
        detect_spec: detect_spec.as_ref().map(|d| d.resolved.clone()),
        c_api: false,
        python: false,
        tuning: Default::default(),
    };
    let compiled = compile::compile_model(&req, &mut |_| {}).map_err(|e| {
        // Point at the argument the error is about, with the path as the user wrote it.
        let at = match (e.input, &weights_file) {
            (Input::Weights, Some(w)) => w,
            _ => &model,
        };
        let mut message = at.localize(&e.message);
        if let Some(d) = &detect_spec {
            message = d.localize(&message);
        }
        let span = match (e.input, &weights_file, random) {
            (Input::Weights, None, Some((_, span))) => span,
            _ => at.lit.span(),
        };
        syn::Error::new(span, message)
    })?;

    let module = module_tokens(&compiled, &model)?;
    let tracked = [Some(&model), weights_file.as_ref(), detect_spec.as_ref()]
        .into_iter()
        .flatten()
        .map(PathArg::track);
    let name = &args.name;
    let doc = format!(
        " `{}` compiled by `effdet_macros::model!` from `{}`.",
        compiled.model.graph.name,
        model.lit.value()
    );
    let mut out: TokenStream = quote! {
        #[doc = #doc]
        // A crate uses part of the API: no dead-code warnings for the rest.
        #[allow(dead_code, unused_imports)]
        pub mod #name {
            #(#tracked)*
        }
    }
    .into();
    // Splice the module items into the (empty-bodied but for the tracking consts) module.
    out = splice_into_mod(out, module);
    Ok(out)
}

/// The generated module's items, with the packed weights as a byte-string literal.
fn module_tokens(c: &compile::Compiled, model: &PathArg) -> syn::Result<TokenStream> {
    const MARK: &str = "effdet-macros:packed-weights";
    let text = emit::module(
        &c.plan,
        &WeightsSource::Embedded(quote!(#MARK)),
        &c.header(),
        emit::KernelSource::Inline,
    )
    .map_err(|e| syn::Error::new(model.lit.span(), format!("effdet: {e}")))?;
    let tokens: TokenStream = text.parse().map_err(|e| {
        syn::Error::new(
            Span::call_site(),
            format!("effdet: generated code does not lex: {e:?}"),
        )
    })?;
    let bytes: Vec<u8> = c.weights.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut bytes = Some(bytes);
    let out = replace_include(tokens, MARK, &mut bytes);
    if bytes.is_some() {
        return Err(syn::Error::new(
            Span::call_site(),
            "effdet: internal error: the generated module has no embedded weights",
        ));
    }
    Ok(out)
}

/// Replaces `include_bytes!("<mark>")` by the byte-string literal of `bytes` (taken once).
fn replace_include(tokens: TokenStream, mark: &str, bytes: &mut Option<Vec<u8>>) -> TokenStream {
    use proc_macro::{Group, Literal, TokenTree};
    let trees: Vec<TokenTree> = tokens.into_iter().collect();
    let mut out: Vec<TokenTree> = Vec::with_capacity(trees.len());
    let mut i = 0;
    while i < trees.len() {
        if let (Some(TokenTree::Ident(id)), Some(TokenTree::Punct(p)), Some(TokenTree::Group(g))) =
            (trees.get(i), trees.get(i + 1), trees.get(i + 2))
        {
            if id.to_string() == "include_bytes"
                && p.as_char() == '!'
                && g.stream().to_string().trim_matches('"') == mark
            {
                if let Some(b) = bytes.take() {
                    out.push(TokenTree::Literal(Literal::byte_string(&b)));
                    i += 3;
                    continue;
                }
            }
        }
        match &trees[i] {
            TokenTree::Group(g) => {
                let inner = replace_include(g.stream(), mark, bytes);
                let mut ng = Group::new(g.delimiter(), inner);
                ng.set_span(g.span());
                out.push(TokenTree::Group(ng));
            }
            t => out.push(t.clone()),
        }
        i += 1;
    }
    out.into_iter().collect()
}

/// `pub mod name { tracked }` + items → `pub mod name { tracked items }`.
fn splice_into_mod(module: TokenStream, items: TokenStream) -> TokenStream {
    use proc_macro::{Delimiter, Group, TokenTree};
    module
        .into_iter()
        .map(|t| match t {
            TokenTree::Group(g) if g.delimiter() == Delimiter::Brace => {
                let mut body = g.stream();
                body.extend(items.clone());
                let mut ng = Group::new(Delimiter::Brace, body);
                ng.set_span(g.span());
                TokenTree::Group(ng)
            }
            t => t,
        })
        .collect()
}
