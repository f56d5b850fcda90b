//! A test upstream whose answers are chosen per request through headers:
//!
//! - `x-test-status: 503`   status to answer with (default 200)
//! - `x-test-delay-ms: 250` wait before answering
//! - `x-test-body: text`    body to answer with (default: the JSON echo below)
//! - `x-test-echo-body: 1`  answer with the request body, byte for byte
//! - `x-test-size: 10485760` answer with that many bytes of [`pattern`], chunked
//!
//! [`Upstream::start_failing`] makes an upstream that fails every Nth request
//! itself (a canary with a known error rate, whatever the client sends);
//! [`Upstream::fail_every`] changes that while it runs.
//!
//! Every answer carries `x-upstream: <name>`. The default body is JSON:
//! `{"upstream": name, "method", "path", "headers": [{"name", "value", "hex"}]}` where
//! `value` is lossy UTF-8 and `hex` the exact bytes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// A running test upstream; stops when dropped.
pub struct Upstream {
    /// Its name, answered in `x-upstream` and the echo body.
    pub name: String,
    /// Where it listens (127.0.0.1, a free port).
    pub addr: SocketAddr,
    count: Arc<AtomicU64>,
    fail_every: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Upstream {
    /// Starts an upstream called `name` on a free loopback port, on its own thread.
    pub fn start(name: &str) -> Upstream {
        Self::start_with(name, 200)
    }

    /// Like [`Upstream::start`], answering `status` unless `x-test-status` says otherwise.
    pub fn start_with(name: &str, default_status: u16) -> Upstream {
        Self::start_inner(name, default_status, 0)
    }

    /// Like [`Upstream::start`], answering 503 to every `every`-th request it
    /// receives (the 2nd, 4th, … for `every = 2`: half of them).
    pub fn start_failing(name: &str, every: u64) -> Upstream {
        Self::start_inner(name, 200, every)
    }

    fn start_inner(name: &str, default_status: u16, fail_every: u64) -> Upstream {
        let count = Arc::new(AtomicU64::new(0));
        let fail_every = Arc::new(AtomicU64::new(fail_every));
        let thread_fail = fail_every.clone();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread_name = name.to_string();
        let thread_count = count.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime for the test upstream");
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
                addr_tx
                    .send(listener.local_addr().expect("upstream address"))
                    .expect("report upstream address");
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let name = thread_name.clone();
                            let count = thread_count.clone();
                            let fail = thread_fail.clone();
                            tokio::spawn(async move {
                                let svc = service_fn(move |req| {
                                    let name = name.clone();
                                    let count = count.clone();
                                    let fail_every = fail.load(Ordering::SeqCst);
                                    async move { Ok::<_, Infallible>(answer(&name, &count, default_status, fail_every, req).await) }
                                });
                                let _ = http1::Builder::new()
                                    .max_headers(2048)
                                    .serve_connection(TokioIo::new(stream), svc)
                                    .await;
                            });
                        }
                    }
                }
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("test upstream started");
        Upstream {
            name: name.to_string(),
            addr,
            count,
            fail_every,
            stop: Some(stop_tx),
        }
    }

    /// From now on answers 503 to every `every`-th request it receives (0:
    /// none), as a new build of the upstream would: nothing else changes.
    pub fn fail_every(&self, every: u64) {
        self.fail_every.store(every, Ordering::SeqCst);
    }

    /// How many requests this upstream has received.
    pub fn requests(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn header<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Byte `i` of the `x-test-size` body.
pub fn pattern_byte(i: usize) -> u8 {
    (i.wrapping_mul(31).wrapping_add(7) % 251) as u8
}

/// The first `n` bytes of the `x-test-size` body.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(pattern_byte).collect()
}

/// A body of `left` pattern bytes sent in 64 KiB frames, with no length known in
/// advance (so HTTP/1.1 sends it chunked).
struct Chunked {
    sent: usize,
    left: usize,
}

impl hyper::body::Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.left.min(64 * 1024);
        let chunk: Vec<u8> = (self.sent..self.sent + n).map(pattern_byte).collect();
        self.sent += n;
        self.left -= n;
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from(chunk)))))
    }
}

type AnyBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(
    name: &str,
    count: &AtomicU64,
    default_status: u16,
    fail_every: u64,
    req: Request<Incoming>,
) -> Response<AnyBody> {
    use http_body_util::BodyExt;
    let status = header(&req, "x-test-status").and_then(|s| s.parse::<u16>().ok());
    if header(&req, "x-test-echo-body").is_some() {
        count.fetch_add(1, Ordering::SeqCst);
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Response::builder()
            .status(status.unwrap_or(200))
            .header("x-upstream", name)
            .body(Full::new(body).boxed())
            .expect("valid test response");
    }
    if let Some(size) = header(&req, "x-test-size").and_then(|s| s.parse::<usize>().ok()) {
        count.fetch_add(1, Ordering::SeqCst);
        return Response::builder()
            .status(status.unwrap_or(200))
            .header("x-upstream", name)
            .body(
                Chunked {
                    sent: 0,
                    left: size,
                }
                .boxed(),
            )
            .expect("valid test response");
    }
    answer_echo(name, count, default_status, fail_every, req)
        .await
        .map(|b| b.boxed())
}

async fn answer_echo(
    name: &str,
    count: &AtomicU64,
    default_status: u16,
    fail_every: u64,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
    let status = header(&req, "x-test-status")
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(if fail_every > 0 && n.is_multiple_of(fail_every) {
            503
        } else {
            default_status
        });
    if let Some(ms) = header(&req, "x-test-delay-ms").and_then(|s| s.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let body = match header(&req, "x-test-body") {
        Some(b) => b.to_string(),
        None => {
            let headers: Vec<serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| {
                    serde_json::json!({
                        "name": k.as_str(),
                        "value": String::from_utf8_lossy(v.as_bytes()),
                        "hex": v.as_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>(),
                    })
                })
                .collect();
            serde_json::json!({
                "upstream": name,
                "method": req.method().as_str(),
                "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or(""),
                "headers": headers,
            })
            .to_string()
        }
    };
    Response::builder()
        .status(status)
        .header("x-upstream", name)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("valid test response")
}

/// Values of header `name` in an echo body, as exact bytes.
pub fn echoed_header(echo: &serde_json::Value, name: &str) -> Vec<Vec<u8>> {
    echo["headers"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter(|h| h["name"] == name)
                .map(|h| {
                    let hex = h["hex"].as_str().unwrap_or("");
                    (0..hex.len() / 2)
                        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0))
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A WebSocket echo server (tokio-tungstenite) on its own thread: every text or
/// binary message comes back; stops when dropped.
pub struct WsEcho {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl WsEcho {
    /// Starts the server on a free loopback port.
    pub fn start() -> WsEcho {
        use futures_util::{SinkExt, StreamExt};
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime for the WebSocket upstream");
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind ws");
                addr_tx
                    .send(listener.local_addr().expect("ws address"))
                    .expect("report ws address");
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            tokio::spawn(async move {
                                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                                    return;
                                };
                                while let Some(Ok(msg)) = ws.next().await {
                                    if msg.is_text() || msg.is_binary() {
                                        if ws.send(msg).await.is_err() {
                                            break;
                                        }
                                    } else if msg.is_close() {
                                        let _ = ws.close(None).await;
                                        break;
                                    }
                                }
                            });
                        }
                    }
                }
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("WebSocket upstream started");
        WsEcho {
            addr,
            stop: Some(stop_tx),
        }
    }
}

impl Drop for WsEcho {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
