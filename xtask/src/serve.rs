//! `serve`: the browser bundle over HTTP on this machine, rebuilt first when stale; and
//! `bench-serve`, the same server under load on loopback.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use axum::http::{HeaderValue, header};
use clap::Args;

use crate::args::at_least_one;
use crate::load::{self, Template};
use crate::server::{Background, HEADER_TIMEOUT};
use crate::web::{BuildWebArgs, build_web, bundle_dir, bundle_is_stale};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Serve this folder as it is instead of the (re)built bundle.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub build: BuildWebArgs,
}

pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let dir = folder(args.dir, &args.build)?;
    crate::server::serve(dir, &args.host, args.port)
}

/// `dir` when given, else the bundle, built first when stale.
fn folder(dir: Option<PathBuf>, build: &BuildWebArgs) -> anyhow::Result<PathBuf> {
    if let Some(dir) = dir {
        if !dir.is_dir() {
            bail!("--dir {} is not a folder", dir.display());
        }
        return Ok(dir);
    }
    if bundle_is_stale(build) {
        println!("the bundle is missing, built with other flags, or older than its inputs: building it");
        build_web(build)?;
    }
    Ok(bundle_dir())
}

#[derive(Args, Debug)]
pub struct BenchServeArgs {
    /// Requests per file.
    #[arg(long, default_value_t = 20_000, value_parser = at_least_one)]
    requests: usize,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64, value_parser = at_least_one)]
    connections: usize,
    /// Connections a slow client holds open, idle, during the last measurement.
    #[arg(long, default_value_t = 1000)]
    slow_clients: usize,
    /// Measure this folder instead of the (re)built bundle.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// `bench-serve`: every file of the bundle under load as a browser asks for it (brotli or
/// gzip accepted), then the page again while a slow client holds idle connections; fails on
/// any error, or if the idle connections outlive [`HEADER_TIMEOUT`] by much.
pub fn bench_serve(args: &BenchServeArgs) -> anyhow::Result<()> {
    let dir = folder(args.dir.clone(), &BuildWebArgs::default_build(false))?;
    let files = served_files(&dir)?;
    let server = Background::start(dir.clone())?;
    println!(
        "{} requests per file over {} connections to {} (loopback; the client on one thread)",
        args.requests, args.connections, server.url
    );
    // Connections opened and the server's threads started before anything is timed.
    load::run(server.address, &Template::get("/"), 1000, args.connections, load::ok)?;
    println!("\n| file | bytes sent | requests/s | p50 ms | p99 ms | errors |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let mut errors = 0;
    for file in &files {
        let mut get = Template::get(&format!("/{file}"));
        get.headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("br, gzip"));
        let report = load::run(server.address, &get, args.requests, args.connections, load::ok)?;
        println!(
            "| {file} | {} | {:.0} | {:.2} | {:.2} | {} |",
            report.body_bytes / report.latencies_ms.len().max(1) as u64,
            report.per_second(),
            report.quantile_ms(0.5),
            report.quantile_ms(0.99),
            report.errors
        );
        if let Some(error) = &report.first_error {
            eprintln!("  {file}: first error: {error}");
        }
        errors += report.errors;
    }

    let idle = load::hold_idle(server.address, args.slow_clients)?;
    let report = load::run(server.address, &Template::get("/"), args.requests, args.connections, load::ok)?;
    println!("\n/ with {} idle connections held open by a slow client: {}", args.slow_clients, report.summary());
    errors += report.errors;
    let limit = HEADER_TIMEOUT * 2;
    match load::closed_within(idle, limit)? {
        Some(after) => {
            println!("the server closed the idle connections {:.1} s after the load ended", after.as_secs_f64())
        }
        None => bail!("idle connections were still open {} s after the load", limit.as_secs()),
    }
    if errors > 0 {
        bail!("{errors} requests failed");
    }
    Ok(())
}

/// The files of the bundle as a browser asks for them: not their `.br` and `.gz` siblings.
fn served_files(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".br") && !name.ends_with(".gz") {
            files.push(name);
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 20,000 requests each for a small and a larger file, none failing, while a slow client
    /// holds 500 connections open; the server then closes those within twice its timeout.
    #[test]
    fn serve_answers_every_request_while_a_slow_client_holds_connections_and_then_drops_them() {
        let site = tempfile::tempdir().unwrap();
        std::fs::write(site.path().join("index.html"), "<!doctype html><title>load</title>").unwrap();
        std::fs::write(site.path().join("big.bin"), vec![7u8; 64 << 10]).unwrap();
        let server = Background::start(site.path().to_path_buf()).unwrap();
        let idle = load::hold_idle(server.address, 500).unwrap();
        for path in ["/", "/big.bin"] {
            let report = load::run(server.address, &Template::get(path), 20_000, 64, load::ok).unwrap();
            assert_eq!((report.requests(), report.errors), (20_000, 0), "{path}: {:?}", report.first_error);
        }
        let closed = load::closed_within(idle, HEADER_TIMEOUT * 2).unwrap();
        assert!(closed.is_some(), "the slow client's idle connections were still open after {:?}", HEADER_TIMEOUT * 2);
    }
}
