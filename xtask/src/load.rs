//! A load generator: keep-alive HTTP/1.1 connections on loopback, each sending its share of
//! the requests one after another, every answer read to its end, checked and timed.
//!
//! A bounded tokio + hyper client rather than an external tool: the same code measures
//! `serve` and the edge worker, and the tests hold the same numbers it prints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long one request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The request every connection repeats.
#[derive(Clone)]
pub struct Template {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// An answer that asks for the request to be sent again (a proxy in front of the server
    /// that lost its own hop to it): the request is sent once more, and counted as resent.
    /// A template with one also resends, on a new connection, a request whose connection failed.
    pub resend_if: Option<fn(StatusCode, &Answer) -> bool>,
}

impl Template {
    pub fn get(path: &str) -> Self {
        Template {
            method: Method::GET,
            path: path.into(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            resend_if: None,
        }
    }

    fn request(&self, host: SocketAddr) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut request =
            Request::builder().method(self.method.clone()).uri(&self.path).header("host", host.to_string());
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        Ok(request.body(Full::new(self.body.clone()))?)
    }
}

/// What a load run saw.
#[derive(Default)]
pub struct Report {
    /// Latencies of the answers that passed the check, in milliseconds, sorted.
    pub latencies_ms: Vec<f64>,
    /// Requests that failed (transport error, timeout, or an answer the check refused).
    pub errors: usize,
    /// The first error, to say what went wrong.
    pub first_error: Option<String>,
    /// Requests sent a second time: the first answer asked for it (`resend_if`), or, with
    /// `resend_if` set, the first connection failed.
    pub resent: usize,
    /// Bytes of answer bodies received.
    pub body_bytes: u64,
    pub seconds: f64,
}

impl Report {
    pub fn requests(&self) -> usize {
        self.latencies_ms.len() + self.errors
    }

    pub fn per_second(&self) -> f64 {
        self.requests() as f64 / self.seconds
    }

    /// The `q` quantile of the latencies (0.5: the median), in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let n = self.latencies_ms.len();
        if n == 0 {
            return f64::NAN;
        }
        self.latencies_ms[((n as f64 * q) as usize).min(n - 1)]
    }

    /// One line for people: count, errors, resent, rate and latency.
    pub fn summary(&self) -> String {
        let resent = if self.resent > 0 { format!(" ({} sent twice)", self.resent) } else { String::new() };
        format!(
            "{} requests{resent}, {} errors, {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms",
            self.requests(),
            self.errors,
            self.per_second(),
            self.quantile_ms(0.5),
            self.quantile_ms(0.99)
        )
    }
}

/// Sends `total` copies of `template` to `address` over `connections` connections, and
/// checks each answer with `check`.
pub fn run(
    address: SocketAddr,
    template: &Template,
    total: usize,
    connections: usize,
    check: Check,
) -> anyhow::Result<Report> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let tasks: Vec<_> = (0..connections)
            .map(|_| tokio::spawn(connection(address, template.clone(), next.clone(), total, check)))
            .collect();
        let mut report = Report::default();
        for task in tasks {
            let part = task.await.context("a client connection panicked")?;
            report.latencies_ms.extend(part.latencies_ms);
            report.errors += part.errors;
            report.first_error = report.first_error.or(part.first_error);
            report.resent += part.resent;
            report.body_bytes += part.body_bytes;
        }
        report.seconds = started.elapsed().as_secs_f64();
        report.latencies_ms.sort_by(f64::total_cmp);
        Ok(report)
    })
}

/// One client connection: takes request numbers from `next` until `total` are taken, and
/// connects again after a transport error.
async fn connection(
    address: SocketAddr,
    template: Template,
    next: Arc<AtomicUsize>,
    total: usize,
    check: Check,
) -> Report {
    let mut report = Report::default();
    let mut sender = None;
    while next.fetch_add(1, Ordering::Relaxed) < total {
        let started = Instant::now();
        let mut answer = send(address, &template, &mut sender).await;
        // A template that resends also resends, on a new connection, a request whose
        // connection was lost (the local Workers runtime resets a few under 64 connections).
        let resend = template.resend_if.is_some_and(|resend_if| match &answer {
            Ok((status, body)) => resend_if(*status, body),
            Err(_) => true,
        });
        if resend {
            report.resent += 1;
            answer = send(address, &template, &mut sender).await;
        }
        let outcome = answer.and_then(|(status, body)| {
            check(status, &body).map_err(|why| anyhow::anyhow!("{status}: {why}"))?;
            Ok(body.size())
        });
        match outcome {
            Ok(len) => {
                report.latencies_ms.push(started.elapsed().as_secs_f64() * 1e3);
                report.body_bytes += len as u64;
            }
            Err(error) => {
                report.errors += 1;
                report.first_error.get_or_insert_with(|| format!("{error:#}"));
                sender = None;
            }
        }
    }
    report
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One request and its whole answer, on `sender`'s connection (opened first if there is none).
async fn send(
    address: SocketAddr,
    template: &Template,
    sender: &mut Option<Sender>,
) -> anyhow::Result<(StatusCode, Answer)> {
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
        if sender.is_none() {
            *sender = Some(connect(address).await?);
        }
        let client = sender.as_mut().expect("connected above");
        client.ready().await?;
        let response = client.send_request(template.request(address)?).await?;
        let status = response.status();
        let mut body = Answer(Vec::new());
        let mut frames = response.into_body();
        while let Some(frame) = frames.frame().await {
            body.0.extend(frame?.into_data().ok());
        }
        anyhow::Ok((status, body))
    })
    .await
    .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {REQUEST_TIMEOUT:?}")));
    // A connection that failed once is not used again: the next request opens a new one.
    if answer.is_err() {
        *sender = None;
    }
    answer
}

async fn connect(address: SocketAddr) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// What decides whether an answer (status, body) counts as served.
pub type Check = fn(StatusCode, &Answer) -> Result<(), String>;

/// An answer's body as it arrived, in frames: joined only by a check that reads it, so that a
/// large file costs the client no copy.
pub struct Answer(Vec<Bytes>);

impl Answer {
    pub fn size(&self) -> usize {
        self.0.iter().map(Bytes::len).sum()
    }

    pub fn to_vec(&self) -> Vec<u8> {
        self.0.concat()
    }
}

/// Answers that are 200 OK.
pub fn ok(status: StatusCode, _body: &Answer) -> Result<(), String> {
    if status == StatusCode::OK { Ok(()) } else { Err("expected 200 OK".into()) }
}

/// A slow client: `count` connections to `address` that each send the start of a request and
/// then nothing, to hold the server's sockets.
pub fn hold_idle(address: SocketAddr, count: usize) -> anyhow::Result<Vec<std::net::TcpStream>> {
    (0..count)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(address)?;
            std::io::Write::write_all(&mut stream, b"GET / HTTP/1.1\r\nHost: slow\r\n")?;
            Ok(stream)
        })
        .collect()
}

/// How long until the server has closed every one of `streams`, or `None` if some are still
/// open after `limit`.
pub fn closed_within(streams: Vec<std::net::TcpStream>, limit: Duration) -> anyhow::Result<Option<Duration>> {
    let started = Instant::now();
    for mut stream in streams {
        let left = limit.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Ok(None);
        }
        stream.set_read_timeout(Some(left))?;
        let mut byte = [0u8; 1];
        match std::io::Read::read(&mut stream, &mut byte) {
            // Closed (or reset): what a server does to a connection that timed out.
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Ok(None);
            }
            // An answer (a 408, say) before closing is a close too.
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(started.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers every tenth request with a 503 asking for it again.
    fn flaky_server() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let app =
            axum::Router::new().route(
                "/",
                axum::routing::get(move || {
                    let n = seen.fetch_add(1, Ordering::Relaxed);
                    async move {
                        if n % 10 == 9 { (StatusCode::SERVICE_UNAVAILABLE, "again") } else { (StatusCode::OK, "ok") }
                    }
                }),
            );
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            })
        });
        address
    }

    fn asks_again(status: StatusCode, body: &Answer) -> bool {
        status == StatusCode::SERVICE_UNAVAILABLE && body.to_vec() == b"again"
    }

    /// One connection, so the server sees the requests in order: the tenth, twentieth, ...
    /// are refused, and each resend is the next one it sees, which it answers.
    #[test]
    fn an_answer_that_asks_for_it_again_is_resent_once_and_counted() {
        let mut template = Template::get("/");
        let plain = run(flaky_server(), &template, 1_000, 1, ok).unwrap();
        assert_eq!((plain.errors, plain.resent), (100, 0), "{:?}", plain.first_error);

        template.resend_if = Some(asks_again);
        let resending = run(flaky_server(), &template, 1_000, 1, ok).unwrap();
        // 1,111 requests seen for 1,000 sent: 111 refused, each answered when sent again.
        assert_eq!((resending.requests(), resending.errors, resending.resent), (1_000, 0, 111));
    }
}
