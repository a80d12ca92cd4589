//! The command line as a user meets it: bad input is refused by name, with a failing exit
//! status, and a run that misses the gate changes nothing. Against the full build (`cargo xtask
//! test` runs them with `--features xtask/ml`), which holds every command.
#![cfg(feature = "ml")]

use std::fs;
use std::process::{Command, Output};

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask")).args(args).output().expect("xtask runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The MNIST folder, found as the commands find it (`$MNIST_DATA_DIR`, else the user cache,
/// downloading what is missing): a test that needs it fails without it, never skips. The
/// commands given it verify its files.
fn mnist_dir() -> String {
    let dir = train::data::Mnist::folder(None).unwrap_or_else(|e| panic!("this test needs MNIST: {e}"));
    dir.display().to_string()
}

/// Without the dataset, too: the model is read and loaded before MNIST is.
#[test]
fn eval_refuses_a_corrupt_model_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.bin");
    fs::write(&model, b"these bytes are not a model").unwrap();
    let no_data = dir.path().join("no-mnist-here");
    let output = xtask(&["eval", "--data-dir", no_data.to_str().unwrap(), "--model", model.to_str().unwrap()]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("model.bin") && message.contains("not a model file"), "{message}");
    assert!(!message.contains("panicked"), "{message}");
}

/// From a folder that holds only the test files: scoring reads nothing else.
#[test]
fn eval_scores_lean_weights_and_refuses_broken_ones() {
    let mnist = mnist_dir();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("test-split-only");
    fs::create_dir(&data).unwrap();
    for entry in fs::read_dir(&mnist).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("t10k-") {
            fs::copy(&path, data.join(path.file_name().unwrap())).unwrap();
        }
    }
    let data = data.to_str().unwrap();
    let committed = fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../artifacts/model.bin")).unwrap();
    let model = infer::Model::from_bytes(&committed, &burn::tensor::Device::flex()).unwrap();
    let lean = infer::lean::Weights::from_model(&model).to_bytes(infer::lean::Precision::Int8);

    let good = dir.path().join("weights-int8.bin");
    fs::write(&good, &lean).unwrap();
    let output = xtask(&["eval", "--data-dir", data, "--model", good.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout.contains("lean weights") && stdout.contains("gate passed"), "{stdout}");

    let truncated = dir.path().join("truncated.bin");
    fs::write(&truncated, &lean[..lean.len() - 100]).unwrap();
    let output = xtask(&["eval", "--data-dir", data, "--model", truncated.to_str().unwrap()]);
    let message = stderr(&output);
    assert!(!output.status.success());
    assert!(message.contains("truncated.bin") && message.contains("int8 lean weights take"), "{message}");
}

#[test]
fn eval_names_the_missing_data_file() {
    let empty = tempfile::tempdir().unwrap();
    let output = xtask(&["eval", "--data-dir", empty.path().to_str().unwrap()]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("t10k-images-idx3-ubyte") && message.contains("not found"), "{message}");
}

#[test]
fn a_run_below_the_target_leaves_the_artifacts_alone() {
    let data = mnist_dir();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("artifacts");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("model.bin"), b"previous model").unwrap();
    let run_dir = work.path().join("run");
    let output = xtask(&[
        "train",
        "--data-dir",
        &data,
        "--epochs",
        "1",
        "--train-images",
        "500",
        "--target",
        "0.999",
        "--out",
        out.to_str().unwrap(),
        "--run-dir",
        run_dir.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("below the target"), "{}", stderr(&output));
    assert_eq!(fs::read(out.join("model.bin")).unwrap(), b"previous model");
    assert_eq!(fs::read_dir(&out).unwrap().count(), 1, "nothing else was written");
    assert!(run_dir.join("rejected/model.bin").is_file(), "the candidate is kept aside");
}

/// `kill -9` in the middle of an epoch, once a checkpoint has landed, then `--resume`: the
/// same bytes as a run that was never interrupted.
#[test]
fn a_run_killed_with_sigkill_resumes_to_the_same_bytes() {
    let data = mnist_dir();
    let work = tempfile::tempdir().unwrap();
    let train = |name: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
        command.args(["--threads", "2", "train", "--data-dir", &data, "--epochs", "2", "--train-images", "6000"]);
        // The release `package` makes is not what this test is about, and costs minutes of QEMU.
        command.args(["--target", "0", "--no-package", "--out"]).arg(work.path().join(name).join("out"));
        command.arg("--run-dir").arg(work.path().join(name).join("run"));
        command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        command
    };
    assert!(train("whole").status().unwrap().success());

    let mut cut = train("cut").spawn().unwrap();
    let run = work.path().join("cut/run");
    let epoch_one_saved = || {
        ["model", "optim", "scheduler"].iter().all(|kind| run.join(format!("checkpoint/{kind}-1.bpk")).is_file())
            && run.join("train/epoch-2").is_dir()
    };
    let started = std::time::Instant::now();
    while !epoch_one_saved() {
        assert!(cut.try_wait().unwrap().is_none(), "the run ended before epoch 2");
        assert!(started.elapsed().as_secs() < 600, "no checkpoint of epoch 1 after 10 minutes");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(cut.try_wait().unwrap().is_none(), "the run must still be in epoch 2 when it is killed");
    cut.kill().unwrap(); // SIGKILL
    assert!(!cut.wait().unwrap().success());
    assert!(!work.path().join("cut/out/model.bin").exists(), "a killed run writes no model");

    let resumed = train("cut").arg("--resume").status().unwrap();
    assert!(resumed.success());
    let bytes = |name: &str| fs::read(work.path().join(name).join("out/model.bin")).unwrap();
    assert!(bytes("cut") == bytes("whole"), "the resumed run must write the uninterrupted run's bytes");
}

/// A running `xtask serve --dir` on a free port; stopped with SIGINT like Ctrl-C.
struct Server {
    child: std::process::Child,
    address: String,
    _stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Server {
    fn start(dir: &std::path::Path) -> Server {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["serve", "--port", "0", "--dir", dir.to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        let url = line.split_whitespace().find(|w| w.starts_with("http://")).expect("the server prints its URL");
        let address = url.trim_start_matches("http://").trim_end_matches('/').to_string();
        Server { child, address, _stdout: stdout }
    }

    /// Status line and headers (lower-cased names) of a GET of the raw `target`.
    fn get(&self, target: &str, accept_gzip: bool) -> (u16, Vec<(String, String)>) {
        let (status, headers, _) = self.get_body(target, if accept_gzip { "gzip" } else { "" });
        (status, headers)
    }

    /// Status, headers and body of a GET of the raw `target`, accepting `encoding`.
    fn get_body(&self, target: &str, encoding: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&self.address).unwrap();
        let encoding = if encoding.is_empty() { String::new() } else { format!("Accept-Encoding: {encoding}\r\n") };
        write!(stream, "GET {target} HTTP/1.1\r\nHost: {}\r\n{encoding}Connection: close\r\n\r\n", self.address)
            .unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
        let (head, body) = (String::from_utf8_lossy(&response[..split]).into_owned(), response[split..].to_vec());
        let mut lines = head.lines();
        let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        (status, headers, body)
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn serve_answers_like_a_static_file_server_and_stops_cleanly() {
    let root = tempfile::tempdir().unwrap();
    let site = root.path().join("site");
    fs::create_dir(&site).unwrap();
    fs::write(site.join("index.html"), "<!doctype html><title>t</title>".repeat(100)).unwrap();
    fs::write(site.join("infer_bg.wasm"), b"\0asm\x01\0\0\0").unwrap();
    fs::write(root.path().join("secret.txt"), "outside the site").unwrap();
    std::os::unix::fs::symlink(root.path().join("secret.txt"), site.join("link.txt")).unwrap();
    // What build-web writes beside each file; marked, so that it shows whether it was sent.
    fs::write(site.join("app.js"), "export const app = 1;".repeat(50)).unwrap();
    fs::write(site.join("app.js.br"), b"precompressed brotli").unwrap();
    let mut server = Server::start(&site);

    let (status, headers) = server.get("/", false);
    assert_eq!(status, 200);
    assert!(header(&headers, "content-type").unwrap().starts_with("text/html"));
    assert_eq!(header(&headers, "cache-control"), Some("no-cache"));

    let (status, headers) = server.get("/infer_bg.wasm", false);
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("application/wasm"));

    let (_, headers) = server.get("/index.html", true);
    assert_eq!(header(&headers, "content-encoding"), Some("gzip"));

    assert_eq!(server.get("/missing.js", false).0, 404);
    let (status, _) = server.get("/link.txt", false);
    assert_eq!(status, 404, "a symlink out of the folder must not be followed");

    let (status, headers, body) = server.get_body("/app.js", "br");
    assert_eq!((status, header(&headers, "content-encoding")), (200, Some("br")));
    assert_eq!(body, b"precompressed brotli", "the .br sibling is sent as it is");
    assert!(header(&headers, "content-type").unwrap().starts_with("text/javascript"));
    let climbs = [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/%252e%252e/secret.txt",
        "/..%5csecret.txt",
        "/..\\secret.txt",
        "/index.html%00",
        "/%00/../secret.txt",
    ];
    for climb in climbs {
        let (status, _) = server.get(climb, false);
        assert!(status == 404 || status == 400, "{climb} answered {status}");
    }

    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let status = server.child.wait().unwrap();
    assert!(status.success(), "Ctrl-C should stop the server cleanly, got {status}");
}

#[test]
fn predict_names_a_file_that_is_not_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.png");
    fs::write(&text, "just text").unwrap();
    let output = xtask(&["predict", text.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("notes.png"), "{}", stderr(&output));
}

#[test]
fn predict_refuses_an_image_too_large_before_decoding_it() {
    // A PNG header for 20000x20000 grey pixels and an empty data stream: 65 bytes that would
    // decode to 400 MB, were the size not checked first.
    #[rustfmt::skip]
    const HEADER: [u8; 65] = [
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
        0x00, 0x00, 0x4e, 0x20, 0x00, 0x00, 0x4e, 0x20, 0x08, 0x00, 0x00, 0x00, 0x00, 0xc6, 0x1b, 0x19,
        0xe5, 0x00, 0x00, 0x00, 0x08, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00,
        0x01, 0x48, 0x06, 0x89, 0xd2, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60,
        0x82,
    ];
    let dir = tempfile::tempdir().unwrap();
    let huge = dir.path().join("huge.png");
    fs::write(&huge, HEADER).unwrap();
    let output = xtask(&["predict", huge.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("a 20000x20000 image is more than the 50 megapixels"), "{}", stderr(&output));
}

/// Photos and scans of test digits, and blank and faint photos, through `predict`'s path: no
/// kind of degradation may cost more than 3 points against the same digits clean, and every
/// blank or faint photo is refused. The images the model saw for some of them are written.
#[test]
fn photos_on_grey_unevenly_lit_paper_read_as_well_as_clean_ones() {
    let data = mnist_dir();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("photos");
    let args = ["bench-photos", "--digits", "100", "--max-drop", "3", "--data-dir", &data];
    let output = xtask(&[&args[..], &["--out", out.to_str().unwrap()]].concat());
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{printed}{}", stderr(&output));
    assert!(printed.contains("100 of 100 refused"), "{printed}");

    let photo = out.join("photo/00000-7.jpg");
    let shown = dir.path().join("seen");
    fs::create_dir(&shown).unwrap();
    let output = xtask(&["predict", "--show", shown.to_str().unwrap(), photo.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("00000-7.jpg: 7"));
    let seen = fs::read(shown.join("00000-7.jpg.28x28.png")).unwrap();
    assert!(seen.starts_with(b"\x89PNG"), "the 28x28 the model saw, as a PNG");

    let blank = out.join("refused/00000.jpg");
    let output = xtask(&["predict", blank.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("no digit stands out from the paper"), "{}", stderr(&output));
}

#[test]
fn counts_of_zero_are_refused_by_name_before_anything_runs() {
    for (flag, args) in [
        ("--rounds", &["bench-train", "--rounds", "0"][..]),
        ("--steps", &["bench-train", "--steps", "0"]),
        ("--requests", &["bench-edge", "--requests", "0"]),
        ("--connections", &["bench-edge", "--connections", "8,0"]),
        ("--requests", &["bench-serve", "--requests", "0"]),
        ("--connections", &["bench-serve", "--connections", "0"]),
        ("--seconds", &["fuzz", "--seconds", "0"]),
        ("--runs", &["fuzz", "--runs", "0"]),
        ("--runs", &["bench-web", "--runs", "0"]),
        ("--branches", &["train", "--branches", "0"]),
        ("--threads", &["eval", "--threads", "0", "--model", "/nonexistent/model.bin"]),
    ] {
        let output = xtask(args);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {message}");
        assert!(message.contains(flag) && message.contains("must be at least 1"), "{args:?}: {message}");
        assert!(!message.contains("panicked"), "{args:?}: {message}");
    }
}

#[test]
fn out_of_range_training_settings_are_refused_by_name_before_anything_runs() {
    let fraction = "fraction from 0 to 1";
    let non_negative = "finite number of at least 0";
    for (flag, value, expected) in [
        ("--max-thickness", "1.5", fraction),
        ("--max-thickness", "-0.1", fraction),
        ("--max-thickness", "NaN", fraction),
        ("--self-distillation", "1.01", fraction),
        ("--self-distillation", "-0.5", fraction),
        ("--sam-rho", "-0.05", non_negative),
        ("--sam-rho", "inf", non_negative),
        ("--distortion-scale", "-1", non_negative),
        ("--distortion-scale", "NaN", non_negative),
        ("--mixup-alpha", "-0.2", non_negative),
        ("--mixup-alpha", "NaN", non_negative),
    ] {
        // The data folder does not exist: a setting that got past the parser would fail there,
        // with exit status 1, instead.
        let output = xtask(&["train", &format!("{flag}={value}"), "--data-dir", "/nonexistent"]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{flag} {value}: {message}");
        assert!(message.contains(flag) && message.contains(expected), "{flag} {value}: {message}");
    }
}

#[test]
fn settings_no_run_can_use_are_refused_before_mnist_is_read() {
    let out_file = tempfile::NamedTempFile::new().unwrap();
    for (args, expected) in [
        (&["--epochs", "0"][..], "epochs must be at least 1"),
        (&["--batch-size", "0"], "batch_size must be at least 1"),
        (&["--train-images", "0"], "train_images must be at least 1"),
        (&["--validation-images", "60000"], "validation_images (60000) leaves none"),
        (&["--learning-rate=-0.003"], "learning_rate must be"),
        (&["--weight-decay", "NaN"], "weight_decay must be"),
        (&["--ema-decay", "1"], "ema_decay must be in [0, 1)"),
        (&["--ema-ramp", "1"], "ema_ramp must be"),
        (&["--dropout", "1"], "dropout must be in [0, 1)"),
        (&["--label-smoothing", "2"], "label_smoothing must be in [0, 1]"),
        (&["--elastic-sigma", "0"], "elastic_sigma must be"),
        (&["--distortion-scale", "2"], "max_thickness must be in [0, 1], not 1.2, after --distortion-scale 2"),
        (&["--epochs", "3", "--fade-epochs", "3"], "clean and fading epochs (1 + 3) are more than the 3"),
        (&["--out", out_file.path().to_str().unwrap()], "is a file; it must be a folder"),
    ] {
        // No data folder: a setting that got past the check would fail on the missing MNIST.
        let output = xtask(&[&["train", "--data-dir", "/nonexistent"][..], args].concat());
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {message}");
        assert!(message.contains(expected), "{args:?}: {message}");
        assert!(!message.contains("panicked"), "{args:?}: {message}");
    }
    for command in ["train", "eval", "package", "build-web", "test"] {
        let output = xtask(&[command, "--target", "99.5", "--data-dir", "/nonexistent"]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{command}: {message}");
        assert!(message.contains("--target") && message.contains("from 0 to 1"), "{command}: {message}");
    }
}

#[test]
fn a_folder_to_serve_that_is_not_one_and_a_drop_below_zero_are_refused() {
    for command in ["serve", "bench-serve"] {
        let output = xtask(&[command, "--dir", "/nonexistent/bundle"]);
        assert_eq!(output.status.code(), Some(1), "{command}: {}", stderr(&output));
        assert!(stderr(&output).contains("--dir /nonexistent/bundle is not a folder"), "{}", stderr(&output));
    }
    for value in ["-1", "NaN"] {
        let output = xtask(&["bench-photos", &format!("--max-drop={value}"), "--data-dir", "/nonexistent"]);
        assert_eq!(output.status.code(), Some(2), "{value}: {}", stderr(&output));
        assert!(stderr(&output).contains("--max-drop"), "{}", stderr(&output));
    }
}

#[test]
fn edge_deploy_refuses_without_cloudflare_credentials() {
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["edge", "deploy"])
        .env_remove("CLOUDFLARE_API_TOKEN")
        .output()
        .expect("xtask runs");
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("no Cloudflare credentials") && message.contains("CLOUDFLARE_API_TOKEN"), "{message}");
}

/// A copy of the repository's shape whose committed model is garbage, so a command that reads
/// it says which root it resolved.
fn fake_checkout() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("xtask/src")).unwrap();
    fs::create_dir_all(dir.path().join("artifacts")).unwrap();
    fs::write(dir.path().join("xtask/Cargo.toml"), "[package]\nname = \"xtask\"\n").unwrap();
    fs::write(dir.path().join("artifacts/model.bin"), b"not the committed model").unwrap();
    dir
}

#[test]
fn the_root_is_where_cargo_runs_it_not_where_it_was_built() {
    let checkout = fake_checkout();
    let image = checkout.path().join("digit.png");
    fs::write(&image, b"unused: the model is refused first").unwrap();
    let expected = checkout.path().join("artifacts/model.bin").display().to_string();
    // As `cargo run` in another clone sharing this binary: its manifest folder names the root.
    let by_cargo = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["predict", image.to_str().unwrap()])
        .env("CARGO_MANIFEST_DIR", checkout.path().join("xtask"))
        .output()
        .unwrap();
    // Run directly from a folder inside that clone.
    let by_folder = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["predict", image.to_str().unwrap()])
        .env_remove("CARGO_MANIFEST_DIR")
        .current_dir(checkout.path().join("xtask/src"))
        .output()
        .unwrap();
    for output in [by_cargo, by_folder] {
        assert!(!output.status.success());
        assert!(stderr(&output).contains(&format!("{expected} is not a usable model")), "{}", stderr(&output));
    }
}
