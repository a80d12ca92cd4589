//! The handover from the build without burn (what `cargo xtask` compiles) to the build with
//! its `ml` feature, for the commands that train, score or run the burn model.
//!
//! Serving the page from the committed model needs none of burn, and burn is most of a cold
//! build's ten minutes: so `cargo xtask serve` builds without it, and a command that needs it
//! is run again, with the same arguments, by `cargo run --features ml`. Both builds live side
//! by side in cargo's cache, so going back and forth compiles nothing.

use std::fmt;
use std::process::ExitCode;

use crate::tools::cargo;

/// The error a command of this build returns when only the full build can go on: a command
/// it does not hold, or bytes whose test accuracy is not recorded.
#[derive(Debug)]
pub struct Needed;

impl fmt::Display for Needed {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("this needs xtask's `ml` feature")
    }
}

impl std::error::Error for Needed {}

/// Runs this very command line in the full build and exits as it does.
pub fn run() -> ExitCode {
    println!("this command needs burn: running it in the full build (cargo run --release -p xtask --features ml)");
    let status = cargo()
        .args(["run", "--release", "-p", "xtask", "--features", "ml", "--"])
        .args(std::env::args_os().skip(1))
        .status();
    match status {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => ExitCode::from(status.code().map_or(1, |code| code.clamp(1, 255) as u8)),
        Err(e) => {
            eprintln!("error: cannot run cargo: {e}");
            ExitCode::FAILURE
        }
    }
}
