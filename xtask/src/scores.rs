//! Test accuracies recorded by content, so that building the page from the committed model
//! needs no dataset.
//!
//! `artifacts/scores.json` maps the SHA-256 of each `model.bin` or lean weights file that was
//! scored on the 10,000 test images to what it scored. Bytes found there are not scored again;
//! any others are, and join the record. Under CI (`CI` set) everything is scored afresh and a
//! recorded score that differs is an error, so the record cannot drift from the bytes. Scoring
//! runs the model, so the build without burn hands it to the full build (`full_build`).

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[cfg(feature = "ml")]
use train::data::Split;
#[cfg(feature = "ml")]
use train::eval::{Evaluation, evaluate, evaluate_lean};

use crate::args::DataArgs;
use crate::artifacts::write_atomic;
use crate::root;

/// The record's file name, in `artifacts/` beside `model.bin`.
pub const FILE: &str = "scores.json";

/// One file's score on the test set.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Score {
    /// What was scored, for a person reading the record ("model.bin", "int8 lean weights").
    pub file: String,
    pub correct: usize,
    pub images: usize,
}

impl Score {
    #[cfg(feature = "ml")]
    fn of(file: &str, result: &Evaluation) -> Self {
        Score { file: file.into(), correct: result.correct, images: result.images }
    }

    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.images as f64
    }
}

/// The record: SHA-256 of the bytes to their score.
pub type Record = BTreeMap<String, Score>;

/// The record holding just `bytes`' score, as `train` writes it beside a new `model.bin`.
#[cfg(feature = "ml")]
pub fn record_of(file: &str, bytes: &[u8], result: &Evaluation) -> Record {
    Record::from([(sha256_hex(bytes), Score::of(file, result))])
}

/// Scores files by content: from the committed record where it has them, else on MNIST
/// (loaded on first need).
pub struct Scorer {
    path: PathBuf,
    record: Record,
    #[cfg_attr(not(feature = "ml"), expect(dead_code, reason = "only the full build scores"))]
    data: DataArgs,
    /// The test images, read on the first score that is needed.
    #[cfg(feature = "ml")]
    test: Option<Split>,
    rescore: bool,
    added: Vec<String>,
}

impl Scorer {
    /// A scorer over `artifacts/scores.json`; it scores everything afresh under CI.
    pub fn new(data: DataArgs) -> anyhow::Result<Self> {
        Self::over(root().join("artifacts").join(FILE), data, std::env::var_os("CI").is_some())
    }

    /// A scorer that scores every file afresh and checks the record against it.
    #[cfg(feature = "ml")]
    pub fn rescoring(data: DataArgs) -> anyhow::Result<Self> {
        Self::over(root().join("artifacts").join(FILE), data, true)
    }

    fn over(path: PathBuf, data: DataArgs, rescore: bool) -> anyhow::Result<Self> {
        let record = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a score record; delete it to score afresh", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Record::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Ok(Self {
            path,
            record,
            data,
            #[cfg(feature = "ml")]
            test: None,
            rescore,
            added: Vec::new(),
        })
    }

    /// The test accuracy of `bytes` (a `model.bin` or lean weights), named `file` in messages.
    pub fn accuracy(&mut self, file: &str, bytes: &[u8]) -> anyhow::Result<f64> {
        let sha256 = sha256_hex(bytes);
        if let Some(score) = self.record.get(&sha256).filter(|_| !self.rescore) {
            println!("{file}: test accuracy {:.2}%, as recorded in {}", 100.0 * score.accuracy(), self.path.display());
            return Ok(score.accuracy());
        }
        let score = self.score(file, bytes)?;
        // The same bytes may be recorded under another name; only what they scored must agree.
        let disagrees = |recorded: &&Score| (recorded.correct, recorded.images) != (score.correct, score.images);
        if let Some(recorded) = self.record.get(&sha256).filter(disagrees) {
            bail!(
                "{file} (sha256 {sha256}) scores {} / {} but {} records {} / {}",
                score.correct,
                score.images,
                self.path.display(),
                recorded.correct,
                recorded.images
            );
        }
        println!("{file}: test accuracy {:.2}%", 100.0 * score.accuracy());
        let accuracy = score.accuracy();
        if self.record.insert(sha256, score).is_none() {
            self.added.push(file.into());
        }
        Ok(accuracy)
    }

    /// `bytes` scored on the test images, through the code that deploys them.
    #[cfg(feature = "ml")]
    fn score(&mut self, file: &str, bytes: &[u8]) -> anyhow::Result<Score> {
        let model = Scorable::from_bytes(bytes).with_context(|| format!("{file} is not a usable model"))?;
        let test = match &mut self.test {
            Some(test) => test,
            none => none.insert(self.data.load_test()?),
        };
        Ok(Score::of(file, &model.evaluate(test)))
    }

    #[cfg(not(feature = "ml"))]
    fn score(&mut self, _file: &str, _bytes: &[u8]) -> anyhow::Result<Score> {
        Err(crate::full_build::Needed.into())
    }

    /// The files scored here that the record did not hold.
    #[cfg(feature = "ml")]
    pub fn added(&self) -> &[String] {
        &self.added
    }

    /// Writes the record back if this scorer added to it.
    pub fn save(&self) -> anyhow::Result<()> {
        if !self.added.is_empty() {
            write_atomic(&self.path, &serde_json::to_vec_pretty(&self.record)?)
                .with_context(|| format!("cannot write {}", self.path.display()))?;
        }
        Ok(())
    }

    /// The record's path.
    #[cfg(feature = "ml")]
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

/// Lower-case hex SHA-256 of `bytes`: the record's key.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// A model file loaded for scoring: lean weights (what a browser bundle embeds, recognised by
/// their header) with the lean model, anything else as a burn record with the burn model on
/// its CPU backend.
#[cfg(feature = "ml")]
pub enum Scorable {
    Lean(Box<infer::lean::LeanModel>),
    Burn(Box<infer::Model>),
}

#[cfg(feature = "ml")]
impl Scorable {
    pub fn from_bytes(bytes: &[u8]) -> anyhow::Result<Self> {
        Ok(if infer::lean::Weights::recognises(bytes) {
            Scorable::Lean(Box::new(infer::lean::LeanModel::from_bytes(bytes)?))
        } else {
            Scorable::Burn(Box::new(infer::Model::from_bytes(bytes, &burn::tensor::Device::flex())?))
        })
    }

    /// Scores on `split` (the test images, or validation), through the code that deploys this
    /// kind of file.
    pub fn evaluate(&self, split: &Split) -> Evaluation {
        match self {
            Scorable::Lean(model) => evaluate_lean(model, split),
            Scorable::Burn(model) => evaluate(model, split, &burn::tensor::Device::flex()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn scorer(dir: &Path, rescore: bool) -> Scorer {
        Scorer::over(dir.join(FILE), DataArgs { data_dir: Some(dir.join("no-mnist-here")) }, rescore).unwrap()
    }

    #[test]
    fn recorded_bytes_are_not_scored_again() {
        let dir = tempfile::tempdir().unwrap();
        let score = Score { file: "model.bin".into(), correct: 9, images: 10 };
        let record = Record::from([(sha256_hex(b"weights"), score)]);
        fs::write(dir.path().join(FILE), serde_json::to_vec(&record).unwrap()).unwrap();
        // The data folder does not exist, so any attempt to score would fail.
        assert_eq!(scorer(dir.path(), false).accuracy("model.bin", b"weights").unwrap(), 0.9);
        let unrecorded = scorer(dir.path(), false).accuracy("model.bin", b"other weights");
        assert!(unrecorded.is_err(), "bytes not in the record are scored, which needs MNIST (and burn)");
        let rescored = scorer(dir.path(), true).accuracy("model.bin", b"weights");
        assert!(rescored.is_err(), "a rescoring scorer ignores the record");
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE), b"{ not json").unwrap();
        let error = Scorer::over(dir.path().join(FILE), DataArgs::default(), false).err().unwrap();
        assert!(format!("{error:#}").contains(FILE), "{error:#}");
    }
}
