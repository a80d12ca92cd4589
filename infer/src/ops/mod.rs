//! How the model's layers are computed: the hook training fills, and the fused op inference
//! takes on flex.
//!
//! [`Model::forward`](crate::Model::forward) computes its convolutions, BatchNorms and
//! GELU + max-pools through [`InferenceOps`]: burn's own ops, except GELU + max-pool on flex,
//! where burn evaluates `erf` on one thread and keeps an index per pooled value, and a fused
//! op is several times faster. Training brings its own [`Ops`] (`train::ops`: fused ops with
//! backward passes) to [`Model::forward_with`](crate::Model::forward_with), and builds its
//! kernels from the helpers for flex below.

use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::activation::gelu;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;

#[cfg(feature = "flex")]
mod gelu_pool;

/// The vectorisable `erf` the fused GELU uses, for its derivative in training.
pub use crate::lean::kernels::erf;
#[cfg(feature = "flex")]
pub use gelu_pool::gelu_max_pool_flex;

/// The layers the model's forward pass computes through a caller's choice of ops. Each
/// computes the same function as burn's layer; only how (and with what backward pass) differs.
pub trait Ops {
    /// `conv.forward(x)`.
    fn conv2d(&self, conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
        conv.forward(x)
    }

    /// `norm.forward(x)`: batch statistics while training, running statistics otherwise.
    fn batch_norm(&self, norm: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
        norm.forward(x)
    }

    /// `max_pool_2x2(gelu(x))` for `x` of shape `[batch, channels, height, width]`.
    fn gelu_max_pool(&self, x: Tensor<4>) -> Tensor<4> {
        #[cfg(feature = "flex")]
        if is_flex(&x.device()) {
            return gelu_pool::fused(x);
        }
        max_pool2d(gelu(x), MaxPoolOptions::new([2, 2]))
    }
}

/// burn's ops, and the fused GELU + max-pool on flex without autodiff.
#[derive(Debug, Clone, Copy, Default)]
pub struct InferenceOps;

impl Ops for InferenceOps {}

/// Whether `device` is flex itself (autodiff over flex is not: this crate has no backward passes).
#[cfg(feature = "flex")]
pub fn is_flex(device: &burn::tensor::Device) -> bool {
    matches!(device.as_dispatch(), burn::backend::DispatchDevice::Flex(_))
}

/// `x` itself where it is laid out contiguously, else a contiguous copy.
#[cfg(feature = "flex")]
pub fn contiguous(x: &burn::backend::flex::FlexTensor) -> burn::backend::flex::FlexTensor {
    if x.is_contiguous() { x.clone() } else { x.to_contiguous() }
}

/// Runs `work` on every item, on all cores where there is std; `scratch` is per thread.
#[cfg(all(feature = "flex", feature = "std"))]
fn for_each_plane<P, S>(planes: P, scratch: S, work: impl Fn(&mut S, P::Item) + Sync + Send)
where
    P: Iterator,
    P::Item: Send,
    S: Clone + Send,
{
    use rayon::iter::{IndexedParallelIterator, IntoParallelIterator, ParallelIterator};
    // A list rayon can split, rather than `par_bridge`, whose threads take the planes one
    // at a time from behind a lock: a plane is only a few hundred values.
    let planes: alloc::vec::Vec<P::Item> = planes.collect();
    planes.into_par_iter().with_min_len(16).for_each_with(scratch, work);
}

#[cfg(all(feature = "flex", not(feature = "std")))]
fn for_each_plane<P: Iterator, S>(planes: P, mut scratch: S, work: impl Fn(&mut S, P::Item)) {
    planes.for_each(|plane| work(&mut scratch, plane));
}

/// `len` values computed `plane` at a time by `work` on all cores (as [`for_each_plane`]),
/// each plane with the matching item of `inputs` and handed over as zeroes. A plane is zeroed
/// by its own thread just before `work` writes or adds to it, while it is in cache: zeroing
/// the whole output first is one more pass over memory, and on the calling thread alone.
///
/// Panics if `inputs` has fewer items than there are planes.
#[cfg(feature = "flex")]
pub fn write_planes<T, I, S>(
    len: usize,
    plane: usize,
    inputs: impl ExactSizeIterator<Item = I>,
    scratch: S,
    work: impl Fn(&mut S, &mut [T], I) + Sync + Send,
) -> alloc::vec::Vec<T>
where
    T: Copy + Default + Send,
    I: Send,
    S: Clone + Send,
{
    use core::mem::MaybeUninit;
    let mut values = alloc::vec::Vec::with_capacity(len);
    let planes = values.spare_capacity_mut()[..len].chunks_mut(plane);
    assert!(inputs.len() >= planes.len(), "{} inputs for {} planes", inputs.len(), planes.len());
    for_each_plane(planes.zip(inputs), scratch, |scratch, (plane, input)| {
        plane.fill(MaybeUninit::new(T::default()));
        // SAFETY: every element of `plane` was initialised on the line above, and
        // `MaybeUninit<T>` has the layout of `T`.
        let plane = unsafe { &mut *(plane as *mut [MaybeUninit<T>] as *mut [T]) };
        work(scratch, plane, input);
    });
    // SAFETY: `for_each_plane` ran `work` on every plane (the zip is as long as the planes, by
    // the assertion), so each of the first `len` elements was initialised; had a `work`
    // panicked, the panic would have left before this line.
    unsafe { values.set_len(len) };
    values
}

/// The widest vectors this CPU has, for [`widest_vectors!`](crate::widest_vectors).
#[cfg(feature = "flex")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorUnit {
    Avx512,
    Avx2,
    /// Whatever the build's target guarantees (on x86-64, 4 lanes); also where there is no
    /// std to ask the CPU.
    Baseline,
}

#[cfg(feature = "flex")]
pub fn vector_unit() -> VectorUnit {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    {
        if std::arch::is_x86_feature_detected!("avx512bw") && std::arch::is_x86_feature_detected!("avx512vl") {
            return VectorUnit::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return VectorUnit::Avx2;
        }
    }
    VectorUnit::Baseline
}

/// Defines a kernel function compiled for the widest vectors the CPU has, picked when it is
/// called ([`ops::vector_unit`](crate::ops::vector_unit)): AVX-512, else AVX2, else the
/// baseline. The body is inlined into each version, so its loops vectorise 16, 8 or 4 lanes
/// wide; Rust never fuses a multiply and an add by itself, so every version gives the same bits.
#[cfg(feature = "flex")]
#[macro_export]
macro_rules! widest_vectors {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn portable($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    portable($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    portable($($arg),*)
                }
                match $crate::ops::vector_unit() {
                    // SAFETY: the CPU has the features this version was compiled for.
                    $crate::ops::VectorUnit::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::ops::VectorUnit::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::ops::VectorUnit::Baseline => {}
                }
            }
            portable($($arg),*)
        }
    };
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::write_planes;

    #[test]
    fn every_plane_is_handed_over_as_zeroes_and_written_with_its_own_input() {
        // A freed block of the same size, full of sevens, for the allocator to hand out again:
        // were the planes not zeroed, they would come with sevens in them.
        drop(core::hint::black_box(alloc::vec![7.0f32; 10]));
        // 10 values in planes of 4: two whole planes and a short last one.
        let values = write_planes(10, 4, [1.0f32, 2.0, 3.0].into_iter(), 0usize, |_, plane: &mut [f32], input| {
            assert!(plane.iter().all(|&v| v == 0.0), "a plane came with values in it");
            for (k, v) in plane.iter_mut().enumerate() {
                *v += input * 10.0 + k as f32;
            }
        });
        assert_eq!(values, [10.0, 11.0, 12.0, 13.0, 20.0, 21.0, 22.0, 23.0, 30.0, 31.0]);
    }

    #[test]
    #[should_panic(expected = "2 inputs for 3 planes")]
    fn fewer_inputs_than_planes_are_refused() {
        write_planes(10, 4, [1.0f32, 2.0].into_iter(), (), |_, plane: &mut [f32], input| plane.fill(input));
    }
}
