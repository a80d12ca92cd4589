//! `edge test`: the worker's end-to-end test, part of `cargo xtask test`.

use std::time::Instant;

use anyhow::{bail, ensure};
use serde_json::{Value, json};

use train::data::{Split, sha256_hex};

use super::{LocalWorker, agent, answer, build, call, predict_request};
use crate::args::committed_model;
use crate::load;

/// The CI check: the worker built and run locally, fed the committed model through local
/// R2, held to native `infer` on the first 200 test digits, and pushed through every error.
pub fn end_to_end(test: &Split) -> anyhow::Result<()> {
    const DIGITS: usize = 200;
    let token = format!("test-{}", std::process::id());
    build()?;
    let mut worker = LocalWorker::start(&token)?;
    let agent = agent();
    let url = |path: &str| format!("{}{path}", worker.url);
    let predict = |body: &str| call(&agent, "POST", &url("/predict"), Some(body), None);
    let pixels = |i: usize| json!({ "pixels": test.image(i) }).to_string();
    let mut checks = Checks::default();

    // No model in R2 yet, then a corrupt one: both are 503s that say so.
    let (status, body) = predict(&pixels(0))?;
    checks.expect(
        "missing model is 503",
        status == 503 && body["error"].to_string().contains("no mnist/model.bin"),
        &body,
    );
    let corrupt = tempfile::NamedTempFile::new()?;
    std::fs::write(corrupt.path(), b"not a model")?;
    worker.put_model(corrupt.path())?;
    let (status, body) = predict(&pixels(0))?;
    checks.expect(
        "corrupt model is 503",
        status == 503 && body["error"].to_string().contains("not a usable model"),
        &body,
    );

    // The committed model, asked for by 64 clients at once: the isolate reads R2 once for all.
    let model_path = committed_model();
    worker.put_model(&model_path)?;
    let address: std::net::SocketAddr = worker.url.trim_start_matches("http://").parse()?;
    let burst = load::run(address, &predict_request(&pixels(0)), 64, 64, answered_by_the_first_load)?;
    checks.expect("64 concurrent first requests share one load", burst.errors == 0, &json!(burst.first_error));

    // Every answer matches native infer.
    let model_bin = std::fs::read(&model_path)?;
    let sha256 = sha256_hex(&model_bin);
    let device = burn::tensor::Device::flex();
    let native = infer::Model::from_bytes(&model_bin, &device)?;
    let expected = native
        .probabilities(test.images[..DIGITS * infer::PIXELS].iter().map(|&g| infer::normalise(g)).collect(), &device);
    let (mut same, mut worst, mut loaded_at) = (0, 0.0f64, None);
    for (i, expected) in expected.iter().enumerate() {
        let (status, body) = predict(&pixels(i))?;
        ensure!(status == 200, "digit {i}: status {status}: {body}");
        let probabilities: Vec<f64> = serde_json::from_value(body["probabilities"].clone())?;
        let difference = probabilities.iter().zip(expected).map(|(a, &b)| (a - b as f64).abs()).fold(0.0, f64::max);
        worst = worst.max(difference);
        same += usize::from(body["digit"] == json!(infer::argmax(expected)) && difference < 1e-5);
        checks.expect("model is the committed one", body["model"]["sha256"] == json!(sha256), &body["model"]);
        checks.expect("model loaded once", body["model"]["loads"] == json!(1), &body["model"]);
        let at = body["model"]["loaded_at"].clone();
        checks.expect("one load serves all", loaded_at.get_or_insert(at.clone()) == &at, &at);
    }
    println!(
        "edge: {same} of {DIGITS} test digits answered as native infer answers them (largest probability difference {worst:.1e})"
    );
    checks.expect("every digit matches native infer within 1e-5", same == DIGITS, &json!(same));

    // Hostile sizes: a 100 MB body (refused from its Content-Length), a body one byte over the
    // 16 MiB limit sent in chunks with no length (refused once that byte arrives; one sent
    // further would have its connection reset under it, as the worker answers early), a
    // malformed chunked body, and the largest canvas accepted (1024x1024, the longest JSON:
    // white paper, with a stroke). None may disturb the model the Durable Object holds.
    let oversized = " ".repeat(100_000_000);
    let just_over = " ".repeat((16 << 20) + 4096 + 1);
    let side = 1024;
    let canvas_pixel = |x: usize| if (500..520).contains(&x) { "0,0,0,255" } else { "255,255,255,255" };
    let canvas: Vec<&str> = (0..side * side).map(|i| canvas_pixel(i % side)).collect();
    let canvas = format!(r#"{{"rgba": [{}], "width": {side}, "height": {side}}}"#, canvas.join(","));
    for (name, body, chunked, want) in [
        ("100 MB body", oversized.as_str(), false, 413),
        ("a body over the limit in chunks", just_over.as_str(), true, 413),
        ("malformed chunked body", "{\"pixels\": [0, 0,", true, 400),
        ("largest canvas", canvas.as_str(), false, 200),
    ] {
        let started = Instant::now();
        let (status, answer) = if chunked {
            call_chunked(&agent, &url("/predict"), body.as_bytes())?
        } else {
            call(&agent, "POST", &url("/predict"), Some(body), None)?
        };
        println!("edge: {name} ({} bytes): {status} in {:.0} ms", body.len(), started.elapsed().as_secs_f64() * 1e3);
        let says = if want == 200 { answer["digit"].is_number() } else { answer["error"].is_string() };
        checks.expect(name, status == want && says, &json!({ "status": status, "body": answer }));
    }
    let (status, body) = predict(&pixels(0))?;
    checks.expect(
        "the model is still the one loaded first",
        status == 200 && body["model"]["loads"] == json!(1) && Some(&body["model"]["loaded_at"]) == loaded_at.as_ref(),
        &body,
    );

    // Load: 20,000 requests from 64 connections, none failing, all answered by that one load,
    // which is still the isolate's model afterwards (so no isolate restarted under the load).
    // A request the dev proxy lost on its way to the worker is sent again, as the proxy asks,
    // and so is one whose connection was reset; more than 1% of those fails the check too.
    let report = load::run(address, &predict_request(&pixels(1)), 20_000, 64, answered_by_the_first_load)?;
    println!("edge: under load: {}", report.summary());
    checks.expect(
        "20,000 requests from 64 connections",
        report.errors == 0 && report.resent <= report.requests() / 100,
        &json!({ "first error": report.first_error, "sent twice": report.resent }),
    );
    let (status, body) = predict(&pixels(0))?;
    checks.expect(
        "the model after the load is still the one loaded first",
        status == 200 && body["model"]["loads"] == json!(1) && Some(&body["model"]["loaded_at"]) == loaded_at.as_ref(),
        &body,
    );

    // Every error status.
    for (name, method, path, body, want) in [
        ("unknown route", "GET", "/nope", None, 404),
        ("wrong method on /predict", "GET", "/predict", None, 405),
        ("wrong method on /health", "POST", "/health", Some("{}"), 405),
        ("malformed JSON", "POST", "/predict", Some("{\"pixels\": [1, 2"), 400),
        ("wrong length", "POST", "/predict", Some("{\"pixels\": [0, 0, 0]}"), 400),
        ("out of range", "POST", "/predict", Some(&*format!("{{\"pixels\": [{}300]}}", "0,".repeat(783))), 400),
        ("reload without the token", "POST", "/admin/reload", Some("{}"), 401),
    ] {
        let (status, body) = call(&agent, method, &url(path), body, None)?;
        let says = body["error"].as_str().is_some_and(|e| !e.is_empty());
        checks.expect(name, status == want && says, &json!({ "status": status, "body": body }));
    }
    let (status, body) = call(&agent, "POST", &url("/admin/reload"), Some("{}"), Some("wrong-token"))?;
    checks.expect("reload with a wrong token", status == 401, &body);

    // A model update: the admin reload makes the object load R2 again, without a redeploy.
    let (status, body) = call(&agent, "POST", &url("/admin/reload"), Some("{}"), Some(&token))?;
    checks.expect("reload with the token", status == 200 && body["model"]["loads"] == json!(2), &body);
    let (status, body) = predict(&pixels(0))?;
    checks.expect("answers after a reload", status == 200 && body["model"]["loads"] == json!(2), &body);

    // The page is served too.
    let (status, page) = call(&agent, "GET", &url("/"), None, None)?;
    checks.expect("serves the page", status == 200 && page.to_string().contains("Draw a digit"), &json!(status));

    checks.expect("the server stops", worker.stop(), &json!(null));
    checks.finish()
}

/// A digit, from the isolate's first model.
fn answered_by_the_first_load(status: axum::http::StatusCode, body: &load::Answer) -> Result<(), String> {
    let answer = answer(status, body)?;
    if answer["model"]["loads"] != json!(1) {
        return Err(format!("answered by load {}", answer["model"]["loads"]));
    }
    Ok(())
}

/// Collects failed expectations so one run reports all of them.
#[derive(Default)]
struct Checks {
    passed: usize,
    failed: Vec<String>,
}

impl Checks {
    fn expect(&mut self, name: &str, ok: bool, evidence: &Value) {
        if ok {
            self.passed += 1;
        } else if !self.failed.iter().any(|f| f.starts_with(name)) {
            self.failed.push(format!("{name}: {evidence}"));
        }
    }

    fn finish(self) -> anyhow::Result<()> {
        if !self.failed.is_empty() {
            bail!("edge end-to-end: {} check(s) failed:\n  {}", self.failed.len(), self.failed.join("\n  "));
        }
        println!("edge end-to-end: all {} checks passed", self.passed);
        Ok(())
    }
}

/// `(status, JSON body)` of a POST of `body` sent in chunks, with no Content-Length.
fn call_chunked(agent: &ureq::Agent, url: &str, body: &[u8]) -> anyhow::Result<(u16, Value)> {
    let request = ureq::http::Request::builder().method("POST").uri(url).header("content-type", "application/json");
    let mut reader = body;
    let mut response = agent.run(request.body(ureq::SendBody::from_reader(&mut reader))?)?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string()?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
}
