//! `cargo xtask <command>`: the one entry point for training, evaluation and benchmarks.
//!
//! Each command is a thin layer over the crate that owns the work (`train`, `infer`); this
//! binary parses arguments, resolves paths against the repository root and sets up threads.

mod args;
mod bench;
mod checks;
mod edge;
mod eval;
mod predict;
mod reproduce;
mod scores;
mod serve;
mod server;
mod setup;
mod test;
mod tools;
mod training;
mod web;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "MNIST pipeline: train, evaluate, ship to the browser, benchmark")]
struct Cli {
    /// Worker threads for the CPU backends (default: all cores). Part of what makes a run
    /// reproducible: the same seed and thread count give the same model bytes.
    #[arg(long, global = true, value_parser = args::at_least_one)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train on augmented MNIST, gate on test accuracy, write artifacts/.
    Train(training::TrainArgs),
    /// Train the committed recipe from scratch and check it gives the committed model.
    Reproduce(reproduce::ReproduceArgs),
    /// Score a model file on all 10,000 test images.
    Eval(eval::EvalArgs),
    /// Measure training and inference throughput per backend (and PyTorch's, if installed).
    BenchTrain(bench::BenchArgs),
    /// Install the tools the browser build and its test use (npm packages, wasm-bindgen-cli).
    Setup,
    /// Formatting, lints, and `infer` built without std (per feature, wasm32, a microcontroller).
    Check,
    /// Build the browser bundle (artifacts/web/) from the committed model.
    BuildWeb(web::BuildWebArgs),
    /// Serve the browser bundle, rebuilding it first if it is stale.
    Serve(serve::ServeArgs),
    /// Measure classification latency and load time in headless Chromium, and bundle sizes.
    BenchWeb(web::BenchWebArgs),
    /// The Cloudflare worker: build it, run it locally, or deploy it.
    #[command(subcommand)]
    Edge(edge::EdgeCommand),
    /// Cold and warm request latency of the worker run locally.
    BenchEdge(edge::BenchEdgeArgs),
    /// Classify PNG/JPEG files with the committed model.
    Predict(predict::PredictArgs),
    /// What CI runs: `check`, the committed model against the gate and re-derived from scratch,
    /// every workspace test, the page end to end in headless Chromium, the edge worker end to end.
    Test(test::TestArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = cli.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if let Err(e) = rayon::ThreadPoolBuilder::new().num_threads(threads).build_global() {
        eprintln!("error: cannot start {threads} threads: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Train(args) => training::train(args, threads),
        Command::Reproduce(args) => reproduce::reproduce(&args),
        Command::Eval(args) => eval::eval(args),
        Command::BenchTrain(args) => bench::run(args, threads),
        Command::Setup => setup::setup(),
        Command::Check => checks::check(),
        Command::BuildWeb(args) => web::build_web(&args),
        Command::Serve(args) => serve::serve(args),
        Command::BenchWeb(args) => web::bench_web(&args),
        Command::Predict(args) => predict::predict(args),
        Command::Edge(command) => edge::edge(command),
        Command::BenchEdge(args) => edge::bench_edge(args),
        Command::Test(args) => test::test(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The repository root, so commands behave the same from any working directory.
/// The repository root, found once when the command starts.
pub fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        find_root().unwrap_or_else(|| {
            eprintln!("error: run `cargo xtask` inside the repository (no xtask/Cargo.toml above the current folder)");
            std::process::exit(2)
        })
    })
}

/// The parent of xtask's manifest folder as `cargo run` reports it at run time, else the
/// nearest folder above the current one that holds `xtask/Cargo.toml`. Not the manifest folder
/// fixed at build time: clones sharing one `CARGO_TARGET_DIR` share one xtask binary.
fn find_root() -> Option<PathBuf> {
    let is_root = |dir: &Path| dir.join("xtask/Cargo.toml").is_file();
    let from_cargo =
        std::env::var_os("CARGO_MANIFEST_DIR").and_then(|dir| Some(PathBuf::from(dir).parent()?.to_path_buf()));
    if let Some(dir) = from_cargo.filter(|dir| is_root(dir)) {
        return Some(dir);
    }
    let here = std::env::current_dir().ok()?;
    here.ancestors().find(|dir| is_root(dir)).map(Path::to_path_buf)
}

/// Cargo's build folder: `$CARGO_TARGET_DIR` when set (relative to the root), else `target/`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root().join(dir),
        _ => root().join("target"),
    }
}

// glibc hands every large freed activation back to the kernel and faults it in again on the
// next step; mimalloc keeps them, which makes a training step about 15% faster here.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
