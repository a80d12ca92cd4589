//! BatchNorm in training mode: batch statistics, normalisation and the backward pass, each
//! one or two passes over the activation, parallel over channels or planes.
//!
//! burn's generic version transposes the activation to put channels first before every
//! reduction, several times forward and backward; at 22 MB an activation that was a third
//! of a training step. Sums run in f32 lanes within a plane and in f64 across planes.

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, DType, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::module::RunningState;
use burn::nn::BatchNorm;
use burn::tensor::{Tensor, TensorData};
use rayon::iter::{IntoParallelIterator, ParallelIterator};

use infer::ops::{contiguous, write_planes};
use infer::widest_vectors;

use super::{lane_sum, plane_sum};

#[backend_extension(Flex, Autodiff)]
pub trait BatchNormTrain: Backend {
    /// BatchNorm of `x` `[batch, channels, height, width]` with its own batch statistics:
    /// `(output, mean, biased variance)`, the statistics per channel.
    fn batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// What `BatchNorm::forward` does in training, the statistics from the fused op: normalise
/// with the batch's statistics and move the running ones towards them by `momentum`.
pub(super) fn train(norm: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    let (output, mean, variance) = <Dispatch as BatchNormTrain>::batch_norm_train(
        x.into_dispatch(),
        norm.gamma.val().into_dispatch(),
        norm.beta.val().into_dispatch(),
        norm.epsilon,
    );
    let output = Tensor::<4>::from_dispatch(output);
    let device = output.device();
    let follow = |running: &RunningState<Tensor<1>>, batch| {
        let batch = Tensor::<1>::from_dispatch(batch).detach().mul_scalar(norm.momentum);
        let moved = running.value_sync().to_device(&device).mul_scalar(1.0 - norm.momentum).add(batch);
        running.update(moved.detach());
    };
    follow(&norm.running_mean, mean);
    follow(&norm.running_var, variance);
    output
}

impl BatchNormTrain for Flex {
    fn batch_norm_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let stats = Statistics::of(&x, epsilon);
        (stats.normalise(&x, &gamma, &beta), stats.per_channel(|c| c.mean), stats.per_channel(|c| c.variance))
    }
}

impl<C: CheckpointStrategy> BatchNormTrain for Autodiff<Flex, C> {
    fn batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let nodes = [x.node(), gamma.node(), beta.node()];
        let (x, gamma, beta) = (x.into_primitive(), gamma.into_primitive(), beta.into_primitive());
        let stats = Statistics::of(&x, epsilon);
        let output = stats.normalise(&x, &gamma, &beta);
        let (mean, variance) =
            (Self::from_inner(stats.per_channel(|c| c.mean)), Self::from_inner(stats.per_channel(|c| c.variance)));
        let output = match BatchNormBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((x, gamma, Arc::new(stats)), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        };
        (output, mean, variance)
    }
}

/// One channel's batch statistics.
#[derive(Clone, Copy, Debug)]
struct Channel {
    mean: f32,
    variance: f32,
    inv_std: f32,
}

/// The shape of the input and its per-channel statistics.
#[derive(Debug)]
struct Statistics {
    shape: [usize; 4],
    batch: usize,
    plane: usize,
    channels: Vec<Channel>,
}

impl Statistics {
    fn of(x: &FlexTensor, epsilon: f64) -> Self {
        assert_eq!(x.dtype(), DType::F32, "batch_norm_train takes f32 feature maps");
        let shape = x.shape().dims::<4>();
        let [batch, channels, height, width] = shape;
        let (x, plane) = (contiguous(x), height * width);
        let input = x.as_slice::<f32>().expect("contiguous f32");
        let count = (batch * plane) as f64;
        let channels = (0..channels)
            .into_par_iter()
            .map(|c| {
                let planes = || (0..batch).map(move |n| &input[(n * channels + c) * plane..][..plane]);
                let mean = planes().map(plane_sum).sum::<f64>() / count;
                let m = mean as f32;
                let variance = planes().map(|x| squared_deviation_sum(x, m)).sum::<f64>() / count;
                let inv_std = 1.0 / (variance + epsilon).sqrt();
                Channel { mean: mean as f32, variance: variance as f32, inv_std: inv_std as f32 }
            })
            .collect();
        Statistics { shape, batch, plane, channels }
    }

    fn normalise(&self, x: &FlexTensor, gamma: &FlexTensor, beta: &FlexTensor) -> FlexTensor {
        let (x, gamma, beta) = (contiguous(x), contiguous(gamma), contiguous(beta));
        let input = x.as_slice::<f32>().expect("contiguous f32");
        let (gamma, beta) = (gamma.as_slice::<f32>().expect("f32"), beta.as_slice::<f32>().expect("f32"));
        let output = write_planes(
            input.len(),
            self.plane,
            input.chunks(self.plane).enumerate(),
            (),
            |_, output, (index, input)| {
                let c = index % self.channels.len();
                let Channel { mean, inv_std, .. } = self.channels[c];
                let (scale, shift) = (inv_std * gamma[c], beta[c] - mean * inv_std * gamma[c]);
                scale_shift(output, input, scale, shift);
            },
        );
        self.tensor(output)
    }

    /// Gradients of x, gamma and beta from the output's.
    fn backward(&self, x: &FlexTensor, gamma: &FlexTensor, grad: &FlexTensor) -> [FlexTensor; 3] {
        let (x, gamma, grad) = (contiguous(x), contiguous(gamma), contiguous(grad));
        let input = x.as_slice::<f32>().expect("contiguous f32");
        let gamma = gamma.as_slice::<f32>().expect("f32");
        let grad = grad.as_slice::<f32>().expect("contiguous f32");
        let (channels, plane, batch) = (self.channels.len(), self.plane, self.batch);
        // Per channel: sum of the output's gradient (beta's gradient) and of it times the
        // normalised input (gamma's gradient).
        let sums: Vec<(f64, f64)> = (0..channels)
            .into_par_iter()
            .map(|c| {
                let Channel { mean, inv_std, .. } = self.channels[c];
                (0..batch).fold((0.0, 0.0), |(dy_sum, dy_xhat_sum), n| {
                    let at = (n * channels + c) * plane;
                    let (x, dy) = (&input[at..][..plane], &grad[at..][..plane]);
                    let dy_xhat = normalised_dot(x, dy, mean, inv_std);
                    (dy_sum + plane_sum(dy), dy_xhat_sum + dy_xhat)
                })
            })
            .collect();
        let count = (batch * plane) as f32;
        let inputs = input.chunks(plane).zip(grad.chunks(plane)).enumerate();
        let input_grad = write_planes(input.len(), plane, inputs, (), |_, input_grad, (index, (x, dy))| {
            let c = index % channels;
            let Channel { mean, inv_std, .. } = self.channels[c];
            let (dy_mean, dy_xhat_mean) = (sums[c].0 as f32 / count, sums[c].1 as f32 / count);
            input_grad_plane(input_grad, x, dy, [gamma[c] * inv_std, mean, inv_std, dy_mean, dy_xhat_mean]);
        });
        let per_channel = |pick: fn(&(f64, f64)) -> f64| {
            FlexTensor::from_data(TensorData::new(sums.iter().map(|s| pick(s) as f32).collect::<Vec<_>>(), [channels]))
        };
        [self.tensor(input_grad), per_channel(|s| s.1), per_channel(|s| s.0)]
    }

    fn tensor(&self, values: Vec<f32>) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(values, self.shape))
    }

    /// One value per channel, as a `[channels]` tensor.
    fn per_channel(&self, pick: fn(&Channel) -> f32) -> FlexTensor {
        let values: Vec<f32> = self.channels.iter().map(pick).collect();
        FlexTensor::from_data(TensorData::new(values, [self.channels.len()]))
    }
}

widest_vectors! {
    /// `sum of (x - m)^2` over one plane.
    fn squared_deviation_sum(x: &[f32], m: f32) -> f64 {
        lane_sum(x, x, |x, _| (x - m) * (x - m))
    }
}

widest_vectors! {
    /// `sum of dy * (x - mean) * inv_std` over one plane: the output gradient against the
    /// normalised input.
    fn normalised_dot(x: &[f32], dy: &[f32], mean: f32, inv_std: f32) -> f64 {
        lane_sum(x, dy, |x, dy| dy * (x - mean) * inv_std)
    }
}

widest_vectors! {
    /// `y = x * scale + shift` over one plane.
    fn scale_shift(y: &mut [f32], x: &[f32], scale: f32, shift: f32) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x * scale + shift;
        }
    }
}

widest_vectors! {
    /// The input gradient over one plane, from the output gradient `dy` and the channel's
    /// `[gamma * inv_std, mean, inv_std, mean of dy, mean of dy * x_hat]`.
    fn input_grad_plane(dx: &mut [f32], x: &[f32], dy: &[f32], channel: [f32; 5]) {
        let [scale, mean, inv_std, dy_mean, dy_xhat_mean] = channel;
        for (dx, (&x, &dy)) in dx.iter_mut().zip(x.iter().zip(dy)) {
            *dx = scale * (dy - dy_mean - (x - mean) * inv_std * dy_xhat_mean);
        }
    }
}

#[derive(Debug)]
struct BatchNormBackward;

impl Backward<Flex, 3> for BatchNormBackward {
    type State = (FlexTensor, FlexTensor, Arc<Statistics>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        let (x, gamma, stats) = ops.state;
        for (parent, grad) in ops.parents.into_iter().zip(stats.backward(&x, &gamma, &grad)) {
            if let Some(parent) = parent {
                grads.register::<Flex>(parent.id, grad);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::nn::BatchNormConfig;
    use burn::tensor::{Device, Distribution};

    /// The fused op against burn's BatchNorm: output, running statistics after two steps, and
    /// the gradients of the input, gamma and beta.
    #[test]
    fn matches_burns_batch_norm_in_training() {
        let device = Device::flex().autodiff();
        assert!(super::super::trains_on_flex(&device), "a training step takes the fused path on flex");
        device.seed(3);
        let x = Tensor::<4>::random([6, 4, 5, 5], Distribution::Normal(0.5, 2.0), &device);
        let weights = Tensor::<4>::random([6, 4, 5, 5], Distribution::Normal(0.0, 1.0), &device);
        // Distinct gamma and beta, so that a mix-up between their gradients shows.
        let norm = || {
            let norm = BatchNormConfig::new(4).init(&device);
            BatchNorm {
                gamma: Param::from_tensor(Tensor::from_floats([0.5, 1.0, 1.5, 2.0], &device)),
                beta: Param::from_tensor(Tensor::from_floats([-0.5, 0.0, 0.25, 1.0], &device)),
                ..norm
            }
        };
        let (fused_norm, reference) = (norm(), norm());

        let close = |a: Tensor<4>, b: Tensor<4>| {
            let (a, b) = (a.into_data().try_to_vec::<f32>().unwrap(), b.into_data().try_to_vec::<f32>().unwrap());
            let worst = a.iter().zip(&b).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(worst < 1e-5, "largest difference {worst}");
        };
        let (fused_x, reference_x) = (x.clone().require_grad(), x.clone().require_grad());
        let fused = train(&fused_norm, fused_x.clone());
        let expected = reference.forward(reference_x.clone());
        close(fused.clone(), expected.clone());
        let _ = (train(&fused_norm, x.clone()), reference.forward(x));
        for (a, b) in [
            (fused_norm.running_mean.value(), reference.running_mean.value()),
            (fused_norm.running_var.value(), reference.running_var.value()),
        ] {
            close(a.reshape([1, 1, 1, 4]), b.reshape([1, 1, 1, 4]));
        }

        let fused_grads = (fused * weights.clone()).sum().backward();
        let expected_grads = (expected * weights).sum().backward();
        close(fused_x.grad(&fused_grads).unwrap(), reference_x.grad(&expected_grads).unwrap());
        for (a, b) in [
            (fused_norm.gamma.grad(&fused_grads).unwrap(), reference.gamma.grad(&expected_grads).unwrap()),
            (fused_norm.beta.grad(&fused_grads).unwrap(), reference.beta.grad(&expected_grads).unwrap()),
        ] {
            close(a.reshape([1, 1, 1, 4]), b.reshape([1, 1, 1, 4]));
        }
    }
}
