//! External tools behind one thin layer: cargo, rustup targets, tools pinned to Cargo.lock
//! (wasm-bindgen, worker-build), npm packages (wasm-opt, playwright-core, wrangler),
//! Chromium, QEMU, and ONNX Runtime in a Python venv. Each is installed when a command needs
//! it and it is missing, with a line saying so.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::root;

/// `cargo`, the one running this command where there is one, started as [`in_root`] starts
/// programs.
pub fn cargo() -> Command {
    in_root(Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())))
}

/// `command` started in the root without what `cargo run` set for this binary: those
/// variables would change build-script fingerprints (ring's) and make the two cargo
/// invocations rebuild each other's crates.
fn in_root(mut command: Command) -> Command {
    command.current_dir(root());
    for (name, _) in std::env::vars() {
        if name.starts_with("CARGO_PKG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&name.as_str())
        {
            command.env_remove(name);
        }
    }
    command
}

/// Adds a rustup component (rustfmt, clippy) when `cargo <command>` is missing, saying so.
pub fn rust_component(component: &str, command: &str) -> anyhow::Result<()> {
    if cargo().args([command, "--version"]).output().is_ok_and(|out| out.status.success()) {
        return Ok(());
    }
    println!("adding the Rust component {component} (rustup component add {component})");
    run(Command::new("rustup").args(["component", "add", component]))
}

/// Adds a rustup target the build needs when it is missing, saying so.
pub fn rust_target(target: &str) -> anyhow::Result<()> {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    match installed {
        Ok(out) if String::from_utf8_lossy(&out.stdout).lines().any(|line| line.trim() == target) => Ok(()),
        Ok(_) => {
            println!("adding the Rust target {target} (rustup target add {target})");
            run(Command::new("rustup").args(["target", "add", target]))
        }
        // Without rustup the toolchain is what it is; cargo says clearly if the target is missing.
        Err(_) => Ok(()),
    }
}

/// The wasm-bindgen CLI matching the library in Cargo.lock, without the TLS that only its
/// test runner's downloads use.
pub fn wasm_bindgen() -> anyhow::Result<PathBuf> {
    pinned_tool("wasm-bindgen-cli", "wasm-bindgen", &locked_version("wasm-bindgen")?, &["--no-default-features"])
}

/// A tool installed with `cargo install` at exactly `version`: `bin` from PATH or
/// `target/tools/bin` when it reports that version, else installed there now (`bin` alone,
/// with `options` added).
///
/// Installed unoptimised: each run takes milliseconds either way, and the optimised build of
/// wasm-bindgen took 2.5 minutes of a fresh clone's first `serve` on 2 cores (45 s unoptimised,
/// its output byte for byte the same).
pub fn pinned_tool(package: &str, bin: &str, version: &str, options: &[&str]) -> anyhow::Result<PathBuf> {
    let local = crate::target_dir().join("tools/bin").join(bin);
    for candidate in [PathBuf::from(bin), local.clone()] {
        if let Ok(out) = Command::new(&candidate).arg("--version").output()
            && String::from_utf8_lossy(&out.stdout).split_whitespace().any(|word| word == version)
        {
            return Ok(candidate);
        }
    }
    println!("installing {package} {version} into target/tools (once)");
    let root = crate::target_dir().join("tools");
    let mut install = cargo();
    // Not `--locked`: wasm-bindgen-cli's published lock file pins a crate version the
    // registry no longer serves.
    install.args(["install", package, "--version", version, "--debug", "--bin", bin]).args(options);
    install.arg("--root").arg(&root);
    // cargo tells the user to put the root's bin on PATH unless it is there already; the
    // commands run the tool by its path, so that advice would only mislead.
    let search_path = std::env::var_os("PATH").unwrap_or_default();
    if let Ok(search_path) =
        std::env::join_paths(std::iter::once(root.join("bin")).chain(std::env::split_paths(&search_path)))
    {
        install.env("PATH", search_path);
    }
    run(&mut install)?;
    Ok(local)
}

/// cargo-fuzz, which drives libFuzzer (`fuzz/`).
pub fn cargo_fuzz() -> anyhow::Result<PathBuf> {
    pinned_tool("cargo-fuzz", "cargo-fuzz", CARGO_FUZZ_VERSION, &["--locked"])
}

const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// `program` run with the nightly toolchain (that libFuzzer's instrumentation needs), which
/// is installed first when missing; in the root, as [`cargo`] runs.
pub fn nightly(program: &Path) -> anyhow::Result<Command> {
    let has_nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !has_nightly {
        println!("installing the nightly Rust toolchain for the fuzzer (rustup toolchain install nightly)");
        run(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))
            .context("the fuzzer needs rustup's nightly toolchain")?;
    }
    // Not this cargo (stable's own binary) but rustup's, which the variable points at nightly.
    let mut command = in_root(Command::new(program));
    command.env("RUSTUP_TOOLCHAIN", "nightly").env_remove("CARGO").env_remove("RUSTC");
    Ok(command)
}

/// Installs a folder's npm packages (`npm ci`, from its lock file) when its `node_modules` is
/// missing, saying so.
pub fn npm_packages(dir: &Path) -> anyhow::Result<()> {
    if dir.join("node_modules").is_dir() {
        return Ok(());
    }
    println!("installing the npm packages of {} (npm ci)", dir.display());
    run(Command::new("npm").current_dir(dir).args(["ci", "--no-audit", "--no-fund"]))
        .context("installing npm packages needs Node.js 20+ with npm")
}

/// Headless Chromium for the browser tests: `$CHROMIUM`, else Debian's `/usr/bin/chromium`.
/// On a CI machine it is installed with apt when missing; elsewhere the error names the command.
pub fn chromium() -> anyhow::Result<PathBuf> {
    let path = PathBuf::from(std::env::var_os("CHROMIUM").unwrap_or_else(|| "/usr/bin/chromium".into()));
    if path.is_file() {
        return Ok(path);
    }
    if std::env::var_os("CI").is_none() {
        bail!(
            "the browser test needs Chromium at {}: install it with `sudo apt-get install chromium` \
             (Debian, Ubuntu), or set CHROMIUM to its path",
            path.display()
        );
    }
    apt_install("chromium", "the browser test")?;
    Ok(path)
}

/// QEMU for Arm, which runs the firmware (`cargo xtask embedded`): from PATH; on a CI machine
/// installed with apt when missing, elsewhere the error names the command. (The full build's:
/// the run reads MNIST.)
#[cfg(feature = "ml")]
pub fn qemu_system_arm() -> anyhow::Result<PathBuf> {
    let qemu = PathBuf::from("qemu-system-arm");
    let found = || Command::new(&qemu).arg("--version").output().is_ok_and(|out| out.status.success());
    if found() {
        return Ok(qemu);
    }
    if std::env::var_os("CI").is_none() {
        bail!(
            "the firmware runs under qemu-system-arm: install it with `sudo apt-get install qemu-system-arm` (Debian, Ubuntu)"
        );
    }
    apt_install("qemu-system-arm", "the firmware's run")?;
    Ok(qemu)
}

/// A Python with ONNX Runtime, pinned by `xtask/requirements.txt`, in `target/python`:
/// created with venv and pip from PyPI when missing or installed from another list, saying so.
pub fn onnxruntime_python() -> anyhow::Result<PathBuf> {
    let venv = crate::target_dir().join("python");
    let python = venv.join("bin/python");
    let requirements = root().join("xtask/requirements.txt");
    let wanted = fs::read_to_string(&requirements)?;
    let installed = venv.join("installed-requirements.txt");
    if python.is_file() && fs::read_to_string(&installed).is_ok_and(|list| list == wanted) {
        return Ok(python);
    }
    println!(
        "installing ONNX Runtime into {} (python3 -m venv; pip install -r xtask/requirements.txt)",
        venv.display()
    );
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv)).context("ONNX Runtime needs Python 3 with venv")?;
    run(Command::new(&python).args(["-m", "pip", "install", "-q", "-r"]).arg(&requirements))?;
    fs::write(installed, wanted)?;
    Ok(python)
}

/// Installs a Debian package with apt-get (through sudo unless root), saying what needs it.
fn apt_install(package: &str, needed_by: &str) -> anyhow::Result<()> {
    println!("installing {package} for {needed_by} (apt-get install {package})");
    let as_root = Command::new("id").arg("-u").output().is_ok_and(|out| out.stdout.trim_ascii() == b"0");
    let apt_get = || {
        let mut command = Command::new(if as_root { "apt-get" } else { "sudo" });
        if !as_root {
            command.arg("apt-get");
        }
        command
    };
    run(apt_get().args(["update", "-qq"]))?;
    run(apt_get().args(["install", "-y", "-qq", "--no-install-recommends", package]))
}

/// binaryen's wasm-opt: from the project's npm packages, else PATH.
pub fn wasm_opt() -> Option<PathBuf> {
    [root().join("node_modules/.bin/wasm-opt"), PathBuf::from("wasm-opt")]
        .into_iter()
        .find(|tool| Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success()))
}

/// The version of `package` that Cargo.lock pins.
pub fn locked_version(package: &str) -> anyhow::Result<String> {
    let lock = fs::read_to_string(root().join("Cargo.lock"))?;
    let needle = format!("name = \"{package}\"\nversion = \"");
    let start = lock.find(&needle).with_context(|| format!("{package} is not in Cargo.lock"))? + needle.len();
    Ok(lock[start..].split('"').next().unwrap_or_default().to_string())
}

pub fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command.status().with_context(|| format!("cannot run {:?}", command.get_program()))?;
    if !status.success() {
        bail!("{:?} failed ({status})", command.get_program());
    }
    Ok(())
}
