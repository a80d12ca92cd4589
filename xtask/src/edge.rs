//! `edge` and `bench-edge`: the Cloudflare Worker in `edge/`, built with worker-build and run
//! locally under wrangler (workerd on 127.0.0.1, R2 and Durable Object state in a folder).
//!
//! Tools: wrangler and esbuild are pinned in `edge/package.json` (wrangler 4.86.0, the last
//! release that runs on Node 20); worker-build and wasm-bindgen are pinned to Cargo.lock and
//! installed under `target/tools`; wasm-opt comes from the root npm packages. worker-build is
//! pointed at all of them, so it downloads nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use axum::http::{HeaderValue, Method, StatusCode, header};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::args::{DataArgs, at_least_one, committed_model};
use crate::load::{self, Template};
use crate::root;
use crate::tools::{locked_version, npm_packages, pinned_tool, run, wasm_bindgen};
use crate::web;

#[cfg(feature = "ml")]
mod end_to_end;
#[cfg(feature = "ml")]
pub use end_to_end::end_to_end;

/// Where the model lives in the worker's R2 bucket (see `edge/wrangler.toml`).
const BUCKET: &str = "mnist-models";
const MODEL_KEY: &str = "mnist/model.bin";
/// No telemetry and no look-ups of Cloudflare's network from a local run.
const QUIET: [(&str, &str); 2] = [("WRANGLER_SEND_METRICS", "false"), ("CLOUDFLARE_CF_FETCH_ENABLED", "false")];

#[derive(Subcommand, Debug)]
pub enum EdgeCommand {
    /// Build the worker (worker-build --release) with the project's pinned tools.
    Build,
    /// Put artifacts/model.bin into the local R2 and run the worker on 127.0.0.1.
    Dev {
        #[arg(long, default_value_t = 8787)]
        port: u16,
    },
    /// Upload artifacts/model.bin to R2 and deploy the worker (needs CLOUDFLARE_API_TOKEN).
    Deploy,
    /// The worker's end-to-end test alone (part of `cargo xtask test`).
    Test {
        #[command(flatten)]
        data: DataArgs,
    },
}

pub fn edge(command: EdgeCommand) -> anyhow::Result<()> {
    match command {
        EdgeCommand::Build => build(),
        EdgeCommand::Dev { port } => dev(port),
        EdgeCommand::Deploy => deploy(),
        #[cfg(feature = "ml")]
        EdgeCommand::Test { data } => end_to_end(&data.load_test()?),
        // It holds the worker's answers to native burn's.
        #[cfg(not(feature = "ml"))]
        EdgeCommand::Test { .. } => Err(crate::full_build::Needed.into()),
    }
}

fn edge_dir() -> PathBuf {
    root().join("edge")
}

fn wrangler() -> Command {
    let mut command = Command::new(edge_dir().join("node_modules/.bin/wrangler"));
    command.current_dir(edge_dir()).envs(QUIET);
    command
}

/// The npm tools of `edge/` and the pinned worker-build.
pub fn setup() -> anyhow::Result<()> {
    run(Command::new("npm").current_dir(edge_dir()).args(["ci", "--no-audit", "--no-fund"]))?;
    println!("worker-build: {}", worker_build()?.display());
    Ok(())
}

/// worker-build matching the `worker` crate in Cargo.lock.
fn worker_build() -> anyhow::Result<PathBuf> {
    pinned_tool("worker-build", "worker-build", &locked_version("worker")?, &[])
}

/// Builds `edge/build/` and makes sure the page it serves (`artifacts/web/`) is current.
pub fn build() -> anyhow::Result<()> {
    npm_packages(&edge_dir())?;
    npm_packages(root())?;
    let page = web::BuildWebArgs::default_build(false);
    if web::bundle_is_stale(&page) {
        web::build_web(&page)?;
    }
    let wasm_opt = root().join("node_modules/.bin/wasm-opt");
    run(Command::new(worker_build()?)
        .current_dir(edge_dir())
        .arg("--release")
        .env("WASM_BINDGEN_BIN", wasm_bindgen()?)
        .env("WASM_OPT_BIN", wasm_opt)
        .env("ESBUILD_BIN", edge_dir().join("node_modules/.bin/esbuild")))
}

/// `wrangler r2 object put` of `file` as the model, into the local state folder `state`.
fn put_local_model(state: &Path, file: &Path) -> anyhow::Result<()> {
    let output = wrangler()
        .args(["r2", "object", "put", &format!("{BUCKET}/{MODEL_KEY}"), "--local", "--persist-to"])
        .arg(state)
        .arg("--file")
        .arg(file)
        .output()
        .context("cannot run wrangler")?;
    ensure!(output.status.success(), "wrangler r2 object put failed: {}", String::from_utf8_lossy(&output.stderr));
    Ok(())
}

fn dev(port: u16) -> anyhow::Result<()> {
    build()?;
    let state = edge_dir().join(".wrangler/state");
    put_local_model(&state, &committed_model())?;
    println!("worker at http://127.0.0.1:{port}/ (the page: /, or /?edge to classify on the worker); Ctrl-C stops it");
    println!("the admin route needs ADMIN_TOKEN: put `ADMIN_TOKEN=...` in edge/.dev.vars");
    run(wrangler().args(["dev", "--ip", "127.0.0.1", "--port", &port.to_string(), "--persist-to"]).arg(&state))
}

fn deploy() -> anyhow::Result<()> {
    if std::env::var_os("CLOUDFLARE_API_TOKEN").is_none() {
        bail!(
            "no Cloudflare credentials: set CLOUDFLARE_API_TOKEN (an API token with Workers, R2 and Durable Objects \
             edit rights) and CLOUDFLARE_ACCOUNT_ID, then run this again"
        );
    }
    build()?;
    run(wrangler()
        .args(["r2", "object", "put", &format!("{BUCKET}/{MODEL_KEY}"), "--remote", "--file"])
        .arg(committed_model()))?;
    run(wrangler().arg("deploy"))?;
    println!("deployed; set the admin token once with `npx wrangler secret put ADMIN_TOKEN` (in edge/)");
    Ok(())
}

/// `wrangler dev` on a free loopback port, with its state in a temporary folder; stopped
/// (its whole process group) when dropped.
pub struct LocalWorker {
    pub url: String,
    pub state: tempfile::TempDir,
    child: Child,
}

impl LocalWorker {
    /// Starts the worker and waits until `/health` answers.
    pub fn start(admin_token: &str) -> anyhow::Result<LocalWorker> {
        let state = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut command = wrangler();
        command
            // Debug logs name the worker's own workerd socket (see `direct_url`).
            .args(["dev", "--ip", "127.0.0.1", "--port", &port.to_string(), "--log-level", "debug"])
            .args([
                "--show-interactive-dev-session=false",
                "--var",
                &format!("ADMIN_TOKEN:{admin_token}"),
                "--persist-to",
            ])
            .arg(state.path())
            .env("WRANGLER_LOG_PATH", state.path())
            .stdin(Stdio::null())
            // Its log is only worth reading when it fails to start; uploads while it runs
            // make it report dropped connections that are expected.
            .stdout(std::fs::File::create(state.path().join("wrangler.log"))?)
            .stderr(Stdio::from(std::fs::File::options().append(true).open(state.path().join("wrangler.log"))?));
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().context("cannot start wrangler dev")?;
        let mut worker = LocalWorker { url: format!("http://127.0.0.1:{port}"), state, child };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(response) = agent().get(&format!("{}/health", worker.url)).call()
                && response.status() == 200
            {
                return Ok(worker);
            }
            if let Some(status) = worker.child.try_wait()? {
                let log = std::fs::read_to_string(worker.state.path().join("wrangler.log")).unwrap_or_default();
                bail!("wrangler dev exited before the worker answered ({status}):\n{log}");
            }
            ensure!(Instant::now() < deadline, "the worker did not answer /health within 90 s");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The worker's own workerd socket, behind the dev proxy that `url` is: production has no
    /// such proxy, so this is the closer view of the worker's own cost. Read from wrangler's
    /// debug log, so `None` if a wrangler version words it differently.
    pub fn direct_url(&self) -> Option<String> {
        let log = std::fs::read_to_string(self.state.path().join("wrangler.log")).ok()?;
        let at = log.rfind("\"userWorkerUrl\"")?;
        let port: String = log[at..].split("\"port\":\"").nth(1)?.chars().take_while(char::is_ascii_digit).collect();
        (!port.is_empty()).then(|| format!("http://127.0.0.1:{port}"))
    }

    /// Stores `file` as the model in this worker's local R2. Writing the state folder from a
    /// second wrangler restarts the running worker's Durable Object (its model is dropped),
    /// so this waits until the worker answers again.
    pub fn put_model(&self, file: &Path) -> anyhow::Result<()> {
        put_local_model(self.state.path(), file)?;
        std::thread::sleep(Duration::from_millis(500));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !agent().get(&format!("{}/health", self.url)).call().is_ok_and(|r| r.status() == 200) {
            ensure!(Instant::now() < deadline, "the worker did not come back after the model upload");
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Stops wrangler and the workerd it started; true once they are gone.
    pub fn stop(&mut self) -> bool {
        let group = format!("-{}", self.child.id());
        for signal in ["-TERM", "-KILL"] {
            let _ = Command::new("kill").args([signal, "--", &group]).stderr(Stdio::null()).status();
            for _ in 0..50 {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        false
    }
}

impl Drop for LocalWorker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An HTTP client that hands back error statuses as responses, for the test to inspect.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// `(status, JSON body)` of a request; `body` is sent as JSON when given.
pub fn call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    let mut request = ureq::http::Request::builder().method(method).uri(url).header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let mut response = agent.run(request.body(body.unwrap_or_default().to_string())?)?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string()?;
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, json))
}

#[derive(clap::Args, Debug)]
pub struct BenchEdgeArgs {
    /// Requests at each level of concurrency.
    #[arg(long, default_value_t = 20_000, value_parser = at_least_one)]
    pub requests: usize,
    /// Levels of concurrency: connections sending requests at once.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 8, 64], value_parser = at_least_one)]
    pub connections: Vec<usize>,
    /// Fresh workers started to time a cold first request.
    #[arg(long, default_value_t = 3, value_parser = at_least_one)]
    pub cold_runs: usize,
}

/// A handwritten-looking "7" as a 28x28 request body: the same input for every request.
pub fn seven() -> String {
    let pixels: Vec<u8> = (0..infer::PIXELS)
        .map(|i| {
            let (y, x) = ((i / 28) as i32, (i % 28) as i32);
            let top = (6..=8).contains(&y) && (6..=21).contains(&x);
            let stem = (9..=23).contains(&y) && (x - (21 - (y - 8) / 2)).abs() <= 1;
            if top || stem { 255 } else { 0 }
        })
        .collect();
    json!({ "pixels": pixels }).to_string()
}

/// `POST /predict` of `body`, as the load generator repeats it.
pub fn predict_request(body: &str) -> Template {
    let mut post = Template::get("/predict");
    post.method = Method::POST;
    post.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    post.body = body.to_string().into();
    post.resend_if = Some(dev_proxy_lost_the_worker);
    post
}

/// The answer of wrangler's dev proxy when its own hop to the worker failed: a plain-text
/// 503 that asks for the request to be sent again. (It blames a restart of the worker for
/// every such failure, because for any path but `/` the URL it compares never matches.)
/// 0 to 36 of 20,000 requests from 64 connections in a run, on the machine that found it;
/// production has no such proxy.
fn dev_proxy_lost_the_worker(status: StatusCode, body: &load::Answer) -> bool {
    status == StatusCode::SERVICE_UNAVAILABLE && body.to_vec().starts_with(b"Your worker restarted mid-request")
}

/// A 200 whose body holds a digit.
pub fn answered(status: StatusCode, body: &load::Answer) -> Result<(), String> {
    answer(status, body).map(drop)
}

/// The JSON of a 200 whose body holds a digit.
pub fn answer(status: StatusCode, body: &load::Answer) -> Result<Value, String> {
    let bytes = body.to_vec();
    let answer: Value = serde_json::from_slice(&bytes).map_err(|e| {
        let text = String::from_utf8_lossy(&bytes);
        format!("not JSON ({e}): {:?}", text.chars().take(200).collect::<String>())
    })?;
    if status == StatusCode::OK && answer["digit"].is_number() {
        Ok(answer)
    } else {
        Err(format!("no digit in {answer}"))
    }
}

/// `bench-edge`: cold first requests, then warm requests per second and latency at each level
/// of concurrency, over loopback to `wrangler dev`: through its dev proxy, and straight to
/// the worker's own workerd socket.
pub fn bench_edge(args: BenchEdgeArgs) -> anyhow::Result<()> {
    build()?;
    let body = seven();
    let model = committed_model();
    let mut cold = Vec::new();
    for _ in 0..args.cold_runs {
        let worker = LocalWorker::start("bench")?;
        worker.put_model(&model)?;
        let started = Instant::now();
        let (status, answer) = call(&agent(), "POST", &format!("{}/predict", worker.url), Some(&body), None)?;
        ensure!(status == 200, "status {status}: {answer}");
        cold.push((started.elapsed().as_secs_f64() * 1e3, answer["model"]["load_ms"].as_f64().unwrap_or(f64::NAN)));
    }
    println!("\nedge worker under wrangler dev (workerd, loopback), the same 28x28 input each time");
    for (i, (ms, load_ms)) in cold.iter().enumerate() {
        println!("cold first request #{}: {ms:.1} ms (of which the R2 read and decode: {load_ms:.0} ms)", i + 1);
    }

    let worker = LocalWorker::start("bench")?;
    worker.put_model(&model)?;
    let routes =
        [("through wrangler's dev proxy", Some(worker.url.clone())), ("straight to workerd", worker.direct_url())];
    let post = predict_request(&body);
    for (route, base) in routes {
        let Some(base) = base else {
            println!("(the worker's own workerd port is not in wrangler's log: measuring through the proxy only)");
            continue;
        };
        let address: SocketAddr = base.trim_start_matches("http://").parse()?;
        println!("{route}:");
        for &connections in &args.connections {
            let report = load::run(address, &post, args.requests, connections, answered)?;
            println!("  {connections} connections: {}", report.summary());
            if let Some(error) = report.first_error {
                bail!("{error}");
            }
        }
    }
    Ok(())
}
