//! `predict`: classify image files natively, through the same preprocessing as the browser.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

use infer::preprocess::{ink_from_grey, to_mnist};

use crate::args::committed_model;

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// PNG or JPEG files, any size, dark ink on light paper or the reverse.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// The weights to use [default: artifacts/model.bin].
    #[arg(long, value_name = "PATH")]
    model: Option<PathBuf>,
}

pub fn predict(args: PredictArgs) -> anyhow::Result<()> {
    let path = args.model.unwrap_or_else(committed_model);
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let device = burn::tensor::Device::flex();
    let model = infer::Model::from_bytes(&bytes, &device)
        .with_context(|| format!("{} is not a usable model", path.display()))?;
    let mut failed = 0;
    for file in &args.files {
        match classify_file(&model, file, &device) {
            Ok(prediction) => {
                let probabilities: Vec<String> = prediction.probabilities.iter().map(|p| format!("{p:.4}")).collect();
                println!(
                    "{}: {} (p = {:.4}) [{}]",
                    file.display(),
                    prediction.digit,
                    prediction.probabilities[prediction.digit],
                    probabilities.join(" ")
                );
            }
            Err(e) => {
                eprintln!("error: {}: {e:#}", file.display());
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} files could not be classified", args.files.len());
    }
    Ok(())
}

fn classify_file(
    model: &infer::Model,
    file: &PathBuf,
    device: &burn::tensor::Device,
) -> anyhow::Result<infer::Prediction> {
    let image =
        image::ImageReader::open(file)?.with_guessed_format()?.decode().context("not a readable PNG or JPEG image")?;
    let grey = image.to_luma8();
    let (width, height) = (grey.width() as usize, grey.height() as usize);
    let ink = ink_from_grey(grey.as_raw(), width, height)?;
    Ok(model.classify(&to_mnist(&ink, width, height)?, device))
}
