//! The model's two hot spots as fused ops on burn's flex backend, with their own backward
//! passes for training.
//!
//! A flex training step spent most of its time in two places that burn runs generically:
//! GELU then max-pool (scalar `erf` on one thread, an index tensor per pooled value), and
//! BatchNorm in training mode (each statistic a transpose of the whole activation and a
//! reduction). Both are burn backend extensions here: [`gelu_max_pool`] for `Flex` and
//! `Autodiff<Flex>`, [`batch_norm`] for `Autodiff<Flex>` (training; inference uses the
//! running statistics, which burn does cheaply). Every other backend, and flex without the
//! `autodiff` feature where a backward pass would be needed, takes burn's own ops, which
//! compute the same functions.

use burn::nn::BatchNorm;
use burn::tensor::Tensor;
use burn::tensor::activation::gelu;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;

#[cfg(feature = "autodiff")]
mod batch_norm;
#[cfg(feature = "flex")]
mod gelu_pool;

/// `max_pool_2x2(gelu(x))` for `x` of shape `[batch, channels, height, width]`.
pub(crate) fn gelu_max_pool(x: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if runs_fused(&x.device()) {
        return gelu_pool::fused(x);
    }
    max_pool2d(gelu(x), MaxPoolOptions::new([2, 2]))
}

/// `norm.forward(x)`, with the training-mode statistics computed by the fused op.
pub(crate) fn batch_norm(norm: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "autodiff")]
    if x.device().is_autodiff() && norm.training.is_enabled() && runs_fused(&x.device()) {
        return batch_norm::train(norm, x);
    }
    norm.forward(x)
}

/// Flex itself, or autodiff over flex where this crate has the backward passes.
#[cfg(feature = "flex")]
fn runs_fused(device: &burn::tensor::Device) -> bool {
    let dispatch = device.as_dispatch();
    let inner = dispatch.clone().inner();
    let differentiated = &inner != dispatch;
    matches!(inner, burn::backend::DispatchDevice::Flex(_)) && (cfg!(feature = "autodiff") || !differentiated)
}

#[cfg(feature = "flex")]
fn contiguous(x: &burn::backend::flex::FlexTensor) -> burn::backend::flex::FlexTensor {
    if x.is_contiguous() { x.clone() } else { x.to_contiguous() }
}

/// Runs `work` on every item, on all cores where there is std; `scratch` is per thread.
#[cfg(all(feature = "flex", feature = "std"))]
fn for_each_plane<P, S>(planes: P, scratch: S, work: impl Fn(&mut S, P::Item) + Sync + Send)
where
    P: Iterator + Send,
    P::Item: Send,
    S: Clone + Send,
{
    use rayon::iter::{ParallelBridge, ParallelIterator};
    planes.par_bridge().for_each_with(scratch, work);
}

#[cfg(all(feature = "flex", not(feature = "std")))]
fn for_each_plane<P: Iterator, S>(planes: P, mut scratch: S, work: impl Fn(&mut S, P::Item)) {
    planes.for_each(|plane| work(&mut scratch, plane));
}
