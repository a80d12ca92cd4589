//! `train`: the recipe run on MNIST, gated on test accuracy, its artifacts written whole,
//! and then (unless `--no-package`) the release made from them (`package`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;

use train::augment::AugmentConfig;
use train::data::{self, sha256_hex};
use train::provenance::Provenance;
use train::report::{self, Metrics};
use train::training::{self, Backend, RunOptions, TrainingConfig};

use crate::args::{self, BackendArg, DataArgs, GATE};
use crate::artifacts;
use crate::eval::print_evaluation;
use crate::package;
use crate::root;
use crate::scores::{self, Scorable};

/// Where `--help` lists the levers the accuracy trials tried and the recipe leaves at their
/// defaults: kept so that every row of docs/accuracy-trials.md can be run again.
const TRIAL_LEVERS: &str = "Levers of the accuracy trials (the recipe leaves them at their defaults)";

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Fixes initialisation, shuffling and augmentation [default: 42].
    #[arg(long)]
    seed: Option<u64>,
    /// [default: 10]
    #[arg(long)]
    epochs: Option<usize>,
    /// [default: 128]
    #[arg(long)]
    batch_size: Option<usize>,
    /// Peak learning rate: one warm-up epoch, then a cosine to zero [default: 0.003].
    #[arg(long)]
    learning_rate: Option<f64>,
    /// Decay of the exported moving average of the weights; 0 exports the last weights [default: 0.999].
    #[arg(long)]
    ema_decay: Option<f64>,
    /// The average's warm-up, a decay of `(1 + n) / (RAMP + n)` after n steps (up to
    /// `--ema-decay`): its centre is (RAMP - 1) / RAMP of the way through the run [default: 10].
    #[arg(long, value_name = "RAMP")]
    ema_ramp: Option<f64>,
    /// Dropout before the first two dense layers while training [default: 0].
    #[arg(long, help_heading = TRIAL_LEVERS)]
    dropout: Option<f64>,
    /// Measure BatchNorm's statistics afresh for the exported weights over N clean training
    /// batches; 0 keeps the averaged ones [default: 0].
    #[arg(long, value_name = "N", help_heading = TRIAL_LEVERS)]
    batch_norm_batches: Option<usize>,
    /// Label smoothing of the cross-entropy loss [default: 0.1].
    #[arg(long)]
    label_smoothing: Option<f32>,
    /// Weight of the averaged model's own predictions in the training targets by the last
    /// step, rising linearly from 0; 0 trains on the labels alone [default: 0].
    #[arg(long, value_name = "FRACTION", value_parser = args::fraction, help_heading = TRIAL_LEVERS)]
    self_distillation: Option<f32>,
    /// Sharpness-aware minimisation: take each step's gradient at the weights moved RHO
    /// uphill (twice the work per step); 0 turns it off [default: 0].
    #[arg(long, value_name = "RHO", value_parser = args::non_negative, help_heading = TRIAL_LEVERS)]
    sam_rho: Option<f32>,
    /// Train N runs from the same initial weights, each on its own data order and
    /// distortions, and export the mean of their weights (N times the time) [default: 1].
    #[arg(long, value_name = "N", value_parser = args::at_least_one, help_heading = TRIAL_LEVERS)]
    branches: Option<usize>,
    /// AdamW's decoupled weight decay [default: 0.1].
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Train the last N epochs on undistorted images [default: 1].
    #[arg(long, value_name = "N")]
    clean_epochs: Option<usize>,
    /// Over the last N distorted epochs the distortion weakens by equal steps toward none
    /// [default: 0].
    #[arg(long, value_name = "N", help_heading = TRIAL_LEVERS)]
    fade_epochs: Option<usize>,
    /// Every distortion range (rotation, scale, shear, shift, thickness), the warp's
    /// strength, the erasing chance and mixup's alpha times this [default: 1].
    #[arg(long, value_name = "FACTOR", value_parser = args::non_negative, help_heading = TRIAL_LEVERS)]
    distortion_scale: Option<f32>,
    /// Strength of the elastic warp in pixels; 0 turns it off [default: 0].
    #[arg(long, help_heading = TRIAL_LEVERS)]
    elastic_alpha: Option<f32>,
    /// Smoothness of the elastic warp (the Gaussian's width, pixels) [default: 4].
    #[arg(long, help_heading = TRIAL_LEVERS)]
    elastic_sigma: Option<f32>,
    /// Largest change of stroke thickness, as a fraction of one pixel's dilation or erosion
    /// (drawn either way per image); 0 turns it off [default: 0.6].
    #[arg(long, value_name = "FRACTION", value_parser = args::fraction)]
    max_thickness: Option<f32>,
    /// Chance that each distorted training image has a random rectangle erased to paper
    /// (random erasing); 0 turns it off [default: 0].
    #[arg(long, value_name = "P", value_parser = args::fraction, help_heading = TRIAL_LEVERS)]
    erase_probability: Option<f32>,
    /// Largest erased rectangle, as a fraction of the image's area (at least 2%)
    /// [default: 0.2].
    #[arg(long, value_name = "FRACTION", value_parser = args::fraction, help_heading = TRIAL_LEVERS)]
    max_erase_area: Option<f32>,
    /// Mixup: blend each distorted batch with itself reversed, images and labels alike, by a
    /// weight drawn from Beta(ALPHA, ALPHA); 0 turns it off [default: 0].
    #[arg(long, value_name = "ALPHA", value_parser = args::non_negative, help_heading = TRIAL_LEVERS)]
    mixup_alpha: Option<f32>,
    /// Hold out the last N training images and report accuracy on them each epoch, to choose
    /// a recipe by; the shipped model holds none out [default: 0].
    #[arg(long, value_name = "N")]
    validation_images: Option<usize>,
    /// Train on only the first N training images (for quick checks).
    #[arg(long, value_name = "N")]
    train_images: Option<usize>,
    /// Train without augmentation.
    #[arg(long)]
    no_augment: bool,
    #[arg(long, value_enum, default_value_t = BackendArg::Flex)]
    backend: BackendArg,
    /// Minimum test accuracy; below it nothing in the output folder changes and the exit
    /// status is non-zero.
    #[arg(long, default_value_t = GATE, value_parser = args::accuracy)]
    target: f64,
    /// Continue from the last complete checkpoint of an interrupted run of the same config.
    #[arg(long)]
    resume: bool,
    /// Checkpoints and burn-train logs [default: target/train-run].
    #[arg(long, value_name = "DIR")]
    run_dir: Option<PathBuf>,
    /// Where model.bin, metrics.json and the plots go [default: artifacts].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Stop at the model: no release folder (`cargo xtask package` makes one later).
    #[arg(long)]
    no_package: bool,
}

pub fn train(args: TrainArgs, threads: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let backend = Backend::from(args.backend);
    let mut augment = if args.no_augment { AugmentConfig::none() } else { AugmentConfig::new() };
    augment.elastic_alpha = args.elastic_alpha.unwrap_or(augment.elastic_alpha);
    augment.elastic_sigma = args.elastic_sigma.unwrap_or(augment.elastic_sigma);
    augment.max_thickness = args.max_thickness.unwrap_or(augment.max_thickness);
    augment.erase_probability = args.erase_probability.unwrap_or(augment.erase_probability);
    augment.max_erase_area = args.max_erase_area.unwrap_or(augment.max_erase_area);
    augment.mixup_alpha = args.mixup_alpha.unwrap_or(augment.mixup_alpha);
    if let Some(factor) = args.distortion_scale {
        // A range the factor pushes out is not one the user typed: name the flag that did.
        let scaled = augment.scaled(factor);
        if let (Ok(()), Err(problem)) = (augment.check(), scaled.check()) {
            bail!("invalid training config: {problem}, after --distortion-scale {factor}");
        }
        augment = scaled;
    }
    // Defaults live in TrainingConfig alone; flags only override.
    let mut config = TrainingConfig::new(augment).with_train_images(args.train_images);
    config.seed = args.seed.unwrap_or(config.seed);
    config.epochs = args.epochs.unwrap_or(config.epochs);
    config.batch_size = args.batch_size.unwrap_or(config.batch_size);
    config.learning_rate = args.learning_rate.unwrap_or(config.learning_rate);
    config.ema_decay = args.ema_decay.unwrap_or(config.ema_decay);
    config.ema_ramp = args.ema_ramp.unwrap_or(config.ema_ramp);
    config.dropout = args.dropout.unwrap_or(config.dropout);
    config.batch_norm_batches = args.batch_norm_batches.unwrap_or(config.batch_norm_batches);
    config.label_smoothing = args.label_smoothing.unwrap_or(config.label_smoothing);
    config.self_distillation = args.self_distillation.unwrap_or(config.self_distillation);
    config.sam_rho = args.sam_rho.unwrap_or(config.sam_rho);
    config.branches = args.branches.unwrap_or(config.branches);
    config.weight_decay = args.weight_decay.unwrap_or(config.weight_decay);
    config.clean_epochs = args.clean_epochs.unwrap_or(config.clean_epochs);
    config.fade_epochs = args.fade_epochs.unwrap_or(config.fade_epochs);
    config.validation_images = args.validation_images.unwrap_or(config.validation_images);
    let options = RunOptions {
        run_dir: args.run_dir.unwrap_or_else(|| crate::target_dir().join("train-run")),
        backend,
        resume: args.resume,
    };
    let out = args.out.unwrap_or_else(|| root().join("artifacts"));
    // Refused before MNIST is fetched and minutes are spent training.
    config.check(data::TRAIN_IMAGES.count).map_err(|problem| anyhow::anyhow!("invalid training config: {problem}"))?;
    if out.exists() && !out.is_dir() {
        bail!("--out {} is a file; it must be a folder (it is created if missing)", out.display());
    }
    let mnist = args.data.load()?;
    println!("MNIST verified in {}", mnist.source.display());

    let trained = training::train(&config, &mnist, &options)?;
    println!("trained in {:.0} s", trained.wall_seconds);

    // Score the exact bytes that would ship, through the deployment code path.
    let exported = Scorable::from_bytes(&trained.model_bin)?;
    let (train_split, valid_split) = config.splits(&mnist);
    if !valid_split.is_empty() {
        let valid = exported.evaluate(&valid_split);
        println!("validation accuracy of the exported model {:.2}%", 100.0 * valid.accuracy);
    }
    let test = exported.evaluate(&mnist.test);
    print_evaluation(&test);
    let mut metrics = Metrics {
        config: serde_json::from_str(&config.to_string())?,
        seed: config.seed,
        provenance: Provenance::current(backend.name(), threads),
        dataset_sha256: [data::TRAIN_IMAGES, data::TRAIN_LABELS, data::TEST_IMAGES, data::TEST_LABELS]
            .iter()
            .map(|f| (f.name.to_string(), f.sha256.to_string()))
            .collect(),
        epochs: trained.history.clone(),
        train_seconds: trained.wall_seconds,
        total_seconds: 0.0,
        resumed_from_epoch: (trained.first_epoch > 1).then(|| trained.first_epoch - 1),
        model_sha256: sha256_hex(&trained.model_bin),
        model_bytes: trained.model_bin.len(),
        test: test.clone(),
    };
    // Plots are drawn and files written in well under a second; the gate has been scored.
    metrics.total_seconds = started.elapsed().as_secs_f64();
    let scores = scores::record_of("model.bin", &trained.model_bin, &test);
    let files = [
        (scores::FILE, serde_json::to_vec_pretty(&scores)?),
        ("model.bin", trained.model_bin),
        ("metrics.json", serde_json::to_vec_pretty(&metrics)?),
        (
            "training-curves.svg",
            report::training_curves_svg(&trained.history).map_err(|e| anyhow::anyhow!("{e}"))?.into_bytes(),
        ),
        ("confusion.svg", report::confusion_svg(&test).map_err(|e| anyhow::anyhow!("{e}"))?.into_bytes()),
        ("augmentation.png", report::augmentation_png(&train_split, &config.augment, config.seed, 10, 8)),
    ];
    if test.accuracy < args.target {
        let aside = options.run_dir.join("rejected");
        artifacts::replace_all(&aside, &files)?;
        bail!(
            "test accuracy {:.4} is below the target {:.4}; {} is unchanged, the candidate is in {}",
            test.accuracy,
            args.target,
            out.display(),
            aside.display()
        );
    }
    artifacts::replace_all(&out, &files).with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {} (model sha256 {})", out.display(), metrics.model_sha256);
    println!("{:.0} s from start to gated model.bin", started.elapsed().as_secs_f64());
    if !args.no_package {
        // From the bytes just written, as `cargo xtask package` reads them.
        package::release(&out.join("model.bin"), &args.data, args.target, false, &package::default_out())?;
    }
    Ok(())
}
