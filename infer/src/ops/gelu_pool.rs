//! GELU followed by 2x2 max pooling, as one op.
//!
//! burn's flex backend evaluates exact GELU with a scalar `erf` on one thread and keeps an
//! index tensor for every pooled value; together that was over 40% of a training step.
//! Fused, the forward pass evaluates a vectorised `erf` on all cores and keeps one byte per
//! window (which of the four won), and the backward pass needs GELU's derivative at only
//! that one input in four.

use alloc::{vec, vec::Vec};

use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, DType, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{Tensor, TensorData};

use super::{contiguous, for_each_plane, widest_vectors, zeroed};

use crate::lean::kernels::gelu_in_place;

#[backend_extension(Flex, Autodiff: cfg(feature = "autodiff"))]
pub trait GeluMaxPool: Backend {
    /// `max_pool_2x2(gelu(x))` for `x` of shape `[batch, channels, height, width]`.
    fn gelu_max_pool(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

pub(super) fn fused(x: Tensor<4>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as GeluMaxPool>::gelu_max_pool(x.into_dispatch()))
}

impl GeluMaxPool for Flex {
    fn gelu_max_pool(x: FlexTensor) -> FlexTensor {
        Planes::of(&x).forward(&x).0
    }
}

/// The shape of the op's input: `batch x channels` planes of `height x width` f32 values.
#[derive(Clone, Copy, Debug)]
struct Planes {
    batch: usize,
    channels: usize,
    height: usize,
    width: usize,
}

impl Planes {
    fn of(x: &FlexTensor) -> Self {
        assert_eq!(x.dtype(), DType::F32, "gelu_max_pool takes f32 feature maps");
        let shape = x.shape();
        let [batch, channels, height, width] = shape.dims::<4>();
        Planes { batch, channels, height, width }
    }

    fn pooled_shape(&self) -> [usize; 4] {
        [self.batch, self.channels, self.height / 2, self.width / 2]
    }

    /// The pooled values, and for each which of its window's four inputs won (row-major).
    fn forward(&self, x: &FlexTensor) -> (FlexTensor, Vec<u8>) {
        let x = contiguous(x);
        let input = x.as_slice::<f32>().expect("contiguous f32");
        let (side_in, side_out) = (self.height * self.width, self.pooled_per_plane());
        let mut pooled = zeroed(self.batch * self.channels * side_out);
        let mut winners = zeroed(pooled.len());
        let planes = pooled.chunks_mut(side_out).zip(winners.chunks_mut(side_out)).zip(input.chunks(side_in));
        for_each_plane(planes, vec![0.0f32; side_in], |activated, ((pooled, winners), input)| {
            gelu_pool_plane(input, activated, pooled, winners, self.width);
        });
        (FlexTensor::from_data(TensorData::new(pooled, self.pooled_shape())), winners)
    }

    fn pooled_per_plane(&self) -> usize {
        (self.height / 2) * (self.width / 2)
    }
}

widest_vectors! {
    /// One plane of the forward pass: GELU of `input` into `activated`, then its 2x2 maxima
    /// and their positions.
    fn gelu_pool_plane(input: &[f32], activated: &mut [f32], pooled: &mut [f32], winners: &mut [u8], width: usize) {
        activated.copy_from_slice(input);
        gelu_in_place(activated);
        pool_plane(activated, pooled, winners, width);
    }
}

/// The 2x2 maxima of one plane of `w` columns, and which of each window's four won (row-major).
#[inline(always)]
fn pool_plane(activated: &[f32], pooled: &mut [f32], winners: &mut [u8], w: usize) {
    for (i, (pooled, winners)) in pooled.chunks_mut(w / 2).zip(winners.chunks_mut(w / 2)).enumerate() {
        let (top, bottom) = (&activated[2 * i * w..][..w], &activated[(2 * i + 1) * w..][..w]);
        for j in 0..w / 2 {
            let window = [top[2 * j], top[2 * j + 1], bottom[2 * j], bottom[2 * j + 1]];
            let winner = (1..4).fold(0, |best, k| if window[k] > window[best] { k } else { best });
            pooled[j] = window[winner];
            winners[j] = winner as u8;
        }
    }
}

#[cfg(feature = "autodiff")]
mod autodiff {
    use super::*;
    use crate::lean::kernels::{erf, exp};
    use alloc::sync::Arc;
    use burn::backend::Autodiff;
    use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use core::mem::MaybeUninit;

    impl<C: CheckpointStrategy> GeluMaxPool for Autodiff<Flex, C> {
        fn gelu_max_pool(x: FloatTensor<Self>) -> FloatTensor<Self> {
            let node = x.node();
            let x = x.into_primitive();
            let planes = Planes::of(&x);
            match GeluMaxPoolBackward.prepare::<C>([node]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let (pooled, winners) = planes.forward(&x);
                    prep.finish(State { planes, x, winners: winners.into() }, pooled)
                }
                OpsKind::UnTracked(prep) => prep.finish(planes.forward(&x).0),
            }
        }
    }

    impl Planes {
        /// The input's gradient: each window's gradient flows to its winner, times GELU'.
        fn backward(&self, x: &FlexTensor, winners: &[u8], grad: &FlexTensor) -> FlexTensor {
            let (x, grad) = (contiguous(x), contiguous(grad));
            let input = x.as_slice::<f32>().expect("contiguous f32");
            let grad = grad.as_slice::<f32>().expect("contiguous f32");
            let (side_in, side_out, w) = (self.height * self.width, self.pooled_per_plane(), self.width);
            let winner_at = |index: usize, winner: u8| {
                let (i, j) = (index / (w / 2), index % (w / 2));
                (2 * i + usize::from(winner >> 1)) * w + 2 * j + usize::from(winner & 1)
            };
            // Every plane is written whole below, so the buffer needs no zeroing first.
            let mut input_grad: Vec<f32> = Vec::with_capacity(input.len());
            let planes = input_grad.spare_capacity_mut()[..input.len()]
                .chunks_mut(side_in)
                .zip(input.chunks(side_in))
                .zip(grad.chunks(side_out).zip(winners.chunks(side_out)));
            for_each_plane(planes, vec![0.0f32; side_out], |slopes, ((input_grad, input), (grad, winners))| {
                for (index, (slope, &winner)) in slopes.iter_mut().zip(winners).enumerate() {
                    *slope = input[winner_at(index, winner)];
                }
                gelu_derivative_in_place(slopes);
                input_grad.fill(MaybeUninit::new(0.0));
                for (index, ((&grad, &winner), &slope)) in grad.iter().zip(winners).zip(slopes.iter()).enumerate() {
                    input_grad[winner_at(index, winner)] = MaybeUninit::new(grad * slope);
                }
            });
            // SAFETY: the planes cover the first `input.len()` elements and each was filled.
            unsafe { input_grad.set_len(input.len()) };
            FlexTensor::from_data(TensorData::new(input_grad, [self.batch, self.channels, self.height, self.width]))
        }
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
        0.5 * (1.0 + erf(x * core::f32::consts::FRAC_1_SQRT_2)) + x * INV_SQRT_2PI * exp(-0.5 * x * x)
    }

    #[derive(Debug)]
    struct GeluMaxPoolBackward;

    #[derive(Clone, Debug)]
    struct State {
        planes: Planes,
        x: FlexTensor,
        winners: Arc<[u8]>,
    }

    impl Backward<Flex, 1> for GeluMaxPoolBackward {
        type State = State;

        fn backward(self, ops: Ops<State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let [parent] = ops.parents;
            let grad = grads.consume::<Flex>(&ops.node);
            if let Some(parent) = parent {
                let State { planes, x, winners } = ops.state;
                grads.register::<Flex>(parent.id, planes.backward(&x, &winners, &grad));
            }
        }
    }
}

#[cfg(all(test, feature = "autodiff"))]
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
        assert!(
            super::super::runs_fused(&device) && super::super::runs_fused(&Device::flex()),
            "the model takes the fused path on flex"
        );
        device.seed(7);
        let x = Tensor::<4>::random([3, 5, 11, 11], Distribution::Normal(0.0, 2.0), &device);
        let weights = Tensor::<4>::random([3, 5, 5, 5], Distribution::Normal(0.0, 1.0), &device);

        let fused_x = x.clone().require_grad();
        let fused = fused(fused_x.clone());
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
}
