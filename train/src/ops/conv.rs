//! Convolution in training (stride 1, no padding, a bias), its backward pass as GEMMs on the
//! tensors' own layout.
//!
//! burn's generic backward pass takes the weight gradient as a convolution over transposed
//! copies of the input and of the output gradient, and the bias gradient from one more
//! transposed copy. Here one image's output gradient, `[out, height * width]` as it lies in
//! memory, multiplies that image's im2col matrix straight into the weight gradient; the input
//! gradient is the transposed product scattered back (col2im); the bias gradient is a sum per
//! channel. The forward pass is the same im2col matrix times the weights, image by image.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, DType, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::{Tensor, TensorData};
use rayon::iter::{IntoParallelIterator, ParallelIterator};

use infer::ops::{contiguous, write_planes};

use super::plane_sum;

#[backend_extension(Flex, Autodiff)]
pub trait ConvTrain: Backend {
    /// `conv2d(x, weight) + bias`, stride 1 and no padding: `x [batch, in, height, width]`,
    /// `weight [out, in, kernel_height, kernel_width]`, `bias [out]`.
    fn conv_train(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// Whether [`train`] computes `conv.forward`: the model's convolutions are all of this kind.
pub(super) fn handles(conv: &Conv2d) -> bool {
    conv.stride == [1, 1]
        && conv.dilation == [1, 1]
        && conv.groups == 1
        && conv.bias.is_some()
        && matches!(conv.padding, PaddingConfig2d::Valid)
}

/// `conv.forward(x)` for a convolution that [`handles`] accepts.
pub(super) fn train(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let bias = conv.bias.as_ref().expect("handles() checked the bias");
    Tensor::from_dispatch(<Dispatch as ConvTrain>::conv_train(
        x.into_dispatch(),
        conv.weight.val().into_dispatch(),
        bias.val().into_dispatch(),
    ))
}

impl ConvTrain for Flex {
    fn conv_train(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        let geometry = Geometry::of(&x, &weight);
        let (x, weight, bias) = (contiguous(&x), contiguous(&weight), contiguous(&bias));
        let values = geometry.forward(f32s(&x), f32s(&weight), f32s(&bias));
        let shape = [geometry.batch, geometry.outputs, geometry.out_height(), geometry.out_width()];
        FlexTensor::from_data(TensorData::new(values, shape))
    }
}

fn f32s(tensor: &FlexTensor) -> &[f32] {
    tensor.as_slice::<f32>().expect("contiguous f32")
}

impl<C: CheckpointStrategy> ConvTrain for Autodiff<Flex, C> {
    fn conv_train(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        let nodes = [x.node(), weight.node(), bias.node()];
        let (x, weight, bias) = (x.into_primitive(), weight.into_primitive(), bias.into_primitive());
        let output = Flex::conv_train(x.clone(), weight.clone(), bias);
        match ConvBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((x, weight), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }
}

/// The sizes of one convolution.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    batch: usize,
    inputs: usize,
    height: usize,
    width: usize,
    outputs: usize,
    kernel: [usize; 2],
}

impl Geometry {
    fn of(x: &FlexTensor, weight: &FlexTensor) -> Self {
        assert!(x.dtype() == DType::F32 && weight.dtype() == DType::F32, "conv_train takes f32");
        let [batch, inputs, height, width] = x.shape().dims::<4>();
        let [outputs, _, kernel_height, kernel_width] = weight.shape().dims::<4>();
        Geometry { batch, inputs, height, width, outputs, kernel: [kernel_height, kernel_width] }
    }

    fn out_height(&self) -> usize {
        self.height - self.kernel[0] + 1
    }

    fn out_width(&self) -> usize {
        self.width - self.kernel[1] + 1
    }

    /// Output values per channel and image.
    fn plane(&self) -> usize {
        self.out_height() * self.out_width()
    }

    /// Rows of the im2col matrix: one per input channel and kernel position.
    fn taps(&self) -> usize {
        self.inputs * self.kernel[0] * self.kernel[1]
    }

    /// One image's im2col matrix, a row per tap and a column per output position: row
    /// `(c, ky, kx)` holds `x[c, oy + ky, ox + kx]` for every output position `(oy, ox)`.
    #[inline(always)]
    fn im2col(&self, image: &[f32], columns: &mut [f32]) {
        let (out_height, out_width, plane) = (self.out_height(), self.out_width(), self.plane());
        for (tap, row) in columns.chunks_exact_mut(plane).enumerate() {
            let (c, ky, kx) =
                (tap / (self.kernel[0] * self.kernel[1]), tap / self.kernel[1] % self.kernel[0], tap % self.kernel[1]);
            let source = &image[c * self.height * self.width..];
            for (oy, row) in row.chunks_exact_mut(out_width).enumerate().take(out_height) {
                row.copy_from_slice(&source[(oy + ky) * self.width + kx..][..out_width]);
            }
        }
    }

    /// The inverse scatter of [`Geometry::im2col`]: adds each column entry to the input
    /// position it was read from.
    #[inline(always)]
    fn col2im(&self, columns: &[f32], image: &mut [f32]) {
        let (out_width, plane) = (self.out_width(), self.plane());
        for (tap, row) in columns.chunks_exact(plane).enumerate() {
            let (c, ky, kx) =
                (tap / (self.kernel[0] * self.kernel[1]), tap / self.kernel[1] % self.kernel[0], tap % self.kernel[1]);
            let target = &mut image[c * self.height * self.width..];
            for (oy, row) in row.chunks_exact(out_width).enumerate() {
                let target = &mut target[(oy + ky) * self.width + kx..][..out_width];
                for (t, &v) in target.iter_mut().zip(row) {
                    *t += v;
                }
            }
        }
    }

    /// Per image: `weight [outputs, taps] x im2col(image) [taps, plane]` plus the bias, the
    /// images shared out over the threads. flex's own convolution first copies the whole batch
    /// to channels-last on the calling thread, which left the other core idle.
    fn forward(&self, x: &[f32], weight: &[f32], bias: &[f32]) -> Vec<f32> {
        let (taps, plane, image_len) = (self.taps(), self.plane(), self.inputs * self.height * self.width);
        let len = self.batch * self.outputs * plane;
        write_planes(
            len,
            self.outputs * plane,
            x.chunks(image_len),
            vec![0.0f32; taps * plane],
            |columns, image_out, image| {
                self.im2col(image, columns);
                for (channel, &b) in image_out.chunks_exact_mut(plane).zip(bias) {
                    channel.fill(b);
                }
                matmul_accumulate(image_out, plane, weight, [taps as isize, 1], columns, [plane as isize, 1], taps);
            },
        )
    }

    /// `sum over images of grad_image [outputs, plane] x im2col(image)^T [plane, taps]`. Each
    /// thread sums a fixed share of the batch and the shares add up in order, so the result
    /// depends on the thread count alone, never on scheduling.
    fn weight_grad(&self, x: &[f32], grad: &[f32]) -> Vec<f32> {
        let (taps, plane, image_len) = (self.taps(), self.plane(), self.inputs * self.height * self.width);
        let share = self.batch.div_ceil(rayon::current_num_threads().max(1));
        let partials: Vec<Vec<f32>> = (0..self.batch.div_ceil(share))
            .into_par_iter()
            .map(|part| {
                let mut sum = vec![0.0f32; self.outputs * taps];
                let mut columns = vec![0.0f32; taps * plane];
                for n in part * share..((part + 1) * share).min(self.batch) {
                    self.im2col(&x[n * image_len..][..image_len], &mut columns);
                    let grad = &grad[n * self.outputs * plane..][..self.outputs * plane];
                    // sum [outputs, taps] += grad [outputs, plane] * columns^T [plane, taps]
                    matmul_accumulate(&mut sum, taps, grad, [plane as isize, 1], &columns, [1, plane as isize], plane);
                }
                sum
            })
            .collect();
        let mut partials = partials.into_iter();
        let mut total = partials.next().unwrap_or_else(|| vec![0.0; self.outputs * taps]);
        for partial in partials {
            total.iter_mut().zip(partial).for_each(|(t, p)| *t += p);
        }
        total
    }

    /// Per image: `weight^T [taps, outputs] x grad_image [outputs, plane]`, scattered back.
    fn input_grad(&self, weight: &[f32], grad: &[f32]) -> Vec<f32> {
        let (taps, plane, image_len) = (self.taps(), self.plane(), self.inputs * self.height * self.width);
        let grads = grad.chunks(self.outputs * plane);
        write_planes(self.batch * image_len, image_len, grads, vec![0.0f32; taps * plane], |columns, image, grad| {
            columns.fill(0.0);
            matmul_accumulate(columns, plane, weight, [1, taps as isize], grad, [plane as isize, 1], self.outputs);
            self.col2im(columns, image);
        })
    }

    /// The sum of the output gradient per channel.
    fn bias_grad(&self, grad: &[f32]) -> Vec<f32> {
        let plane = self.plane();
        (0..self.outputs)
            .into_par_iter()
            .map(|c| {
                let planes = (0..self.batch).map(|n| &grad[(n * self.outputs + c) * plane..][..plane]);
                planes.map(plane_sum).sum::<f64>() as f32
            })
            .collect()
    }
}

/// `out [m, n] += lhs [m, depth] x rhs [depth, n]`, `out` row-major with `n` columns, `lhs`
/// and `rhs` given by their (row, column) strides, on the calling thread.
fn matmul_accumulate(
    out: &mut [f32],
    n: usize,
    lhs: &[f32],
    lhs_strides: [isize; 2],
    rhs: &[f32],
    rhs_strides: [isize; 2],
    depth: usize,
) {
    let m = out.len() / n;
    let last = |strides: [isize; 2], rows: usize, columns: usize| {
        (rows - 1) * strides[0] as usize + (columns - 1) * strides[1] as usize
    };
    assert!(m * n == out.len() && last(lhs_strides, m, depth) < lhs.len() && last(rhs_strides, depth, n) < rhs.len());
    // SAFETY: the assertion keeps every element gemm addresses (the last of each operand is
    // the furthest) inside its slice; `out` is borrowed mutably, so nothing else aliases it.
    unsafe {
        gemm::gemm(
            m,
            n,
            depth,
            out.as_mut_ptr(),
            1,
            n as isize,
            true,
            lhs.as_ptr(),
            lhs_strides[1],
            lhs_strides[0],
            rhs.as_ptr(),
            rhs_strides[1],
            rhs_strides[0],
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[derive(Debug)]
struct ConvBackward;

impl Backward<Flex, 3> for ConvBackward {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = contiguous(&grads.consume::<Flex>(&ops.node));
        let (x, weight) = ops.state;
        let geometry = Geometry::of(&x, &weight);
        let (x, weight) = (contiguous(&x), contiguous(&weight));
        let grad_values = f32s(&grad);
        let [x_parent, weight_parent, bias_parent] = ops.parents;
        if let Some(parent) = x_parent {
            let values = geometry.input_grad(f32s(&weight), grad_values);
            grads.register::<Flex>(parent.id, FlexTensor::from_data(TensorData::new(values, x.shape().dims::<4>())));
        }
        if let Some(parent) = weight_parent {
            let values = geometry.weight_grad(f32s(&x), grad_values);
            grads.register::<Flex>(
                parent.id,
                FlexTensor::from_data(TensorData::new(values, weight.shape().dims::<4>())),
            );
        }
        if let Some(parent) = bias_parent {
            let values = geometry.bias_grad(grad_values);
            grads.register::<Flex>(parent.id, FlexTensor::from_data(TensorData::new(values, [geometry.outputs])));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{Device, Distribution};

    /// The fused op against burn's Conv2d: output and the gradients of the input, the weight
    /// and the bias, for a many-channel and a one-channel convolution.
    #[test]
    fn matches_burns_convolution_forward_and_backward() {
        let device = Device::flex().autodiff();
        assert!(super::super::trains_on_flex(&device), "a training step takes the fused path on flex");
        device.seed(5);
        for (inputs, outputs, side, batch) in [(3, 4, 9, 5), (1, 6, 12, 3)] {
            let conv = Conv2dConfig::new([inputs, outputs], [3, 3]).init(&device);
            assert!(handles(&conv));
            let x = Tensor::<4>::random([batch, inputs, side, side], Distribution::Normal(0.0, 1.0), &device);
            let weights =
                Tensor::<4>::random([batch, outputs, side - 2, side - 2], Distribution::Normal(0.0, 1.0), &device);

            // Within 1e-5, relative to the value where it exceeds 1: a weight gradient sums
            // hundreds of products, and the two sum them in different orders.
            let close = |a: Tensor<4>, b: Tensor<4>| {
                let (a, b) = (a.into_data().try_to_vec::<f32>().unwrap(), b.into_data().try_to_vec::<f32>().unwrap());
                assert_eq!(a.len(), b.len());
                let worst = a.iter().zip(&b).map(|(a, b)| (a - b).abs() / b.abs().max(1.0)).fold(0.0, f32::max);
                assert!(worst < 1e-5, "largest difference {worst}");
            };
            let (fused_x, reference_x) = (x.clone().require_grad(), x.require_grad());
            let fused = train(&conv, fused_x.clone());
            let expected = conv.forward(reference_x.clone());
            close(fused.clone(), expected.clone());

            let fused_grads = (fused * weights.clone()).sum().backward();
            let expected_grads = (expected * weights).sum().backward();
            let fused_input_grad = fused_x.grad(&fused_grads).unwrap();
            assert!(fused_input_grad.clone().abs().sum().into_scalar::<f32>() > 1.0, "the gradient reaches the input");
            close(fused_input_grad, reference_x.grad(&expected_grads).unwrap());
            close(conv.weight.grad(&fused_grads).unwrap(), conv.weight.grad(&expected_grads).unwrap());
            let bias = conv.bias.as_ref().unwrap();
            close(
                bias.grad(&fused_grads).unwrap().reshape([1, 1, 1, outputs]),
                bias.grad(&expected_grads).unwrap().reshape([1, 1, 1, outputs]),
            );
        }
    }
}
