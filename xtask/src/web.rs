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
use clap::{Args, ValueEnum};
use flate2::{Compression, write::GzEncoder};

use infer::lean::{Precision, Weights};

use crate::args::{self, DataArgs, GATE, check_gate, committed_model};
use crate::artifacts;
use crate::root;
use crate::scores::Scorer;
use crate::server::Background;
use crate::tools::{cargo, chromium, npm_packages, run, rust_target, wasm_bindgen, wasm_opt};

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

/// What runs the model in the page.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebBackend {
    /// infer's lean model: no burn in the bundle, kernels for exactly this network.
    Lean,
    /// infer's int8 model: int8 weights computed as int8 where they lie in the module, with
    /// no f32 copy (less memory; slower than the lean model's f32 kernels, see docs/release.md).
    Int8Kernels,
    /// burn's flex CPU backend with WASM SIMD, over model.bin (f32).
    Flex,
    /// burn's ndarray CPU backend, over model.bin (f32).
    Ndarray,
    /// burn's wgpu backend on WebGPU, over model.bin (f32); the page falls back to flex (and
    /// says so) where the browser has no WebGPU.
    Wgpu,
}

/// How the lean model's weights are stored.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightsChoice {
    /// The smallest whose test accuracy is within 0.05 points of model.bin's.
    Auto,
    F32,
    F16,
    Int8,
}

/// The most test accuracy (in percentage points) that storing weights smaller may cost.
const MAX_ACCURACY_LOSS_POINTS: f64 = 0.05;

#[derive(Args, Debug, Clone)]
pub struct BuildWebArgs {
    /// Skip the accuracy gate (the model must still load).
    #[arg(long)]
    pub no_gate: bool,
    /// Minimum test accuracy the shipped weights must reach.
    #[arg(long, default_value_t = GATE, value_parser = args::accuracy)]
    pub target: f64,
    #[arg(long, value_enum, default_value_t = WebBackend::Lean)]
    pub backend: WebBackend,
    /// Weights of the lean backend; the burn backends always carry model.bin (f32).
    #[arg(long, value_enum, default_value_t = WeightsChoice::Auto)]
    pub weights: WeightsChoice,
    #[command(flatten)]
    pub data: DataArgs,
    /// The model to build from [default: artifacts/model.bin].
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
}

impl BuildWebArgs {
    /// The default build, gated or not.
    pub fn default_build(no_gate: bool) -> Self {
        BuildWebArgs {
            no_gate,
            target: GATE,
            backend: WebBackend::Lean,
            weights: WeightsChoice::Auto,
            data: DataArgs::default(),
            model: None,
        }
    }

    /// What of these arguments decides the bundle's contents (the gate only decides whether
    /// there is one), as `build_bundle` records it beside the bundle, so that `serve` rebuilds
    /// a bundle that was built for another backend or other weights.
    fn stamp(&self) -> String {
        format!("backend {:?}, weights {:?}\n", self.backend, self.weights)
    }

    /// Whether the build must know test accuracies: for the gate, or to choose the weights.
    fn needs_scores(&self) -> bool {
        !self.no_gate || (self.backend == WebBackend::Lean && self.weights == WeightsChoice::Auto)
    }
}

pub fn bundle_dir() -> PathBuf {
    root().join("artifacts/web")
}

pub fn build_web(args: &BuildWebArgs) -> anyhow::Result<()> {
    let mut scorer = Scorer::new(args.data.clone())?;
    build_bundle(args, &mut scorer, &bundle_dir())?;
    scorer.save()
}

/// A bundle as written: its files, and what of the wasm is weights.
pub struct Bundle {
    /// e.g. "lean, int8 weights".
    pub label: String,
    pub files: Vec<(String, Vec<u8>)>,
    pub weights: Vec<u8>,
}

/// Builds the bundle `args` describe into `out` (replacing it whole) and prints its sizes;
/// `scorer` knows or measures the test accuracies the gate and the choice of weights need.
pub fn build_bundle(args: &BuildWebArgs, scorer: &mut Scorer, out: &Path) -> anyhow::Result<Bundle> {
    let model_path = args.model.clone().unwrap_or_else(committed_model);
    let model_bin = fs::read(&model_path).with_context(|| format!("cannot read {}", model_path.display()))?;
    // Read as the lean model and the worker read it (no burn needed), which checks every
    // tensor's shape and that it holds no NaN or infinity.
    let weights =
        Weights::from_record(&model_bin).with_context(|| format!("{} is not a usable model", model_path.display()))?;
    let reference = if args.needs_scores() { Some(scorer.accuracy("model.bin", &model_bin)?) } else { None };
    if let (false, Some(accuracy)) = (args.no_gate, reference) {
        check_gate(accuracy, args.target)?;
    }

    let (weights_path, weights, label) = match args.backend {
        WebBackend::Lean | WebBackend::Int8Kernels => {
            let (precision, bytes) = lean_weights(&weights, args, scorer, reference)?;
            let path = crate::target_dir().join(format!("web/weights-{}.bin", precision.name()));
            artifacts::write_atomic(&path, &bytes)?;
            println!("lean weights: {} (`cargo xtask eval --model {}` scores them)", path.display(), path.display());
            (path, bytes, format!("lean, {} weights", precision.name()))
        }
        backend => (model_path, model_bin, format!("burn {}, f32 weights", format!("{backend:?}").to_lowercase())),
    };

    let wasm = compile_wasm(args.backend, &weights_path)?;
    let glue = tempfile::tempdir()?;
    run(Command::new(wasm_bindgen()?)
        .args(["--target", "web", "--no-typescript", "--out-dir"])
        .arg(glue.path())
        .arg(&wasm))?;
    let bindgen_wasm = glue.path().join("infer_bg.wasm");
    // wasm-opt comes with the npm packages; without Node the page still works, a little larger.
    if let Err(error) = npm_packages(root()) {
        println!("{error:#}");
    }
    match wasm_opt() {
        Some(opt) => {
            let optimised = glue.path().join("infer_opt.wasm");
            run(Command::new(opt)
                .args(["-O3", "--strip-debug", "--strip-producers"])
                .args(WASM_FEATURES)
                .arg(&bindgen_wasm)
                .arg("-o")
                .arg(&optimised))?;
            fs::rename(&optimised, &bindgen_wasm)?;
        }
        None => println!("wasm-opt not found (npm install, or Debian's binaryen): the wasm is not post-optimised"),
    }

    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for name in PAGE_FILES {
        files.push((name.into(), fs::read(root().join("web").join(name)).with_context(|| format!("web/{name}"))?));
    }
    files.push(("infer.js".into(), fs::read(glue.path().join("infer.js"))?));
    files.push(("infer_bg.wasm".into(), fs::read(&bindgen_wasm)?));
    // Each file also compressed once here, for the server to send as it is: compressing the
    // wasm per request held it to about a hundred responses a second.
    let compressed = files
        .iter()
        .flat_map(|(name, bytes)| [(format!("{name}.gz"), gzip(bytes)), (format!("{name}.br"), brotli(bytes))]);
    // Cloudflare compresses the worker's assets itself: the edge deploys the page alone.
    let edge_ignores = (".assetsignore".to_string(), format!("*.br\n*.gz\n{STAMP}\n.assetsignore\n").into_bytes());
    let written: Vec<_> = files.iter().cloned().chain(compressed).chain([edge_ignores]).collect();
    artifacts::replace_all(out, &written)?;
    // Written last: a bundle without it counts as stale.
    artifacts::write_atomic(&out.join(STAMP), args.stamp().as_bytes())?;

    let bundle = Bundle { label, files, weights };
    print_sizes(&bundle);
    println!("bundle written to {}", out.display());
    Ok(bundle)
}

/// The lean weights to ship: the requested precision, or for `auto` the smallest that keeps
/// the test accuracy within [`MAX_ACCURACY_LOSS_POINTS`] of the burn model's. Weights scored
/// here are the exact bytes the bundle embeds.
fn lean_weights(
    weights: &Weights,
    args: &BuildWebArgs,
    scorer: &mut Scorer,
    reference: Option<f64>,
) -> anyhow::Result<(Precision, Vec<u8>)> {
    let candidates: &[Precision] = match args.weights {
        _ if args.backend == WebBackend::Int8Kernels => &[Precision::Int8],
        WeightsChoice::Auto => &[Precision::Int8, Precision::F16, Precision::F32],
        WeightsChoice::F32 => &[Precision::F32],
        WeightsChoice::F16 => &[Precision::F16],
        WeightsChoice::Int8 => &[Precision::Int8],
    };
    for &precision in candidates {
        let bytes = weights.to_bytes(precision);
        let Some(reference) = reference else {
            return Ok((precision, bytes));
        };
        let accuracy = scorer.accuracy(&format!("{} lean weights", precision.name()), &bytes)?;
        let change = 100.0 * (accuracy - reference);
        println!("{} lean weights: {} bytes, {change:+.2} points against model.bin", precision.name(), bytes.len());
        if !args.no_gate {
            check_gate(accuracy, args.target)?;
        }
        if args.weights != WeightsChoice::Auto || change >= -MAX_ACCURACY_LOSS_POINTS {
            return Ok((precision, bytes));
        }
    }
    bail!("no weight precision keeps the test accuracy within {MAX_ACCURACY_LOSS_POINTS} points")
}

/// The file beside the bundle that records the arguments it was built with.
const STAMP: &str = "build-args.txt";

/// Whether the bundle is missing, was built with other arguments than `args`, or is older
/// than anything it is built from.
pub fn bundle_is_stale(args: &BuildWebArgs) -> bool {
    is_stale(&bundle_dir(), args)
}

fn is_stale(bundle: &Path, args: &BuildWebArgs) -> bool {
    if fs::read_to_string(bundle.join(STAMP)).ok() != Some(args.stamp()) {
        return true;
    }
    let newest_input = ["web", "infer/src", "infer/Cargo.toml", "Cargo.lock"]
        .iter()
        .map(|p| root().join(p))
        .chain([committed_model()])
        .filter_map(|p| newest_mtime(&p))
        .max();
    let built = fs::metadata(bundle.join("infer_bg.wasm")).and_then(|m| m.modified()).ok();
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

/// `cargo rustc` of `infer` as a cdylib for the browser, embedding `weights`; returns the
/// `.wasm` path.
fn compile_wasm(backend: WebBackend, weights: &Path) -> anyhow::Result<PathBuf> {
    rust_target(WASM_TARGET)?;
    let features = match backend {
        WebBackend::Lean => "wasm",
        WebBackend::Int8Kernels => "wasm int8-kernels",
        WebBackend::Flex => "wasm flex",
        WebBackend::Ndarray => "wasm ndarray",
        WebBackend::Wgpu => "wasm wgpu",
    };
    let status = cargo()
        .args(["rustc", "-p", "infer", "--profile", "wasm", "--target", WASM_TARGET, "--no-default-features"])
        .args(["--features", features, "--crate-type", "cdylib"])
        .env("INFER_WEIGHTS", weights)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("compiling infer for {WASM_TARGET} failed");
    }
    Ok(crate::target_dir().join(WASM_TARGET).join("wasm/infer.wasm"))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(bytes).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

fn gzip_len(bytes: &[u8]) -> usize {
    gzip(bytes).len()
}

/// Brotli at its best quality (11) and a 4 MiB window, larger than any file of the bundle.
fn brotli(bytes: &[u8]) -> Vec<u8> {
    let mut compressed = Vec::new();
    let params = brotli::enc::BrotliEncoderParams { quality: 11, lgwin: 22, ..Default::default() };
    brotli::BrotliCompress(&mut &bytes[..], &mut compressed, &params).expect("brotli into memory");
    compressed
}

fn print_sizes(bundle: &Bundle) {
    println!("\n{:<16} {:>12} {:>12}", "file", "bytes", "gzip -9");
    let (mut raw, mut zipped) = (0, 0);
    for (name, bytes) in &bundle.files {
        let gz = gzip_len(bytes);
        println!("{:<16} {:>12} {:>12}", name, bytes.len(), gz);
        raw += bytes.len();
        zipped += gz;
    }
    println!("{:<16} {:>12} {:>12}", "bundle", raw, zipped);
    println!(
        "{:<16} {:>12} {:>12}  ({}, embedded in the wasm)\n",
        "of which weights",
        bundle.weights.len(),
        gzip_len(&bundle.weights),
        bundle.label
    );
}

/// Serves the bundle on a free loopback port and runs `web/tests/e2e.test.mjs` against it
/// with the first 20 test digits.
#[cfg(feature = "ml")]
pub fn end_to_end(test: &train::data::Split) -> anyhow::Result<()> {
    let digits: Vec<serde_json::Value> =
        (0..20).map(|i| serde_json::json!({ "label": test.labels[i], "pixels": test.image(i) })).collect();
    let fixture = tempfile::NamedTempFile::new()?;
    fs::write(fixture.path(), serde_json::to_vec(&digits)?)?;
    npm_packages(root())?;
    let chromium = chromium()?;
    with_server(|url| {
        run(Command::new("node")
            .current_dir(root())
            .args(["--test", "--test-reporter=tap", "web/tests/e2e.test.mjs"])
            .env("CHROMIUM", &chromium)
            .env("BASE_URL", url)
            .env("DIGITS_JSON", fixture.path()))
    })
}

/// A bundle `bench-web` measures: a backend, and for the lean one its weights.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    LeanInt8,
    /// int8 weights computed as int8 (`--backend int8-kernels`).
    Int8Kernels,
    LeanF16,
    LeanF32,
    Flex,
    Ndarray,
    /// In headless Chromium without a GPU, this measures its fallback to flex.
    Wgpu,
}

impl Variant {
    fn build(self) -> (WebBackend, WeightsChoice) {
        match self {
            Variant::LeanInt8 => (WebBackend::Lean, WeightsChoice::Int8),
            Variant::Int8Kernels => (WebBackend::Int8Kernels, WeightsChoice::Int8),
            Variant::LeanF16 => (WebBackend::Lean, WeightsChoice::F16),
            Variant::LeanF32 => (WebBackend::Lean, WeightsChoice::F32),
            Variant::Flex => (WebBackend::Flex, WeightsChoice::F32),
            Variant::Ndarray => (WebBackend::Ndarray, WeightsChoice::F32),
            Variant::Wgpu => (WebBackend::Wgpu, WeightsChoice::F32),
        }
    }

    fn name(self) -> String {
        self.to_possible_value().expect("no variant is skipped").get_name().to_string()
    }
}

#[derive(Args, Debug)]
pub struct BenchWebArgs {
    /// Bundles to build and measure, in order [default: all].
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Variant::value_variants().to_vec())]
    pub variants: Vec<Variant>,
    /// Timed classifications per measurement, after warm-up.
    #[arg(long, default_value_t = 300, value_parser = args::at_least_one)]
    pub runs: usize,
}

/// `bench-web`: builds each variant into `target/web-bench/`, measures it in headless
/// Chromium (`web/tests/bench.mjs`), and prints one table for all of them.
pub fn bench_web(args: &BenchWebArgs) -> anyhow::Result<()> {
    // Every variant names its weights and skips the gate, so nothing is scored.
    let mut scorer = Scorer::new(DataArgs::default())?;
    npm_packages(root())?;
    let chromium = chromium()?;
    let mut rows = Vec::new();
    for &variant in &args.variants {
        let (backend, weights) = variant.build();
        let variant = variant.name();
        let build = BuildWebArgs { backend, weights, ..BuildWebArgs::default_build(true) };
        let dir = crate::target_dir().join("web-bench").join(&variant);
        let bundle = build_bundle(&build, &mut scorer, &dir)?;
        let server = Background::start(dir)?;
        let output = Command::new("node")
            .current_dir(root())
            .arg("web/tests/bench.mjs")
            .env("BASE_URL", &server.url)
            .env("CHROMIUM", &chromium)
            .env("RUNS", args.runs.to_string())
            .stderr(std::process::Stdio::inherit())
            .output()
            .context("cannot run node")?;
        if !output.status.success() {
            bail!("web/tests/bench.mjs failed for {variant} ({})", output.status);
        }
        let timing: serde_json::Value = serde_json::from_slice(&output.stdout).context("bench.mjs printed no JSON")?;
        rows.push((variant.clone(), bundle, timing));
    }

    println!("\nheadless Chromium, {} runs after warm-up; sizes in bytes, gzip -9", args.runs);
    println!(
        "{:<12} {:>10} {:>9} {:>9} {:>9} {:>10} {:>13} {:>13} {:>13} {:>10}",
        "variant",
        "wasm",
        "code gz",
        "weights gz",
        "bundle gz",
        "wasm mem",
        "model median",
        "model p10",
        "canvas median",
        "first"
    );
    for (variant, bundle, timing) in rows {
        let size =
            |name: &str| bundle.files.iter().find(|(n, _)| n == name).map(|(_, b)| b.as_slice()).unwrap_or_default();
        let wasm = size("infer_bg.wasm");
        let bundle_gz: usize = bundle.files.iter().map(|(_, b)| gzip_len(b)).sum();
        let weights_gz = gzip_len(&bundle.weights);
        let ms =
            |path: &str| timing.pointer(path).and_then(|v| v.as_f64()).map_or("?".into(), |v| format!("{v:.3} ms"));
        // The module's linear memory after the runs: the weights, any decode of them, the heap.
        let memory = timing.pointer("/wasmMemoryBytes").and_then(|v| v.as_u64()).map_or("?".into(), |b| b.to_string());
        println!(
            "{:<12} {:>10} {:>9} {:>9} {:>9} {:>10} {:>13} {:>13} {:>13} {:>10}",
            variant,
            wasm.len(),
            gzip_len(wasm).saturating_sub(weights_gz),
            weights_gz,
            bundle_gz,
            memory,
            ms("/model/median"),
            ms("/model/p10"),
            ms("/canvas/median"),
            ms("/firstPredictionMs"),
        );
    }
    Ok(())
}

/// Runs `work` with the URL of the bundle served on a free loopback port.
#[cfg(feature = "ml")]
fn with_server(work: impl FnOnce(&str) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let server = Background::start(bundle_dir())?;
    work(&server.url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_built_for_other_flags_is_stale() {
        let bundle = tempfile::tempdir().unwrap();
        let default = BuildWebArgs::default_build(false);
        // Newer than every input, as a bundle just built is.
        fs::write(bundle.path().join("infer_bg.wasm"), b"\0asm").unwrap();
        assert!(is_stale(bundle.path(), &default), "a bundle without its stamp is stale");

        fs::write(bundle.path().join(STAMP), default.stamp()).unwrap();
        assert!(!is_stale(bundle.path(), &default));
        assert!(!is_stale(bundle.path(), &BuildWebArgs::default_build(true)), "the gate does not shape the bundle");
        let f16 = BuildWebArgs { weights: WeightsChoice::F16, ..BuildWebArgs::default_build(false) };
        assert!(is_stale(bundle.path(), &f16));
        let flex = BuildWebArgs { backend: WebBackend::Flex, ..BuildWebArgs::default_build(false) };
        assert!(is_stale(bundle.path(), &flex));
    }
}
