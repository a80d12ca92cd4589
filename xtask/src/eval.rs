//! `eval`: a model file scored on the 10,000 test images and held to the gate.

use std::fs;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use train::data::{Split, sha256_hex};
use train::eval::Evaluation;

use crate::args::{self, DataArgs, GATE, check_gate, committed_model};
use crate::scores::Scorable;

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// The weights to score [default: artifacts/model.bin].
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Minimum test accuracy; below it the exit status is non-zero.
    #[arg(long, default_value_t = GATE, value_parser = args::accuracy)]
    pub target: f64,
}

pub fn eval(args: EvalArgs) -> anyhow::Result<()> {
    // The model first: a wrong path or a broken file is reported before MNIST is read.
    let model = ModelFile::read(args.model.unwrap_or_else(committed_model))?;
    model.gate(args.target, &args.data.load_test()?)
}

/// A model file read and loaded, ready to be scored.
pub struct ModelFile {
    path: PathBuf,
    sha256: String,
    model: Scorable,
}

impl ModelFile {
    pub fn read(path: PathBuf) -> anyhow::Result<Self> {
        let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let model =
            Scorable::from_bytes(&bytes).with_context(|| format!("{} is not a usable model", path.display()))?;
        Ok(ModelFile { sha256: sha256_hex(&bytes), path, model })
    }

    /// Scores the model and fails under `target`.
    pub fn gate(&self, target: f64, test: &Split) -> anyhow::Result<()> {
        println!("model {} (sha256 {})", self.path.display(), self.sha256);
        if let Scorable::Lean(_) = self.model {
            println!("lean weights: scored with infer's lean model");
        }
        let result = self.model.evaluate(test);
        print_evaluation(&result);
        check_gate(result.accuracy, target)?;
        println!("gate passed: {:.4} >= {:.4}", result.accuracy, target);
        Ok(())
    }
}

pub fn print_evaluation(result: &Evaluation) {
    println!(
        "test accuracy {:.2}% ({} / {}), loss {:.4}",
        100.0 * result.accuracy,
        result.correct,
        result.images,
        result.loss
    );
    let per_class = result.per_class_accuracy();
    println!(
        "per class: {}",
        (0..10).map(|d| format!("{d}: {:.2}%", 100.0 * per_class[d])).collect::<Vec<_>>().join("  ")
    );
    println!("confusion (rows: true digit, columns: predicted)");
    println!("      {}", (0..10).map(|d| format!("{d:>5}")).collect::<String>());
    for (digit, row) in result.confusion.iter().enumerate() {
        println!("  {digit:>2}  {}", row.iter().map(|n| format!("{n:>5}")).collect::<String>());
    }
}
