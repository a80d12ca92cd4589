//! The HTTP server for the browser bundle: static files with the headers the page needs, in
//! the foreground until Ctrl-C (`serve`) or in the background for tests and benchmarks.

use std::fs;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use percent_encoding::percent_decode_str;
use tokio::net::TcpListener;
use tower_http::compression::CompressionLayer;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

/// Serves `dir` on `host:port` until Ctrl-C.
pub fn serve(dir: PathBuf, host: &str, port: u16) -> anyhow::Result<()> {
    let address: SocketAddr = format!("{}:{}", host, port)
        .parse()
        .with_context(|| format!("{}:{} is not an address to listen on", host, port))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(address).await.with_context(|| format!("cannot listen on {address}"))?;
        println!("serving {} at http://{}/ (Ctrl-C stops)", dir.display(), listener.local_addr()?);
        accept(listener, router(dir), ctrl_c()).await;
        // Whoever started the server may have stopped reading its output by now.
        let _ = writeln!(std::io::stdout(), "stopped");
        anyhow::Ok(())
    })
}

/// Static files with MIME types, gzip or brotli where accepted, revalidation on every load
/// (the bundle's names do not change between builds), 404 for anything else.
///
/// A file's `.br` or `.gz` sibling, where there is one (`build-web` writes them), is sent as
/// it is; other files are compressed per response, which costs the wasm file its throughput.
/// `ServeDir` refuses paths that climb out of `dir`, encoded or not; [`inside`] refuses those
/// that leave it through a symlink. The page loads nothing from other origins, so it can be
/// cross-origin isolated, which gives `performance.now()` (the classification time it shows)
/// microsecond rather than 100 µs resolution.
pub fn router(dir: PathBuf) -> Router {
    // A folder that cannot be resolved serves nothing: every path then fails the check.
    let root = Arc::new(fs::canonicalize(&dir).unwrap_or_default());
    Router::new()
        .fallback_service(ServeDir::new(dir).precompressed_br().precompressed_gzip().with_buf_chunk_size(1 << 20))
        .layer(middleware::from_fn(move |request, next| inside(root.clone(), request, next)))
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

/// 404 for a path that exists but resolves to somewhere outside `root`.
async fn inside(root: Arc<PathBuf>, request: Request, next: Next) -> Response {
    let path = percent_decode_str(request.uri().path()).decode_utf8_lossy().into_owned();
    let local = root.join(path.trim_start_matches('/'));
    // Resolved right here, not on tokio's blocking pool: a few cached lookups cost less than
    // the hand-off, which took a fifth of the wasm file's throughput.
    match fs::canonicalize(&local) {
        Ok(real) if !real.starts_with(&*root) => StatusCode::NOT_FOUND.into_response(),
        _ => next.run(request).await,
    }
}

/// How long a connection may take to send a request's headers, and may stay idle between
/// requests, before the server closes it: a client that holds connections open without
/// asking for anything costs a socket for this long, and never anyone else's turn.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves each connection `listener` accepts in a task of its own (HTTP/1.1, keep-alive,
/// [`HEADER_TIMEOUT`]) until `stop` completes.
async fn accept(listener: TcpListener, app: Router, stop: impl Future<Output = ()>) {
    let service = TowerToHyperService::new(app);
    let mut stop = std::pin::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors, most likely: wait for connections to close rather
                // than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => return,
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        tokio::spawn(async move {
            // An error here is one client's connection failing (reset, timed out): only its.
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
}

/// A server on a free loopback port in a thread of this process, stopped when dropped. For
/// tests and benchmarks, which must not depend on this binary staying on disk while
/// `cargo test` rebuilds it.
pub struct Background {
    pub url: String,
    pub address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Background {
    pub fn start(dir: PathBuf) -> anyhow::Result<Background> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let url = format!("http://{address}/");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener)?;
                accept(listener, router(dir), async move {
                    let _ = stopped.await;
                })
                .await;
                anyhow::Ok(())
            })
        });
        Ok(Background { url, address, stop: Some(stop), thread: Some(thread) })
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
