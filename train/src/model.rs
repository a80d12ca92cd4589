//! The training face of [`infer::Model`]: loss, the weight average, and burn-train's step traits.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Int, Tensor};
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
    #[module(skip)]
    self_distillation: Option<SelfDistillation>,
}

/// The averaged model as a teacher: its predictions for each training batch join the targets
/// with a weight that rises linearly over the run, from 0 at the first step to `weight` at the
/// last, so the early, still untrained average teaches little.
#[derive(Debug, Clone, Copy)]
struct SelfDistillation {
    weight: f32,
    steps: usize,
}

impl Classifier {
    /// `model` with `ema`, the average of its weights to export (from [`Ema::of`] on
    /// `model`); `label_smoothing` of 0 trains on one-hot targets.
    pub fn new(model: infer::Model, ema: Ema, label_smoothing: f32) -> Self {
        Self {
            model,
            ema,
            label_smoothing: (label_smoothing > 0.0).then_some(label_smoothing),
            self_distillation: None,
        }
    }

    /// The same, trained toward the averaged model's predictions too, with a weight rising
    /// to `weight` over a run of `steps` steps (see [`crate::training::TrainingConfig`]).
    pub fn with_self_distillation(self, weight: f32, steps: usize) -> Self {
        Self { self_distillation: (weight > 0.0).then_some(SelfDistillation { weight, steps }), ..self }
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

    /// Cross-entropy against the smoothed labels mixed with the averaged model's predictions
    /// for the same (distorted) images, the mix's weight `teacher_weight`.
    fn distil(&self, batch: MnistBatch, teacher_weight: f32) -> ClassificationOutput {
        let taught = self.teacher_predictions(batch.images.clone());
        let logits = self.model.forward_with(&TrainingOps, batch.images);
        let smoothing = self.label_smoothing.unwrap_or(0.0);
        let labels = one_hot(&batch.targets).mul_scalar(1.0 - smoothing).add_scalar(smoothing / CLASSES as f32);
        let targets =
            labels.mul_scalar(1.0 - teacher_weight).add(Tensor::from_inner(taught).mul_scalar(teacher_weight));
        let loss = log_softmax(logits.clone(), 1).mul(targets).sum_dim(1).mean().neg();
        ClassificationOutput::new(loss, logits, batch.targets)
    }

    /// The averaged model's class probabilities for `images`, outside the autodiff graph.
    fn teacher_predictions(&self, images: Tensor<4>) -> Tensor<2> {
        // `valid()` gives the average fresh running statistics, so that reading it leaves the
        // live model's BatchNorm statistics alone (burn's clones share them).
        let teacher = self.valid().averaged();
        Tensor::from_inner(softmax(teacher.forward(images.without_autodiff()), 1))
    }
}

const CLASSES: usize = infer::NUM_CLASSES;

fn one_hot(targets: &Tensor<1, Int>) -> Tensor<2> {
    targets.clone().one_hot::<2>(CLASSES).float()
}

impl TrainStep for Classifier {
    type Input = MnistBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: MnistBatch) -> TrainOutput<ClassificationOutput> {
        // The weights this step starts from; the optimiser moves them once the step returns.
        let step = self.ema.update(&self.model);
        let output = match self.self_distillation {
            None => self.classify(&self.model, batch),
            Some(SelfDistillation { weight, steps }) => {
                let progress = step as f32 / steps.saturating_sub(1).max(1) as f32;
                self.distil(batch, weight * progress.min(1.0))
            }
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{ModuleVisitor, Param};
    use burn::tensor::{Device, Distribution, TensorData};

    fn classifier(device: &Device) -> (Classifier, MnistBatch) {
        device.seed(5);
        let model = infer::Model::new(device);
        let ema = Ema::of(&model, 0.999, 10.0);
        let images = Tensor::<4>::random([8, 1, 28, 28], Distribution::Normal(0.0, 1.0), device);
        let targets = Tensor::from_data(TensorData::new((0..8i64).collect::<Vec<_>>(), [8]), device);
        (Classifier::new(model, ema, 0.1), MnistBatch { images, targets })
    }

    fn loss(output: &ClassificationOutput) -> f32 {
        output.loss.clone().into_scalar::<f32>()
    }

    #[test]
    fn without_the_teacher_the_loss_is_burns_smoothed_cross_entropy() {
        let device = Device::flex().autodiff();
        let (classifier, batch) = classifier(&device);
        let plain = loss(&classifier.classify(&classifier.model, batch.clone()));
        let distilled = loss(&classifier.distil(batch, 0.0));
        assert!((plain - distilled).abs() < 1e-5, "{plain} vs {distilled}");
    }

    /// With the whole weight on the teacher, the loss is the cross-entropy of the model's
    /// predictions against the averaged model's, whatever the labels say.
    #[test]
    fn at_full_weight_the_targets_are_the_averaged_models_predictions() {
        let device = Device::flex().autodiff();
        let (classifier, batch) = classifier(&device);
        let teacher = classifier.teacher_predictions(batch.images.clone());
        let student = log_softmax(classifier.model.forward_with(&TrainingOps, batch.images.clone()), 1);
        let want = teacher.mul(student).sum_dim(1).mean().neg().into_scalar::<f32>();
        let other_labels = MnistBatch { targets: batch.targets.clone().flip([0]), ..batch.clone() };
        for batch in [batch, other_labels] {
            let got = loss(&classifier.distil(batch, 1.0));
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
    }

    #[test]
    fn reading_the_teacher_leaves_the_live_batch_norm_statistics_alone() {
        let device = Device::flex().autodiff();
        let (classifier, batch) = classifier(&device);
        // A training-mode pass moves the live statistics away from the average's.
        drop(classifier.model.forward_with(&TrainingOps, batch.images.clone()));
        drop(classifier.model.valid()); // which folds that pass's pending update into them
        let before = values(&classifier.model);
        drop(classifier.teacher_predictions(batch.images));
        assert_eq!(values(&classifier.model), before);
    }

    /// Every float the model holds, running statistics included.
    fn values(model: &infer::Model) -> Vec<f32> {
        struct Collect(Vec<f32>);
        impl ModuleVisitor for Collect {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0.extend(param.val().into_data().iter::<f32>());
            }
        }
        let mut collect = Collect(Vec::new());
        model.visit(&mut collect);
        collect.0
    }
}
