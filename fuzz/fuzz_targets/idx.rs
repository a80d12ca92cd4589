//! The MNIST file reader (`train::data`), plain and gzipped: any bytes are a clear error or a
//! file of exactly the length its header promises. The sizes are kept small (up to three
//! items) so that the fuzzer can write whole, valid files.
#![no_main]

use fuzz as _; // the bounded allocator

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use train::data::{IdxFile, decode_idx};

fuzz_target!(|input: &[u8]| {
    let Some((&choice, raw)) = input.split_first() else { return };
    let name = if choice & 1 == 0 { "fuzz-images-idx3-ubyte" } else { "fuzz-labels-idx1-ubyte" };
    let file = IdxFile { name, sha256: "", count: usize::from(choice >> 1) % 4 };
    if let Ok(bytes) = decode_idx(Path::new(name), raw.to_vec(), file) {
        assert_eq!(bytes.len(), file.decompressed_len());
    }
});
