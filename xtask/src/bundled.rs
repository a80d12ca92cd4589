//! The weights `infer`'s `bundled` feature carries: a model file frozen to int8 lean weights
//! and written to `infer/bundled/model.lean`, where the firmware and the packaged crate
//! include them.

use std::path::PathBuf;

use anyhow::Context;
use infer::lean::{Int8Model, Precision, Weights};

use crate::artifacts::write_atomic;
use crate::root;

/// Where `infer` includes its bundled weights from.
pub fn path() -> PathBuf {
    root().join("infer/bundled/model.lean")
}

/// Freezes `model_bin` (a burn record) to int8 lean weights, checks that the int8 model loads
/// them, and writes them to [`path`]. Returns the bytes written.
pub fn write(model_bin: &[u8]) -> anyhow::Result<Vec<u8>> {
    let weights = Weights::from_record(model_bin).context("the model file is not a model this crate can freeze")?;
    let bytes = weights.to_bytes(Precision::Int8);
    Int8Model::from_bytes(&bytes).context("the frozen int8 weights do not load")?;
    // Rewriting the same bytes would only make cargo rebuild what includes them.
    if std::fs::read(path()).ok().as_ref() != Some(&bytes) {
        write_atomic(&path(), &bytes).with_context(|| format!("cannot write {}", path().display()))?;
    }
    Ok(bytes)
}
