//! `fuzz`: runs the libFuzzer targets in `fuzz/` (cargo-fuzz on a nightly toolchain, both
//! installed when missing) and prints, per target, what it ran and found.
//!
//! Each target starts from its committed seeds (`fuzz/seeds/<target>/`) and from what earlier
//! runs found (`target/fuzz/corpus/<target>/`); the weights target also from the committed
//! model and its lean encodings. A run fails on a crash, a panic, one allocation over 128 MiB
//! (the targets' own allocator aborts, see `fuzz/src/lib.rs`), a process over
//! [`RSS_LIMIT_MB`], or an input that takes over [`TIMEOUT_S`]; the input that did it is kept
//! in `target/fuzz/artifacts/<target>/`.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use infer::lean::{Precision, Weights};

use crate::args::at_least_one;
use crate::{root, target_dir, tools};

/// The largest a target's process may grow, in MiB.
pub const RSS_LIMIT_MB: u64 = 1024;
/// The longest one input may take, in seconds.
pub const TIMEOUT_S: u64 = 10;

#[derive(Args, Debug)]
pub struct FuzzArgs {
    /// The target to run; all of them, one after another, when left out.
    #[arg(value_enum)]
    target: Option<Target>,
    /// Stop each target after this many seconds.
    #[arg(long, default_value_t = 60, value_parser = at_least_one)]
    seconds: usize,
    /// Stop each target after this many executions, if that comes first.
    #[arg(long, value_parser = at_least_one)]
    runs: Option<usize>,
    /// Build the targets without optimisation: a quarter of the cold build (3 min against 12
    /// on a slow machine), at a fraction of the executions a second. For runs of seconds.
    #[arg(long)]
    dev: bool,
}

impl FuzzArgs {
    /// Every target for a few seconds, built without optimisation: what CI runs, so the
    /// targets keep building and their seeds keep passing.
    #[cfg(feature = "ml")]
    pub fn brief() -> Self {
        FuzzArgs { target: None, seconds: 5, runs: None, dev: true }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// The MNIST file reader, plain and gzipped.
    Idx,
    /// `model.bin` into the burn and the lean model; the lean weights format.
    Weights,
    /// `ink_from_rgba`, `ink_from_grey` and `to_mnist` at any size.
    Preprocess,
    /// The edge worker's request body parser and its size bound.
    EdgeRequest,
    /// The browser API's entry points, natively.
    WasmApi,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Idx => "idx",
            Target::Weights => "weights",
            Target::Preprocess => "preprocess",
            Target::EdgeRequest => "edge_request",
            Target::WasmApi => "wasm_api",
        }
    }

    /// The longest input tried: long enough for a whole valid input of the kind (the weights
    /// files are up to 1 MB; the other targets reach every branch with small images).
    fn max_len(self) -> usize {
        match self {
            Target::Weights => 1_100_000,
            Target::Idx => 4096,
            Target::Preprocess | Target::EdgeRequest | Target::WasmApi => 64 << 10,
        }
    }
}

/// What one target's run did.
struct Outcome {
    target: Target,
    executions: u64,
    seconds: f64,
    corpus: usize,
    findings: usize,
}

pub fn fuzz(args: &FuzzArgs) -> anyhow::Result<()> {
    let cargo_fuzz = tools::cargo_fuzz()?;
    // Built before the clock starts, all targets at once (one build of their dependencies).
    tools::run(&mut cargo_fuzz_command(&cargo_fuzz, "build", args.dev)?)?;
    let targets = match args.target {
        Some(target) => vec![target],
        None => Target::value_variants().to_vec(),
    };
    let mut outcomes = Vec::new();
    for &target in &targets {
        outcomes.push(run(&cargo_fuzz, target, args)?);
    }
    println!("\n| target | executions | seconds | executions/s | corpus | findings |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for o in &outcomes {
        let rate = o.executions as f64 / o.seconds.max(1e-9);
        println!(
            "| {} | {} | {:.0} | {rate:.0} | {} | {} |",
            o.target.name(),
            o.executions,
            o.seconds,
            o.corpus,
            o.findings
        );
    }
    let found: Vec<_> = outcomes.iter().filter(|o| o.findings > 0).map(|o| o.target.name()).collect();
    if !found.is_empty() {
        bail!("the fuzzer found inputs that fail {} (kept in {})", found.join(", "), artifacts_dir().display());
    }
    Ok(())
}

fn run(cargo_fuzz: &Path, target: Target, args: &FuzzArgs) -> anyhow::Result<Outcome> {
    let name = target.name();
    let corpus = target_dir().join("fuzz/corpus").join(name);
    let artifacts = artifacts_dir().join(name);
    fs::create_dir_all(&corpus)?;
    fs::create_dir_all(&artifacts)?;
    if target == Target::Weights {
        seed_weights(&corpus)?;
    }
    let before = fs::read_dir(&artifacts)?.count();
    let mut libfuzzer = vec![
        format!("-max_total_time={}", args.seconds),
        format!("-max_len={}", target.max_len()),
        format!("-rss_limit_mb={RSS_LIMIT_MB}"),
        format!("-timeout={TIMEOUT_S}"),
        format!("-artifact_prefix={}/", artifacts.display()),
        "-print_final_stats=1".into(),
    ];
    if let Some(runs) = args.runs {
        libfuzzer.push(format!("-runs={runs}"));
    }
    println!("fuzzing {name} for up to {} s", args.seconds);
    let started = Instant::now();
    let seeds = root().join("fuzz/seeds").join(name);
    let mut child = cargo_fuzz_command(cargo_fuzz, "run", args.dev)?
        .arg(name)
        .arg(&corpus)
        .args(seeds.is_dir().then_some(&seeds))
        .arg("--")
        .args(&libfuzzer)
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start cargo-fuzz")?;
    // libFuzzer reports on stderr: kept whole in a log, passed through but for a line per new
    // input, and its final count read.
    let log_path = target_dir().join("fuzz/logs").join(format!("{name}.log"));
    fs::create_dir_all(log_path.parent().expect("a folder"))?;
    let mut log = std::io::BufWriter::new(fs::File::create(&log_path)?);
    let mut executions = None;
    for line in BufReader::new(child.stderr.take().expect("piped")).lines() {
        let line = line?;
        writeln!(log, "{line}")?;
        let per_input = line.starts_with('#') && (line.contains("NEW ") || line.contains("REDUCE "));
        if !per_input && !line.contains("# Uses:") {
            eprintln!("{line}");
        }
        if let Some(count) = line.strip_prefix("stat::number_of_executed_units:") {
            executions = count.trim().parse().ok();
        }
    }
    let status = child.wait()?;
    let findings = fs::read_dir(&artifacts)?.count() - before;
    if !status.success() && findings == 0 {
        bail!("fuzzing {name} failed ({status}) without a finding: see {}", log_path.display());
    }
    Ok(Outcome {
        target,
        executions: executions.with_context(|| format!("libFuzzer did not report {name}'s executions"))?,
        seconds: started.elapsed().as_secs_f64(),
        corpus: fs::read_dir(&corpus)?.count(),
        findings,
    })
}

/// `cargo fuzz <command>` on `fuzz/`, building into the shared target folder.
fn cargo_fuzz_command(cargo_fuzz: &Path, command: &str, dev: bool) -> anyhow::Result<std::process::Command> {
    let mut fuzz = tools::nightly(cargo_fuzz)?;
    // No sanitizer: see fuzz/src/lib.rs.
    fuzz.args(["fuzz", command, "--sanitizer", "none", "--fuzz-dir", "fuzz", "--target-dir"])
        .arg(target_dir().join("fuzz"))
        .args(dev.then_some("--dev"));
    Ok(fuzz)
}

/// The committed model and its lean encodings, the valid inputs the weights target mutates
/// (too large to commit twice).
fn seed_weights(corpus: &Path) -> anyhow::Result<()> {
    let model = fs::read(crate::args::committed_model())?;
    let weights = Weights::from_record(&model).context("the committed model.bin")?;
    fs::write(corpus.join("seed-model.bin"), &model)?;
    for precision in Precision::ALL {
        fs::write(corpus.join(format!("seed-{}.lean", precision.name())), weights.to_bytes(precision))?;
    }
    Ok(())
}

fn artifacts_dir() -> PathBuf {
    target_dir().join("fuzz/artifacts")
}
