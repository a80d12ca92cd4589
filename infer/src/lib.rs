//! The digit classifier: the one definition of the model and the code that runs it.
//!
//! Everything downstream (training, evaluation, the browser bundle, the edge worker) builds
//! the network through [`Model::new`] and loads weights through [`Model::from_bytes`], so the
//! architecture and the input normalisation live here and nowhere else. The crate is
//! `#![no_std]` + `alloc` so the same code compiles to WebAssembly.
#![no_std]

extern crate alloc;

mod model;
pub mod preprocess;
#[cfg(feature = "wasm")]
mod wasm;

pub use model::{LoadError, Model, Prediction};

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

/// Maps a grey level (0 = background, 255 = ink) to the model's normalised input value.
#[inline]
pub fn normalize(grey: u8) -> f32 {
    (grey as f32 / 255.0 - PIXEL_MEAN) / PIXEL_STD
}

/// Index of the largest value, the first on ties: the predicted class of a probability row.
pub fn argmax(values: &[f32]) -> usize {
    (0..values.len()).fold(0, |best, i| if values[i] > values[best] { i } else { best })
}
