//! GELU followed by 2x2 max pooling, as one op on flex.
//!
//! burn's flex backend evaluates exact GELU with a scalar `erf` on one thread and keeps an
//! index tensor for every pooled value. Fused, the op evaluates a vectorised `erf` on all
//! cores and keeps one byte per window (which of the four won), which is all that training's
//! backward pass (`train::ops`) needs.

use alloc::{vec, vec::Vec};

use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, DType, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{Tensor, TensorData};

use super::{contiguous, write_planes};

use crate::lean::kernels::gelu;

#[backend_extension(Flex)]
pub trait GeluMaxPool: Backend {
    /// `max_pool_2x2(gelu(x))` for `x` of shape `[batch, channels, height, width]`.
    fn gelu_max_pool(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

pub(super) fn fused(x: Tensor<4>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as GeluMaxPool>::gelu_max_pool(x.into_dispatch()))
}

impl GeluMaxPool for Flex {
    fn gelu_max_pool(x: FlexTensor) -> FlexTensor {
        gelu_max_pool_flex(&x).0
    }
}

/// `max_pool_2x2(gelu(x))` for `x` `[batch, channels, height, width]` of f32, and for each
/// pooled value which of its window's four inputs won (0-3, row-major in the window).
pub fn gelu_max_pool_flex(x: &FlexTensor) -> (FlexTensor, Vec<u8>) {
    Planes::of(x).forward(x)
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
        let len = self.batch * self.channels * side_out;
        let mut winners = vec![0u8; len];
        let inputs = winners.chunks_mut(side_out).zip(input.chunks(side_in));
        let pooled =
            write_planes(len, side_out, inputs, vec![0.0f32; side_in], |activated, pooled, (winners, input)| {
                gelu_pool_plane(input, activated, pooled, winners, self.width);
            });
        (FlexTensor::from_data(TensorData::new(pooled, self.pooled_shape())), winners)
    }

    fn pooled_per_plane(&self) -> usize {
        (self.height / 2) * (self.width / 2)
    }
}

crate::widest_vectors! {
    /// One plane of the forward pass: GELU of `input` into `activated`, then its 2x2 maxima
    /// and their positions.
    fn gelu_pool_plane(input: &[f32], activated: &mut [f32], pooled: &mut [f32], winners: &mut [u8], width: usize) {
        for (activated, &x) in activated.iter_mut().zip(input) {
            *activated = gelu(x);
        }
        pool_plane(activated, pooled, winners, width);
    }
}

/// The 2x2 maxima of one plane of `w` columns, and which of each window's four won (row-major).
#[inline(always)]
fn pool_plane(activated: &[f32], pooled: &mut [f32], winners: &mut [u8], w: usize) {
    for (i, (pooled, winners)) in pooled.chunks_mut(w / 2).zip(winners.chunks_mut(w / 2)).enumerate() {
        let (top, bottom) = (&activated[2 * i * w..][..w], &activated[(2 * i + 1) * w..][..w]);
        for j in 0..w / 2 {
            // The first of the four to hold the maximum wins (a NaN never does): selects on
            // registers, where an indexed array of the window went through memory.
            let (mut max, mut winner) = (top[2 * j], 0);
            for (k, value) in [(1, top[2 * j + 1]), (2, bottom[2 * j]), (3, bottom[2 * j + 1])] {
                if value > max {
                    (max, winner) = (value, k);
                }
            }
            pooled[j] = max;
            winners[j] = winner;
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

    /// The fused op against burn's own gelu and max_pool2d on an odd size (11x11), whose last
    /// row and column pooling drops. Training's backward pass is tested in `train::ops`.
    #[test]
    fn matches_burns_gelu_then_max_pool() {
        let device = Device::flex();
        assert!(super::super::is_flex(&device), "inference on flex takes the fused path");
        device.seed(7);
        let x = Tensor::<4>::random([3, 5, 11, 11], Distribution::Normal(0.0, 2.0), &device);
        let fused = fused(x.clone()).into_data().try_to_vec::<f32>().unwrap();
        let reference = max_pool2d(gelu(x), MaxPoolOptions::new([2, 2])).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(fused.len(), 3 * 5 * 5 * 5);
        let worst = fused.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(worst < 1e-5, "largest difference {worst}");
    }
}
