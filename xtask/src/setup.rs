//! `setup`: what the browser build, the edge worker, the release and their tests need beyond
//! Rust.

use std::path::Path;
use std::process::Command;

use crate::root;
use crate::tools::{onnxruntime_python, run, wasm_bindgen, wasm_opt};

/// Everything the browser build, the release and their tests need beyond Rust: the npm tools
/// (wasm-opt, playwright-core), the pinned wasm-bindgen CLI, and ONNX Runtime. Says what is
/// still missing (Chromium, QEMU: Debian packages).
pub fn setup() -> anyhow::Result<()> {
    run(Command::new("npm").current_dir(root()).args(["ci", "--no-audit", "--no-fund"]))?;
    crate::edge::setup()?;
    let bindgen = wasm_bindgen()?;
    println!("wasm-bindgen: {}", bindgen.display());
    match wasm_opt() {
        Some(opt) => println!("wasm-opt: {}", opt.display()),
        None => println!("wasm-opt: not found (bundles will be larger)"),
    }
    println!("ONNX Runtime: {}", onnxruntime_python()?.display());
    match Command::new("qemu-system-arm").arg("--version").output() {
        Ok(out) if out.status.success() => println!("qemu-system-arm: found"),
        _ => println!(
            "qemu-system-arm: not found; the firmware's run needs it (Debian: apt-get install qemu-system-arm)"
        ),
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if Path::new(&chromium).is_file() {
        println!("chromium: {chromium}");
    } else {
        println!("chromium: not found at {chromium}; the browser test needs it (Debian: apt-get install chromium)");
    }
    Ok(())
}
