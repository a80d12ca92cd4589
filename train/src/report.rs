//! What a run reports: `metrics.json`, the training curves, the confusion matrix, and a
//! picture of the augmentation.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use infer::{IMAGE_SIZE, NUM_CLASSES, PIXELS};

use crate::augment::{AugmentConfig, Distortion};
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
        let series = |f: fn(&EpochMetrics) -> Option<f64>| -> Vec<(f64, f64)> {
            history.iter().filter_map(|m| Some((m.epoch as f64, f(m)?))).filter(|(_, v)| v.is_finite()).collect()
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
            // A run that held nothing out (the shipped recipe) has no validation curve.
            if !valid.is_empty() {
                chart
                    .draw_series(LineSeries::new(valid, RED.stroke_width(2)))?
                    .label("validation")
                    .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], RED.stroke_width(2)));
            }
            chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw()?;
            Ok(())
        };
        panel(&left, "loss", series(|m| Some(m.train_loss)), series(|m| m.valid_loss))?;
        panel(&right, "accuracy", series(|m| Some(m.train_accuracy)), series(|m| m.valid_accuracy))?;
        root.present()?;
    }
    Ok(svg)
}

/// The 10x10 confusion matrix as an SVG heat map, counts written in each cell, true digits
/// down the side (0 at the top) and predicted digits along the bottom.
pub fn confusion_svg(evaluation: &Evaluation) -> Result<String, Box<dyn std::error::Error>> {
    const SIDE: f64 = NUM_CLASSES as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (560, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let title = format!("test confusion ({:.2}% correct)", 100.0 * evaluation.accuracy);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(48)
            .build_cartesian_2d(0.0..SIDE, 0.0..SIDE)?;
        // The axes' own tick labels sit on cell edges; the digits are drawn at cell centres below.
        chart.configure_mesh().disable_mesh().x_labels(0).y_labels(0).x_desc("predicted").y_desc("true").draw()?;
        let max_off_diagonal = (0..NUM_CLASSES)
            .flat_map(|t| (0..NUM_CLASSES).filter(move |&p| p != t).map(move |p| (t, p)))
            .map(|(t, p)| evaluation.confusion[t][p])
            .max()
            .unwrap_or(0)
            .max(1);
        let centred = |size| ("sans-serif", size).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Center));
        // Row 0 (true digit 0) at the top.
        let row_bottom = |truth: usize| SIDE - 1.0 - truth as f64;
        for truth in 0..NUM_CLASSES {
            for predicted in 0..NUM_CLASSES {
                let count = evaluation.confusion[truth][predicted];
                let colour = if truth == predicted {
                    RGBColor(70, 130, 180)
                } else {
                    let heat = count as f64 / max_off_diagonal as f64;
                    RGBColor(255, (255.0 * (1.0 - 0.8 * heat)) as u8, (255.0 * (1.0 - 0.8 * heat)) as u8)
                };
                let (x, y) = (predicted as f64, row_bottom(truth));
                chart.draw_series([Rectangle::new([(x, y), (x + 1.0, y + 1.0)], colour.filled())])?;
                chart.draw_series([Text::new(format!("{count}"), (x + 0.5, y + 0.5), centred(13))])?;
            }
        }
        for digit in 0..NUM_CLASSES {
            let (x, below) = chart.backend_coord(&(digit as f64 + 0.5, 0.0));
            root.draw(&Text::new(format!("{digit}"), (x, below + 12), centred(15)))?;
            let (left, y) = chart.backend_coord(&(0.0, row_bottom(digit) + 0.5));
            root.draw(&Text::new(format!("{digit}"), (left - 12, y), centred(15)))?;
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
            let distortion = if column == 0 { Distortion::NONE } else { Distortion::draw(config, seed, column, index) };
            let mut grey = vec![0.0f32; PIXELS];
            distortion.apply(split.image(index), &mut grey, |g| g as f32);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A `<text>` element's anchor and content.
    type Label = (f64, f64, String);

    /// Each `<text>` element and the `[x, y, width, height]` of each `<rect>` in plotters' SVG.
    fn texts_and_rects(svg: &str) -> (Vec<Label>, Vec<[f64; 4]>) {
        let attribute = |tag: &str, name: &str| -> f64 {
            let start = tag.find(&format!(" {name}=\"")).expect(name) + name.len() + 3;
            tag[start..].split('"').next().unwrap().parse().unwrap()
        };
        let texts = svg
            .split("<text")
            .skip(1)
            .map(|tag| {
                let text = tag.split('>').nth(1).unwrap().split('<').next().unwrap().trim().to_string();
                (attribute(tag, "x"), attribute(tag, "y"), text)
            })
            .collect();
        let rects = svg
            .split("<rect")
            .skip(1)
            .map(|tag| ["x", "y", "width", "height"].map(|name| attribute(tag, name)))
            .collect();
        (texts, rects)
    }

    #[test]
    fn the_confusion_matrix_labels_each_cell_with_its_digits() {
        // Every count distinct, so each can be found: true t, predicted p holds 100 t + p + 1000.
        let confusion = std::array::from_fn(|t| std::array::from_fn(|p| (100 * t + p + 1000) as u32));
        let evaluation = Evaluation { images: 0, correct: 0, accuracy: 0.5, loss: 0.0, confusion };
        let svg = confusion_svg(&evaluation).unwrap();
        let (texts, rects) = texts_and_rects(&svg);
        let labels = |digit: usize| texts.iter().filter(move |(_, _, text)| *text == digit.to_string());
        for truth in 0..NUM_CLASSES {
            for predicted in 0..NUM_CLASSES {
                let count = (100 * truth + predicted + 1000).to_string();
                let &(x, y, _) = texts.iter().find(|(_, _, text)| *text == count).expect("count drawn");
                let cell = rects
                    .iter()
                    .filter(|[left, top, width, height]| {
                        (*left..left + width).contains(&x) && (*top..top + height).contains(&y)
                    })
                    .min_by(|a, b| (a[2] * a[3]).total_cmp(&(b[2] * b[3])))
                    .unwrap_or_else(|| panic!("count {count} is not inside a cell"));
                let centre = (cell[0] + cell[2] / 2.0, cell[1] + cell[3] / 2.0);
                // The predicted digit's label sits under this column's centre, the true digit's
                // beside this row's centre.
                let found = |digit| labels(digit).map(|(x, y, _)| (*x, *y)).collect::<Vec<_>>();
                assert!(
                    labels(predicted).any(|(lx, ly, _)| (lx - centre.0).abs() < 2.0 && *ly > cell[1] + cell[3]),
                    "no label {predicted} under the cell at {cell:?}; labels {predicted} at {:?}",
                    found(predicted)
                );
                assert!(
                    labels(truth).any(|(lx, ly, _)| (ly - centre.1).abs() < 2.0 && *lx < cell[0]),
                    "no label {truth} left of the cell at {cell:?}; labels {truth} at {:?}",
                    found(truth)
                );
            }
        }
        let digits = texts.iter().filter(|(_, _, text)| text.len() == 1).count();
        assert_eq!(digits, 2 * NUM_CLASSES, "exactly one row and one column of digit labels");
    }
}
