//! What a run reports: `metrics.json`, the training curves, the confusion matrix, and a
//! picture of the augmentation.

use plotters::prelude::*;

use infer::{IMAGE_SIZE, NUM_CLASSES, PIXELS};

use crate::augment::{Affine, AugmentConfig};
use crate::data::Split;
use crate::eval::Evaluation;
use crate::provenance::Provenance;
use crate::training::EpochMetrics;

/// The contents of `metrics.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Metrics {
    /// The training config, as `TrainingConfig` serialises it.
    pub config: serde_json::Value,
    pub seed: u64,
    /// Where it ran and what built it: what decides the bytes besides the config.
    pub provenance: Provenance,
    /// SHA-256 of the decompressed IDX files, by file name.
    pub dataset_sha256: Vec<(String, String)>,
    pub epochs: Vec<EpochMetrics>,
    /// Wall time of the training, seconds (the last process's share if the run was resumed).
    pub train_seconds: f64,
    /// Wall time of the whole command up to the gated files, seconds.
    pub total_seconds: f64,
    pub resumed_from_epoch: Option<usize>,
    pub test: Evaluation,
    pub model_sha256: String,
    pub model_bytes: usize,
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

/// Loss and accuracy per epoch, training against validation, as SVG.
pub fn training_curves_svg(history: &[EpochMetrics]) -> Result<String, Box<dyn std::error::Error>> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 400)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(480);
        let epochs = history.len().max(1) as f64;
        let series = |f: fn(&EpochMetrics) -> f64| -> Vec<(f64, f64)> {
            history.iter().map(|m| (m.epoch as f64, f(m))).filter(|(_, v)| v.is_finite()).collect()
        };
        let panel = |area: &DrawingArea<SVGBackend, _>,
                     title: &str,
                     train: Vec<(f64, f64)>,
                     valid: Vec<(f64, f64)>|
         -> PlotResult {
            let values = train.iter().chain(&valid).map(|p| p.1);
            let (low, high) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
            let pad = ((high - low) * 0.05).max(1e-4);
            let mut chart = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(32)
                .y_label_area_size(56)
                .build_cartesian_2d(1.0..epochs, (low - pad)..(high + pad))?;
            chart.configure_mesh().x_desc("epoch").draw()?;
            chart
                .draw_series(LineSeries::new(train, BLUE.stroke_width(2)))?
                .label("train")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLUE.stroke_width(2)));
            chart
                .draw_series(LineSeries::new(valid, RED.stroke_width(2)))?
                .label("validation")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], RED.stroke_width(2)));
            chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw()?;
            Ok(())
        };
        panel(&left, "loss", series(|m| m.train_loss), series(|m| m.valid_loss))?;
        panel(&right, "accuracy", series(|m| m.train_accuracy), series(|m| m.valid_accuracy))?;
        root.present()?;
    }
    Ok(svg)
}

/// The 10x10 confusion matrix as an SVG heat map, counts written in each cell.
pub fn confusion_svg(evaluation: &Evaluation) -> Result<String, Box<dyn std::error::Error>> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (560, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let title = format!("test confusion ({:.2}% correct)", 100.0 * evaluation.accuracy);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(40)
            .build_cartesian_2d(0..NUM_CLASSES, 0..NUM_CLASSES)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("predicted")
            .y_desc("true")
            .x_labels(NUM_CLASSES)
            .y_labels(NUM_CLASSES)
            .x_label_formatter(&|d| format!("{d}"))
            .y_label_formatter(&|d| format!("{}", NUM_CLASSES - 1 - d))
            .draw()?;
        let max_off_diagonal = (0..NUM_CLASSES)
            .flat_map(|t| (0..NUM_CLASSES).filter(move |&p| p != t).map(move |p| (t, p)))
            .map(|(t, p)| evaluation.confusion[t][p])
            .max()
            .unwrap_or(0)
            .max(1);
        for truth in 0..NUM_CLASSES {
            for predicted in 0..NUM_CLASSES {
                let count = evaluation.confusion[truth][predicted];
                let row = NUM_CLASSES - 1 - truth;
                let colour = if truth == predicted {
                    RGBColor(70, 130, 180)
                } else {
                    let heat = count as f64 / max_off_diagonal as f64;
                    RGBColor(255, (255.0 * (1.0 - 0.8 * heat)) as u8, (255.0 * (1.0 - 0.8 * heat)) as u8)
                };
                chart.draw_series([Rectangle::new([(predicted, row), (predicted + 1, row + 1)], colour.filled())])?;
                chart.draw_series([Text::new(format!("{count}"), (predicted, row + 1), ("sans-serif", 13))])?;
            }
        }
        root.present()?;
    }
    Ok(svg)
}

/// A PNG grid: each row one training digit, first as stored, then `variants` distortions.
pub fn augmentation_png(split: &Split, config: &AugmentConfig, seed: u64, digits: usize, variants: usize) -> Vec<u8> {
    const SCALE: usize = 3;
    const GAP: usize = 4;
    let cell = IMAGE_SIZE * SCALE + GAP;
    let (width, height) = ((variants + 1) * cell + GAP, digits * cell + GAP);
    let mut canvas = vec![255u8; width * height];
    for row in 0..digits {
        // One example of each digit, the first of its kind in the split.
        let index = (0..split.len()).find(|&i| split.labels[i] as usize == row % NUM_CLASSES).unwrap_or(row);
        for column in 0..=variants {
            let affine = if column == 0 { Affine::IDENTITY } else { Affine::draw(config, seed, column, index) };
            let mut grey = vec![0.0f32; PIXELS];
            affine.apply(split.image(index), &mut grey, |g| g as f32);
            for (i, value) in grey.iter().enumerate() {
                let (y, x) = (i / IMAGE_SIZE, i % IMAGE_SIZE);
                for dy in 0..SCALE {
                    for dx in 0..SCALE {
                        let py = GAP + row * cell + y * SCALE + dy;
                        let px = GAP + column * cell + x * SCALE + dx;
                        canvas[py * width + px] = 255 - *value as u8;
                    }
                }
            }
        }
    }
    let mut png_bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut png_bytes, width as u32, height as u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().expect("PNG header into memory");
    writer.write_image_data(&canvas).expect("PNG data into memory");
    writer.finish().expect("PNG end into memory");
    png_bytes
}
