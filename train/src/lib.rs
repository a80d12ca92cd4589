//! Training of the digit classifier defined in `infer`.
//!
//! Owns the MNIST files (find, download, verify, parse), augmentation, batching, the fused
//! ops a training step runs on flex, the burn-train run, evaluation through `infer`, and what
//! a run reports (`metrics.json` and the plots). The `xtask` binary is the command line over
//! this crate, and writes what it returns.

pub mod augment;
pub mod data;
pub mod ema;
pub mod eval;
pub mod loader;
pub mod model;
pub mod ops;
pub mod progress;
pub mod provenance;
pub mod report;
pub mod training;

#[cfg(test)]
pub(crate) mod testing;
