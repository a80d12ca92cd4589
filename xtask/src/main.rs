//! `cargo xtask <command>`: the one entry point for training, evaluation and benchmarks.
//!
//! Each command is a thin layer over the crate that owns the work (`train`, `infer`); this
//! binary parses arguments, resolves paths against the repository root and sets up threads.
//! Built without its `ml` feature (as `cargo xtask` builds it), it holds no burn: the page,
//! the server, the worker and the checks run here, and every other command runs in the build
//! with it (`full_build`).

mod args;
mod artifacts;
mod bundled;
mod checks;
mod edge;
mod fuzz;
mod load;
mod scores;
mod serve;
mod server;
mod setup;
mod tools;
mod web;

#[cfg(not(feature = "ml"))]
mod full_build;

#[cfg(feature = "ml")]
mod bench;
#[cfg(feature = "ml")]
mod embedded;
#[cfg(feature = "ml")]
mod eval;
#[cfg(feature = "ml")]
mod export;
#[cfg(feature = "ml")]
mod package;
#[cfg(feature = "ml")]
mod photos;
#[cfg(feature = "ml")]
mod predict;
#[cfg(feature = "ml")]
mod reproduce;
#[cfg(feature = "ml")]
mod test;
#[cfg(feature = "ml")]
mod training;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "MNIST pipeline: train, evaluate, ship to the browser, benchmark"
)]
#[cfg_attr(not(feature = "ml"), command(after_help = FULL_BUILD_COMMANDS))]
struct Cli {
    /// Worker threads for the CPU backends (default: all cores). Part of what makes a run
    /// reproducible: the same seed and thread count give the same model bytes.
    #[arg(long, global = true, value_parser = args::at_least_one)]
    // Checked here too, though only the full build's commands use it.
    #[cfg_attr(not(feature = "ml"), allow(dead_code))]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

/// Every command this build holds. The build without burn hands the full build's over when
/// clap does not find them here (see `main`).
#[derive(Subcommand)]
enum Command {
    #[cfg(feature = "ml")]
    #[command(flatten)]
    WithBurn(BurnCommand),
    #[command(flatten)]
    Anywhere(LeanCommand),
}

/// The commands that train, score or run the burn model: the full build's alone. The build
/// without burn lists them in its `--help` from [`FULL_BUILD_COMMANDS`].
#[cfg(feature = "ml")]
#[derive(Subcommand)]
enum BurnCommand {
    /// Train on augmented MNIST, gate on test accuracy, write artifacts/.
    Train(Box<training::TrainArgs>),
    /// Train the committed recipe from scratch and check it gives the committed model.
    Reproduce(reproduce::ReproduceArgs),
    /// Score a model file on all 10,000 test images.
    Eval(eval::EvalArgs),
    /// Measure training and inference throughput per backend (and PyTorch's, if installed).
    BenchTrain(bench::BenchArgs),
    /// Build and check a release of a model: web bundle, packaged crate, firmware, ONNX,
    /// safetensors, with a manifest and SHA256SUMS.
    Package(package::PackageArgs),
    /// Run the int8 model as Cortex-M4F firmware under QEMU on test digits, checked against
    /// native, and measure its flash and RAM.
    Embedded(embedded::EmbeddedArgs),
    /// Classify PNG/JPEG files with the committed model.
    Predict(predict::PredictArgs),
    /// Accuracy on MNIST test digits rendered as photos and scans, per kind of degradation.
    BenchPhotos(photos::BenchPhotosArgs),
    /// What CI runs: `check`, the committed model against the gate and re-derived from scratch,
    /// every workspace test, the page end to end in headless Chromium, the edge worker end to end,
    /// a one-epoch run through to a checked release, each fuzz target for a few seconds.
    Test(test::TestArgs),
}

/// The commands both builds hold: none of them needs burn.
#[derive(Subcommand)]
enum LeanCommand {
    /// Install up front what other commands install on first need (npm packages, the pinned
    /// CLIs, ONNX Runtime).
    Setup,
    /// Formatting, lints, and `infer` built without std (per feature, wasm32, a microcontroller).
    Check,
    /// Build the browser bundle (artifacts/web/) from the committed model.
    BuildWeb(web::BuildWebArgs),
    /// Serve the browser bundle, rebuilding it first if it is stale.
    Serve(serve::ServeArgs),
    /// Requests per second and latency of `serve` under load on loopback, per bundle file.
    BenchServe(serve::BenchServeArgs),
    /// Measure classification latency and load time in headless Chromium, and bundle sizes.
    BenchWeb(web::BenchWebArgs),
    /// The Cloudflare worker: build it, run it locally, or deploy it.
    #[command(subcommand)]
    Edge(edge::EdgeCommand),
    /// Cold and warm request latency of the worker run locally.
    BenchEdge(edge::BenchEdgeArgs),
    /// Fuzz the parsers of outside bytes with libFuzzer (nightly, cargo-fuzz).
    Fuzz(fuzz::FuzzArgs),
}

/// [`BurnCommand`] as the build without burn lists it, after its own commands: each name and
/// the start of its summary (held to the full build's by a test). These names, and no others,
/// are handed over.
#[cfg(any(test, not(feature = "ml")))]
const FULL_BUILD_COMMANDS: &str = "\
Commands of the full build (with burn; built on first use, `cargo xtask <command> --help`):
  train         Train on augmented MNIST, gate on test accuracy, write artifacts/
  reproduce     Train the committed recipe from scratch and check it gives the committed model
  eval          Score a model file on all 10,000 test images
  bench-train   Measure training and inference throughput per backend
  package       Build and check a release of a model
  embedded      Run the int8 model as Cortex-M4F firmware under QEMU on test digits
  predict       Classify PNG/JPEG files with the committed model
  bench-photos  Accuracy on MNIST test digits rendered as photos and scans
  test          What CI runs";

/// Each command of [`FULL_BUILD_COMMANDS`] with the start of its summary.
#[cfg(any(test, not(feature = "ml")))]
fn full_build_commands() -> impl Iterator<Item = (&'static str, &'static str)> {
    FULL_BUILD_COMMANDS.lines().skip(1).map(|line| {
        let (name, summary) = line.trim().split_once(' ').expect("a name, then a summary");
        (name, summary.trim())
    })
}

/// Whether `name` is one of the commands the build without burn hands over.
#[cfg(not(feature = "ml"))]
fn is_full_build_command(name: &str) -> bool {
    full_build_commands().any(|(command, _)| command == name)
}

fn main() -> ExitCode {
    #[cfg(feature = "ml")]
    keep_freed_pages();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A command of the full build (`train ...`, or `help train`) is unknown here: that build
        // answers it. Any other unknown name gets clap's own error at once, rather than after
        // burn's build (minutes on a fresh clone).
        #[cfg(not(feature = "ml"))]
        Err(e)
            if matches!(
                e.get(clap::error::ContextKind::InvalidSubcommand),
                Some(clap::error::ContextValue::String(name)) if is_full_build_command(name)
            ) =>
        {
            return full_build::run();
        }
        Err(e) => e.exit(),
    };
    #[cfg(feature = "ml")]
    let threads = {
        let threads = cli.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if let Err(e) = rayon::ThreadPoolBuilder::new().num_threads(threads).build_global() {
            eprintln!("error: cannot start {threads} threads: {e}");
            return ExitCode::FAILURE;
        }
        threads
    };
    let result = match cli.command {
        #[cfg(feature = "ml")]
        Command::WithBurn(command) => match command {
            BurnCommand::Train(args) => training::train(*args, threads),
            BurnCommand::Reproduce(args) => reproduce::reproduce(&args),
            BurnCommand::Eval(args) => eval::eval(args),
            BurnCommand::BenchTrain(args) => bench::run(args, threads),
            BurnCommand::Package(args) => package::package(&args),
            BurnCommand::Embedded(args) => embedded::embedded(&args),
            BurnCommand::Predict(args) => predict::predict(args),
            BurnCommand::BenchPhotos(args) => photos::bench_photos(args),
            BurnCommand::Test(args) => test::test(args, threads),
        },
        Command::Anywhere(command) => match command {
            LeanCommand::Setup => setup::setup(),
            LeanCommand::Check => checks::check(true),
            LeanCommand::BuildWeb(args) => web::build_web(&args),
            LeanCommand::Serve(args) => serve::serve(args),
            LeanCommand::BenchServe(args) => serve::bench_serve(&args),
            LeanCommand::BenchWeb(args) => web::bench_web(&args),
            LeanCommand::Edge(command) => edge::edge(command),
            LeanCommand::BenchEdge(args) => edge::bench_edge(args),
            LeanCommand::Fuzz(args) => fuzz::fuzz(&args),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Only this build asks for the other, so the handover happens at most once.
        #[cfg(not(feature = "ml"))]
        Err(e) if e.is::<full_build::Needed>() => full_build::run(),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The repository root, found once when the command starts, so commands behave the same from
/// any working directory.
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
#[cfg(feature = "ml")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h, the same index in its v2 and v3.
#[cfg(feature = "ml")]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed pages in the process for good. By default mimalloc v3 hands back pages left
/// free for a second, and a later training step faults them in again, zeroed by the kernel:
/// 74,000 page faults in 2 epochs of 20,000 images against 700 without it, and 3-4% of the
/// wall time. PyTorch's mimalloc 2.0 in `bench-train` already keeps them (1 fault in 150 steps).
#[cfg(feature = "ml")]
fn keep_freed_pages() {
    // SAFETY: mi_option_set stores a value in mimalloc's option table; any index below
    // `_mi_option_last` and any value are valid, and later allocations read it.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

#[cfg(all(test, feature = "ml"))]
mod tests {
    use clap::Subcommand;

    use super::{BurnCommand, MI_OPTION_PURGE_DELAY, full_build_commands};

    #[test]
    fn the_build_without_burn_lists_every_command_it_hands_over() {
        let listed: Vec<(&str, &str)> = full_build_commands().collect();
        let full_build = BurnCommand::augment_subcommands(clap::Command::new("xtask"));
        let commands: Vec<&clap::Command> = full_build.get_subcommands().collect();
        assert_eq!(
            listed.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
            commands.iter().map(|command| command.get_name()).collect::<Vec<_>>()
        );
        for ((name, summary), command) in listed.iter().zip(&commands) {
            let about = command.get_about().map(ToString::to_string).unwrap_or_default();
            assert!(about.starts_with(summary), "`{name}` is listed as {summary:?}, but its summary is {about:?}");
        }
    }

    #[test]
    fn the_option_set_at_start_is_mimallocs_purge_delay() {
        // Nothing in the test binary has set it: an index that slipped to another option in a
        // mimalloc update would read that option's default (0, 1, ...), not purge_delay's 1000 ms.
        // SAFETY: reads mimalloc's option table.
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }, 1000);
    }
}
