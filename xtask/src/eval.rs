//! `eval`: a model file scored on the 10,000 test images and held to the gate.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

use train::data::{Mnist, sha256_hex};
use train::eval::{Evaluation, evaluate, evaluate_lean};

use crate::args::{DataArgs, GATE, committed_model};

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// The weights to score [default: artifacts/model.bin].
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Minimum test accuracy; below it the exit status is non-zero.
    #[arg(long, default_value_t = GATE)]
    pub target: f64,
}

pub fn eval(args: EvalArgs) -> anyhow::Result<()> {
    let mnist = args.data.load()?;
    gate(args.model, args.target, &mnist)
}

/// Scores a model file (default: the committed one) and fails under `target`.
pub fn gate(model: Option<PathBuf>, target: f64, mnist: &Mnist) -> anyhow::Result<()> {
    let path = model.unwrap_or_else(committed_model);
    let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let result = evaluate_bytes(&bytes, mnist).with_context(|| format!("{} is not a usable model", path.display()))?;
    println!("model {} (sha256 {})", path.display(), sha256_hex(&bytes));
    print_evaluation(&result);
    if result.accuracy < target {
        bail!("test accuracy {:.4} is below the target {:.4}", result.accuracy, target);
    }
    println!("gate passed: {:.4} >= {:.4}", result.accuracy, target);
    Ok(())
}

/// Scores a weights file on the test split: lean weights (what a browser bundle embeds) with
/// the lean model, anything else as a burn record with the burn model on its CPU backend.
pub fn evaluate_bytes(bytes: &[u8], mnist: &Mnist) -> anyhow::Result<Evaluation> {
    if infer::lean::Weights::recognises(bytes) {
        let model = infer::lean::LeanModel::from_bytes(bytes)?;
        println!("lean weights: scored with infer's lean model");
        return Ok(evaluate_lean(&model, &mnist.test));
    }
    let device = burn::tensor::Device::flex();
    let model = infer::Model::from_bytes(bytes, &device)?;
    Ok(evaluate(&model, &mnist.test, &device))
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
