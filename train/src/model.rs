//! The training face of [`infer::Model`]: loss, the weight average, and burn-train's step traits.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};

use crate::ema::Ema;
use crate::loader::MnistBatch;
use crate::ops::TrainingOps;

/// [`infer::Model`] wrapped so burn-train can drive it (the traits are foreign to `infer`),
/// with the moving average of its weights that a run exports.
#[derive(Module, Debug)]
pub struct Classifier {
    pub model: infer::Model,
    ema: Ema,
    #[module(skip)]
    label_smoothing: Option<f32>,
}

impl Classifier {
    /// `model` with `ema`, the average of its weights to export (from [`Ema::of`] on
    /// `model`); `label_smoothing` of 0 trains on one-hot targets.
    pub fn new(model: infer::Model, ema: Ema, label_smoothing: f32) -> Self {
        Self { model, ema, label_smoothing: (label_smoothing > 0.0).then_some(label_smoothing) }
    }

    /// The weights a run exports and validates: the moving average.
    pub fn averaged(&self) -> infer::Model {
        self.ema.weights(&self.model)
    }

    fn classify(&self, model: &infer::Model, batch: MnistBatch) -> ClassificationOutput {
        let logits = model.forward_with(&TrainingOps, batch.images);
        let loss = CrossEntropyLossConfig::new()
            .with_smoothing(self.label_smoothing)
            .init(&logits.device())
            .forward(logits.clone(), batch.targets.clone());
        ClassificationOutput::new(loss, logits, batch.targets)
    }
}

impl TrainStep for Classifier {
    type Input = MnistBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: MnistBatch) -> TrainOutput<ClassificationOutput> {
        // The weights this step starts from; the optimiser moves them once the step returns.
        self.ema.update(&self.model);
        let output = self.classify(&self.model, batch);
        TrainOutput::new(self, output.loss.backward(), output)
    }
}

impl InferenceStep for Classifier {
    type Input = MnistBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: MnistBatch) -> ClassificationOutput {
        self.classify(&self.averaged(), batch)
    }
}
