//! The model's training hot spots as fused ops on burn's flex backend, with their own
//! backward passes: [`TrainingOps`], the [`infer::ops::Ops`] a training step runs the model with.
//!
//! A flex training step spent most of its time where burn runs generically: GELU then
//! max-pool (scalar `erf` on one thread, an index tensor per pooled value), BatchNorm in
//! training mode (each statistic a transpose of the whole activation and a reduction), and
//! the convolutions (a copy of the batch to channels-last forward, transposed copies of the
//! activations backward). They are burn backend extensions on `Flex` and `Autodiff<Flex>`,
//! each held to burn's own op by a test of values and gradients. Every other backend takes
//! burn's ops, which compute the same functions.

use burn::backend::DispatchDevice;
use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};
use infer::ops::{InferenceOps, Ops};

mod batch_norm;
mod conv;
mod gelu_pool;

/// The fused ops where a step trains on flex; burn's ops elsewhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrainingOps;

impl Ops for TrainingOps {
    fn conv2d(&self, conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
        if trains_on_flex(&x.device()) && conv::handles(conv) {
            return conv::train(conv, x);
        }
        InferenceOps.conv2d(conv, x)
    }

    fn batch_norm(&self, norm: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
        if trains_on_flex(&x.device()) && norm.training.is_enabled() {
            return batch_norm::train(norm, x);
        }
        InferenceOps.batch_norm(norm, x)
    }

    fn gelu_max_pool(&self, x: Tensor<4>) -> Tensor<4> {
        if trains_on_flex(&x.device()) {
            return gelu_pool::train(x);
        }
        InferenceOps.gelu_max_pool(x)
    }
}

/// Autodiff over flex: where these ops have their backward passes.
fn trains_on_flex(device: &Device) -> bool {
    device.is_autodiff() && matches!(device.as_dispatch().clone().inner(), DispatchDevice::Flex(_))
}

infer::widest_vectors! {
    /// The sum of one plane's values.
    fn plane_sum(values: &[f32]) -> f64 {
        lane_sum(values, values, |x, _| x)
    }
}

/// The sum of `term` over pairs from `a` and `b`, in eight f32 lanes so that it vectorises.
/// It runs over one plane (at most 26x26 values here); planes add up in f64.
#[inline(always)]
fn lane_sum(a: &[f32], b: &[f32], term: impl Fn(f32, f32) -> f32) -> f64 {
    let (a, b) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a.remainder().iter().zip(b.remainder()).map(|(&a, &b)| term(a, b)).sum();
    let mut lanes = [0.0f32; 8];
    for (a, b) in a.zip(b) {
        for lane in 0..8 {
            lanes[lane] += term(a[lane], b[lane]);
        }
    }
    f64::from(lanes.iter().sum::<f32>() + tail)
}
