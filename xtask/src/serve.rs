//! `serve`: the browser bundle over HTTP on this machine, rebuilt first when stale.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use clap::Args;
use tower_http::compression::CompressionLayer;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

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
    let dir = match args.dir {
        Some(dir) => dir,
        None => {
            if bundle_is_stale() {
                println!("the bundle is missing or older than its inputs: building it");
                build_web(&args.build)?;
            }
            bundle_dir()
        }
    };
    let address: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .with_context(|| format!("{}:{} is not an address to listen on", args.host, args.port))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(address).await.with_context(|| format!("cannot listen on {address}"))?;
        println!("serving {} at http://{}/ (Ctrl-C stops)", dir.display(), listener.local_addr()?);
        axum::serve(listener, router(dir)).with_graceful_shutdown(ctrl_c()).await?;
        // Whoever started the server may have stopped reading its output by now.
        let _ = writeln!(std::io::stdout(), "stopped");
        anyhow::Ok(())
    })
}

/// Static files with MIME types, gzip or brotli where accepted, revalidation on every load
/// (the bundle's names do not change between builds), 404 for anything else. `ServeDir`
/// refuses paths that climb out of `dir`, encoded or not. The page loads nothing from other
/// origins, so it can be cross-origin isolated, which gives `performance.now()` (the
/// classification time it shows) microsecond rather than 100 µs resolution.
pub fn router(dir: PathBuf) -> Router {
    Router::new()
        .fallback_service(ServeDir::new(dir))
        .layer(CompressionLayer::new())
        .layer(SetResponseHeaderLayer::overriding(header::CACHE_CONTROL, HeaderValue::from_static("no-cache")))
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("cross-origin-embedder-policy"),
            HeaderValue::from_static("require-corp"),
        ))
}

async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
}

/// A server on a free loopback port in a thread of this process, stopped when dropped. For
/// tests and benchmarks, which must not depend on this binary staying on disk while
/// `cargo test` rebuilds it.
pub struct Background {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Background {
    pub fn start(dir: PathBuf) -> anyhow::Result<Background> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}/", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                let shutdown = async move {
                    let _ = stopped.await;
                };
                axum::serve(listener, router(dir)).with_graceful_shutdown(shutdown).await?;
                anyhow::Ok(())
            })
        });
        Ok(Background { url, stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
