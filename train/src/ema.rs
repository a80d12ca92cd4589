//! An exponential moving average of the model's weights: what a run exports and validates;
//! and the plain mean of several runs' weights, which a run of branches exports.
//!
//! The average is running state of the training module, as BatchNorm's statistics are, so
//! burn-train checkpoints it with the model and a resumed run carries it on exactly. It covers
//! every float tensor of the model, BatchNorm's running statistics included, so the averaged
//! statistics belong to the averaged weights.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, RunningState};
use burn::tensor::{Tensor, TensorData};

/// The average of one model's tensors, flattened, in the order the model visits them.
#[derive(Module, Debug)]
pub struct Ema {
    average: Vec<RunningState<Tensor<1>>>,
    /// Updates so far, for the warm-up of the decay.
    updates: RunningState<Tensor<1>>,
    #[module(skip)]
    decay: f64,
    #[module(skip)]
    ramp: f64,
}

impl Ema {
    /// An average that starts at `model`'s current tensors, with a decay of at most `decay`
    /// that ramps up as `(1 + n) / (ramp + n)` after `n` updates (see [`Ema::update`]).
    pub fn of(model: &infer::Model, decay: f64, ramp: f64) -> Self {
        let device = &model.devices()[0];
        let average = tensors(model).into_iter().map(RunningState::new).collect();
        let updates = RunningState::new(Tensor::from_data(TensorData::from([0.0f32]), device));
        Self { average, updates, decay, ramp }
    }

    /// Moves the average towards `model`'s current tensors. The decay ramps up from
    /// `1 / ramp` as `(1 + n) / (ramp + n)` after `n` updates, so the random start is soon
    /// forgotten. While the ramp decides it, the average weighs update `k` of `N` about as
    /// `(k / N)^(ramp - 2)`, which puts its centre `(ramp - 1) / ramp` of the way through the
    /// run: nine tenths at a ramp of 10, three quarters at 4, the middle (an equal average
    /// of every step) at 2.
    /// Returns how many updates came before this one.
    pub fn update(&self, model: &infer::Model) -> usize {
        let updates = self.updates.value_sync();
        let n = f64::from(updates.clone().into_scalar::<f32>());
        let decay = self.decay.min((1.0 + n) / (self.ramp + n));
        for (average, current) in self.average.iter().zip(tensors(model)) {
            let moved = average.value_sync().mul_scalar(decay).add(current.mul_scalar(1.0 - decay));
            // Detached, as BatchNorm's running statistics are, so no step's graph keeps the
            // chain of averages alive.
            average.update(moved.detach());
        }
        self.updates.update(updates.add_scalar(1.0).detach());
        n as usize
    }

    /// `model` with the averaged tensors in place of its own; `model` itself at decay 0.
    pub fn weights(&self, model: &infer::Model) -> infer::Model {
        if self.decay == 0.0 {
            return model.clone();
        }
        model.clone().map(&mut Replace(self.average.iter().map(RunningState::value_sync)))
    }
}

/// The element-wise mean of `models`' tensors (weights and BatchNorm statistics), summed in
/// order and then divided; a single model comes back as it is.
pub fn mean(models: Vec<infer::Model>) -> infer::Model {
    let count = models.len();
    let sums = models
        .iter()
        .map(tensors)
        .reduce(|sums, next| sums.into_iter().zip(next).map(|(sum, tensor)| sum + tensor).collect())
        .expect("the mean of no models");
    let first = models.into_iter().next().expect("the mean of no models");
    if count == 1 {
        return first;
    }
    first.map(&mut Replace(sums.into_iter().map(|sum| sum.div_scalar(count as f32))))
}

/// A model's float tensors (weights and running statistics), detached and flattened.
pub(crate) fn tensors(model: &infer::Model) -> Vec<Tensor<1>> {
    struct Collect(Vec<Tensor<1>>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(param.val().detach().flatten(0, D - 1));
        }
    }
    let mut collect = Collect(Vec::new());
    model.visit(&mut collect);
    collect.0
}

/// Puts flattened tensors, in the order [`tensors`] gives them, back into a model.
struct Replace<I>(I);

impl<I: Iterator<Item = Tensor<1>>> ModuleMapper for Replace<I> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let replacement = self.0.next().expect("a tensor for every tensor of the model");
        param.map(|tensor| replacement.reshape(tensor.shape()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn first_weight(model: &infer::Model) -> Vec<f32> {
        tensors(model)[0].to_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn follows_the_model_with_a_warming_decay() {
        let device = Device::flex();
        device.seed(1);
        let start = infer::Model::new(&device);
        let ema = Ema::of(&start, 0.999, 10.0);
        let later = infer::Model::new(&device);
        ema.update(&later);
        // First decay: min(0.999, 1/10) = 0.1.
        let expected: Vec<f32> =
            first_weight(&start).iter().zip(first_weight(&later)).map(|(a, b)| 0.1 * a + 0.9 * b).collect();
        let averaged = first_weight(&ema.weights(&start));
        for (got, want) in averaged.iter().zip(&expected) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        assert_ne!(averaged, first_weight(&start));
    }

    #[test]
    fn a_ramp_of_two_averages_every_step_equally() {
        let device = Device::flex();
        device.seed(2);
        let models: Vec<infer::Model> = (0..4).map(|_| infer::Model::new(&device)).collect();
        let ema = Ema::of(&models[0], 0.9999, 2.0);
        for model in &models[1..] {
            ema.update(model);
        }
        let weights: Vec<Vec<f32>> = models.iter().map(first_weight).collect();
        let averaged = first_weight(&ema.weights(&models[0]));
        for (i, got) in averaged.iter().enumerate() {
            let want = weights.iter().map(|w| w[i]).sum::<f32>() / 4.0;
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    #[test]
    fn the_mean_of_models_is_their_element_wise_mean() {
        let device = Device::flex();
        device.seed(3);
        let models: Vec<infer::Model> = (0..3).map(|_| infer::Model::new(&device)).collect();
        let weights: Vec<Vec<f32>> = models.iter().map(first_weight).collect();
        let mean_weight = first_weight(&mean(models.clone()));
        for (i, got) in mean_weight.iter().enumerate() {
            let want = weights.iter().map(|w| w[i]).sum::<f32>() / 3.0;
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        let one = models.into_iter().next().unwrap();
        assert_eq!(mean(vec![one.clone()]).to_bytes(), one.to_bytes());
    }

    #[test]
    fn the_averaged_model_round_trips_through_model_bin() {
        let device = Device::flex();
        let model = infer::Model::new(&device);
        let ema = Ema::of(&model, 0.99, 10.0);
        let bytes = ema.weights(&model).to_bytes();
        assert_eq!(bytes, model.to_bytes(), "an average that has not moved is the model itself");
    }
}
