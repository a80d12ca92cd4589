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
    /// `augmented_epochs` (later ones see the images as stored).
    Shuffled { seed: u64, augment: AugmentConfig, augmented_epochs: usize },
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
        Box::new(EpochIter { loader: self, epoch, order: self.permutation(epoch), position: 0 })
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
            |index| match &loader.order {
                Order::Shuffled { seed, augment, augmented_epochs } if epoch <= *augmented_epochs => {
                    Distortion::draw(augment, *seed, epoch, index)
                }
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
