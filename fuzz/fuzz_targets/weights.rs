//! Every loader of weights someone hands us: `model.bin` into the burn model and into the lean
//! model, and the lean weights format. Any bytes are refused or load into a model that
//! classifies a digit with finite probabilities (NaN and infinite weights are refused).
#![no_main]

use fuzz as _; // the bounded allocator

use burn::tensor::Device;
use infer::lean::{LeanModel, Weights};
use infer::{Model, PIXELS, Prediction};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    // A vertical stroke: any digit will do, the point is a forward pass through what loaded.
    let digit: [u8; PIXELS] = core::array::from_fn(|i| if (12..16).contains(&(i % 28)) { 255 } else { 0 });
    let device = Device::flex();
    let answers = [
        Model::from_bytes(bytes, &device).ok().map(|model| model.classify(&digit, &device)),
        Weights::from_record(bytes).ok().map(|weights| LeanModel::new(&weights).classify(&digit)),
        Weights::from_bytes(bytes).ok().map(|weights| LeanModel::new(&weights).classify(&digit)),
    ];
    for Prediction { digit, .. } in answers.into_iter().flatten() {
        assert!(digit < 10);
    }
});
