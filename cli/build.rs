//! Embeds the known-answer vectors (tests/vectors/*.json) so `keyward policy check` runs them
//! wherever the binary is, without the repository beside it.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../tests/vectors");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut code = String::from("/// The known-answer vector files, by name.\npub const VECTORS: &[(&str, &str)] = &[\n");
    for path in &files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("vectors.json");
        let full = path.canonicalize()?;
        println!("cargo:rerun-if-changed={}", full.display());
        writeln!(code, "    ({name:?}, include_str!({:?})),", full.display().to_string())?;
    }
    code.push_str("];\n");
    std::fs::write(PathBuf::from(std::env::var("OUT_DIR")?).join("vectors.rs"), code)?;
    Ok(())
}
