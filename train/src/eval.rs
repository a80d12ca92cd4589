//! Scoring a `model.bin` on the 10,000 test images through `infer`, the path deployments use.

use infer::{NUM_CLASSES, PIXELS, argmax, normalize};

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

/// Classifies every image of `split` with `model` and tallies the results.
pub fn evaluate(model: &infer::Model, split: &Split, device: &burn::tensor::Device) -> Evaluation {
    const BATCH: usize = 500;
    let mut confusion = [[0u32; NUM_CLASSES]; NUM_CLASSES];
    let mut loss = 0.0f64;
    for start in (0..split.len()).step_by(BATCH) {
        let end = (start + BATCH).min(split.len());
        let pixels = split.images[start * PIXELS..end * PIXELS].iter().map(|&g| normalize(g)).collect();
        let probabilities = model.probabilities(pixels, device);
        for (row, &label) in probabilities.iter().zip(&split.labels[start..end]) {
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

    #[test]
    fn a_digit_redrawn_large_comes_back_as_mnist_drew_it() {
        let Some(mnist) = crate::testing::mnist() else { return };
        let device = burn::tensor::Device::flex();
        let model_bin = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../artifacts/model.bin")).unwrap();
        let model = infer::Model::from_bytes(&model_bin, &device).unwrap();
        let mut total_difference = 0.0;
        for index in 0..100 {
            let original: &[u8; PIXELS] = mnist.test.image(index).try_into().unwrap();
            let (rgba, width, height) = on_canvas(&mnist.test, index);
            let redrawn = to_mnist(&ink_from_rgba(&rgba, width, height).unwrap(), width, height).unwrap();
            let difference: f64 = original.iter().zip(&redrawn).map(|(&a, &b)| (a as f64 - b as f64).abs()).sum::<f64>()
                / (255.0 * PIXELS as f64);
            total_difference += difference;
            assert!(difference < 0.08, "digit {index}: mean difference {difference:.3}");
            assert_eq!(model.classify(&redrawn, &device).digit, model.classify(original, &device).digit, "digit {index}");
        }
        eprintln!("mean difference over 100 digits: {:.4}", total_difference / 100.0);
    }
}
