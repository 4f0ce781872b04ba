//! Embeds the runtime crate's sources, which `effdetc build` vendors into every generated
//! crate so that it builds from a copy of its own directory, offline.

use std::path::{Path, PathBuf};

fn collect(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(&path, base, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path.strip_prefix(base).unwrap_or(&path).to_path_buf());
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let runtime = manifest.join("../runtime");
    let mut files = Vec::new();
    collect(&runtime.join("src"), &runtime, &mut files);
    let mut code = String::from("/// Runtime sources: (path inside the runtime crate, text).\npub const RUNTIME_FILES: &[(&str, &str)] = &[\n");
    for f in &files {
        let rel = f.to_string_lossy().replace('\\', "/");
        let abs = runtime.join(f);
        code.push_str(&format!(
            "    ({rel:?}, include_str!({:?})),\n",
            abs.to_string_lossy()
        ));
    }
    code.push_str("];\n");
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("runtime_files.rs");
    std::fs::write(out, code).expect("OUT_DIR is writable");
    println!("cargo:rerun-if-changed=../runtime/src");
    println!("cargo:rerun-if-changed=../runtime/Cargo.toml");
}
