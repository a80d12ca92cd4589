//! `check`: what the code is held to before anything runs: rustfmt, clippy with warnings as
//! errors, `infer` building without std, each feature on its own, for the browser and for
//! a bare-metal microcontroller, the firmware, the edge worker for wasm32, and xtask both
//! without burn (as `cargo xtask` builds it) and, when asked, with its optional features
//! (GPU training, the dashboard) and the browser bundle on WebGPU.

use anyhow::bail;

use crate::args::committed_model;
use crate::bundled;
use crate::tools::{cargo, rust_component, rust_target};

/// A microcontroller target (Cortex-M4F): no std, no allocator unless one is given.
const BARE_METAL: &str = "thumbv7em-none-eabihf";
const WASM: &str = "wasm32-unknown-unknown";

/// `infer`'s features, each of which must build alone on the host (not `wgpu`: there it
/// compiles burn's native WebGPU stack, ten minutes here; its browser build is linted when
/// asked).
const INFER_FEATURES: [&str; 7] = ["", "std", "record", "bundled", "burn", "flex", "ndarray"];

/// `optional_features`: also lint xtask with `wgpu` and `tui`, and the browser API on WebGPU,
/// which nothing else builds. The `check` command does; CI's `test` does not, as xtask's
/// features cost about 4 minutes of a cold run on a slow machine, where the whole run came to
/// 91 minutes against CI's limit of 90 (the WebGPU bundle 86 s more on a faster one).
pub fn check(optional_features: bool) -> anyhow::Result<()> {
    // `infer`'s `bundled` feature and the firmware include these weights: the committed
    // model's stand in for whichever they are later built with.
    bundled::write(&std::fs::read(committed_model())?)?;
    rust_component("rustfmt", "fmt")?;
    rust_component("clippy", "clippy")?;
    step("cargo fmt --check", cargo().args(["fmt", "--all", "--check"]))?;
    // The fuzz targets and the firmware are workspaces of their own.
    for manifest in ["fuzz/Cargo.toml", "embedded/Cargo.toml"] {
        step(
            &format!("cargo fmt --check ({manifest})"),
            cargo().args(["fmt", "--manifest-path", manifest, "--check"]),
        )?;
    }
    step(
        "cargo clippy -D warnings",
        cargo().args(["clippy", "--workspace", "--all-targets", "--features", "xtask/ml", "--", "-D", "warnings"]),
    )?;
    // What `cargo xtask` itself builds: xtask without burn.
    step(
        "xtask without its ml feature builds",
        cargo().args(["clippy", "-p", "xtask", "--all-targets", "--", "-D", "warnings"]),
    )?;
    // clippy, so each combination is held to the lints as well as to compiling.
    for features in INFER_FEATURES {
        let name = if features.is_empty() { "no features" } else { features };
        step(
            &format!("infer builds with {name}"),
            cargo().args([
                "clippy",
                "-p",
                "infer",
                "--no-default-features",
                "--features",
                features,
                "--",
                "-D",
                "warnings",
            ]),
        )?;
    }
    rust_target(WASM)?;
    // Every bundle `build-web --backend` offers but WebGPU's; CI's browser test builds only
    // the default one, so these would stop compiling unseen.
    for features in ["wasm", "wasm int8-kernels", "wasm flex", "wasm ndarray"] {
        browser_api_lint(features)?;
    }
    step(
        "the edge worker's Workers-only code (wasm32)",
        cargo().args(["clippy", "-p", "edge", "--target", WASM, "--", "-D", "warnings"]),
    )?;
    rust_target(BARE_METAL)?;
    step(
        "infer (lean model and model.bin reader) builds for a microcontroller",
        cargo().args(["build", "-p", "infer", "--no-default-features", "--features", "record", "--target", BARE_METAL]),
    )?;
    step(
        "the firmware (embedded/) for the Cortex-M4F",
        cargo()
            .args(["clippy", "--manifest-path", "embedded/Cargo.toml", "--target", BARE_METAL, "--target-dir"])
            .arg(crate::target_dir())
            .args(["--", "-D", "warnings"]),
    )?;
    if !optional_features {
        return Ok(());
    }
    // Off by default, so nothing else here would notice if they stopped compiling.
    step(
        "GPU training and the training dashboard (features wgpu, tui) build",
        cargo().args(["clippy", "-p", "xtask", "--features", "wgpu,tui", "--", "-D", "warnings"]),
    )?;
    browser_api_lint("wasm wgpu")
}

fn browser_api_lint(features: &str) -> anyhow::Result<()> {
    step(
        &format!("infer's browser API builds for wasm32 ({features})"),
        cargo()
            .args(["clippy", "-p", "infer", "--no-default-features", "--features", features, "--target", WASM])
            .args(["--", "-D", "warnings"])
            // Any file will do to check the code that embeds it.
            .env("INFER_WEIGHTS", committed_model()),
    )
}

fn step(what: &str, command: &mut std::process::Command) -> anyhow::Result<()> {
    println!("check: {what}");
    let status = command.status()?;
    if !status.success() {
        bail!("{what}: failed ({status})");
    }
    Ok(())
}
