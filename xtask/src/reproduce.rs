//! `reproduce`: trains the committed recipe from scratch and holds the result to the
//! committed model: the same SHA-256 where this machine matches the one that trained it, the
//! bytes on record where it matches a machine in `artifacts/reproductions.json`, and the same
//! test accuracy within a tenth of a point elsewhere.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use clap::Args;
use serde::{Deserialize, Serialize};

use train::augment::AugmentConfig;
use train::provenance::Provenance;
use train::report::Metrics;
use train::training::TrainingConfig;

use crate::args::{DataArgs, GATE, committed_metrics, committed_reproductions};
use crate::artifacts::write_atomic;

/// The most the test accuracy of a run on another machine may differ from the committed one.
const OTHER_MACHINE_TOLERANCE: f64 = 0.001;

#[derive(Args, Debug, Default)]
pub struct ReproduceArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// On a machine unlike any on record, once the run has passed, add what it made to
    /// artifacts/reproductions.json, so that later runs on machines like this one are held to
    /// those bytes.
    #[arg(long)]
    pub record: bool,
}

/// The committed recipe's model as one machine made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reproduction {
    pub provenance: Provenance,
    pub model_sha256: String,
    pub test_accuracy: f64,
}

/// `artifacts/reproductions.json`: runs of the recipe on machines that differ from the one
/// that trained the committed model, each of which the same recipe makes bit for bit again.
#[derive(Debug, Serialize, Deserialize)]
pub struct Reproductions {
    /// The committed model these runs re-derived; the runs of an older model say nothing about
    /// what the recipe makes now.
    pub of_model_sha256: String,
    pub runs: Vec<Reproduction>,
}

/// How a fresh run matched the committed model.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// The machine that trained it: the same bytes.
    SameBytes,
    /// A machine on record: the bytes made there.
    RecordedBytes,
    /// A machine unlike any on record: the same test accuracy, within the tolerance.
    SameAccuracy,
}

/// The committed model's `metrics.json`.
fn committed() -> anyhow::Result<Metrics> {
    let path = committed_metrics();
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a metrics file of this version", path.display()))
}

/// The runs on record at `path` (none where there is no file), refused when they are of
/// another model than `model_sha256`.
fn read_reproductions(path: &Path, model_sha256: &str) -> anyhow::Result<Reproductions> {
    if !path.exists() {
        return Ok(Reproductions { of_model_sha256: model_sha256.into(), runs: Vec::new() });
    }
    let text = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let recorded: Reproductions = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a reproductions file of this version", path.display()))?;
    if recorded.of_model_sha256 != model_sha256 {
        bail!(
            "{} records runs of the model {}, not of the committed {}: delete it, then record each machine afresh \
             with `cargo xtask reproduce --record`",
            path.display(),
            recorded.of_model_sha256,
            model_sha256
        );
    }
    Ok(recorded)
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
    // Read before the run, so that a stale file fails in seconds rather than after it.
    let reproductions_path = committed_reproductions();
    let mut reproductions = read_reproductions(&reproductions_path, &committed.model_sha256)?;

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
    let verdict = compare(&committed, &reproductions.runs, &fresh)?;
    if verdict == Verdict::SameAccuracy {
        if args.record {
            reproductions.runs.push(Reproduction {
                provenance: fresh.provenance,
                model_sha256: fresh.model_sha256,
                test_accuracy: fresh.test.accuracy,
            });
            write_atomic(&reproductions_path, &serde_json::to_vec_pretty(&reproductions)?)?;
            println!(
                "recorded in {}: runs on machines like this one are now held to these bytes",
                reproductions_path.display()
            );
        } else {
            println!(
                "(`cargo xtask reproduce --record` would hold later runs on machines like this one to these bytes)"
            );
        }
    }
    Ok(())
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

/// Passes when `fresh` is the committed model: bit for bit on the machine that trained it or
/// on one in `recorded`, else by accuracy; in every case at or above the gate.
fn compare(committed: &Metrics, recorded: &[Reproduction], fresh: &Metrics) -> anyhow::Result<Verdict> {
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
        return Ok(Verdict::SameBytes);
    }
    println!("this machine differs from the one that trained the committed model ({})", differences.join("; "));
    if let Some(run) = recorded.iter().find(|run| run.provenance == fresh.provenance) {
        if fresh.model_sha256 != run.model_sha256 {
            bail!(
                "this machine matches one in artifacts/reproductions.json, yet the bytes differ\n  {both}\n  \
                 on record: sha256 {} test accuracy {:.2}%",
                run.model_sha256,
                100.0 * run.test_accuracy
            );
        }
        println!("reproduced: the bytes on record for machines like this one, bit for bit");
        return Ok(Verdict::RecordedBytes);
    }
    println!("and from every machine on record, so the bytes may differ: comparing test accuracy instead");
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
    Ok(Verdict::SameAccuracy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(sha: &str, accuracy: f64, threads: usize) -> Metrics {
        let mut metrics = committed().expect("the committed metrics.json reads");
        metrics.model_sha256 = sha.into();
        metrics.test.accuracy = accuracy;
        metrics.provenance = Provenance { threads, ..Provenance::current("flex", 2) };
        metrics
    }

    fn on_record(sha: &str, threads: usize) -> Reproduction {
        Reproduction {
            provenance: Provenance { threads, ..Provenance::current("flex", 2) },
            model_sha256: sha.into(),
            test_accuracy: 0.996,
        }
    }

    #[test]
    fn a_matching_machine_must_give_the_same_bytes() {
        assert_eq!(compare(&metrics("aa", 0.996, 2), &[], &metrics("aa", 0.996, 2)).unwrap(), Verdict::SameBytes);
        let err = compare(&metrics("aa", 0.996, 2), &[], &metrics("bb", 0.996, 2)).unwrap_err().to_string();
        assert!(err.contains("bytes differ") && err.contains("aa") && err.contains("bb"), "{err}");
    }

    #[test]
    fn another_machine_must_give_the_same_accuracy() {
        let verdict = compare(&metrics("aa", 0.9960, 4), &[on_record("cc", 3)], &metrics("bb", 0.9952, 2)).unwrap();
        assert_eq!(verdict, Verdict::SameAccuracy);
        let err = compare(&metrics("aa", 0.9965, 4), &[], &metrics("bb", 0.9952, 2)).unwrap_err().to_string();
        assert!(err.contains("0.13 points") && err.contains("threads: 4 there, 2 here"), "{err}");
    }

    #[test]
    fn a_machine_on_record_must_give_the_bytes_on_record() {
        let committed = metrics("aa", 0.9960, 4);
        let recorded = [on_record("dd", 3), on_record("cc", 2)];
        assert_eq!(compare(&committed, &recorded, &metrics("cc", 0.9958, 2)).unwrap(), Verdict::RecordedBytes);
        // Within the accuracy tolerance, yet not the bytes this machine made before.
        let err = compare(&committed, &recorded, &metrics("bb", 0.9958, 2)).unwrap_err().to_string();
        assert!(err.contains("bytes differ") && err.contains("on record: sha256 cc") && err.contains("bb"), "{err}");
    }

    #[test]
    fn the_fresh_model_must_pass_the_gate() {
        let under = GATE - 0.005;
        let err = compare(&metrics("aa", under, 2), &[], &metrics("aa", under, 2)).unwrap_err().to_string();
        assert!(err.contains("below the gate"), "{err}");
    }

    #[test]
    fn the_committed_reproductions_are_of_the_committed_model() {
        let committed = committed().unwrap();
        read_reproductions(&committed_reproductions(), &committed.model_sha256).unwrap();
    }

    #[test]
    fn runs_of_another_model_are_refused_and_no_file_means_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reproductions.json");
        assert!(read_reproductions(&path, "aa").unwrap().runs.is_empty());
        let stale = Reproductions { of_model_sha256: "old".into(), runs: vec![on_record("cc", 2)] };
        fs::write(&path, serde_json::to_vec(&stale).unwrap()).unwrap();
        let err = read_reproductions(&path, "aa").unwrap_err().to_string();
        assert!(err.contains("model old, not of the committed aa") && err.contains("--record"), "{err}");
        fs::write(&path, "{").unwrap();
        let err = read_reproductions(&path, "aa").unwrap_err().to_string();
        assert!(err.contains("not a reproductions file"), "{err}");
    }
}
