//! `test`: what CI runs, cheapest check first.

use anyhow::bail;
use clap::Args;

use crate::args::{DataArgs, GATE, committed_model};
use crate::eval::ModelFile;
use crate::scores::Scorer;
use crate::tools::cargo;
use crate::{checks, edge, embedded, fuzz, reproduce, web};

/// What CI checks is the committed state, so there is no model to choose.
#[derive(Args, Debug)]
pub struct TestArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Minimum test accuracy of the committed model.
    #[arg(long, default_value_t = GATE)]
    target: f64,
}

/// The code is formatted and lint-free and `infer` builds without std; the committed model
/// passes the gate and is what the recipe makes from scratch; the workspace tests pass
/// (release: they train); the page is driven end to end in headless Chromium, and the edge
/// worker end to end under wrangler; the firmware on 1,000 digits under QEMU, within its
/// budget; and each fuzz target for a few seconds.
pub fn test(args: TestArgs) -> anyhow::Result<()> {
    checks::check()?;
    let model = ModelFile::read(committed_model())?;
    let mnist = args.data.load()?;
    model.gate(args.target, &mnist.test)?;
    reproduce::reproduce(&reproduce::ReproduceArgs { data: args.data.clone() })?;
    // One test at a time: burn's flex backend seeds one process-wide generator, so a test that
    // initialises a model while another seeds and initialises its own changes that one's
    // weights, and the byte-for-byte comparisons of the training tests then fail at random.
    let status = cargo()
        .args(["test", "--release", "--workspace", "--features", "xtask/ml", "--", "--test-threads=1"])
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
    let firmware = embedded::run(&std::fs::read(committed_model())?, &args.data, embedded::DIGITS)?;
    firmware.print();
    firmware.check()?;
    fuzz::fuzz(&fuzz::FuzzArgs::brief())
}
