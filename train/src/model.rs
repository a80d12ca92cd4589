//! The training face of [`infer::Model`]: the loss (on blended labels, self-distilled if
//! asked), the weight average, sharpness-aware gradients if asked, and burn-train's step
//! traits.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Gradients, Int, Tensor};
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
    /// Sharpness-aware minimisation's radius, when on.
    #[module(skip)]
    sam_rho: Option<f32>,
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
            sam_rho: None,
        }
    }

    /// The same, trained toward the averaged model's predictions too, with a weight rising
    /// to `weight` over a run of `steps` steps (see [`crate::training::TrainingConfig`]).
    pub fn with_self_distillation(self, weight: f32, steps: usize) -> Self {
        Self { self_distillation: (weight > 0.0).then_some(SelfDistillation { weight, steps }), ..self }
    }

    /// The same, its gradients taken sharpness-aware (see [`sharpness_aware_gradients`]) with
    /// radius `rho`; 0 keeps plain gradients.
    pub fn with_sam(self, rho: f32) -> Self {
        Self { sam_rho: (rho > 0.0).then_some(rho), ..self }
    }

    /// The weights a run exports and validates: the moving average.
    pub fn averaged(&self) -> infer::Model {
        self.ema.weights(&self.model)
    }

    /// burn's label-smoothed cross-entropy; a blended batch's soft targets go to
    /// [`Self::soft_cross_entropy`].
    fn classify(&self, model: &infer::Model, batch: MnistBatch) -> ClassificationOutput {
        if batch.mix.is_some() {
            return self.soft_cross_entropy(model, batch, None);
        }
        let logits = model.forward_with(&TrainingOps, batch.images);
        let loss = CrossEntropyLossConfig::new()
            .with_smoothing(self.label_smoothing)
            .init(&logits.device())
            .forward(logits.clone(), batch.targets.clone());
        ClassificationOutput::new(loss, logits, batch.targets)
    }

    /// Cross-entropy against soft targets: the smoothed labels (blended as the batch's images
    /// were, see [`MnistBatch::mix`]), mixed with `teacher`'s predictions for the same
    /// (distorted) images at its weight.
    fn soft_cross_entropy(
        &self,
        model: &infer::Model,
        batch: MnistBatch,
        teacher: Option<(Tensor<2>, f32)>,
    ) -> ClassificationOutput {
        let logits = model.forward_with(&TrainingOps, batch.images.clone());
        let mut targets = self.label_targets(&batch);
        if let Some((taught, weight)) = teacher {
            targets = targets.mul_scalar(1.0 - weight).add(taught.mul_scalar(weight));
        }
        let loss = log_softmax(logits.clone(), 1).mul(targets).sum_dim(1).mean().neg();
        // Training accuracy counts the label that outweighs the other in each blend.
        let shown = match batch.mix {
            Some(weight) if weight < 0.5 => batch.targets.flip([0]),
            _ => batch.targets,
        };
        ClassificationOutput::new(loss, logits, shown)
    }

    /// The batch's labels as smoothed one-hot rows, each blended with the label of the image
    /// it was blended with.
    fn label_targets(&self, batch: &MnistBatch) -> Tensor<2> {
        let smoothing = self.label_smoothing.unwrap_or(0.0);
        let classes = infer::NUM_CLASSES;
        let smoothed = |labels: Tensor<1, Int>| {
            labels.one_hot::<2>(classes).float().mul_scalar(1.0 - smoothing).add_scalar(smoothing / classes as f32)
        };
        let own = smoothed(batch.targets.clone());
        match batch.mix {
            None => own,
            Some(weight) => {
                own.mul_scalar(weight).add(smoothed(batch.targets.clone().flip([0])).mul_scalar(1.0 - weight))
            }
        }
    }

    /// The averaged model's class probabilities for `images`, outside the autodiff graph.
    fn teacher_predictions(&self, images: Tensor<4>) -> Tensor<2> {
        // `valid()` gives the average fresh running statistics, so that reading it leaves the
        // live model's BatchNorm statistics alone (burn's clones share them).
        let teacher = self.valid().averaged();
        Tensor::from_inner(softmax(teacher.forward(images.without_autodiff()), 1))
    }
}

impl TrainStep for Classifier {
    type Input = MnistBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: MnistBatch) -> TrainOutput<ClassificationOutput> {
        // The weights this step starts from; the optimiser moves them once the step returns.
        let step = self.ema.update(&self.model);
        let teacher = self.self_distillation.map(|SelfDistillation { weight, steps }| {
            let progress = step as f32 / steps.saturating_sub(1).max(1) as f32;
            (self.teacher_predictions(batch.images.clone()), weight * progress.min(1.0))
        });
        let loss = |model: &infer::Model| match &teacher {
            None => self.classify(model, batch.clone()),
            Some(teacher) => self.soft_cross_entropy(model, batch.clone(), Some(teacher.clone())),
        };
        let output = loss(&self.model);
        let Some(rho) = self.sam_rho else {
            return TrainOutput::new(self, output.loss.backward(), output);
        };
        let grads = sharpness_aware_gradients(&self.model, output.loss.backward(), rho, |model| loss(model).loss);
        TrainOutput { grads, item: output }
    }
}

/// Sharpness-aware minimisation's gradient: the loss's gradient at the weights moved `rho`
/// (in the Euclidean norm over all of them) uphill along `grads`, the gradient at `model`'s
/// own weights, so a step favours weights whose whole neighbourhood has a low loss. The
/// moved copy has BatchNorm statistics of its own, so its pass leaves the live ones alone.
fn sharpness_aware_gradients(
    model: &infer::Model,
    grads: Gradients,
    rho: f32,
    loss: impl Fn(&infer::Model) -> Tensor<1>,
) -> GradientsParams {
    let moved = uphill(model, &GradientsParams::from_grads(grads, model), rho);
    GradientsParams::from_grads(loss(&moved).backward(), &moved)
}

/// A copy of `model` with its weights moved `rho` along `grads` (normalised over all of
/// them), each a fresh leaf of the graph, and BatchNorm statistics of its own.
fn uphill(model: &infer::Model, grads: &GradientsParams, rho: f32) -> infer::Model {
    let norm = gradient_norm(model, grads);
    // `valid().train()` copies the running statistics, which burn's clones would share.
    model.valid().train().map(&mut MoveAlong { grads, scale: rho / (norm + 1e-12) })
}

/// The Euclidean norm of all of `model`'s gradients together.
fn gradient_norm(model: &infer::Model, grads: &GradientsParams) -> f32 {
    struct SquaredNorm<'a>(&'a GradientsParams, f64);
    impl ModuleVisitor for SquaredNorm<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(grad) = self.0.get::<D>(param.id) {
                self.1 += f64::from(grad.powi_scalar(2).sum().into_scalar::<f32>());
            }
        }
    }
    let mut squared = SquaredNorm(grads, 0.0);
    model.visit(&mut squared);
    squared.1.sqrt() as f32
}

/// Moves each trained weight by `scale` times its gradient, as a fresh leaf of the graph.
struct MoveAlong<'a> {
    grads: &'a GradientsParams,
    scale: f32,
}

impl ModuleMapper for MoveAlong<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        match self.grads.get::<D>(param.id) {
            Some(grad) => {
                param.map(|weight| Tensor::from_inner(weight.inner().add(grad.mul_scalar(self.scale))).require_grad())
            }
            None => param,
        }
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
        (Classifier::new(model, ema, 0.1), MnistBatch { images, targets, mix: None })
    }

    fn loss(output: &ClassificationOutput) -> f32 {
        output.loss.clone().into_scalar::<f32>()
    }

    #[test]
    fn without_the_teacher_the_loss_is_burns_smoothed_cross_entropy() {
        let device = Device::flex().autodiff();
        let (classifier, batch) = classifier(&device);
        let plain = loss(&classifier.classify(&classifier.model, batch.clone()));
        let taught = classifier.teacher_predictions(batch.images.clone());
        let distilled = loss(&classifier.soft_cross_entropy(&classifier.model, batch, Some((taught, 0.0))));
        assert!((plain - distilled).abs() < 1e-5, "{plain} vs {distilled}");
    }

    /// Cross-entropy is linear in its targets, so a blended batch's loss is the blend of the
    /// losses against each image's own labels and against its partner's.
    #[test]
    fn a_blended_batch_is_scored_against_both_labels_in_its_shares() {
        let device = Device::flex().autodiff();
        let (classifier, batch) = classifier(&device);
        let partners = MnistBatch { targets: batch.targets.clone().flip([0]), ..batch.clone() };
        let (own, other) = (
            loss(&classifier.classify(&classifier.model, batch.clone())),
            loss(&classifier.classify(&classifier.model, partners)),
        );
        for weight in [1.0, 0.3] {
            let output = classifier.classify(&classifier.model, MnistBatch { mix: Some(weight), ..batch.clone() });
            let want = weight * own + (1.0 - weight) * other;
            assert!((loss(&output) - want).abs() < 1e-5, "weight {weight}: {} vs {want}", loss(&output));
            // Accuracy is counted against the label with the larger share.
            let dominant = if weight < 0.5 { batch.targets.clone().flip([0]) } else { batch.targets.clone() };
            assert!(output.targets.equal(dominant).all().into_scalar::<bool>(), "weight {weight}");
        }
    }

    /// With the whole weight on the teacher, the loss is the cross-entropy of the model's
    /// predictions against the averaged model's, whatever the labels say.
    #[test]
    fn at_full_weight_the_targets_are_the_averaged_models_predictions() {
        let device = Device::flex().autodiff();
        let (classifier, batch) = classifier(&device);
        let teacher = classifier.teacher_predictions(batch.images.clone());
        let student = log_softmax(classifier.model.forward_with(&TrainingOps, batch.images.clone()), 1);
        let want = teacher.clone().mul(student).sum_dim(1).mean().neg().into_scalar::<f32>();
        let other_labels = MnistBatch { targets: batch.targets.clone().flip([0]), ..batch.clone() };
        for batch in [batch, other_labels] {
            let got = loss(&classifier.soft_cross_entropy(&classifier.model, batch, Some((teacher.clone(), 1.0))));
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
        assert!(values(&classifier.model) == before, "the live statistics moved");
    }

    #[test]
    fn sharpness_aware_weights_lie_rho_uphill() {
        let device = Device::flex().autodiff();
        let (classifier, batch) = classifier(&device);
        let loss = |model: &infer::Model| classifier.classify(model, batch.clone()).loss;
        let at_start = loss(&classifier.model);
        let grads = GradientsParams::from_grads(at_start.clone().backward(), &classifier.model);
        let moved = uphill(&classifier.model, &grads, 0.05);
        let distance = values(&moved).iter().zip(values(&classifier.model)).map(|(a, b)| (a - b).powi(2)).sum::<f32>();
        assert!((distance.sqrt() - 0.05).abs() < 1e-4, "moved {}", distance.sqrt());
        let (before, after) = (at_start.into_scalar::<f32>(), loss(&moved).into_scalar::<f32>());
        assert!(after > before, "loss {before} before, {after} uphill");
    }

    /// At a vanishing radius the gradient is the plain one, for every parameter.
    #[test]
    fn a_vanishing_radius_gives_the_plain_gradient() {
        let device = Device::flex().autodiff();
        let (classifier, batch) = classifier(&device);
        let loss = |model: &infer::Model| classifier.classify(model, batch.clone()).loss;
        let plain = GradientsParams::from_grads(loss(&classifier.model).backward(), &classifier.model);
        let again = loss(&classifier.model).backward();
        drop(classifier.model.valid()); // those passes' statistics, folded in before the comparison
        let before = values(&classifier.model);
        let sharp = sharpness_aware_gradients(&classifier.model, again, 1e-9, loss);
        assert_eq!(sharp.len(), plain.len());
        struct Compare<'a>(&'a GradientsParams, &'a GradientsParams, usize);
        impl ModuleVisitor for Compare<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let (Some(a), Some(b)) = (self.0.get::<D>(param.id), self.1.get::<D>(param.id)) else {
                    return;
                };
                let worst = a.sub(b).abs().max().into_scalar::<f32>();
                assert!(worst < 1e-5, "largest difference {worst}");
                self.2 += 1;
            }
        }
        let mut compare = Compare(&plain, &sharp, 0);
        classifier.model.visit(&mut compare);
        assert_eq!(compare.2, plain.len(), "every trained tensor compared");
        // The moved copy's pass left the live BatchNorm statistics alone.
        drop(classifier.model.valid());
        assert!(values(&classifier.model) == before, "the live statistics moved");
    }

    /// Every float the model holds, running statistics included.
    fn values(model: &infer::Model) -> Vec<f32> {
        crate::ema::tensors(model)
            .into_iter()
            .flat_map(|tensor| tensor.into_data().iter::<f32>().collect::<Vec<_>>())
            .collect()
    }
}
