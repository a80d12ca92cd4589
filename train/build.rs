//! Records the compiler and the burn version this crate is built with, for `metrics.json`.

use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(&rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map_or_else(|| "unknown".into(), |v| v.trim().to_string());
    println!("cargo:rustc-env=TRAIN_RUSTC_VERSION={version}");

    // The workspace lock names the one burn every crate here builds with.
    let lock_path = format!("{}/../Cargo.lock", std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    println!("cargo:rerun-if-changed={lock_path}");
    let lock = std::fs::read_to_string(&lock_path).unwrap_or_default();
    let burn = lock
        .split("[[package]]")
        .find(|package| package.contains("\nname = \"burn\"\n"))
        .and_then(|package| package.lines().find_map(|line| line.strip_prefix("version = \"")))
        .map_or("unknown", |v| v.trim_end_matches('"'));
    println!("cargo:rustc-env=TRAIN_BURN_VERSION={burn}");
}
