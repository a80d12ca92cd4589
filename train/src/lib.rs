//! Training of the digit classifier defined in `infer`.
//!
//! Owns the MNIST files (find, download, verify, parse), augmentation, batching, the fused
//! ops a training step runs on flex, the burn-train run, evaluation through `infer`, and what
//! a run reports (`metrics.json` and the plots). The `xtask` binary is the command line over
//! this crate, and writes what it returns. Without its `training` feature it is `data` alone.

pub mod data;

#[cfg(feature = "training")]
pub mod augment;
#[cfg(feature = "training")]
pub mod ema;
#[cfg(feature = "training")]
pub mod eval;
#[cfg(feature = "training")]
pub mod loader;
#[cfg(feature = "training")]
pub mod model;
#[cfg(feature = "training")]
pub mod ops;
#[cfg(feature = "training")]
pub mod progress;
#[cfg(feature = "training")]
pub mod provenance;
#[cfg(feature = "training")]
pub mod report;
#[cfg(feature = "training")]
pub mod training;

#[cfg(test)]
pub(crate) mod testing;
