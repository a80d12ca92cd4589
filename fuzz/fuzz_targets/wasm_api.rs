//! The browser API's entry points without the JavaScript glue: what `classifyRgba` and
//! `toMnist` do with a canvas of any stated size, and `classifyMnist` with a buffer of any
//! length, ending in the int8 lean model the bundle ships.
#![no_main]

use fuzz as _; // the bounded allocator

use std::sync::LazyLock;

use infer::lean::{LeanModel, Precision, Weights};
use infer::preprocess::{canvas_to_mnist, mnist_input};
use libfuzzer_sys::fuzz_target;

static MODEL: LazyLock<LeanModel> = LazyLock::new(|| {
    let record = Weights::from_record(include_bytes!("../../artifacts/model.bin")).expect("the committed model");
    LeanModel::from_bytes(&record.to_bytes(Precision::Int8)).expect("its int8 weights")
});

fuzz_target!(|input: &[u8]| {
    let Some((&choice, rest)) = input.split_first() else { return };
    let grey = if choice & 1 == 0 {
        // Width and height arrive from JavaScript as 32-bit numbers.
        let Some((size, rgba)) = rest.split_first_chunk::<8>() else { return };
        let width = u32::from_le_bytes(size[..4].try_into().unwrap()) as usize;
        let height = u32::from_le_bytes(size[4..].try_into().unwrap()) as usize;
        canvas_to_mnist(rgba, width, height).ok().flatten()
    } else {
        mnist_input(rest).ok()
    };
    if let Some(grey) = grey {
        assert!(MODEL.classify(&grey).digit < 10);
    }
});
