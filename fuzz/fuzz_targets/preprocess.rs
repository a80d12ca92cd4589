//! Preprocessing (`infer::preprocess`) at any size: a canvas, a grey photo, or an ink map of
//! any values (NaN included) with any stated width and height. Each is an error naming the
//! problem or a result of the right size; ink is always within [0, 1].
#![no_main]

use fuzz as _; // the bounded allocator

use infer::preprocess::{ink_from_grey, ink_from_rgba, to_mnist};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((header, pixels)) = input.split_first_chunk::<5>() else { return };
    let width = usize::from(u16::from_le_bytes([header[0], header[1]]));
    let height = usize::from(u16::from_le_bytes([header[2], header[3]]));
    let ink = match header[4] % 3 {
        0 => ink_from_rgba(pixels, width, height),
        1 => ink_from_grey(pixels, width, height),
        _ => Ok(pixels.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()),
    };
    let Ok(ink) = ink else { return };
    if header[4] % 3 != 2 {
        assert_eq!(ink.len(), width * height);
        assert!(ink.iter().all(|v| (0.0..=1.0).contains(v)), "ink outside [0, 1]");
    }
    let _ = to_mnist(&ink, width, height);
});
