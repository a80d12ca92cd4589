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

use crate::augment::{AugmentConfig, Distortion};
use crate::data::Split;

/// A batch of normalised images `[batch, 1, 28, 28]` and their labels `[batch]`.
#[derive(Debug, Clone)]
pub struct MnistBatch {
    pub images: Tensor<4>,
    pub targets: Tensor<1, Int>,
}

impl MnistBatch {
    /// Builds a batch from the items `indices` of `split`, each drawn through `distortion`.
    pub fn build(
        split: &Split,
        indices: &[usize],
        distortion: impl Fn(usize) -> Distortion + Sync,
        device: &Device,
    ) -> MnistBatch {
        let mut pixels = vec![0.0f32; indices.len() * PIXELS];
        // Each image is drawn from its own generator, so this is the same in any thread order.
        pixels.par_chunks_exact_mut(PIXELS).zip(indices).for_each(|(out, &index)| {
            distortion(index).apply(split.image(index), out, normalise);
        });
        let labels: Vec<i64> = indices.iter().map(|&i| split.labels[i] as i64).collect();
        let batch = indices.len();
        MnistBatch {
            images: Tensor::from_data(TensorData::new(pixels, [batch, 1, IMAGE_SIZE, IMAGE_SIZE]), device),
            targets: Tensor::from_data(TensorData::new(labels, [batch]), device),
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
        self.position = end;
        let (epoch, loader) = (self.epoch, self.loader);
        let batch = MnistBatch::build(
            &loader.split,
            indices,
            |index| match (&loader.order, &self.augment) {
                (Order::Shuffled { seed, .. }, Some(augment)) => Distortion::draw(augment, *seed, epoch, index),
                _ => Distortion::NONE,
            },
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
