//! Batches for burn-train: shuffled and augmented per epoch, reproducible from the seed alone.
//!
//! burn's stock loader shuffles from a generator that restarts when a run is resumed, so
//! epoch k of a resumed run would see epoch 1's order. This loader keys the order and the
//! distortions on the epoch number instead, which it counts from where the run starts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::data::dataset::DatasetError;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};
use rayon::prelude::*;

use infer::{IMAGE_SIZE, PIXELS, normalise};

use crate::augment::{AugmentConfig, Distortion, mix_weight};
use crate::data::Split;

/// A batch of normalised images `[batch, 1, 28, 28]` and their labels `[batch]`.
#[derive(Debug, Clone)]
pub struct MnistBatch {
    pub images: Tensor<4>,
    pub targets: Tensor<1, Int>,
    /// Mixup's weight: image i is this much the i-th drawn image and the rest the i-th from
    /// the end, and its target is their labels in the same shares; `None` when unblended.
    pub mix: Option<f32>,
}

impl MnistBatch {
    /// Builds a batch from the items `indices` of `split`, each drawn through `distortion`,
    /// then blended with the batch reversed by `mix` (see [`MnistBatch::mix`]).
    pub fn build(
        split: &Split,
        indices: &[usize],
        distortion: impl Fn(usize) -> Distortion + Sync,
        mix: Option<f32>,
        device: &Device,
    ) -> MnistBatch {
        let mut pixels = vec![0.0f32; indices.len() * PIXELS];
        // Each image is drawn from its own generator, so this is the same in any thread order.
        pixels.par_chunks_exact_mut(PIXELS).zip(indices).for_each(|(out, &index)| {
            distortion(index).apply(split.image(index), out, normalise);
        });
        if let Some(weight) = mix {
            // `normalise` is affine, so blending normalised images blends the images.
            let drawn = pixels.clone();
            let reversed = drawn.chunks_exact(PIXELS).rev();
            for ((out, own), other) in pixels.chunks_exact_mut(PIXELS).zip(drawn.chunks_exact(PIXELS)).zip(reversed) {
                for ((out, own), other) in out.iter_mut().zip(own).zip(other) {
                    *out = weight * own + (1.0 - weight) * other;
                }
            }
        }
        let labels: Vec<i64> = indices.iter().map(|&i| split.labels[i] as i64).collect();
        let batch = indices.len();
        MnistBatch {
            images: Tensor::from_data(TensorData::new(pixels, [batch, 1, IMAGE_SIZE, IMAGE_SIZE]), device),
            targets: Tensor::from_data(TensorData::new(labels, [batch]), device),
            mix,
        }
    }
}

/// How a loader walks its split.
#[derive(Debug, Clone)]
pub enum Order {
    /// In file order, undistorted: validation and test.
    Sequential,
    /// A fresh permutation every epoch, and fresh distortions in the epochs up to
    /// `augmented_epochs` (later ones see the images as stored), the last `fade_epochs` of
    /// them weaker (see [`distortion_strength`]).
    Shuffled { seed: u64, augment: AugmentConfig, augmented_epochs: usize, fade_epochs: usize },
}

/// How strongly epoch `epoch` (1-based) is distorted, as a share of the configured ranges:
/// 1 up to the fade, then falling by equal steps over its `fade` epochs toward 0, which the
/// epochs after `augmented` reach.
pub fn distortion_strength(epoch: usize, augmented: usize, fade: usize) -> f32 {
    let left = (augmented + 1).saturating_sub(epoch);
    (left as f32 / (fade + 1) as f32).min(1.0)
}

/// A [`DataLoader`] over one split.
#[derive(Clone)]
pub struct MnistLoader {
    split: Arc<Split>,
    batch_size: usize,
    order: Order,
    /// The epoch the next call to `iter` serves; shared by the copies burn makes per device.
    next_epoch: Arc<AtomicUsize>,
    device: Device,
}

impl MnistLoader {
    /// A loader whose first `iter()` serves epoch `first_epoch` (1-based, like burn-train's).
    pub fn new(split: Arc<Split>, batch_size: usize, order: Order, first_epoch: usize, device: Device) -> Self {
        assert!(batch_size > 0, "batch size must be positive");
        Self { split, batch_size, order, next_epoch: Arc::new(AtomicUsize::new(first_epoch)), device }
    }

    /// The item order for `epoch`.
    fn permutation(&self, epoch: usize) -> Vec<usize> {
        let mut indices: Vec<usize> = (0..self.split.len()).collect();
        if let Order::Shuffled { seed, .. } = &self.order {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(epoch as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
            indices.shuffle(&mut rng);
        }
        indices
    }
}

impl DataLoader<MnistBatch> for MnistLoader {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<MnistBatch> + 'a> {
        let epoch = self.next_epoch.fetch_add(1, Ordering::SeqCst);
        let augment = match &self.order {
            Order::Shuffled { augment, augmented_epochs, fade_epochs, .. } => {
                let strength = distortion_strength(epoch, *augmented_epochs, *fade_epochs);
                (strength > 0.0).then(|| augment.scaled(strength))
            }
            Order::Sequential => None,
        };
        Box::new(EpochIter { loader: self, epoch, augment, order: self.permutation(epoch), position: 0 })
    }

    fn num_items(&self) -> usize {
        self.split.len()
    }

    fn to_device(&self, device: &Device) -> Arc<dyn DataLoader<MnistBatch>> {
        Arc::new(Self { device: device.clone(), ..self.clone() })
    }

    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<MnistBatch>> {
        Arc::new(Self { split: Arc::new(self.split.slice(start..end)), ..self.clone() })
    }
}

struct EpochIter<'a> {
    loader: &'a MnistLoader,
    epoch: usize,
    /// This epoch's distortion ranges; `None` serves the images as stored.
    augment: Option<AugmentConfig>,
    order: Vec<usize>,
    position: usize,
}

impl Iterator for EpochIter<'_> {
    type Item = Result<MnistBatch, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        let end = (self.position + self.loader.batch_size).min(self.order.len());
        if self.position >= end {
            return None;
        }
        let indices = &self.order[self.position..end];
        let (epoch, loader, position) = (self.epoch, self.loader, self.position);
        self.position = end;
        // The seed and ranges of a distorted epoch; `None` serves the images as stored.
        let distorted = match (&loader.order, &self.augment) {
            (Order::Shuffled { seed, .. }, Some(augment)) => Some((*seed, augment)),
            _ => None,
        };
        let batch = MnistBatch::build(
            &loader.split,
            indices,
            |index| distorted.map_or(Distortion::NONE, |(seed, augment)| Distortion::draw(augment, seed, epoch, index)),
            distorted.and_then(|(seed, augment)| mix_weight(augment, seed, epoch, position)),
            &loader.device,
        );
        Some(Ok(batch))
    }
}

impl DataLoaderIterator<MnistBatch> for EpochIter<'_> {
    fn progress(&self) -> Progress {
        Progress::new(self.position, self.order.len(), Some("images".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four images of one grey level each (0, 60, 120, 180), labelled 0 to 3.
    fn four_flat_images() -> Split {
        let images = (0..4u8).flat_map(|i| std::iter::repeat_n(60 * i, PIXELS)).collect();
        Split { images, labels: vec![0, 1, 2, 3] }
    }

    #[test]
    fn a_blended_batch_mixes_each_image_with_its_mirror_and_keeps_the_labels() {
        let device = Device::flex();
        let split = four_flat_images();
        let batch = |mix| MnistBatch::build(&split, &[0, 1, 2, 3], |_| Distortion::NONE, mix, &device);
        let plain = batch(None).images.into_data().try_to_vec::<f32>().unwrap();
        let mixed = batch(Some(0.25));
        assert_eq!(mixed.mix, Some(0.25));
        assert_eq!(mixed.targets.into_data().convert::<i64>().try_to_vec::<i64>().unwrap(), [0, 1, 2, 3]);
        let mixed = mixed.images.into_data().try_to_vec::<f32>().unwrap();
        for image in 0..4 {
            let (own, other) = (plain[image * PIXELS], plain[(3 - image) * PIXELS]);
            let want = 0.25 * own + 0.75 * other;
            assert!(
                mixed[image * PIXELS..(image + 1) * PIXELS].iter().all(|&got| (got - want).abs() < 1e-6),
                "image {image}"
            );
        }
    }

    #[test]
    fn only_distorted_epochs_are_blended_and_each_batch_alike_when_served_again() {
        let device = Device::flex();
        let augment = AugmentConfig::none().with_mixup_alpha(0.2);
        let order = Order::Shuffled { seed: 7, augment, augmented_epochs: 1, fade_epochs: 0 };
        let loader = MnistLoader::new(Arc::new(four_flat_images()), 2, order, 1, device);
        let weights = |loader: &MnistLoader| loader.iter().map(|batch| batch.unwrap().mix).collect::<Vec<_>>();
        let first = weights(&loader);
        assert!(first.iter().all(|mix| mix.is_some_and(|weight| (0.0..=1.0).contains(&weight))), "{first:?}");
        assert_ne!(first[0], first[1], "each batch draws its own weight");
        assert_eq!(weights(&loader), [None, None], "epoch 2 is clean");
        let again = MnistLoader::new(loader.split.clone(), 2, loader.order.clone(), 1, Device::flex());
        assert_eq!(weights(&again), first);
    }

    #[test]
    fn a_fade_steps_the_distortion_down_to_the_clean_epochs() {
        let strengths: Vec<f32> = (1..=10).map(|epoch| distortion_strength(epoch, 9, 4)).collect();
        assert_eq!(strengths, [1.0, 1.0, 1.0, 1.0, 1.0, 0.8, 0.6, 0.4, 0.2, 0.0]);
    }

    #[test]
    fn without_a_fade_every_distorted_epoch_is_at_full_strength() {
        let strengths: Vec<f32> = (1..=10).map(|epoch| distortion_strength(epoch, 9, 0)).collect();
        assert_eq!(strengths, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]);
    }
}
