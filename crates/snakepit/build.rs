//! Embeds the Python shim (`python-shim/snakepit_shim/*.py`) into the crate, so that a
//! worker needs nothing installed in its interpreter. The crate reads it through `shim`,
//! a symlink to that directory which `cargo package` follows: the packaged crate holds
//! the files themselves.

use std::{env, fs, path::PathBuf};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let shim = manifest.join("shim");
    println!("cargo:rerun-if-changed={}", shim.display());
    let mut files: Vec<PathBuf> = fs::read_dir(&shim)
        .unwrap_or_else(|e| panic!("reading {}: {e}", shim.display()))
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "py"))
        .collect();
    files.sort();
    let mut out = String::from("pub(crate) const SHIM_FILES: &[(&str, &str)] = &[\n");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 file name");
        let abs = fs::canonicalize(f).expect("shim file exists");
        out.push_str(&format!(
            "    ({name:?}, include_str!({:?})),\n",
            abs.display().to_string()
        ));
    }
    out.push_str("];\n");
    let dest = PathBuf::from(env::var("OUT_DIR").expect("cargo sets it")).join("shim_files.rs");
    fs::write(dest, out).expect("writing shim_files.rs");
}
