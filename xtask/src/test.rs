//! `test`: what CI runs, cheapest check first.

use std::ffi::OsString;

use anyhow::bail;
use clap::{Args, Parser};

use crate::args::{self, DataArgs, GATE, committed_model};
use crate::eval::ModelFile;
use crate::scores::Scorer;
use crate::tools::cargo;
use crate::training::{self, TrainArgs};
use crate::{checks, edge, fuzz, package, reproduce, web};

/// What CI checks is the committed state, so there is no model to choose.
#[derive(Args, Debug)]
pub struct TestArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Minimum test accuracy of the committed model.
    #[arg(long, default_value_t = GATE, value_parser = args::accuracy)]
    target: f64,
}

/// The code is formatted and lint-free (xtask's optional `wgpu` and `tui` features left to
/// `cargo xtask check`) and `infer` builds without std; the committed model
/// passes the gate and is what the recipe makes from scratch; the workspace tests pass
/// (release: they train); the page is driven end to end in headless Chromium, and the edge
/// worker end to end under wrangler; a one-epoch `train` carried through to a complete,
/// checked release; and each fuzz target for a few seconds.
pub fn test(args: TestArgs, threads: usize) -> anyhow::Result<()> {
    checks::check(false)?;
    let model = ModelFile::read(committed_model())?;
    let mnist = args.data.load()?;
    model.gate(args.target, &mnist.test)?;
    reproduce::reproduce(&reproduce::ReproduceArgs { data: args.data.clone(), record: false })?;
    // One test at a time: burn's flex backend seeds one process-wide generator, so a test that
    // initialises a model while another seeds and initialises its own changes that one's
    // weights, and the byte-for-byte comparisons of the training tests then fail at random.
    // The tests that need MNIST read the folder just verified, wherever `--data-dir` put it.
    let status = cargo()
        .args(["test", "--release", "--workspace", "--features", "xtask/ml", "--", "--test-threads=1"])
        .env(train::data::DATA_DIR_ENV, &mnist.source)
        .status()?;
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    // The gate was just checked above. Every score the default bundle needs is measured again
    // and must match the committed record, and be in it: that is what lets `serve` build the
    // page on a machine without MNIST.
    let mut scorer = Scorer::rescoring(args.data.clone())?;
    web::build_bundle(&web::BuildWebArgs::default_build(true), &mut scorer, &web::bundle_dir())?;
    if !scorer.added().is_empty() {
        bail!(
            "{} lacks the scores of {}: run `cargo xtask build-web` and commit it",
            scorer.path().display(),
            scorer.added().join(", ")
        );
    }
    web::end_to_end(&mnist.test)?;
    edge::end_to_end(&mnist.test)?;
    release_from_fresh_training(&args.data, threads)?;
    fuzz::fuzz(&fuzz::FuzzArgs::brief())
}

/// `cargo xtask train --epochs 1 --target 0 --out <tmp>`, parsed as the command line parses
/// it and run in this process (the workspace tests just rebuilt this very binary): training,
/// the gate, and the release `package` makes and checks (ONNX Runtime on every test image, the
/// packaged crate built downstream, the firmware under QEMU); then the folder is checked
/// against its SHA256SUMS.
fn release_from_fresh_training(data: &DataArgs, threads: usize) -> anyhow::Result<()> {
    #[derive(Parser)]
    struct Train {
        #[command(flatten)]
        args: TrainArgs,
    }
    let out = tempfile::tempdir()?;
    let mut command_line: Vec<OsString> =
        ["train", "--epochs", "1", "--target", "0", "--out"].map(OsString::from).into();
    command_line.push(out.path().into());
    if let Some(dir) = &data.data_dir {
        command_line.extend(["--data-dir".into(), dir.into()]);
    }
    training::train(Train::try_parse_from(command_line)?.args, threads)?;
    let model_bin = std::fs::read(out.path().join("model.bin"))?;
    package::verify(&package::default_out().join(package::folder_name(&model_bin)))
}
