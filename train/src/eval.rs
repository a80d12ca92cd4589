//! Scoring a `model.bin` on the 10,000 test images through `infer`, the path deployments use.

use infer::{NUM_CLASSES, PIXELS, normalize};

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

/// Index of the largest value (the first, on ties).
pub fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &p)| if p > best.1 { (i, p) } else { best })
        .0
}
