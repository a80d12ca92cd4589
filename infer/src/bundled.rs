//! The weights packaged inside this crate (feature `bundled`), and [`classify`] over them.
//!
//! `cargo xtask package` (and `cargo xtask train`, after the accuracy gate) writes the model it
//! packages as int8 lean weights to `bundled/model.lean` in this crate's folder and then runs
//! `cargo package`, so the `.crate` carries its own weights: a downstream project adds one
//! dependency and classifies with no std, no allocator and no burn. In this repository the
//! file is a build product (ignored by git); `cargo xtask package` or `cargo xtask embedded`
//! writes it.

use crate::lean::Int8Model;
use crate::{PIXELS, Prediction};

/// The packaged int8 lean weights.
pub static WEIGHTS: &[u8] = include_bytes!("../bundled/model.lean");

/// The packaged model, computing from the int8 weights where they lie (no decode, no heap).
pub fn model() -> Int8Model<'static> {
    // Checked when packaged: `cargo xtask package` loads the file it writes before packaging.
    Int8Model::from_bytes(WEIGHTS).expect("the packaged weights are int8 lean weights")
}

/// Classifies one 28x28 grey image (0 = paper, 255 = ink) with the packaged model.
pub fn classify(image: &[u8; PIXELS]) -> Prediction {
    model().classify(image)
}
