//! GELU followed by 2x2 max pooling, as one operation on the flex backend.
//!
//! Both conv blocks end in `max_pool_2x2(gelu(x))`. burn's flex backend evaluates exact GELU
//! with a scalar `erf` on one thread and keeps an index tensor for every pooled value;
//! together that was about 40% of a training step. Fused, the forward pass evaluates a
//! vectorised `erf` on both cores and keeps one byte per window (which of the four won), and
//! the backward pass needs GELU's derivative at only that one input in four.
//!
//! The op is a burn backend extension for `Flex` and, with the `autodiff` feature, for
//! `Autodiff<Flex>` with a handwritten backward pass. Every other backend composes burn's own
//! `gelu` and `max_pool2d`, which compute the same function.

use burn::tensor::Tensor;
use burn::tensor::activation::gelu;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;

#[cfg(feature = "flex")]
mod flex;

/// `max_pool_2x2(gelu(x))` for `x` of shape `[batch, channels, height, width]`: fused where
/// the device runs flex, burn's two ops elsewhere.
pub(crate) fn gelu_max_pool(x: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if flex::runs_fused(&x.device()) {
        return flex::gelu_max_pool(x);
    }
    max_pool2d(gelu(x), MaxPoolOptions::new([2, 2]))
}
