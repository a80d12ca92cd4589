//! `embedded`: the packaged int8 model as firmware for a Cortex-M4F (`embedded/`), built,
//! run under QEMU on test digits, every answer checked against the native int8 model, and
//! its flash and RAM measured against the budget.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Args;
use infer::lean::Int8Model;
use infer::{NUM_CLASSES, PIXELS};
use object::{Object, ObjectSection};

use train::data::Split;

use crate::args::{DataArgs, at_least_one, committed_model};
use crate::tools::{cargo, qemu_system_arm, rust_target};
use crate::{bundled, target_dir};

/// Cortex-M4F with its FPU: what the firmware is built for.
pub const TARGET: &str = "thumbv7em-none-eabihf";
/// The budget, which `embedded/memory.x` also gives the linker.
const FLASH_BUDGET: u64 = 320 * 1024;
const RAM_BUDGET: u64 = 96 * 1024;
/// How far the firmware's probabilities may be from the native model's.
const TOLERANCE: f32 = 1e-4;
/// Test digits the firmware classifies by default (and in CI).
pub const DIGITS: usize = 1000;
/// Beyond this QEMU is taken to hang (1,000 digits take about a minute).
const RUN_LIMIT: Duration = Duration::from_secs(900);

#[derive(Args, Debug)]
pub struct EmbeddedArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// The model to put on the microcontroller [default: artifacts/model.bin].
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// How many test digits, from the first, the firmware classifies.
    #[arg(long, default_value_t = DIGITS, value_parser = at_least_one)]
    pub digits: usize,
}

pub fn embedded(args: &EmbeddedArgs) -> anyhow::Result<()> {
    let model = args.model.clone().unwrap_or_else(committed_model);
    let bytes = fs::read(&model).with_context(|| format!("cannot read {}", model.display()))?;
    let report = run(&bytes, &args.data.load_test()?, args.digits)?;
    report.print();
    report.check()
}

/// What a run of the firmware showed.
pub struct Report {
    /// The firmware that ran.
    pub elf: PathBuf,
    pub digits: usize,
    pub same_digit: usize,
    /// Digits the firmware got right, against MNIST's labels.
    pub correct: usize,
    /// Largest difference of a probability from the native model's.
    pub worst: f32,
    pub bit_identical: usize,
    pub seconds: f64,
    pub flash: u64,
    pub weights: u64,
    pub statics: u64,
    pub stack: u64,
}

impl Report {
    pub fn ram(&self) -> u64 {
        self.statics + self.stack
    }

    pub fn print(&self) {
        println!("QEMU mps2-an386 (Cortex-M4F): {} digits in {:.1} s", self.digits, self.seconds);
        println!(
            "same digit as native: {} / {}; probabilities within {:.1e} of native (bit-identical on {} / {})",
            self.same_digit, self.digits, self.worst, self.bit_identical, self.digits
        );
        println!("right against MNIST's labels: {} / {}", self.correct, self.digits);
        println!("| memory | bytes | budget |");
        println!("| --- | ---: | ---: |");
        println!("| flash: code, constants and int8 weights | {} | {FLASH_BUDGET} |", self.flash);
        println!("| of which weights | {} | |", self.weights);
        println!("| RAM: statics (.data, .bss) | {} | |", self.statics);
        println!("| RAM: stack high-water mark | {} | |", self.stack);
        println!("| RAM: heap (the allocator refuses every request) | 0 | |");
        println!("| RAM in all | {} | {RAM_BUDGET} |", self.ram());
    }

    /// Fails unless every digit matches native within tolerance and the budgets hold.
    pub fn check(&self) -> anyhow::Result<()> {
        ensure!(
            self.same_digit == self.digits,
            "the firmware disagrees with native on {} digits",
            self.digits - self.same_digit
        );
        ensure!(
            self.worst <= TOLERANCE,
            "a probability is {:.1e} from native's (tolerance {TOLERANCE:.0e})",
            self.worst
        );
        ensure!(self.flash <= FLASH_BUDGET, "flash {} B is over the budget of {FLASH_BUDGET} B", self.flash);
        ensure!(self.ram() <= RAM_BUDGET, "RAM {} B is over the budget of {RAM_BUDGET} B", self.ram());
        Ok(())
    }
}

/// Builds the firmware around `model_bin`'s int8 weights, runs it on the first `digits` test
/// images and compares each answer with the native int8 model.
pub fn run(model_bin: &[u8], test: &Split, digits: usize) -> anyhow::Result<Report> {
    let weights = bundled::write(model_bin)?;
    ensure!(digits <= test.len(), "MNIST has {} test digits, not {digits}", test.len());
    let elf = build()?;
    let work = target_dir().join("embedded");
    fs::create_dir_all(&work)?;
    let images: Vec<[u8; PIXELS]> = (0..digits).map(|i| test.image(i).try_into()).collect::<Result<_, _>>()?;
    fs::write(work.join("digits.bin"), images.concat())?;

    let started = Instant::now();
    let lines = qemu(&elf, &work)?;
    let seconds = started.elapsed().as_secs_f64();

    let native = Int8Model::from_bytes(&weights)?;
    let (answers, stack) = parse(&lines, digits)?;
    let (mut same_digit, mut correct, mut worst, mut bit_identical) = (0, 0, 0.0f32, 0);
    for (i, (image, (digit, probabilities))) in images.iter().zip(&answers).enumerate() {
        correct += usize::from(usize::from(test.labels[i]) == *digit);
        let expected = native.classify(image);
        same_digit += usize::from(expected.digit == *digit);
        let gap = expected.probabilities.iter().zip(probabilities).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        worst = worst.max(gap);
        bit_identical += usize::from(expected.probabilities == *probabilities);
    }
    let (flash, statics) = footprint(&elf)?;
    Ok(Report {
        elf,
        digits,
        same_digit,
        correct,
        worst,
        bit_identical,
        seconds,
        flash,
        weights: weights.len() as u64,
        statics,
        stack,
    })
}

/// `cargo build --release` of `embedded/` for the Cortex-M4F; the ELF's path.
fn build() -> anyhow::Result<PathBuf> {
    rust_target(TARGET)?;
    // Its own workspace, built into the shared target folder.
    let status = cargo()
        .args(["build", "--release", "--manifest-path", "embedded/Cargo.toml", "--target", TARGET, "--target-dir"])
        .arg(target_dir())
        .status()?;
    ensure!(status.success(), "building the firmware failed ({status})");
    Ok(target_dir().join(TARGET).join("release/firmware"))
}

/// Runs the firmware on QEMU's MPS2 AN386 board with semihosting, in `work` (where it opens
/// `digits.bin`); what it wrote to the host.
fn qemu(elf: &Path, work: &Path) -> anyhow::Result<String> {
    let output = work.join("output.txt");
    let errors = work.join("errors.txt");
    let mut child = Command::new(qemu_system_arm()?)
        .current_dir(work)
        .args(["-machine", "mps2-an386", "-cpu", "cortex-m4", "-nographic", "-monitor", "none", "-serial", "none"])
        .args(["-semihosting-config", "enable=on,target=native", "-kernel"])
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&output)?)
        .stderr(fs::File::create(&errors)?)
        .spawn()
        .context("cannot start qemu-system-arm")?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            bail!("the firmware did not finish within {} s under QEMU", RUN_LIMIT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let errors = fs::read_to_string(&errors)?;
    ensure!(status.success(), "the firmware failed under QEMU ({status}): {}", errors.trim());
    Ok(fs::read_to_string(&output)?)
}

type Answer = (usize, [f32; NUM_CLASSES]);

/// The firmware's lines: per digit the digit and ten probabilities as hexadecimal f32 bits,
/// then `stack <hex bytes>`.
fn parse(lines: &str, digits: usize) -> anyhow::Result<(Vec<Answer>, u64)> {
    let mut answers = Vec::with_capacity(digits);
    let mut stack = None;
    for line in lines.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["stack", bytes] => stack = Some(u64::from_str_radix(bytes, 16)?),
            [digit, probabilities @ ..] if probabilities.len() == NUM_CLASSES => {
                let mut values = [0.0; NUM_CLASSES];
                for (value, bits) in values.iter_mut().zip(probabilities) {
                    *value = f32::from_bits(u32::from_str_radix(bits, 16)?);
                }
                answers.push((digit.parse()?, values));
            }
            _ => bail!("the firmware wrote a line this command cannot read: {line:?}"),
        }
    }
    ensure!(answers.len() == digits, "the firmware answered {} of {digits} digits", answers.len());
    Ok((answers, stack.context("the firmware did not report its stack")?))
}

/// Flash (everything loaded into it: vectors, code, constants, weights, and the initial
/// values of `.data`) and static RAM (`.data`, `.bss`, `.uninit`), read from the linked ELF.
fn footprint(elf: &Path) -> anyhow::Result<(u64, u64)> {
    let bytes = fs::read(elf)?;
    let file = object::File::parse(&*bytes)?;
    let size = |names: &[&str]| -> u64 {
        file.sections().filter(|s| s.name().is_ok_and(|n| names.contains(&n))).map(|s| s.size()).sum()
    };
    let flash = size(&[".vector_table", ".text", ".rodata", ".data"]);
    let statics = size(&[".data", ".bss", ".uninit"]);
    Ok((flash, statics))
}
