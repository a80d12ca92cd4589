//! `reproduce`: trains the committed recipe from scratch and holds the result to the
//! committed model: the same SHA-256 where this machine matches the one that trained it,
//! the same test accuracy within a tenth of a point where it does not.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use clap::Args;

use train::augment::AugmentConfig;
use train::report::Metrics;
use train::training::TrainingConfig;

use crate::args::{DataArgs, GATE, committed_metrics};

/// The most the test accuracy of a run on another machine may differ from the committed one.
const OTHER_MACHINE_TOLERANCE: f64 = 0.001;

#[derive(Args, Debug, Default)]
pub struct ReproduceArgs {
    #[command(flatten)]
    pub data: DataArgs,
}

/// The committed model's `metrics.json`.
fn committed() -> anyhow::Result<Metrics> {
    let path = committed_metrics();
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a metrics file of this version", path.display()))
}

pub fn reproduce(args: &ReproduceArgs) -> anyhow::Result<()> {
    let committed = committed()?;
    let recipe: serde_json::Value = serde_json::from_str(&TrainingConfig::new(AugmentConfig::new()).to_string())?;
    if committed.config != recipe {
        bail!(
            "artifacts/metrics.json records another config than the recipe in train::training::TrainingConfig; \
             the committed model is not what `cargo xtask train` makes (retrain it)\n  committed: {}\n  recipe:    {}",
            committed.config,
            recipe
        );
    }

    let out = tempfile::tempdir()?;
    let run_dir = tempfile::tempdir()?;
    let recorded = &committed.provenance;
    println!(
        "reproducing artifacts/model.bin: `cargo xtask train` with {} threads on {} into {}",
        recorded.threads,
        recorded.backend,
        out.path().display()
    );
    train_into(out.path(), run_dir.path(), &recorded.backend, recorded.threads, &args.data)?;
    let fresh: Metrics = serde_json::from_slice(&fs::read(out.path().join("metrics.json"))?)?;
    compare(&committed, &fresh)
}

/// The recipe, run as a user would run it, with the gate left to [`compare`].
fn train_into(out: &Path, run_dir: &Path, backend: &str, threads: usize, data: &DataArgs) -> anyhow::Result<()> {
    let mut command = Command::new(std::env::current_exe()?);
    // The model is all that is compared; CI makes and checks a release in its own step.
    command.arg("--threads").arg(threads.to_string()).args([
        "train",
        "--target",
        "0",
        "--no-package",
        "--backend",
        backend,
    ]);
    command.arg("--out").arg(out).arg("--run-dir").arg(run_dir);
    if let Some(dir) = &data.data_dir {
        command.arg("--data-dir").arg(dir);
    }
    let status = command.status().context("cannot start the training run")?;
    if !status.success() {
        bail!("the training run failed ({status})");
    }
    Ok(())
}

/// Passes when `fresh` is the committed model: bit for bit on a matching machine, else by
/// accuracy; both at or above the gate.
fn compare(committed: &Metrics, fresh: &Metrics) -> anyhow::Result<()> {
    let both = format!(
        "committed: sha256 {} test accuracy {:.2}%\n  fresh:     sha256 {} test accuracy {:.2}%",
        committed.model_sha256,
        100.0 * committed.test.accuracy,
        fresh.model_sha256,
        100.0 * fresh.test.accuracy
    );
    println!("  {both}\n  fresh run: {:.0} s from start to gated model.bin", fresh.total_seconds);
    if fresh.test.accuracy < GATE {
        bail!("the fresh model is below the gate {GATE}\n  {both}");
    }
    let differences = fresh.provenance.differences(&committed.provenance);
    if differences.is_empty() {
        if fresh.model_sha256 != committed.model_sha256 {
            bail!("this machine matches the one that trained the committed model, yet the bytes differ\n  {both}");
        }
        println!("reproduced: the same model.bin, bit for bit");
        return Ok(());
    }
    println!(
        "this machine differs from the one that trained the committed model ({}), so the bytes may differ: comparing test accuracy instead",
        differences.join("; ")
    );
    let gap = (fresh.test.accuracy - committed.test.accuracy).abs();
    if gap > OTHER_MACHINE_TOLERANCE {
        bail!(
            "test accuracy differs by {:.2} points (at most {:.2} allowed on another machine)\n  {both}\n  differences: {}",
            100.0 * gap,
            100.0 * OTHER_MACHINE_TOLERANCE,
            differences.join("; ")
        );
    }
    println!("reproduced within {:.2} points of test accuracy", 100.0 * gap);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use train::provenance::Provenance;

    fn metrics(sha: &str, accuracy: f64, threads: usize) -> Metrics {
        let mut metrics = committed().expect("the committed metrics.json reads");
        metrics.model_sha256 = sha.into();
        metrics.test.accuracy = accuracy;
        metrics.provenance = Provenance { threads, ..Provenance::current("flex", 2) };
        metrics
    }

    #[test]
    fn a_matching_machine_must_give_the_same_bytes() {
        assert!(compare(&metrics("aa", 0.996, 2), &metrics("aa", 0.996, 2)).is_ok());
        let err = compare(&metrics("aa", 0.996, 2), &metrics("bb", 0.996, 2)).unwrap_err().to_string();
        assert!(err.contains("bytes differ") && err.contains("aa") && err.contains("bb"), "{err}");
    }

    #[test]
    fn another_machine_must_give_the_same_accuracy() {
        assert!(compare(&metrics("aa", 0.9960, 4), &metrics("bb", 0.9952, 2)).is_ok());
        let err = compare(&metrics("aa", 0.9965, 4), &metrics("bb", 0.9952, 2)).unwrap_err().to_string();
        assert!(err.contains("0.13 points") && err.contains("threads: 4 there, 2 here"), "{err}");
    }

    #[test]
    fn the_fresh_model_must_pass_the_gate() {
        let under = GATE - 0.005;
        let err = compare(&metrics("aa", under, 2), &metrics("aa", under, 2)).unwrap_err().to_string();
        assert!(err.contains("below the gate"), "{err}");
    }
}
