//! GELU followed by 2x2 max pooling in training: `infer`'s fused forward pass, and a backward
//! pass that needs GELU's derivative at only one input in four, the window's winner.

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{Tensor, TensorData};
use infer::ops::{contiguous, erf, gelu_max_pool_flex, write_planes};
use infer::widest_vectors;

#[backend_extension(Flex, Autodiff)]
pub trait GeluMaxPoolTrain: Backend {
    /// `max_pool_2x2(gelu(x))` for `x` of shape `[batch, channels, height, width]`.
    fn gelu_max_pool_train(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

pub(super) fn train(x: Tensor<4>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as GeluMaxPoolTrain>::gelu_max_pool_train(x.into_dispatch()))
}

impl GeluMaxPoolTrain for Flex {
    fn gelu_max_pool_train(x: FlexTensor) -> FlexTensor {
        gelu_max_pool_flex(&x).0
    }
}

impl<C: CheckpointStrategy> GeluMaxPoolTrain for Autodiff<Flex, C> {
    fn gelu_max_pool_train(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let node = x.node();
        let x = x.into_primitive();
        match GeluMaxPoolBackward.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (pooled, winners) = gelu_max_pool_flex(&x);
                prep.finish(State { x, winners: winners.into() }, pooled)
            }
            OpsKind::UnTracked(prep) => prep.finish(gelu_max_pool_flex(&x).0),
        }
    }
}

/// The input's gradient: each window's gradient flows to its winner, times GELU'.
fn backward(x: &FlexTensor, winners: &[u8], grad: &FlexTensor) -> FlexTensor {
    let shape = x.shape().dims::<4>();
    let [_, _, height, w] = shape;
    let (x, grad) = (contiguous(x), contiguous(grad));
    let input = x.as_slice::<f32>().expect("contiguous f32");
    let grad = grad.as_slice::<f32>().expect("contiguous f32");
    let (side_in, side_out) = (height * w, (height / 2) * (w / 2));
    // Where each window's winner sits in its plane, found row by row: from the flat index it
    // took a division per value.
    let find_winners = |winners: &[u8], at: &mut [usize]| {
        for (i, (winners, at)) in winners.chunks(w / 2).zip(at.chunks_mut(w / 2)).enumerate() {
            for (j, (&winner, at)) in winners.iter().zip(at).enumerate() {
                *at = (2 * i + usize::from(winner >> 1)) * w + 2 * j + usize::from(winner & 1);
            }
        }
    };
    let inputs = input.chunks(side_in).zip(grad.chunks(side_out).zip(winners.chunks(side_out)));
    let scratch = (vec![0.0f32; side_out], vec![0usize; side_out]);
    let input_grad =
        write_planes(input.len(), side_in, inputs, scratch, |(slopes, at), input_grad, (input, (grad, winners))| {
            find_winners(winners, at);
            for (slope, &at) in slopes.iter_mut().zip(at.iter()) {
                *slope = input[at];
            }
            gelu_derivative_in_place(slopes);
            for ((&grad, &slope), &at) in grad.iter().zip(slopes.iter()).zip(at.iter()) {
                input_grad[at] = grad * slope;
            }
        });
    FlexTensor::from_data(TensorData::new(input_grad, shape))
}

widest_vectors! {
    /// GELU's derivative at each value, in place.
    fn gelu_derivative_in_place(values: &mut [f32]) {
        values.iter_mut().for_each(|x| *x = gelu_derivative(*x));
    }
}

/// d/dx of `x * Φ(x)`: `Φ(x) + x * φ(x)`.
#[inline(always)]
fn gelu_derivative(x: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)) + x * INV_SQRT_2PI * exp(-0.5 * x * x)
}

/// e^x for f32, accurate to a couple of ulp on [-87, 88] (clamped there), in a form that
/// vectorises: Cody and Waite's reduction by ln 2 in two parts, Cephes' degree-6 polynomial on
/// the remainder, and the power of two built in the exponent bits.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to the nearest integer with SSE2 alone.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * core::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[derive(Debug)]
struct GeluMaxPoolBackward;

#[derive(Clone, Debug)]
struct State {
    x: FlexTensor,
    winners: Arc<[u8]>,
}

impl Backward<Flex, 1> for GeluMaxPoolBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        if let Some(parent) = parent {
            let State { x, winners } = ops.state;
            grads.register::<Flex>(parent.id, backward(&x, &winners, &grad));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::gelu;
    use burn::tensor::module::max_pool2d;
    use burn::tensor::ops::MaxPoolOptions;
    use burn::tensor::{Device, Distribution};

    /// The fused op against burn's own gelu and max_pool2d, values and gradients, on an odd
    /// size (11x11) whose last row and column pooling drops.
    #[test]
    fn matches_burns_gelu_then_max_pool_forward_and_backward() {
        let device = Device::flex().autodiff();
        assert!(super::super::trains_on_flex(&device), "a training step takes the fused path on flex");
        device.seed(7);
        let x = Tensor::<4>::random([3, 5, 11, 11], Distribution::Normal(0.0, 2.0), &device);
        let weights = Tensor::<4>::random([3, 5, 5, 5], Distribution::Normal(0.0, 1.0), &device);

        let fused_x = x.clone().require_grad();
        let fused = train(fused_x.clone());
        let reference_x = x.require_grad();
        let reference = max_pool2d(gelu(reference_x.clone()), MaxPoolOptions::new([2, 2]));

        let close = |a: Tensor<4>, b: Tensor<4>| {
            let (a, b) = (a.into_data().try_to_vec::<f32>().unwrap(), b.into_data().try_to_vec::<f32>().unwrap());
            assert_eq!(a.len(), b.len());
            let worst = a.iter().zip(&b).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(worst < 1e-5, "largest difference {worst}");
        };
        close(fused.clone(), reference.clone());

        let fused_grads = (fused * weights.clone()).sum().backward();
        let reference_grads = (reference * weights).sum().backward();
        let fused_grad = fused_x.grad(&fused_grads).unwrap();
        let reference_grad = reference_x.grad(&reference_grads).unwrap();
        assert!(fused_grad.clone().abs().sum().into_scalar::<f32>() > 1.0, "the gradient reaches the input");
        close(fused_grad, reference_grad);
    }

    #[test]
    fn exp_matches_libm_to_a_few_ulp() {
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0;
            let (got, want) = (exp(x), x.exp());
            assert!((got - want).abs() <= 4.0 * f32::EPSILON * want, "exp({x}) = {got} not {want}");
        }
    }
}
