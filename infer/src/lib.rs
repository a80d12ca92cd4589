//! The digit classifier: the one definition of the model and the code that runs it.
//!
//! The network's shape lives here (the constants below) and its burn definition in
//! [`Model`]: training, evaluation and the burn backends build it through [`Model::new`] and
//! load weights through [`Model::from_bytes`]. Its layers run through [`ops`], a hook that
//! training fills with fused ops of its own, and that inference on flex uses for a fused
//! GELU + max-pool. [`lean`] runs
//! the same network for inference only, without burn: BatchNorm folded, weights stored as
//! f32, f16 or int8, kernels written for exactly these layers. It is what the small browser
//! bundle ships, and it is held to the burn model's outputs by tests. The crate is
//! `#![no_std]` + `alloc` so all of it compiles to WebAssembly.
#![no_std]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

use alloc::string::String;
use core::fmt;

#[cfg(feature = "bundled")]
pub mod bundled;
pub mod lean;
#[cfg(feature = "burn")]
mod model;
#[cfg(feature = "burn")]
pub mod ops;
pub mod preprocess;
#[cfg(feature = "wasm")]
mod wasm;

#[cfg(feature = "bundled")]
pub use bundled::classify;
#[cfg(feature = "burn")]
pub use model::Model;

/// Side of the square input image, in pixels.
pub const IMAGE_SIZE: usize = 28;
/// Pixels in one input image.
pub const PIXELS: usize = IMAGE_SIZE * IMAGE_SIZE;
/// Number of classes (the digits 0-9).
pub const NUM_CLASSES: usize = 10;
/// Mean of the MNIST training pixels after scaling to [0, 1].
pub const PIXEL_MEAN: f32 = 0.1307;
/// Standard deviation of the MNIST training pixels after scaling to [0, 1].
pub const PIXEL_STD: f32 = 0.3081;

/// BatchNorm's epsilon (burn's default), which folding BatchNorm into a conv needs.
#[cfg(feature = "record")]
const BATCH_NORM_EPSILON: f64 = 1e-5;
/// Output channels of both 3x3 convolutions.
const CONV_CHANNELS: usize = 64;
/// Width of the two hidden dense layers.
const HIDDEN: usize = 128;
/// 28 -conv3-> 26 -pool-> 13 -conv3-> 11 -pool-> 5.
const FEATURE_SIDE: usize = 5;
/// Inputs of the first dense layer: the flattened feature maps.
const FEATURES: usize = CONV_CHANNELS * FEATURE_SIDE * FEATURE_SIDE;

/// Maps a grey level (0 = background, 255 = ink) to the model's normalised input value.
#[inline]
pub fn normalise(grey: u8) -> f32 {
    (grey as f32 / 255.0 - PIXEL_MEAN) / PIXEL_STD
}

/// Index of the largest value, the first on ties: the predicted class of a probability row.
pub fn argmax(values: &[f32]) -> usize {
    (0..values.len()).fold(0, |best, i| if values[i] > values[best] { i } else { best })
}

/// What the model made of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The most probable digit.
    pub digit: usize,
    pub probabilities: [f32; NUM_CLASSES],
    /// The 28x28 grey image that was classified (0 = paper, 255 = ink).
    pub input: [u8; PIXELS],
}

impl Prediction {
    fn new(probabilities: [f32; NUM_CLASSES], input: &[u8; PIXELS]) -> Self {
        Prediction { digit: argmax(&probabilities), probabilities, input: *input }
    }
}

/// Why a weights file could not become a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// The bytes are not weights of a known format (truncated, corrupt, or another format).
    Format(String),
    /// The weights are readable but do not fit this architecture.
    Shape(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Format(why) => write!(f, "not a model file: {why}"),
            LoadError::Shape(why) => write!(f, "weights do not fit the model: {why}"),
        }
    }
}

impl core::error::Error for LoadError {}
