//! The network for inference only, without burn: what the small browser bundle runs.
//!
//! [`Weights`] is a trained [`crate::Model`] frozen for inference: each BatchNorm folded into
//! the convolution before it (exact up to f32 rounding), every layer stored as rows of
//! weights per output plus a bias. Its byte format keeps the weights as f32, f16 or int8 with
//! one scale per output channel ([`Precision`]); biases and scales stay f32. [`LeanModel`]
//! lays the weights out for the kernels in `kernels.rs` and classifies one image at a time.
//!
//! The burn model is the reference: tests hold the two to the same probabilities.

mod int8;
pub(crate) mod kernels;
mod weights;

pub use int8::Int8Model;
pub use weights::{Precision, Weights};

use alloc::vec;
use alloc::vec::Vec;

use crate::{CONV_CHANNELS, FEATURE_SIDE, HIDDEN, IMAGE_SIZE, LoadError, NUM_CLASSES, PIXELS, Prediction};
use kernels::{BLOCK, Dense, conv3x3, gelu_in_place, max_pool_2x2, relu_in_place, softmax};

/// 28 -conv-> 26 -pool-> 13 -conv-> 11 -pool-> 5.
pub(crate) const CONV1_SIDE: usize = IMAGE_SIZE - 2;
pub(crate) const POOL1_SIDE: usize = CONV1_SIDE / 2;
/// conv2's output is 11x11, but pooling drops its last row and column, so only the 10x10
/// that pooling reads is computed: a fifth less work than the whole map.
const CONV2_USED: usize = 2 * FEATURE_SIDE;

/// The model with its weights laid out for [`kernels`]; see the module doc.
#[derive(Debug, Clone)]
pub struct LeanModel {
    conv1: Conv,
    conv2: Conv,
    fc1: Dense,
    fc2: Dense,
    fc3: Dense,
}

/// A 3x3 convolution's weights as `[tap][input channel][output channel]`, and its bias.
#[derive(Debug, Clone)]
struct Conv {
    inputs: usize,
    taps: Vec<f32>,
    bias: [f32; CONV_CHANNELS],
}

impl Conv {
    fn new(layer: &weights::Layer) -> Self {
        let inputs = layer.fan_in / 9;
        let mut taps = vec![0.0; layer.weight.len()];
        for (output, row) in layer.weight.chunks_exact(layer.fan_in).enumerate() {
            for (input, kernel) in row.chunks_exact(9).enumerate() {
                for (tap, &w) in kernel.iter().enumerate() {
                    taps[(tap * inputs + input) * CONV_CHANNELS + output] = w;
                }
            }
        }
        Conv { inputs, taps, bias: layer.bias.as_slice().try_into().expect("one bias per channel") }
    }
}

impl LeanModel {
    pub fn new(weights: &Weights) -> Self {
        let [conv1, conv2, fc1, fc2, fc3] = weights.layers();
        // burn flattens the pooled maps channel-major (c, y, x); the kernels keep channels
        // innermost (y, x, c), so fc1's inputs are reordered once here.
        let spatial = FEATURE_SIDE * FEATURE_SIDE;
        let fc1 = Dense::new(fc1, |i| (i % CONV_CHANNELS) * spatial + i / CONV_CHANNELS);
        LeanModel {
            conv1: Conv::new(conv1),
            conv2: Conv::new(conv2),
            fc1,
            fc2: Dense::new(fc2, |i| i),
            fc3: Dense::new(fc3, |i| i),
        }
    }

    /// Decodes weights written by [`Weights::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LoadError> {
        Weights::from_bytes(bytes).map(|weights| Self::new(&weights))
    }

    /// Classifies one 28x28 grey image (0 = paper, 255 = ink), e.g. from [`crate::preprocess`].
    pub fn classify(&self, grey: &[u8; PIXELS]) -> Prediction {
        let pixels = grey.map(crate::normalise);
        Prediction::new(self.probabilities(&pixels), grey)
    }

    /// Class probabilities for one image of [`crate::normalise`]d pixels.
    pub fn probabilities(&self, pixels: &[f32; PIXELS]) -> [f32; NUM_CLASSES] {
        let mut conv1 = vec![0.0; CONV1_SIDE * CONV1_SIDE * CONV_CHANNELS];
        conv3x3(pixels, IMAGE_SIZE, &self.conv1.taps, self.conv1.inputs, &self.conv1.bias, CONV1_SIDE, &mut conv1);
        gelu_in_place(&mut conv1);
        let mut pool1 = vec![0.0; POOL1_SIDE * POOL1_SIDE * CONV_CHANNELS];
        max_pool_2x2(&conv1, CONV1_SIDE, POOL1_SIDE, &mut pool1);

        let mut conv2 = vec![0.0; CONV2_USED * CONV2_USED * CONV_CHANNELS];
        conv3x3(&pool1, POOL1_SIDE, &self.conv2.taps, self.conv2.inputs, &self.conv2.bias, CONV2_USED, &mut conv2);
        gelu_in_place(&mut conv2);
        let mut features = [0.0; FEATURE_SIDE * FEATURE_SIDE * CONV_CHANNELS];
        max_pool_2x2(&conv2, CONV2_USED, FEATURE_SIDE, &mut features);

        let mut hidden1 = [0.0; HIDDEN];
        self.fc1.forward(&features, &mut hidden1);
        relu_in_place(&mut hidden1);
        let mut hidden2 = [0.0; HIDDEN];
        self.fc2.forward(&hidden1, &mut hidden2);
        relu_in_place(&mut hidden2);
        let mut logits = [0.0; NUM_CLASSES.next_multiple_of(BLOCK)];
        self.fc3.forward(&hidden2, &mut logits);
        softmax(logits[..NUM_CLASSES].try_into().expect("ten logits"))
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use crate::Model;
    use burn::tensor::Device;

    /// Strokes of varying thickness and position: inputs with ink where digits have it.
    fn images() -> Vec<[u8; PIXELS]> {
        (0..12)
            .map(|k| {
                core::array::from_fn(|i| {
                    let (y, x) = ((i / IMAGE_SIZE) as i32, (i % IMAGE_SIZE) as i32);
                    let d = (y - 14 + k % 5) * (k % 3 + 1) - (x - 14) * (k % 4 - 1);
                    if d.abs() < 3 + k && (4..24).contains(&y) { (255 - 20 * d.abs()).clamp(0, 255) as u8 } else { 0 }
                })
            })
            .collect()
    }

    #[test]
    fn the_lean_model_gives_the_burn_models_probabilities() {
        let device = Device::flex();
        // The committed model: its BatchNorm statistics are real, so the folding is tested.
        let model = Model::from_bytes(include_bytes!("../../../artifacts/model.bin"), &device).unwrap();
        let lean = LeanModel::new(&Weights::from_model(&model));
        for image in images() {
            let reference = model.classify(&image, &device);
            let ours = lean.classify(&image);
            assert_eq!(ours.digit, reference.digit);
            for (a, b) in ours.probabilities.iter().zip(&reference.probabilities) {
                assert!((a - b).abs() < 1e-5, "{:?} vs {:?}", ours.probabilities, reference.probabilities);
            }
        }
    }

    #[test]
    fn decoding_the_f32_format_gives_the_same_model() {
        let model = Model::from_bytes(include_bytes!("../../../artifacts/model.bin"), &Device::flex()).unwrap();
        let weights = Weights::from_model(&model);
        let direct = LeanModel::new(&weights);
        let decoded = LeanModel::from_bytes(&weights.to_bytes(Precision::F32)).unwrap();
        for image in images() {
            assert_eq!(direct.classify(&image), decoded.classify(&image));
        }
    }
}
