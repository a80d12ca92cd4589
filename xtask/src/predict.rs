//! `predict`: classify image files natively, through the same preprocessing as the browser.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use burn::tensor::Device;
use clap::Args;
use image::ImageDecoder;

use infer::preprocess::{ink_from_grey, to_mnist};
use infer::{IMAGE_SIZE, PIXELS};

use crate::args::committed_model;
use crate::artifacts::write_atomic;

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// PNG or JPEG files, any size, dark ink on light paper or the reverse, on paper that may
    /// be grey, tinted or unevenly lit.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// The weights to use [default: artifacts/model.bin].
    #[arg(long, value_name = "PATH")]
    model: Option<PathBuf>,
    /// Write the 28x28 image the model saw for each file into DIR, as `<file name>.28x28.png`.
    #[arg(long, value_name = "DIR")]
    show: Option<PathBuf>,
}

pub fn predict(args: PredictArgs) -> anyhow::Result<()> {
    let (model, device) = load_model(&args.model.unwrap_or_else(committed_model))?;
    let mut failed = 0;
    for file in &args.files {
        let answer = seen_by_model(file).and_then(|seen| {
            let shown = match &args.show {
                Some(dir) => format!(" (saw {})", show(&seen, file, dir)?.display()),
                None => String::new(),
            };
            Ok((model.classify(&seen, &device), shown))
        });
        match answer {
            Ok((prediction, shown)) => {
                let probabilities: Vec<String> = prediction.probabilities.iter().map(|p| format!("{p:.4}")).collect();
                println!(
                    "{}: {} (p = {:.4}) [{}]{shown}",
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

/// The burn model in `path`, on flex.
pub fn load_model(path: &Path) -> anyhow::Result<(infer::Model, Device)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let device = Device::flex();
    let model = infer::Model::from_bytes(&bytes, &device)
        .with_context(|| format!("{} is not a usable model", path.display()))?;
    Ok((model, device))
}

/// The most pixels an image may have: a 48-megapixel phone photo fits. The size is read from
/// the header, so a small file that would decode to gigabytes (a blank 20000x20000 PNG is
/// 440 KB, and took 7 GB and 75 s) is refused before anything is decoded.
const MAX_PIXELS: u64 = 50_000_000;

/// The 28x28 input an image file becomes: any size up to [`MAX_PIXELS`], either polarity,
/// through the preprocessing the page and the worker use.
pub fn seen_by_model(file: &Path) -> anyhow::Result<[u8; PIXELS]> {
    let unreadable = "not a readable PNG or JPEG image";
    let decoder = image::ImageReader::open(file)?.with_guessed_format()?.into_decoder().context(unreadable)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        bail!("a {width}x{height} image is more than the {} megapixels predict reads", MAX_PIXELS / 1_000_000);
    }
    let grey = image::DynamicImage::from_decoder(decoder).context(unreadable)?.to_luma8();
    let (width, height) = (grey.width() as usize, grey.height() as usize);
    let ink = ink_from_grey(grey.as_raw(), width, height)?;
    Ok(to_mnist(&ink, width, height)?)
}

/// Writes `seen` as a PNG (white ink on black, as MNIST stores it) into `dir`, named after
/// `file`.
fn show(seen: &[u8; PIXELS], file: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let name = file.file_name().map_or("image".into(), |n| n.to_string_lossy().into_owned());
    let path = dir.join(format!("{name}.28x28.png"));
    let image = image::GrayImage::from_raw(IMAGE_SIZE as u32, IMAGE_SIZE as u32, seen.to_vec()).expect("28x28 bytes");
    let mut png = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    write_atomic(&path, &png).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
