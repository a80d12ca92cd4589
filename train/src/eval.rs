//! Scoring a model on the 10,000 test images through `infer`, the path deployments use: the
//! burn model of `model.bin`, or the lean model of the weights a browser bundle carries.

use infer::lean::LeanModel;
use infer::{NUM_CLASSES, PIXELS, argmax, normalise};

use crate::data::Split;

/// Test-set results of one model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Evaluation {
    pub images: usize,
    pub correct: usize,
    pub accuracy: f64,
    /// Mean cross-entropy of the true class.
    pub loss: f64,
    /// `confusion[true][predicted]` counts.
    pub confusion: [[u32; NUM_CLASSES]; NUM_CLASSES],
}

impl Evaluation {
    /// Fraction of each digit's images classified correctly.
    pub fn per_class_accuracy(&self) -> [f64; NUM_CLASSES] {
        std::array::from_fn(|digit| {
            let row = &self.confusion[digit];
            row[digit] as f64 / row.iter().sum::<u32>().max(1) as f64
        })
    }
}

/// Classifies every image of `split` with the burn model and tallies the results.
pub fn evaluate(model: &infer::Model, split: &Split, device: &burn::tensor::Device) -> Evaluation {
    tally(split, 500, |images| model.probabilities(images.iter().map(|&g| normalise(g)).collect(), device))
}

/// Classifies every image of `split` with the lean model and tallies the results.
pub fn evaluate_lean(model: &LeanModel, split: &Split) -> Evaluation {
    tally(split, 1, |image| {
        vec![model.probabilities(&image.try_into().map(|g: [u8; PIXELS]| g.map(normalise)).expect("one image"))]
    })
}

/// Runs `probabilities` over `split` in batches of `batch` images (their grey bytes).
fn tally(split: &Split, batch: usize, mut probabilities: impl FnMut(&[u8]) -> Vec<[f32; NUM_CLASSES]>) -> Evaluation {
    let mut confusion = [[0u32; NUM_CLASSES]; NUM_CLASSES];
    let mut loss = 0.0f64;
    for start in (0..split.len()).step_by(batch) {
        let end = (start + batch).min(split.len());
        let rows = probabilities(&split.images[start * PIXELS..end * PIXELS]);
        for (row, &label) in rows.iter().zip(&split.labels[start..end]) {
            let predicted = argmax(row);
            confusion[label as usize][predicted] += 1;
            loss -= (row[label as usize].max(f32::MIN_POSITIVE) as f64).ln();
        }
    }
    let images = split.len();
    let correct = (0..NUM_CLASSES).map(|d| confusion[d][d] as usize).sum();
    Evaluation {
        images,
        correct,
        accuracy: correct as f64 / images.max(1) as f64,
        loss: loss / images.max(1) as f64,
        confusion,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use infer::IMAGE_SIZE;
    use infer::preprocess::{ink_from_rgba, to_mnist};

    /// Test digit `index` drawn 8x larger, dark on white, off-centre on a 500x400 canvas.
    fn on_canvas(split: &Split, index: usize) -> (Vec<u8>, usize, usize) {
        let (width, height, scale) = (500, 400, 8);
        let (left, top) = (60 + 3 * (index % 20), 30 + 5 * (index % 7));
        let mut rgba = vec![255u8; width * height * 4];
        for (i, &grey) in split.image(index).iter().enumerate() {
            let (x, y) = (i % IMAGE_SIZE, i / IMAGE_SIZE);
            for dy in 0..scale {
                for dx in 0..scale {
                    let at = ((top + y * scale + dy) * width + left + x * scale + dx) * 4;
                    rgba[at..at + 3].fill(255 - grey);
                }
            }
        }
        (rgba, width, height)
    }

    /// The committed `artifacts/model.bin` on the flex device.
    fn committed_model() -> (infer::Model, burn::tensor::Device) {
        let device = burn::tensor::Device::flex();
        let model_bin = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../artifacts/model.bin")).unwrap();
        (infer::Model::from_bytes(&model_bin, &device).unwrap(), device)
    }

    #[test]
    fn a_digit_redrawn_large_comes_back_as_mnist_drew_it() {
        let mnist = crate::testing::mnist();
        let (model, device) = committed_model();
        let mut total_difference = 0.0;
        for index in 0..100 {
            let original: &[u8; PIXELS] = mnist.test.image(index).try_into().unwrap();
            let (rgba, width, height) = on_canvas(&mnist.test, index);
            let redrawn = to_mnist(&ink_from_rgba(&rgba, width, height).unwrap(), width, height).unwrap();
            let difference: f64 =
                original.iter().zip(&redrawn).map(|(&a, &b)| (a as f64 - b as f64).abs()).sum::<f64>()
                    / (255.0 * PIXELS as f64);
            total_difference += difference;
            assert!(difference < 0.08, "digit {index}: mean difference {difference:.3}");
            assert_eq!(
                model.classify(&redrawn, &device).digit,
                model.classify(original, &device).digit,
                "digit {index}"
            );
        }
        eprintln!("mean difference over 100 digits: {:.4}", total_difference / 100.0);
    }

    #[test]
    fn a_clean_canvas_gives_the_28x28_it_gave_before_paper_was_found_locally() {
        let mnist = crate::testing::mnist();
        let mut worst = 0;
        for index in 0..200 {
            let (rgba, width, height) = on_canvas(&mnist.test, index);
            // How the canvas's ink was measured before: darkness against pure white, times
            // opacity.
            let before: Vec<f32> = rgba
                .chunks_exact(4)
                .map(|p| {
                    let luminance = (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32) / 255.0;
                    p[3] as f32 / 255.0 * (1.0 - luminance)
                })
                .collect();
            // No inked pixel stands alone, so ignoring specks cannot move the bounding box.
            let inked = |x: usize, y: usize| before[y * width + x] > 0.1;
            let alone = (0..width * height).map(|i| (i % width, i / width)).any(|(x, y)| {
                let neighbours = (y.saturating_sub(1)..(y + 2).min(height))
                    .flat_map(|ny| (x.saturating_sub(1)..(x + 2).min(width)).map(move |nx| (nx, ny)));
                inked(x, y) && !neighbours.filter(|&n| n != (x, y)).any(|(nx, ny)| inked(nx, ny))
            });
            assert!(!alone, "digit {index}: an inked pixel with no inked neighbour");
            let was = to_mnist(&before, width, height).unwrap();
            let now = to_mnist(&ink_from_rgba(&rgba, width, height).unwrap(), width, height).unwrap();
            let difference = was.iter().zip(&now).map(|(&a, &b)| a.abs_diff(b)).max().unwrap();
            assert!(difference <= 2, "digit {index}: a pixel changed by {difference} grey levels");
            worst = worst.max(difference);
        }
        eprintln!("largest change of a pixel over 200 canvases: {worst} grey levels");
    }

    #[test]
    fn the_lean_model_matches_burn_on_every_test_image() {
        let mnist = crate::testing::mnist();
        let (model, device) = committed_model();
        let lean = LeanModel::new(&infer::lean::Weights::from_model(&model));
        let split = &mnist.test;
        let reference = model.probabilities(split.images.iter().map(|&g| normalise(g)).collect(), &device);
        let mut worst = 0.0f32;
        for (index, expected) in reference.iter().enumerate() {
            let ours = lean.classify(split.image(index).try_into().unwrap());
            assert_eq!(ours.digit, argmax(expected), "image {index}");
            worst = ours.probabilities.iter().zip(expected).map(|(a, b)| (a - b).abs()).fold(worst, f32::max);
        }
        eprintln!("largest probability difference over {} images: {worst:e}", split.len());
        assert!(worst < 1e-5, "lean and burn differ by {worst}");
    }
}
