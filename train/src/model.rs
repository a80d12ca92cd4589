//! The training face of [`infer::Model`]: loss, and burn-train's step traits.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};

use crate::loader::MnistBatch;

/// [`infer::Model`] wrapped so burn-train can drive it (the traits are foreign to `infer`).
#[derive(Module, Debug)]
pub struct Classifier {
    pub model: infer::Model,
}

impl Classifier {
    fn classify(&self, batch: MnistBatch) -> ClassificationOutput {
        let logits = self.model.forward(batch.images);
        let loss = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone(), batch.targets.clone());
        ClassificationOutput::new(loss, logits, batch.targets)
    }
}

impl TrainStep for Classifier {
    type Input = MnistBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: MnistBatch) -> TrainOutput<ClassificationOutput> {
        let output = self.classify(batch);
        TrainOutput::new(self, output.loss.backward(), output)
    }
}

impl InferenceStep for Classifier {
    type Input = MnistBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: MnistBatch) -> ClassificationOutput {
        self.classify(batch)
    }
}
