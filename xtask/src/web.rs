//! `build-web`: the browser bundle in `artifacts/web/`, from `infer` compiled to WebAssembly.
//!
//! Steps: check the model (and the gate), compile `infer` with its `wasm` feature for
//! `wasm32-unknown-unknown`, generate the JavaScript glue with wasm-bindgen (the CLI pinned to
//! the library version in Cargo.lock, installed under `target/tools` if missing), shrink with
//! wasm-opt when binaryen is installed, and stage the page next to it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{Context, bail};
use clap::Args;
use flate2::{Compression, write::GzEncoder};

use train::artifacts;

use crate::commands::{DataArgs, gate};
use crate::root;

/// The page's own files, copied from `web/` into the bundle.
const PAGE_FILES: [&str; 3] = ["index.html", "app.js", "style.css"];
const WASM_TARGET: &str = "wasm32-unknown-unknown";
/// What rustc emits for the target by default, plus SIMD (`.cargo/config.toml`); wasm-bindgen
/// drops the section that would let wasm-opt detect them.
const WASM_FEATURES: [&str; 7] = [
    "--enable-simd",
    "--enable-bulk-memory",
    "--enable-sign-ext",
    "--enable-nontrapping-float-to-int",
    "--enable-mutable-globals",
    "--enable-multivalue",
    "--enable-reference-types",
];

#[derive(Args, Debug)]
pub struct BuildWebArgs {
    /// Skip the accuracy gate (the model must still load).
    #[arg(long)]
    pub no_gate: bool,
    /// Minimum test accuracy the embedded model must reach.
    #[arg(long, default_value_t = 0.99)]
    pub target: f64,
    #[command(flatten)]
    pub data: DataArgs,
}

pub fn bundle_dir() -> PathBuf {
    root().join("artifacts/web")
}

pub fn build_web(args: &BuildWebArgs) -> anyhow::Result<()> {
    let model_path = root().join("artifacts/model.bin");
    let model = fs::read(&model_path).with_context(|| format!("cannot read {}", model_path.display()))?;
    if args.no_gate {
        infer::Model::from_bytes(&model, &burn::tensor::Device::flex())
            .with_context(|| format!("{} is not a usable model", model_path.display()))?;
    } else {
        gate(Some(model_path), args.target, &args.data.load()?)?;
    }

    let wasm = compile_wasm()?;
    let glue = tempfile::tempdir()?;
    run(Command::new(wasm_bindgen()?).args(["--target", "web", "--no-typescript", "--out-dir"]).arg(glue.path()).arg(&wasm))?;
    let bindgen_wasm = glue.path().join("infer_bg.wasm");
    match wasm_opt() {
        Some(opt) => {
            let optimised = glue.path().join("infer_opt.wasm");
            run(Command::new(opt).args(["-O3", "--strip-debug", "--strip-producers"]).args(WASM_FEATURES).arg(&bindgen_wasm).arg("-o").arg(&optimised))?;
            fs::rename(&optimised, &bindgen_wasm)?;
        }
        None => println!("wasm-opt not found (npm install, or Debian's binaryen): the wasm is not post-optimised"),
    }

    let mut files: Vec<(&str, Vec<u8>)> = Vec::new();
    for name in PAGE_FILES {
        files.push((name, fs::read(root().join("web").join(name)).with_context(|| format!("web/{name}"))?));
    }
    files.push(("infer.js", fs::read(glue.path().join("infer.js"))?));
    files.push(("infer_bg.wasm", fs::read(&bindgen_wasm)?));
    artifacts::replace_all(&bundle_dir(), &files)?;

    print_sizes(&files, model.len());
    println!("bundle written to {}", bundle_dir().display());
    Ok(())
}

/// Whether the bundle is missing or older than anything it is built from.
pub fn bundle_is_stale() -> bool {
    let newest_input = ["artifacts/model.bin", "web", "infer/src", "infer/Cargo.toml", "Cargo.lock"]
        .iter()
        .filter_map(|p| newest_mtime(&root().join(p)))
        .max();
    let built = fs::metadata(bundle_dir().join("infer_bg.wasm")).and_then(|m| m.modified()).ok();
    match (built, newest_input) {
        (Some(built), Some(input)) => input > built,
        _ => true,
    }
}

fn newest_mtime(path: &Path) -> Option<SystemTime> {
    let meta = fs::metadata(path).ok()?;
    if meta.is_dir() {
        fs::read_dir(path).ok()?.filter_map(|e| newest_mtime(&e.ok()?.path())).max()
    } else {
        meta.modified().ok()
    }
}

/// `cargo rustc` of `infer` as a cdylib for the browser; returns the `.wasm` path.
fn compile_wasm() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(root())
        .args(["rustc", "-p", "infer", "--profile", "wasm", "--target", WASM_TARGET, "--features", "wasm", "--crate-type", "cdylib"])
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("compiling infer for {WASM_TARGET} failed (is the target installed? `rustup target add {WASM_TARGET}`)");
    }
    Ok(crate::target_dir().join(WASM_TARGET).join("wasm/infer.wasm"))
}

/// The wasm-bindgen CLI matching the library in Cargo.lock: on PATH, in `target/tools`, or
/// installed there now.
pub fn wasm_bindgen() -> anyhow::Result<PathBuf> {
    let version = locked_version("wasm-bindgen")?;
    let local = crate::target_dir().join("tools/bin/wasm-bindgen");
    for candidate in [PathBuf::from("wasm-bindgen"), local.clone()] {
        if let Ok(out) = Command::new(&candidate).arg("--version").output()
            && String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1) == Some(version.as_str())
        {
            return Ok(candidate);
        }
    }
    println!("installing wasm-bindgen-cli {version} into target/tools (once)");
    // Not `--locked`: the CLI's published lock file pins a crate version the registry no
    // longer serves.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo)
        .args(["install", "wasm-bindgen-cli", "--version", &version, "--root"])
        .arg(crate::target_dir().join("tools")))?;
    Ok(local)
}

/// binaryen's wasm-opt: from the project's npm packages, else PATH.
fn wasm_opt() -> Option<PathBuf> {
    [root().join("node_modules/.bin/wasm-opt"), PathBuf::from("wasm-opt")]
        .into_iter()
        .find(|tool| Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success()))
}

/// The version of `package` that Cargo.lock pins.
fn locked_version(package: &str) -> anyhow::Result<String> {
    let lock = fs::read_to_string(root().join("Cargo.lock"))?;
    let needle = format!("name = \"{package}\"\nversion = \"");
    let start = lock.find(&needle).with_context(|| format!("{package} is not in Cargo.lock"))? + needle.len();
    Ok(lock[start..].split('"').next().unwrap_or_default().to_string())
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command.status().with_context(|| format!("cannot run {:?}", command.get_program()))?;
    if !status.success() {
        bail!("{:?} failed ({status})", command.get_program());
    }
    Ok(())
}

fn gzip_len(bytes: &[u8]) -> usize {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(bytes).expect("gzip into memory");
    encoder.finish().expect("gzip into memory").len()
}

fn print_sizes(files: &[(impl AsRef<str>, Vec<u8>)], weight_bytes: usize) {
    println!("\n{:<16} {:>12} {:>12}", "file", "bytes", "gzip -9");
    let (mut raw, mut zipped) = (0, 0);
    for (name, bytes) in files {
        let gz = gzip_len(bytes);
        println!("{:<16} {:>12} {:>12}", name.as_ref(), bytes.len(), gz);
        raw += bytes.len();
        zipped += gz;
    }
    println!("{:<16} {:>12} {:>12}", "bundle", raw, zipped);
    println!("of which weights (model.bin, embedded in the wasm): {weight_bytes} bytes\n");
}

/// Serves the bundle on a free loopback port and runs `web/tests/e2e.test.mjs` against it
/// with the first 20 test digits.
pub fn end_to_end(mnist: &train::data::Mnist) -> anyhow::Result<()> {
    let digits: Vec<serde_json::Value> = (0..20)
        .map(|i| serde_json::json!({ "label": mnist.test.labels[i], "pixels": mnist.test.image(i) }))
        .collect();
    let fixture = tempfile::NamedTempFile::new()?;
    fs::write(fixture.path(), serde_json::to_vec(&digits)?)?;
    with_server(|url| {
        run(Command::new("node")
            .current_dir(root())
            .args(["--test", "--test-reporter=tap", "web/tests/e2e.test.mjs"])
            .env("BASE_URL", url)
            .env("DIGITS_JSON", fixture.path()))
    })
}

/// `bench-web`: latency in headless Chromium (`web/tests/bench.mjs`), then the bundle sizes.
pub fn bench_web(args: &BuildWebArgs) -> anyhow::Result<()> {
    if bundle_is_stale() {
        build_web(args)?;
    }
    with_server(|url| run(Command::new("node").current_dir(root()).arg("web/tests/bench.mjs").env("BASE_URL", url)))?;
    let files: Vec<(String, Vec<u8>)> = fs::read_dir(bundle_dir())?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().is_file())
        .map(|entry| Ok((entry.file_name().to_string_lossy().into_owned(), fs::read(entry.path())?)))
        .collect::<std::io::Result<_>>()?;
    print_sizes(&files, fs::metadata(root().join("artifacts/model.bin"))?.len() as usize);
    Ok(())
}

/// Runs `work` with the URL of the bundle served on a free loopback port.
fn with_server(work: impl FnOnce(&str) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let server = crate::serve::Background::start(bundle_dir())?;
    work(&server.url)
}

/// Everything the browser build and its test need beyond Rust: the npm tools (wasm-opt,
/// playwright-core) and the pinned wasm-bindgen CLI. Says what is still missing.
pub fn setup() -> anyhow::Result<()> {
    run(Command::new("npm").current_dir(root()).args(["ci", "--no-audit", "--no-fund"]))?;
    let bindgen = wasm_bindgen()?;
    println!("wasm-bindgen: {}", bindgen.display());
    match wasm_opt() {
        Some(opt) => println!("wasm-opt: {}", opt.display()),
        None => println!("wasm-opt: not found (bundles will be larger)"),
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if Path::new(&chromium).is_file() {
        println!("chromium: {chromium}");
    } else {
        println!("chromium: not found at {chromium}; the browser test needs it (Debian: apt-get install chromium)");
    }
    Ok(())
}
