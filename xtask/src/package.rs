//! `package`: a release, made from one `model.bin` and checked as it is made, in
//! `target/release-bundle/mnist-<short sha>/`. `train` runs it after the accuracy gate.
//!
//! Each file carries the model's short SHA-256: the record, `model.safetensors` and
//! `model.onnx`; the web bundle as a folder and a `.tar.gz`; the `infer` crate packaged by
//! `cargo package` with the int8 weights inside; and the Cortex-M4F firmware. `manifest.json`
//! gives the model's hash, the test accuracy of each weight format and every file's size,
//! and `SHA256SUMS` every file's hash. The folder is staged beside its final place and
//! renamed into it only when every check has passed:
//! - the packaged crate is built offline by a small downstream crate, for the Cortex-M4F
//!   (so with no std) and natively, where its test classifies test digits as native does,
//!   and without burn in its dependency tree;
//! - ONNX Runtime runs `model.onnx` on all 10,000 test images: the same digit as the burn
//!   model on every one, probabilities within 1e-5;
//! - `model.safetensors` reads back, tensor for tensor, as the record's (and with
//!   `--pytorch`, the README's PyTorch module loads it and answers as the burn model does);
//! - the firmware answers 1,000 test digits as the native int8 model does, within budget.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};
use clap::Args;
use infer::lean::Int8Model;
use infer::{NUM_CLASSES, PIXELS};
use serde::Serialize;
use train::data::Split;

use crate::args::{self, DataArgs, GATE, check_gate, committed_model};
use crate::embedded;
use crate::export::{self, safetensors};
use crate::scores::{Scorer, sha256_hex};
use crate::tools::{cargo, onnxruntime_python, run};
use crate::web::{self, BuildWebArgs};
use crate::{bundled, root, target_dir};

/// How far ONNX Runtime's (and PyTorch's) probabilities may be from the burn model's.
const TOLERANCE: f32 = 1e-5;
/// Test digits the downstream crate's test classifies.
const DOWNSTREAM_DIGITS: usize = 20;

#[derive(Args, Debug)]
pub struct PackageArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// The model to release [default: artifacts/model.bin].
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Minimum test accuracy of the model.
    #[arg(long, default_value_t = GATE, value_parser = args::accuracy)]
    pub target: f64,
    /// Where the release folder goes [default: target/release-bundle].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Also load model.safetensors into the README's PyTorch module and hold its answers on
    /// every test image to the burn model's (needs `torch` and `safetensors` for python3).
    #[arg(long)]
    pub pytorch: bool,
}

pub fn package(args: &PackageArgs) -> anyhow::Result<()> {
    let model = args.model.clone().unwrap_or_else(committed_model);
    let out = args.out.clone().unwrap_or_else(default_out);
    release(&model, &args.data, args.target, args.pytorch, &out).map(|_| ())
}

pub fn default_out() -> PathBuf {
    target_dir().join("release-bundle")
}

/// The release folder's name for a model: `mnist-` and the first 12 hex digits of its SHA-256.
pub fn folder_name(model_bin: &[u8]) -> String {
    format!("mnist-{}", &sha256_hex(model_bin)[..12])
}

/// Checks that a release folder is complete: every kind of file there, and every file's
/// SHA-256 as `SHA256SUMS` lists it, and no file it does not list.
pub fn verify(release: &Path) -> anyhow::Result<()> {
    let sums = fs::read_to_string(release.join("SHA256SUMS"))
        .with_context(|| format!("{}: no SHA256SUMS", release.display()))?;
    let mut listed = Vec::new();
    for line in sums.lines() {
        let (sum, path) =
            line.split_once("  ").with_context(|| format!("SHA256SUMS: a line without a hash and a path: {line:?}"))?;
        let bytes = fs::read(release.join(path)).with_context(|| format!("{path} is listed but missing"))?;
        ensure!(sha256_hex(&bytes) == sum, "{path} does not match its SHA-256 in SHA256SUMS");
        listed.push(path.to_string());
    }
    let present: Vec<String> =
        list_files(release)?.into_iter().map(|(path, _)| path).filter(|p| p != "SHA256SUMS").collect();
    ensure!(present == listed, "SHA256SUMS does not list exactly the release's files");
    for suffix in
        ["manifest.json", ".bin", ".onnx", ".safetensors", ".crate", ".elf", ".tar.gz", "/index.html", "/infer_bg.wasm"]
    {
        ensure!(listed.iter().any(|p| p.ends_with(suffix)), "the release has no {suffix} file");
    }
    println!("release {} is complete: {} files, each as SHA256SUMS lists it", release.display(), listed.len());
    Ok(())
}

/// What `manifest.json` says.
#[derive(Serialize)]
struct Manifest {
    model_sha256: String,
    /// Test accuracy (of 10,000) of each form of the weights, as what deploys it computes.
    test_accuracy: BTreeMap<String, f64>,
    onnx: Agreement,
    /// Present when made with `--pytorch`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pytorch: Option<Agreement>,
    firmware: Firmware,
    /// Every file's size in bytes, by path in the release.
    files: BTreeMap<String, u64>,
}

#[derive(Serialize)]
struct Agreement {
    images: usize,
    same_digit: usize,
    largest_probability_difference: f32,
}

#[derive(Serialize)]
struct Firmware {
    digits: usize,
    same_as_native: usize,
    flash_bytes: u64,
    ram_bytes: u64,
    stack_bytes: u64,
}

/// Builds, checks and writes the release of the model at `model`; its folder.
pub fn release(model: &Path, data: &DataArgs, target: f64, pytorch: bool, out: &Path) -> anyhow::Result<PathBuf> {
    let model_bin = fs::read(model).with_context(|| format!("cannot read {}", model.display()))?;
    let sha = sha256_hex(&model_bin);
    let short = &sha[..12];
    let name = folder_name(&model_bin);
    println!("packaging {} (sha256 {sha}) into {}", model.display(), out.join(&name).display());
    let test = data.load_test()?;

    let mut scorer = Scorer::new(data.clone())?;
    let file_name = model.file_name().map_or("model.bin".into(), |name| name.to_string_lossy());
    let burn_accuracy = scorer.accuracy(&file_name, &model_bin)?;
    check_gate(burn_accuracy, target)?;
    let mut test_accuracy = BTreeMap::from([("model.bin (burn, f32)".to_string(), burn_accuracy)]);
    for precision in infer::lean::Precision::ALL {
        let bytes = infer::lean::Weights::from_record(&model_bin)?.to_bytes(precision);
        let label = format!("lean {} (decoded to f32, as the browser runs it)", precision.name());
        test_accuracy.insert(label.clone(), scorer.accuracy(&label, &bytes)?);
    }

    fs::create_dir_all(out).with_context(|| format!("cannot make the release folder {}", out.display()))?;
    let staging = tempfile::Builder::new().prefix(".staging-").tempdir_in(out)?;
    let dir = staging.path();
    let metadata = HashMap::from([
        ("model_sha256".to_string(), sha.clone()),
        ("input".to_string(), "grey 28x28, 0 = paper, 255 = ink, normalised (x / 255 - 0.1307) / 0.3081".to_string()),
    ]);
    fs::write(dir.join(format!("model-{short}.bin")), &model_bin)?;

    let tensors = safetensors::to_bytes(&model_bin, {
        let mut metadata = metadata.clone();
        metadata.insert("format".into(), "pt".into());
        metadata
    })?;
    check_safetensors(&model_bin, &tensors)?;
    let safetensors_path = dir.join(format!("model-{short}.safetensors"));
    fs::write(&safetensors_path, &tensors)?;
    let pytorch = if pytorch {
        let (check, accuracy) = check_pytorch(&safetensors_path, &model_bin, &test)?;
        test_accuracy.insert("model.safetensors (PyTorch, f32)".into(), accuracy);
        Some(check)
    } else {
        None
    };

    let onnx_path = dir.join(format!("model-{short}.onnx"));
    fs::write(&onnx_path, export::onnx::to_bytes(&model_bin, metadata)?)?;
    let (onnx, onnx_accuracy) = check_onnx(&onnx_path, &model_bin, &test)?;
    test_accuracy.insert("model.onnx (ONNX Runtime, f32)".into(), onnx_accuracy);

    let int8 = bundled::write(&model_bin)?;
    test_accuracy.insert("int8 computed as int8 (the crate, the firmware)".into(), int8_accuracy(&int8, &test)?);
    let krate = package_crate(dir, short)?;
    check_downstream(&krate, &int8, &test)?;

    let firmware = embedded::run(&model_bin, &test, embedded::DIGITS)?;
    firmware.print();
    firmware.check()?;
    fs::copy(&firmware.elf, dir.join(format!("firmware-{short}.elf")))?;

    let web_dir = dir.join(format!("web-{short}"));
    let web_args =
        BuildWebArgs { model: Some(model.to_path_buf()), data: data.clone(), ..BuildWebArgs::default_build(true) };
    web::build_bundle(&web_args, &mut scorer, &web_dir)?;
    fs::write(dir.join(format!("web-{short}.tar.gz")), tar_gz(&web_dir, &format!("web-{short}"))?)?;

    let files = list_files(dir)?;
    let manifest = Manifest {
        model_sha256: sha.clone(),
        test_accuracy,
        onnx,
        pytorch,
        firmware: Firmware {
            digits: firmware.digits,
            same_as_native: firmware.same_digit,
            flash_bytes: firmware.flash,
            ram_bytes: firmware.ram(),
            stack_bytes: firmware.stack,
        },
        files: files.iter().map(|(path, bytes)| (path.clone(), bytes.len() as u64)).collect(),
    };
    fs::write(dir.join("manifest.json"), serde_json::to_vec_pretty(&manifest)?)?;
    let sums: String =
        list_files(dir)?.iter().map(|(path, bytes)| format!("{}  {path}\n", sha256_hex(bytes))).collect();
    fs::write(dir.join("SHA256SUMS"), sums)?;

    let release = out.join(&name);
    if release.exists() {
        fs::remove_dir_all(&release)?;
    }
    fs::rename(staging.keep(), &release)?;
    println!("| file | bytes |");
    println!("| --- | ---: |");
    for (path, bytes) in &manifest.files {
        if !path.starts_with(&format!("web-{short}/")) {
            println!("| {path} | {bytes} |");
        }
    }
    for (label, accuracy) in &manifest.test_accuracy {
        println!("test accuracy, {label}: {:.2}%", 100.0 * accuracy);
    }
    println!("release written to {}", release.display());
    Ok(release)
}

/// Every file under `dir`, by path relative to it (`/`-separated), sorted.
fn list_files(dir: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in fs::read_dir(&folder)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(dir)?.to_string_lossy().replace('\\', "/");
                files.push((relative, fs::read(&path)?));
            }
        }
    }
    files.sort();
    Ok(files)
}

fn tar_gz(dir: &Path, name: &str) -> anyhow::Result<Vec<u8>> {
    let mut archive = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best()));
    archive.mode(tar::HeaderMode::Deterministic);
    archive.append_dir_all(name, dir)?;
    Ok(archive.into_inner()?.finish()?)
}

/// The safetensors file read back with the `safetensors` crate holds exactly the record's
/// tensors in PyTorch's layout.
fn check_safetensors(model_bin: &[u8], bytes: &[u8]) -> anyhow::Result<()> {
    let expected = export::torch_tensors(model_bin)?;
    let back = safetensors::read(bytes)?;
    ensure!(back.len() == expected.len(), "model.safetensors holds {} tensors, not {}", back.len(), expected.len());
    for tensor in &expected {
        let ours = back.iter().find(|t| t.name == tensor.name).with_context(|| format!("no {}", tensor.name))?;
        ensure!(ours.shape == tensor.shape && ours.values == tensor.values, "{} does not read back", tensor.name);
    }
    println!("model.safetensors: {} tensors read back as written", back.len());
    Ok(())
}

/// Runs `model.onnx` in ONNX Runtime on every test image and compares with the burn model.
fn check_onnx(onnx: &Path, model_bin: &[u8], test: &Split) -> anyhow::Result<(Agreement, f64)> {
    let probabilities = run_python(&onnxruntime_python()?, include_str!("export/onnxruntime.py"), onnx, test)?;
    agreement("model.onnx in ONNX Runtime", &probabilities, model_bin, test)
}

/// Loads `model.safetensors` into the README's PyTorch module and compares its answers on
/// every test image with the burn model's.
fn check_pytorch(safetensors: &Path, model_bin: &[u8], test: &Split) -> anyhow::Result<(Agreement, f64)> {
    let python = PathBuf::from(std::env::var_os("PYTHON").unwrap_or_else(|| "python3".into()));
    let probabilities = run_python(&python, include_str!("export/pytorch.py"), safetensors, test)
        .context("the PyTorch check needs torch and safetensors (pip install torch safetensors)")?;
    agreement("model.safetensors in PyTorch", &probabilities, model_bin, test)
}

/// Runs one of the Python checks on `model` and the test images; the probabilities it wrote.
fn run_python(python: &Path, script: &str, model: &Path, test: &Split) -> anyhow::Result<Vec<f32>> {
    let work = tempfile::tempdir()?;
    let (images, output) = (work.path().join("images.bin"), work.path().join("probabilities.bin"));
    fs::write(&images, &test.images)?;
    run(Command::new(python).arg("-c").arg(script).arg(model).arg(&images).arg(&output))?;
    let values: Vec<f32> =
        fs::read(&output)?.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    ensure!(values.len() == test.len() * NUM_CLASSES, "the check answered {} values", values.len());
    Ok(values)
}

/// How another runtime's probabilities compare with the burn model's on every test image;
/// fails on any other digit or a probability more than [`TOLERANCE`] away. Also its accuracy.
fn agreement(who: &str, probabilities: &[f32], model_bin: &[u8], test: &Split) -> anyhow::Result<(Agreement, f64)> {
    let device = burn::tensor::Device::flex();
    let model = infer::Model::from_bytes(model_bin, &device)?;
    let (mut same_digit, mut correct, mut worst) = (0, 0, 0.0f32);
    for (start, rows) in (0..test.len()).step_by(1000).zip(probabilities.chunks(1000 * NUM_CLASSES)) {
        let end = (start + 1000).min(test.len());
        let pixels = test.images[start * PIXELS..end * PIXELS].iter().map(|&g| infer::normalise(g)).collect();
        for (i, (native, theirs)) in
            model.probabilities(pixels, &device).iter().zip(rows.chunks(NUM_CLASSES)).enumerate()
        {
            let digit = infer::argmax(theirs);
            same_digit += usize::from(digit == infer::argmax(native));
            correct += usize::from(digit == usize::from(test.labels[start + i]));
            worst = native.iter().zip(theirs).map(|(a, b)| (a - b).abs()).fold(worst, f32::max);
        }
    }
    println!(
        "{who}: the burn model's digit on {same_digit} / {} test images, probabilities within {worst:.1e}",
        test.len()
    );
    ensure!(
        same_digit == test.len(),
        "{who}: another digit than the burn model's on {} images",
        test.len() - same_digit
    );
    ensure!(worst <= TOLERANCE, "{who}: a probability differs by {worst:.1e} (tolerance {TOLERANCE:.0e})");
    let check = Agreement { images: test.len(), same_digit, largest_probability_difference: worst };
    Ok((check, correct as f64 / test.len() as f64))
}

fn int8_accuracy(int8: &[u8], test: &Split) -> anyhow::Result<f64> {
    let model = Int8Model::from_bytes(int8)?;
    let correct = (0..test.len())
        .filter(|&i| model.classify(test.image(i).try_into().unwrap()).digit == usize::from(test.labels[i]))
        .count();
    Ok(correct as f64 / test.len() as f64)
}

/// `cargo package` of `infer`, its bundled weights just written; the `.crate` in `dir`.
fn package_crate(dir: &Path, short: &str) -> anyhow::Result<PathBuf> {
    // Not verified by cargo, which would build its default features (burn): the downstream
    // crate builds what a user builds.
    run(cargo()
        .args(["package", "-p", "infer", "--allow-dirty", "--no-verify", "--offline", "--target-dir"])
        .arg(target_dir()))?;
    let version = crate::tools::locked_version("infer")?;
    let packaged = target_dir().join(format!("package/infer-{version}.crate"));
    let listing = crate_files(&fs::read(&packaged)?)?;
    ensure!(
        listing.iter().any(|f| f.ends_with("/bundled/model.lean")),
        "the packaged crate lacks its weights (bundled/model.lean)"
    );
    let krate = dir.join(format!("infer-{version}-{short}.crate"));
    fs::copy(&packaged, &krate)?;
    Ok(krate)
}

fn crate_files(krate: &[u8]) -> anyhow::Result<Vec<String>> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(krate));
    archive.entries()?.map(|entry| Ok(entry?.path()?.to_string_lossy().into_owned())).collect()
}

/// A downstream crate that depends on the packaged `.crate` alone, built offline: for the
/// Cortex-M4F (no std) and natively, where its test classifies the first test digits and
/// must give the native int8 model's digits; and its dependency tree must hold no burn.
fn check_downstream(krate: &Path, int8: &[u8], test: &Split) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    tar::Archive::new(flate2::read::GzDecoder::new(fs::File::open(krate)?)).unpack(work.path())?;
    let unpacked = fs::read_dir(work.path())?.next().context("the .crate is empty")??.path();
    let downstream = work.path().join("downstream");
    fs::create_dir_all(downstream.join("src"))?;
    fs::create_dir_all(downstream.join("tests"))?;
    fs::write(
        downstream.join("Cargo.toml"),
        format!(
            "[package]\nname = \"downstream\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[dependencies]\n\
             infer = {{ path = {:?}, default-features = false, features = [\"bundled\"] }}\n\n[workspace]\n",
            unpacked.display().to_string()
        ),
    )?;
    fs::write(
        downstream.join("src/lib.rs"),
        "#![no_std]\n\n/// The packaged model's digit for a 28x28 grey image.\n\
         pub fn digit(image: &[u8; 784]) -> usize {\n    infer::classify(image).digit\n}\n",
    )?;
    // Offline, cargo resolves from its index to the newest versions, which this machine may
    // never have downloaded; the workspace's lock pins what its own builds fetched.
    fs::copy(root().join("Cargo.lock"), downstream.join("Cargo.lock"))?;
    let model = Int8Model::from_bytes(int8)?;
    let expected: Vec<String> =
        (0..DOWNSTREAM_DIGITS).map(|i| model.classify(test.image(i).try_into().unwrap()).digit.to_string()).collect();
    fs::write(downstream.join("tests/digits.bin"), &test.images[..DOWNSTREAM_DIGITS * PIXELS])?;
    fs::write(
        downstream.join("tests/digits.rs"),
        format!(
            "#[test]\nfn classifies_test_digits_as_native_does() {{\n    \
             let images = include_bytes!(\"digits.bin\");\n    \
             let digits: Vec<usize> = images.chunks_exact(784).map(|i| downstream::digit(i.try_into().unwrap())).collect();\n    \
             assert_eq!(digits, [{}]);\n}}\n",
            expected.join(", ")
        ),
    )?;
    let in_downstream = |args: &[&str]| {
        let mut command = cargo();
        command
            .current_dir(&downstream)
            .args(args)
            .arg("--offline")
            .env("CARGO_TARGET_DIR", target_dir().join("downstream"));
        command
    };
    crate::tools::rust_target(embedded::TARGET)?;
    run(&mut in_downstream(&["build", "--release", "--target", embedded::TARGET]))
        .context("the packaged crate does not build without std")?;
    run(&mut in_downstream(&["test", "--release"])).context("the downstream crate's test failed")?;
    let tree = in_downstream(&["tree", "-e", "normal"]).output()?;
    ensure!(tree.status.success(), "cargo tree failed");
    let tree = String::from_utf8_lossy(&tree.stdout);
    if tree.contains("burn") {
        bail!("the packaged crate pulls in burn:\n{tree}");
    }
    println!(
        "downstream crate: built offline for {} and natively, {DOWNSTREAM_DIGITS} digits as native, no burn",
        embedded::TARGET
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder with one file of each kind a release holds, and its SHA256SUMS.
    fn release() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let names = ["manifest.json", "m.bin", "m.onnx", "m.safetensors", "i.crate", "f.elf", "w.tar.gz"];
        for (i, name) in names.iter().chain(&["w/index.html", "w/infer_bg.wasm"]).enumerate() {
            let path = dir.path().join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, format!("file {i}")).unwrap();
        }
        let sums: String = list_files(dir.path())
            .unwrap()
            .iter()
            .map(|(path, bytes)| format!("{}  {path}\n", sha256_hex(bytes)))
            .collect();
        fs::write(dir.path().join("SHA256SUMS"), sums).unwrap();
        dir
    }

    #[test]
    fn a_release_verifies_only_with_every_file_as_listed() {
        let dir = release();
        verify(dir.path()).unwrap();

        fs::write(dir.path().join("m.onnx"), "changed").unwrap();
        let error = verify(dir.path()).unwrap_err().to_string();
        assert!(error.contains("m.onnx does not match"), "{error}");

        let dir = release();
        fs::write(dir.path().join("extra.txt"), "not listed").unwrap();
        assert!(verify(dir.path()).is_err(), "a file SHA256SUMS does not list");

        let dir = release();
        fs::remove_file(dir.path().join("f.elf")).unwrap();
        assert!(verify(dir.path()).unwrap_err().to_string().contains("f.elf is listed but missing"));
    }
}
