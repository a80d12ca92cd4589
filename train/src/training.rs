//! The training run: burn-train's learner over augmented batches, with checkpoints and resume.

use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::config::Config;
use burn::module::Module;
use burn::optim::AdamWConfig;
use burn::optim::lr_scheduler::{
    LrSchedulerConfig, cosine::CosineAnnealingLrSchedulerConfig, linear::LinearLrSchedulerConfig,
    sequential::SequentialLrSchedulerConfig,
};
use burn::store::ModuleRecord;
use burn::tensor::Device;
use burn::train::checkpoint::KeepLastNCheckpoints;
use burn::train::metric::{AccuracyMetric, LearningRateMetric, LossMetric};
use burn::train::{Learner, LearnerSummary, SupervisedTraining};

use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};

use crate::augment::{AugmentConfig, Distortion};
use crate::data::{Mnist, Split};
use crate::ema::Ema;
use crate::loader::{MnistBatch, MnistLoader, Order};
use crate::model::Classifier;
use crate::ops::TrainingOps;
use crate::progress::EpochLines;

/// The recipe. Everything that decides the weights is here, so a config and a seed pin a run.
#[derive(Config, Debug)]
pub struct TrainingConfig {
    #[config(default = 10)]
    pub epochs: usize,
    #[config(default = 128)]
    pub batch_size: usize,
    /// Peak learning rate, reached after the warm-up and then annealed to zero on a cosine.
    #[config(default = 3e-3)]
    pub learning_rate: f64,
    #[config(default = 1)]
    pub warmup_epochs: usize,
    /// AdamW's decoupled weight decay: each step shrinks the weights by learning rate x this.
    #[config(default = 0.1)]
    pub weight_decay: f32,
    /// Decay of the moving average of the weights that is exported (0: the last weights).
    /// The average's warm-up at the default ramp, `(1 + n) / (10 + n)` after `n` updates,
    /// stays below 0.999 for 8,990 updates, so in the 10-epoch recipe (4,690 updates on all
    /// 60,000 images) the warm-up decides the decay throughout (0.998 at the end) and any
    /// value from 0.999 up gives the same bytes.
    #[config(default = 0.999)]
    pub ema_decay: f64,
    /// How far back the average reaches while its warm-up decides the decay (see
    /// [`crate::ema::Ema::update`]): its centre is `(ramp - 1) / ramp` of the way through
    /// the run (nine tenths at 10); more than 1.
    #[config(default = 10.0)]
    pub ema_ramp: f64,
    /// Probability of dropping each input of the first two dense layers while training.
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Share of each target spread evenly over the ten classes.
    #[config(default = 0.1)]
    pub label_smoothing: f32,
    /// Weight of the averaged model's own predictions in each training batch's targets by the
    /// end of the run, rising linearly from 0 at the first step (0: the labels alone).
    #[config(default = 0.0)]
    pub self_distillation: f32,
    /// Sharpness-aware minimisation's radius: each step's gradient is taken at the weights
    /// moved this far uphill (a second pass, so a step costs about twice as much; 0: off).
    #[config(default = 0.0)]
    pub sam_rho: f32,
    /// Runs that start from the same initial weights but draw their own data order and
    /// distortions (branch `b` from seed + 1000 b); the exported model is the element-wise
    /// mean of their averaged weights and BatchNorm statistics. 1 is a plain run.
    #[config(default = 1)]
    pub branches: usize,
    /// The last this many epochs see the images undistorted.
    #[config(default = 1)]
    pub clean_epochs: usize,
    /// The last this many distorted epochs before the clean ones distort less and less: their
    /// ranges shrink by equal steps toward none (0: full strength up to the clean epochs).
    #[config(default = 0)]
    pub fade_epochs: usize,
    /// BatchNorm's statistics measured afresh for the exported (averaged) weights, over this
    /// many undistorted training batches; 0 keeps the averaged statistics.
    #[config(default = 0)]
    pub batch_norm_batches: usize,
    #[config(default = 42)]
    pub seed: u64,
    /// Held out from the end of the 60,000 training images, to choose a recipe by. The
    /// shipped model is the chosen recipe trained on all of them (0).
    #[config(default = 0)]
    pub validation_images: usize,
    /// Train on only this many images (from the start of the training split), for quick runs.
    pub train_images: Option<usize>,
    pub augment: AugmentConfig,
}

impl TrainingConfig {
    /// The first setting that cannot make a run, named with its value, given how many
    /// training images there are: checked before anything is trained or written, so a typo
    /// fails at once and not minutes in (or as a panic deep in burn).
    pub fn check(&self, training_images: usize) -> Result<(), String> {
        let counts = [("epochs", self.epochs), ("batch_size", self.batch_size), ("branches", self.branches)];
        for (name, count) in counts {
            if count == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.train_images == Some(0) {
            return Err("train_images must be at least 1".into());
        }
        if self.validation_images >= training_images {
            return Err(format!(
                "validation_images ({}) leaves none of the {training_images} training images to train on",
                self.validation_images
            ));
        }
        if self.clean_epochs + self.fade_epochs > self.epochs {
            return Err(format!(
                "the clean and fading epochs ({} + {}) are more than the {} epochs",
                self.clean_epochs, self.fade_epochs, self.epochs
            ));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(format!("learning_rate must be a finite number above 0, not {}", self.learning_rate));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(format!("weight_decay must be a finite number of at least 0, not {}", self.weight_decay));
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return Err(format!("ema_decay must be in [0, 1), not {}", self.ema_decay));
        }
        if !(self.ema_ramp.is_finite() && self.ema_ramp > 1.0) {
            return Err(format!("ema_ramp must be a finite number above 1, not {}", self.ema_ramp));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("dropout must be in [0, 1), not {}", self.dropout));
        }
        let fractions = [("label_smoothing", self.label_smoothing), ("self_distillation", self.self_distillation)];
        for (name, value) in fractions {
            if !(0.0..=1.0).contains(&value) {
                return Err(format!("{name} must be in [0, 1], not {value}"));
            }
        }
        if !(self.sam_rho.is_finite() && self.sam_rho >= 0.0) {
            return Err(format!("sam_rho must be a finite number of at least 0, not {}", self.sam_rho));
        }
        self.augment.check()
    }

    /// The training and validation splits this config asks for.
    pub fn splits(&self, mnist: &Mnist) -> (Split, Split) {
        let total = mnist.train.len();
        let held_out = total - self.validation_images.min(total);
        let train_end = self.train_images.map_or(held_out, |n| n.min(held_out));
        (mnist.train.slice(0..train_end), mnist.train.slice(held_out..total))
    }
}

/// Where a run computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    #[default]
    Flex,
    NdArray,
    Wgpu,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Flex => "flex",
            Backend::NdArray => "ndarray",
            Backend::Wgpu => "wgpu",
        }
    }

    /// The device, without autodiff. GPU training is a cargo feature (`wgpu`), as its
    /// stack triples a first build that most users, training on CPU, would wait for.
    #[allow(deprecated)] // ndarray stays selectable for comparison with flex.
    pub fn device(self) -> Result<Device, TrainError> {
        Ok(match self {
            Backend::Flex => Device::flex(),
            Backend::NdArray => Device::ndarray(),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => Device::wgpu(Default::default()),
            #[cfg(not(feature = "wgpu"))]
            Backend::Wgpu => return Err(TrainError::NotBuilt("GPU training (`--backend wgpu`)", "wgpu")),
        })
    }
}

/// How to run, as opposed to what to learn.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Checkpoints and burn-train's logs go here.
    pub run_dir: PathBuf,
    pub backend: Backend,
    /// Continue from the last complete checkpoint in `run_dir` instead of starting afresh.
    pub resume: bool,
}

/// Per-epoch means, as burn-train logged them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    /// `None` when nothing was held out.
    pub valid_loss: Option<f64>,
    pub valid_accuracy: Option<f64>,
    pub learning_rate: f64,
}

/// What a run leaves behind.
pub struct TrainedModel {
    /// The final weights in `model.bin` form.
    pub model_bin: Vec<u8>,
    pub history: Vec<EpochMetrics>,
    /// Seconds spent in this process's share of the training (a resumed run counts its own).
    pub wall_seconds: f64,
    /// The epoch this process started from (1 unless resumed).
    pub first_epoch: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("--resume: {0}")]
    Resume(String),
    #[error("{path}: {source}", path = .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("training stopped early: {0}")]
    Stopped(String),
    #[error("invalid training config: {0}")]
    Config(String),
    #[error(
        "{0} is not in this build; build it with `--features {1}` \
         (from xtask: `cargo run --release -p xtask --features {1} -- ...`)"
    )]
    NotBuilt(&'static str, &'static str),
}

const CONFIG_FILE: &str = "config.json";

/// Trains the model from scratch (or from the last checkpoint) and returns its weights.
pub fn train(config: &TrainingConfig, mnist: &Mnist, options: &RunOptions) -> Result<TrainedModel, TrainError> {
    config.check(mnist.train.len()).map_err(TrainError::Config)?;
    if options.resume && config.branches > 1 {
        return Err(TrainError::Resume("a run of more than one branch starts afresh; run without --resume".into()));
    }
    let (train_split, valid_split) = config.splits(mnist);
    let dir = &options.run_dir;
    let last_epoch = if options.resume { Some(resumable_epoch(config, dir)?) } else { None };
    if last_epoch.is_none() {
        // A fresh start must not inherit checkpoints or logs of an earlier run.
        let _ = fs::remove_dir_all(dir);
    }
    fs::create_dir_all(dir).map_err(|source| TrainError::Io { path: dir.clone(), source })?;
    config.save(dir.join(CONFIG_FILE)).map_err(|source| TrainError::Io { path: dir.join(CONFIG_FILE), source })?;

    let device = options.backend.device()?.autodiff();
    let splits = (Arc::new(train_split), Arc::new(valid_split));
    let started = Instant::now();
    let branches = (0..config.branches)
        .map(|branch| {
            let branch_dir = branch_dir(dir, config.branches, branch);
            train_branch(config, branch, &branch_dir, last_epoch, &splits, &device, options.backend)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let wall_seconds = started.elapsed().as_secs_f64();
    let mut model = crate::ema::mean(branches);
    if config.batch_norm_batches > 0 {
        model = measure_batch_norm(model, &config.splits(mnist).0, config, &device);
    }
    let history = history(&branch_dir(dir, config.branches, 0), config.epochs);
    let first_epoch = last_epoch.map_or(1, |epoch| epoch + 1);
    Ok(TrainedModel { model_bin: model.to_bytes(), history, wall_seconds, first_epoch })
}

/// Where branch `branch` of `branches` keeps its checkpoints and logs: the run folder itself
/// for a plain run.
fn branch_dir(run_dir: &Path, branches: usize, branch: usize) -> PathBuf {
    if branches == 1 { run_dir.to_path_buf() } else { run_dir.join(format!("branch-{branch}")) }
}

/// One branch's run from the seed's initial weights (from its last complete checkpoint in
/// `dir` after `last_epoch`), returning its averaged weights.
fn train_branch(
    config: &TrainingConfig,
    branch: usize,
    dir: &Path,
    last_epoch: Option<usize>,
    (train_split, valid_split): &(Arc<Split>, Arc<Split>),
    device: &Device,
    backend: Backend,
) -> Result<infer::Model, TrainError> {
    // Every branch draws the same initial weights; only the data differs.
    device.seed(config.seed);
    let first_epoch = last_epoch.map_or(1, |epoch| epoch + 1);
    let steps_per_epoch = train_split.len().div_ceil(config.batch_size);
    let shuffled = Order::Shuffled {
        seed: config.seed.wrapping_add(1000 * branch as u64),
        augment: config.augment.clone(),
        augmented_epochs: config.epochs.saturating_sub(config.clean_epochs),
        fade_epochs: config.fade_epochs,
    };
    let train_loader = MnistLoader::new(train_split.clone(), config.batch_size, shuffled, first_epoch, device.clone());
    let validating = !valid_split.is_empty();
    let valid_loader = MnistLoader::new(valid_split.clone(), 500, Order::Sequential, first_epoch, backend.device()?);

    let model = infer::Model::new(device).with_dropout(config.dropout);
    let ema = Ema::of(&model, config.ema_decay, config.ema_ramp);
    let learner = Learner::new(
        Classifier::new(model, ema, config.label_smoothing)
            .with_self_distillation(config.self_distillation, config.epochs * steps_per_epoch)
            .with_sam(config.sam_rho),
        AdamWConfig::new().with_weight_decay(config.weight_decay).init(),
        schedule(config, steps_per_epoch).init().map_err(TrainError::Config)?,
    );

    let mut training = SupervisedTraining::new(dir, Arc::new(train_loader), Arc::new(valid_loader))
        .metrics((AccuracyMetric::new(), LossMetric::new()))
        .metric_train_numeric(LearningRateMetric::new())
        .with_default_checkpointers()
        .with_checkpointing_strategy(KeepLastNCheckpoints::new(2))
        .num_epochs(config.epochs);
    // burn-train's dashboard for a person at a terminal, where it is built in; else a line
    // per epoch, which logs and CI can read.
    if !(cfg!(feature = "tui") && std::io::stdout().is_terminal()) {
        training = training.renderer(Box::new(EpochLines::new(validating)));
    }
    if let Some(epoch) = last_epoch {
        training = training.checkpoint(epoch);
    }

    let result = training.launch(learner);
    if let Some(error) = result.error {
        return Err(TrainError::Stopped(error.to_string()));
    }
    if let Some(interruption) = result.interrupted {
        return Err(TrainError::Stopped(format!("{interruption:?}")));
    }
    Ok(result.model.averaged())
}

/// `model` with BatchNorm's running statistics measured on its own weights: forward passes in
/// training mode over `config.batch_norm_batches` undistorted batches of `split`, in an order
/// fixed by the seed. Each pass moves the statistics by burn's momentum (0.1), so after 100
/// batches the averaged ones they start from weigh 0.9^100.
fn measure_batch_norm(model: infer::Model, split: &Split, config: &TrainingConfig, device: &Device) -> infer::Model {
    // burn-train hands the model back in validation mode; BatchNorm measures only in training mode.
    let model = model.train();
    let mut order: Vec<usize> = (0..split.len()).collect();
    order.shuffle(&mut StdRng::seed_from_u64(config.seed));
    for indices in order.chunks(config.batch_size).take(config.batch_norm_batches) {
        let batch = MnistBatch::build(split, indices, |_| Distortion::NONE, None, device);
        drop(model.forward_with(&TrainingOps, batch.images));
    }
    model.valid()
}

/// Linear warm-up to the peak, then a cosine to zero, stepped once per batch.
fn schedule(config: &TrainingConfig, steps_per_epoch: usize) -> SequentialLrSchedulerConfig {
    let warmup = (config.warmup_epochs * steps_per_epoch).max(1);
    let total = config.epochs * steps_per_epoch;
    let peak = config.learning_rate;
    SequentialLrSchedulerConfig::new(
        vec![
            LrSchedulerConfig::Linear(LinearLrSchedulerConfig::new(peak / 100.0, peak, warmup)),
            LrSchedulerConfig::Cosine(CosineAnnealingLrSchedulerConfig::new(peak, total.saturating_sub(warmup).max(1))),
        ],
        vec![warmup],
    )
}

/// The last epoch whose three checkpoint files (model, optimiser, schedule) are all readable,
/// after checking that `dir` holds a run of this exact config.
fn resumable_epoch(config: &TrainingConfig, dir: &Path) -> Result<usize, TrainError> {
    let saved = TrainingConfig::load(dir.join(CONFIG_FILE))
        .map_err(|e| TrainError::Resume(format!("no run to resume in {} ({e})", dir.display())))?;
    if saved.to_string() != config.to_string() {
        return Err(TrainError::Resume(format!(
            "{} holds a run of another config; run without --resume to start afresh",
            dir.display()
        )));
    }
    let checkpoints = dir.join("checkpoint");
    let readable =
        |kind: &str, epoch: usize| ModuleRecord::load(checkpoints.join(format!("{kind}-{epoch}.bpk"))).is_ok();
    let epoch = (1..config.epochs)
        .rev()
        .find(|&epoch| ["model", "optim", "scheduler"].iter().all(|kind| readable(kind, epoch)))
        .ok_or_else(|| TrainError::Resume(format!("no complete checkpoint in {}", checkpoints.display())))?;
    // Logs of the epoch that was cut short would otherwise be appended to on the rerun.
    for split in ["train", "valid"] {
        for later in epoch + 1..=config.epochs {
            let _ = fs::remove_dir_all(dir.join(split).join(format!("epoch-{later}")));
        }
    }
    Ok(epoch)
}

/// Per-epoch means from burn-train's file logs (these survive a resume).
fn history(dir: &Path, epochs: usize) -> Vec<EpochMetrics> {
    let names = ["Loss", "Accuracy", "Learning Rate"];
    let Ok(summary) = LearnerSummary::new(dir, &names) else {
        return Vec::new();
    };
    let value = |metrics: &[burn::train::MetricSummary], name: &str, epoch: usize| {
        metrics
            .iter()
            .find(|m| m.name == name)
            .and_then(|m| m.entries.iter().find(|e| e.step == epoch))
            .map(|e| e.value)
            // burn-train logs NaN for a split with no images.
            .filter(|value| value.is_finite())
    };
    let (train, valid) = (&summary.metrics.train, &summary.metrics.valid);
    (1..=epochs)
        .map(|epoch| EpochMetrics {
            epoch,
            train_loss: value(train, "Loss", epoch).unwrap_or(f64::NAN),
            train_accuracy: value(train, "Accuracy", epoch).map_or(f64::NAN, |a| a / 100.0),
            valid_loss: value(valid, "Loss", epoch),
            valid_accuracy: value(valid, "Accuracy", epoch).map(|a| a / 100.0),
            learning_rate: value(train, "Learning Rate", epoch).unwrap_or(f64::NAN),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sha256_hex;
    use crate::eval::evaluate;

    fn small(epochs: usize, train_images: usize) -> TrainingConfig {
        TrainingConfig::new(AugmentConfig::new())
            .with_epochs(epochs)
            .with_batch_size(64)
            .with_train_images(Some(train_images))
            .with_validation_images(1000)
    }

    #[test]
    fn the_recipe_passes_its_own_check_and_a_one_epoch_run_does_too() {
        let recipe = TrainingConfig::new(AugmentConfig::new());
        assert_eq!(recipe.check(60_000), Ok(()));
        assert_eq!(recipe.clone().with_epochs(1).check(60_000), Ok(()));
        assert_eq!(TrainingConfig::new(AugmentConfig::none()).check(60_000), Ok(()));
        // The trial levers as docs/accuracy-trials.md ran them.
        assert_eq!(recipe.clone().with_fade_epochs(4).check(60_000), Ok(()));
        assert_eq!(TrainingConfig::new(AugmentConfig::new().scaled(1.25)).check(60_000), Ok(()));
        assert!(recipe.clone().with_validation_images(5_000).check(5_000).unwrap_err().contains("validation_images"));
    }

    fn run(config: &TrainingConfig, dir: &Path, resume: bool) -> TrainedModel {
        let mnist = crate::testing::mnist();
        let options = RunOptions { run_dir: dir.to_path_buf(), backend: Backend::Flex, resume };
        train(config, mnist, &options).expect("training runs")
    }

    #[test]
    fn the_same_seed_gives_the_same_model_bytes() {
        let config = small(1, 3000);
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = sha256_hex(&run(&config, a.path(), false).model_bin);
        let second = sha256_hex(&run(&config, b.path(), false).model_bin);
        assert_eq!(first, second);
        let other_seed = sha256_hex(&run(&config.clone().with_seed(7), a.path(), false).model_bin);
        assert_ne!(first, other_seed, "the seed must matter");
    }

    /// What a kill while checkpointing leaves; xtask's CLI tests kill a real run with SIGKILL.
    #[test]
    fn resume_skips_a_half_written_checkpoint() {
        let config = small(2, 2000);
        let (whole, cut) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let uninterrupted = run(&config, whole.path(), false).model_bin;
        run(&config, cut.path(), false);
        // What a kill during epoch 2 leaves: epoch 1's checkpoint and a partial epoch 2.
        for kind in ["model", "optim", "scheduler"] {
            fs::remove_file(cut.path().join(format!("checkpoint/{kind}-2.bpk"))).unwrap();
        }
        fs::write(cut.path().join("checkpoint/model-2.bpk"), b"half-written").unwrap();
        let resumed = run(&config, cut.path(), true);
        assert_eq!(resumed.first_epoch, 2);
        assert_eq!(sha256_hex(&resumed.model_bin), sha256_hex(&uninterrupted));
        assert_eq!(resumed.history.len(), 2);
        assert!(resumed.history.iter().all(|epoch| epoch.valid_accuracy.is_some_and(f64::is_finite)));
    }

    #[test]
    fn resume_refuses_a_run_of_another_config() {
        let mnist = crate::testing::mnist();
        let dir = tempfile::tempdir().unwrap();
        small(2, 500).save(dir.path().join(CONFIG_FILE)).unwrap();
        let options = RunOptions { run_dir: dir.path().to_path_buf(), backend: Backend::Flex, resume: true };
        let err = train(&small(3, 500), mnist, &options).err().expect("refused");
        assert!(err.to_string().contains("another config"), "{err}");
    }

    #[test]
    fn a_run_holding_nothing_out_reports_no_validation() {
        let dir = tempfile::tempdir().unwrap();
        let trained = run(&small(1, 2000).with_validation_images(0), dir.path(), false);
        let epoch = &trained.history[0];
        assert!(epoch.train_accuracy.is_finite());
        assert_eq!((epoch.valid_loss, epoch.valid_accuracy), (None, None));
        let svg = crate::report::training_curves_svg(&trained.history).unwrap();
        assert!(!svg.contains("validation"), "a curve for images that were not held out");
    }

    #[test]
    fn branches_start_alike_and_the_run_exports_their_mean() {
        let mnist = crate::testing::mnist();
        let config = small(1, 1000).with_branches(2);
        let dir = tempfile::tempdir().unwrap();
        let exported = run(&config, dir.path(), false).model_bin;

        let (train_split, valid_split) = config.splits(mnist);
        let splits = (Arc::new(train_split), Arc::new(valid_split));
        let device = Backend::Flex.device().unwrap().autodiff();
        let alone = |config: &TrainingConfig, branch: usize| {
            let dir = dir.path().join(format!("alone-{}-{branch}", config.seed));
            train_branch(config, branch, &dir, None, &splits, &device, Backend::Flex).unwrap()
        };
        let (zero, one, other_seed) = (alone(&config, 0), alone(&config, 1), alone(&config.clone().with_seed(7), 0));
        let distance = |a: &infer::Model, b: &infer::Model| {
            let (a, b) = (crate::ema::tensors(a).remove(0), crate::ema::tensors(b).remove(0));
            a.sub(b).powi_scalar(2).sum().into_scalar::<f32>()
        };
        // Sixteen steps leave the weights near where they started: branches share a start,
        // another seed does not.
        assert!(distance(&zero, &one) * 10.0 < distance(&zero, &other_seed), "the branches start apart");
        let branch_zero = zero.clone().to_bytes();
        assert_ne!(branch_zero, one.clone().to_bytes(), "the branches saw the same data");
        assert_eq!(crate::ema::mean(vec![zero, one]).to_bytes(), exported);
        let plain = run(&config.clone().with_branches(1), dir.path(), false).model_bin;
        assert_eq!(plain, branch_zero, "branch 0 is the plain run");
    }

    #[test]
    fn a_short_run_learns_to_read_digits() {
        let mnist = crate::testing::mnist();
        let dir = tempfile::tempdir().unwrap();
        let trained = run(&small(2, 10_000), dir.path(), false);
        let device = Device::flex();
        let model = infer::Model::from_bytes(&trained.model_bin, &device).unwrap();
        let result = evaluate(&model, &mnist.test, &device);
        // Two epochs on a sixth of the data; the full recipe reaches 99.5%.
        assert!(result.accuracy >= 0.97, "test accuracy {}", result.accuracy);
    }
}
