//! What several commands share: where MNIST comes from, the accuracy gate, the committed
//! model's files, and the training backends.

use std::path::PathBuf;

use clap::Args;
#[cfg(feature = "ml")]
use clap::ValueEnum;

#[cfg(feature = "ml")]
use train::data::{Mnist, Split};
#[cfg(feature = "ml")]
use train::training::Backend;

use crate::root;

/// The test accuracy that `train`, `eval`, `build-web`, `reproduce` and CI hold a model to by
/// default.
pub const GATE: f64 = 0.995;

/// Parses a count that must be at least one (threads, rounds, steps, requests): zero of them
/// would measure or compute nothing, and is refused before the command starts.
pub fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(count) => Ok(count),
        Err(e) => Err(e.to_string()),
    }
}

/// Parses a test accuracy to hold a model to (`--target`), a fraction from 0 to 1: a
/// percentage such as 99.5 would fail every model, and is refused before the command starts.
pub fn accuracy(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
        Ok(_) => Err("must be an accuracy from 0 to 1 (0.995 for 99.5%)".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Parses a fraction from 0 to 1 (a distortion's strength, a mix's weight), refused before the
/// command starts.
#[cfg(feature = "ml")]
pub fn fraction(text: &str) -> Result<f32, String> {
    match text.parse::<f32>() {
        Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
        Ok(_) => Err("must be a fraction from 0 to 1".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Parses a finite number of at least 0 (a scale, a radius), refused before the command starts.
#[cfg(feature = "ml")]
pub fn non_negative(text: &str) -> Result<f32, String> {
    match text.parse::<f32>() {
        Ok(value) if value.is_finite() && value >= 0.0 => Ok(value),
        Ok(_) => Err("must be a finite number of at least 0".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Fails unless `accuracy` reaches `target`.
pub fn check_gate(accuracy: f64, target: f64) -> anyhow::Result<()> {
    if accuracy < target {
        anyhow::bail!("test accuracy {accuracy:.4} is below the target {target:.4}");
    }
    Ok(())
}

/// Where MNIST comes from (shared by every command that reads it).
#[derive(Args, Debug, Clone, Default)]
pub struct DataArgs {
    /// Folder holding the four IDX files (plain or .gz). Default: $MNIST_DATA_DIR, else the
    /// user cache, downloaded and verified on first use.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[cfg(feature = "ml")]
impl DataArgs {
    pub fn load(&self) -> anyhow::Result<Mnist> {
        Ok(Mnist::load(self.data_dir.as_deref())?)
    }

    /// The test split alone: all that scoring a model needs.
    pub fn load_test(&self) -> anyhow::Result<Split> {
        Ok(Mnist::load_test(self.data_dir.as_deref())?)
    }
}

/// The committed model.
pub fn committed_model() -> PathBuf {
    root().join("artifacts/model.bin")
}

/// The committed model's metrics (its recipe, provenance and scores).
#[cfg(feature = "ml")]
pub fn committed_metrics() -> PathBuf {
    root().join("artifacts/metrics.json")
}

/// What the committed recipe made on machines other than the one that trained the committed
/// model, as `cargo xtask reproduce --record` wrote it.
#[cfg(feature = "ml")]
pub fn committed_reproductions() -> PathBuf {
    root().join("artifacts/reproductions.json")
}

/// Where training computes.
#[cfg(feature = "ml")]
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendArg {
    /// burn's flex CPU backend, with this project's fused ops.
    Flex,
    /// burn's ndarray CPU backend (for comparison).
    Ndarray,
    /// burn's wgpu backend on a GPU (build xtask with its `wgpu` feature).
    Wgpu,
}

#[cfg(feature = "ml")]
impl From<BackendArg> for Backend {
    fn from(arg: BackendArg) -> Backend {
        match arg {
            BackendArg::Flex => Backend::Flex,
            BackendArg::Ndarray => Backend::NdArray,
            BackendArg::Wgpu => Backend::Wgpu,
        }
    }
}
