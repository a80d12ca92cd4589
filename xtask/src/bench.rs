//! `bench-train`: training-step and inference throughput, burn per backend and PyTorch.
//!
//! Rounds alternate between the contenders so that each sees the same machine load, and the
//! ratio to PyTorch is taken from medians of the same run. Beside each training rate, the
//! cores its process kept busy: CPU time over wall time of the timed steps.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;

use burn::module::Module;
use burn::optim::AdamWConfig;
use burn::optim::lr_scheduler::constant::ConstantLr;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use burn::train::Learner;
use infer::{IMAGE_SIZE, PIXELS};
use train::augment::AugmentConfig;
use train::ema::Ema;
use train::loader::MnistBatch;
use train::model::Classifier;
use train::training::{Backend, TrainError, TrainingConfig};

use crate::args::{BackendArg, at_least_one};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Training batch size (the recipe's).
    #[arg(long, default_value_t = 128, value_parser = at_least_one)]
    batch_size: usize,
    /// Timed training steps per round.
    #[arg(long, default_value_t = 10, value_parser = at_least_one)]
    steps: usize,
    /// Rounds per contender, alternated; the median round counts.
    #[arg(long, default_value_t = 3, value_parser = at_least_one)]
    rounds: usize,
    /// Backends to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [BackendArg::Flex, BackendArg::Ndarray])]
    backends: Vec<BackendArg>,
    /// Skip PyTorch even when it is importable.
    #[arg(long)]
    no_torch: bool,
}

/// One round of a contender.
#[derive(Clone, Copy)]
struct Round {
    /// Images per second through training steps.
    train: f64,
    /// Images per second classified one at a time.
    infer_1: f64,
    /// Images per second classified 256 at a time.
    infer_256: f64,
    /// The process's CPU time over the wall time of the training steps (NaN where the system
    /// does not say).
    cores: f64,
}

type Measure = Box<dyn FnMut() -> anyhow::Result<Round>>;

pub fn run(args: BenchArgs, threads: usize) -> anyhow::Result<()> {
    let mut contenders: Vec<(String, Measure)> = Vec::new();
    for &choice in &args.backends {
        let backend = Backend::from(choice);
        let name = backend.name();
        let mut bench = BurnBench::new(backend, args.batch_size)?;
        let steps = args.steps;
        contenders.push((format!("burn {name}"), Box::new(move || Ok(bench.round(steps)))));
    }
    if !args.no_torch {
        // burn runs on mimalloc (xtask's global allocator). The ratio is taken against PyTorch
        // on the same allocator where the system has it as a shared library (Debian:
        // libmimalloc2.0); PyTorch on its default, glibc's malloc, is measured beside it.
        let mimalloc = MIMALLOC_SO.iter().copied().find(|path| std::path::Path::new(path).is_file());
        let variants = match mimalloc {
            Some(path) => {
                println!("pytorch: on mimalloc ({path}), as burn is; pytorch glibc: on glibc's malloc");
                vec![("pytorch", Some(path)), ("pytorch glibc", None)]
            }
            None => {
                println!("pytorch: on glibc's malloc, burn on mimalloc (apt-get install libmimalloc2.0 for the same)");
                vec![("pytorch", None)]
            }
        };
        for (name, preload) in variants {
            match TorchBench::start(args.batch_size, threads, preload) {
                Ok(mut torch) => {
                    let steps = args.steps;
                    contenders.push((name.into(), Box::new(move || torch.round(steps))));
                }
                Err(why) => println!("PyTorch not measured: {why}"),
            }
        }
    }
    if contenders.is_empty() {
        bail!("nothing to measure");
    }

    println!(
        "batch {} for training, {} threads, {} rounds of {} steps, alternating\n",
        args.batch_size, threads, args.rounds, args.steps
    );
    let mut rounds: Vec<Vec<Round>> = vec![Vec::new(); contenders.len()];
    for _ in 0..args.rounds {
        for ((_, measure), rounds) in contenders.iter_mut().zip(&mut rounds) {
            rounds.push(measure()?);
        }
    }

    let median = |rounds: &[Round], field: fn(&Round) -> f64| {
        let mut values: Vec<f64> = rounds.iter().map(field).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let torch_train =
        contenders.iter().zip(&rounds).find(|((n, _), _)| n == "pytorch").map(|(_, r)| median(r, |r| r.train));
    println!(
        "{:<14} {:>14} {:>10} {:>12} {:>16} {:>18}",
        "", "train img/s", "vs torch", "cores busy", "infer b=1 ms/img", "infer b=256 img/s"
    );
    for ((name, _), rounds) in contenders.iter().zip(&rounds) {
        let train = median(rounds, |r| r.train);
        let ratio = torch_train.map_or("-".to_string(), |t| format!("{:.2}x", train / t));
        let cores = median(rounds, |r| r.cores);
        let cores = if cores.is_nan() { "-".to_string() } else { format!("{cores:.2} of {threads}") };
        println!(
            "{name:<14} {train:>14.0} {ratio:>10} {cores:>12} {:>16.3} {:>18.0}",
            1000.0 / median(rounds, |r| r.infer_1),
            median(rounds, |r| r.infer_256)
        );
    }
    println!("\ncores busy: the process's CPU time over the wall time of the timed training steps");
    Ok(())
}

struct BurnBench {
    device: Device,
    learner: Learner<Classifier>,
    batch: MnistBatch,
    inference: infer::Model,
}

impl BurnBench {
    fn new(backend: Backend, batch_size: usize) -> Result<Self, TrainError> {
        let plain = backend.device()?;
        let device = plain.clone().autodiff();
        device.seed(0);
        // The recipe's step: its moving average and loss, not only the network.
        let recipe = TrainingConfig::new(AugmentConfig::new());
        let model = infer::Model::new(&device).with_dropout(recipe.dropout);
        let ema = Ema::of(&model, recipe.ema_decay, recipe.ema_ramp);
        let learner = Learner::new(
            Classifier::new(model, ema, recipe.label_smoothing),
            AdamWConfig::new().init(),
            ConstantLr::new(1e-3),
        );
        let batch = random_batch(batch_size, &device);
        Ok(Self { inference: infer::Model::new(&plain).valid(), device, learner, batch })
    }

    fn round(&mut self, steps: usize) -> Round {
        let step = |learner: &mut Learner<Classifier>, batch: &MnistBatch| {
            learner.lr_step();
            let output = learner.train_step(batch.clone());
            learner.optimizer_step(output.grads);
        };
        step(&mut self.learner, &self.batch); // warm-up: allocations, kernels
        let (started, cpu) = (Instant::now(), process_cpu_seconds());
        for _ in 0..steps {
            step(&mut self.learner, &self.batch);
        }
        let _ = self.device.sync();
        let elapsed = started.elapsed().as_secs_f64();
        let train = (steps * self.batch.targets.dims()[0]) as f64 / elapsed;
        let cores = match (cpu, process_cpu_seconds()) {
            (Some(before), Some(after)) => (after - before) / elapsed,
            _ => f64::NAN,
        };

        let plain = self.inference.devices()[0].clone();
        let infer_rate = |batch: usize, repeats: usize| {
            let pixels = vec![0.1f32; batch * PIXELS];
            let _ = self.inference.probabilities(pixels.clone(), &plain);
            let started = Instant::now();
            for _ in 0..repeats {
                let _ = self.inference.probabilities(pixels.clone(), &plain);
            }
            (batch * repeats) as f64 / started.elapsed().as_secs_f64()
        };
        Round { train, infer_1: infer_rate(1, 200), infer_256: infer_rate(256, 4), cores }
    }
}

/// CPU seconds this process has used, in all its threads, from `/proc/self/stat` (Linux).
fn process_cpu_seconds() -> Option<f64> {
    // The kernel reports them in ticks of USER_HZ, which is 100 on every Linux ABI.
    const TICKS_PER_SECOND: f64 = 100.0;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces; the
    // first of them is field 3, so utime (14) and stime (15) are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |index: usize| fields.get(index)?.parse::<f64>().ok();
    Some((ticks(11)? + ticks(12)?) / TICKS_PER_SECOND)
}

fn random_batch(batch: usize, device: &Device) -> MnistBatch {
    let images = Tensor::<4>::random([batch, 1, IMAGE_SIZE, IMAGE_SIZE], Distribution::Normal(0.0, 1.0), device);
    let labels: Vec<i64> = (0..batch as i64).map(|i| i % 10).collect();
    MnistBatch { images, targets: Tensor::<1, Int>::from_data(TensorData::new(labels, [batch]), device), mix: None }
}

/// Where Debian and Ubuntu put mimalloc's shared library.
const MIMALLOC_SO: [&str; 2] =
    ["/usr/lib/x86_64-linux-gnu/libmimalloc.so.2", "/usr/lib/aarch64-linux-gnu/libmimalloc.so.2"];

/// The same model and step in PyTorch, in a child process that measures on request.
struct TorchBench {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl TorchBench {
    /// `preload`: a malloc to put in the child with `LD_PRELOAD`.
    fn start(batch_size: usize, threads: usize, preload: Option<&str>) -> anyhow::Result<Self> {
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let mut command = Command::new(&python);
        if let Some(path) = preload {
            command.env("LD_PRELOAD", path);
        }
        let mut child = command
            .args(["-c", include_str!("bench_torch.py"), &batch_size.to_string(), &threads.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {python}"))?;
        let stdin = child.stdin.take().expect("piped");
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
        let mut ready = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut ready)?;
        if ready.trim() != "ready" {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().expect("piped"), &mut err)?;
            bail!("{}", err.lines().last().unwrap_or("torch did not start"));
        }
        Ok(Self { child, stdin, stdout })
    }

    /// The child's reply: the four numbers of a [`Round`] in the order of its fields.
    fn round(&mut self, steps: usize) -> anyhow::Result<Round> {
        writeln!(self.stdin, "{steps}")?;
        self.stdin.flush()?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut self.stdout, &mut line)?;
        let values: Vec<f64> = line
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .with_context(|| format!("unexpected reply from the torch benchmark: {line:?}"))?;
        match values[..] {
            [train, infer_1, infer_256, cores] => Ok(Round { train, infer_1, infer_256, cores }),
            _ => bail!("unexpected reply from the torch benchmark: {line:?}"),
        }
    }
}

impl Drop for TorchBench {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The counter the "cores busy" column divides stands still while the process sleeps and
    /// advances with its work: a wrong field of `/proc/self/stat` would do neither or both.
    #[test]
    fn process_cpu_time_counts_work_and_not_sleep() {
        let before = process_cpu_seconds().expect("Linux reports the process's CPU time");
        std::thread::sleep(Duration::from_millis(300));
        let slept = process_cpu_seconds().unwrap() - before;
        assert!(slept < 0.1, "{slept} s of CPU while sleeping 0.3 s");

        let (started, mut spun, mut sum) = (Instant::now(), 0.0, 0u64);
        while spun < 0.2 && started.elapsed() < Duration::from_secs(10) {
            sum = (0..1_000_000u64).fold(sum, |sum, i| std::hint::black_box(sum ^ i.wrapping_mul(31)));
            spun = process_cpu_seconds().unwrap() - before - slept;
        }
        assert!(spun >= 0.2, "{spun} s of CPU counted in {:?} of work", started.elapsed());
        std::hint::black_box(sum);
    }
}
