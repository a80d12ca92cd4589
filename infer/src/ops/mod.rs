//! The model's hot spots as fused ops on burn's flex backend, with their own backward passes
//! for training.
//!
//! A flex training step spent most of its time where burn runs generically: GELU then
//! max-pool (scalar `erf` on one thread, an index tensor per pooled value), BatchNorm in
//! training mode (each statistic a transpose of the whole activation and a reduction), and
//! the convolutions' backward pass (transposed copies of the activations). They are burn
//! backend extensions here: [`gelu_max_pool`] for `Flex` and `Autodiff<Flex>`, [`batch_norm`]
//! and [`conv2d`] for `Autodiff<Flex>` (training; inference takes burn's own ops, which are
//! cheap there). Every other backend, and flex without the `autodiff` feature where a
//! backward pass would be needed, takes burn's own ops, which compute the same functions.

use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::activation::gelu;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;

#[cfg(feature = "autodiff")]
mod batch_norm;
#[cfg(feature = "autodiff")]
mod conv;
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

/// `conv.forward(x)`, with the fused op's backward pass when training on flex.
pub(crate) fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "autodiff")]
    if x.device().is_autodiff() && runs_fused(&x.device()) && conv::handles(conv) {
        return conv::train(conv, x);
    }
    conv.forward(x)
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

/// Defines a kernel function compiled for the widest vectors the CPU has, picked when it is
/// called: AVX-512, else AVX2, else baseline x86-64 (4 lanes). The body is inlined into each
/// version, so its loops vectorise 16, 8 or 4 lanes wide; Rust never fuses a multiply and an
/// add by itself, so every version gives the same bits.
macro_rules! widest_vectors {
    ($(#[$attr:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$attr])*
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn portable($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(all(feature = "std", target_arch = "x86_64"))]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    portable($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    portable($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512bw") && std::arch::is_x86_feature_detected!("avx512vl") {
                    // SAFETY: the CPU has the features this version was compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: as above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            portable($($arg),*)
        }
    };
}
#[cfg(feature = "flex")]
pub(crate) use widest_vectors;

/// `len` zeroes for a kernel's output, written by all threads: `vec![0.0; len]` of an
/// activation is a memset on the calling thread alone, while the other core waits.
#[cfg(all(feature = "flex", feature = "std"))]
fn zeroed<T: Copy + Default + Send + Sync>(len: usize) -> alloc::vec::Vec<T> {
    use core::mem::MaybeUninit;
    use rayon::{iter::ParallelIterator, slice::ParallelSliceMut};
    let mut values = alloc::vec::Vec::with_capacity(len);
    values.spare_capacity_mut()[..len]
        .par_chunks_mut(1 << 14)
        .for_each(|chunk| chunk.fill(MaybeUninit::new(T::default())));
    // SAFETY: the line above initialised every element below `len`.
    unsafe { values.set_len(len) };
    values
}

#[cfg(all(feature = "flex", not(feature = "std")))]
fn zeroed<T: Copy + Default>(len: usize) -> alloc::vec::Vec<T> {
    alloc::vec![T::default(); len]
}

#[cfg(all(feature = "flex", not(feature = "std")))]
fn for_each_plane<P: Iterator, S>(planes: P, mut scratch: S, work: impl Fn(&mut S, P::Item)) {
    planes.for_each(|plane| work(&mut scratch, plane));
}

widest_vectors! {
    /// The sum of one plane's values.
    #[cfg(feature = "autodiff")]
    fn plane_sum(values: &[f32]) -> f64 {
        lane_sum(values, values, |x, _| x)
    }
}

/// The sum of `term` over pairs from `a` and `b`, in eight f32 lanes so that it vectorises.
/// It runs over one plane (at most 26x26 values here); planes add up in f64.
#[cfg(feature = "autodiff")]
#[inline(always)]
pub(crate) fn lane_sum(a: &[f32], b: &[f32], term: impl Fn(f32, f32) -> f32) -> f64 {
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
