//! Real gRPC peers: `py/grpc_peer.py` on grpcio (installed into `.venv` by `make
//! setup`), a server with a unary and a server-streaming method and a client that
//! reports every call's status, details and metadata.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::repo_root;

/// The Python with grpcio: `.venv/bin/python`.
fn python() -> PathBuf {
    let p = repo_root().join(".venv/bin/python");
    assert!(p.exists(), "{} missing — run `make setup`", p.display());
    p
}

fn script() -> PathBuf {
    repo_root().join("integration-tests/py/grpc_peer.py")
}

/// A running gRPC server; killed on drop.
pub struct GrpcServer {
    /// Where it listens (HTTP/2 cleartext).
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl GrpcServer {
    /// Starts the server; every `fail_every`-th unary call fails UNAVAILABLE (0: none).
    pub fn start(fail_every: u32) -> GrpcServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let port_file = dir.path().join("port");
        let child = Command::new(python())
            .arg(script())
            .args(["serve", "--port-file"])
            .arg(&port_file)
            .args(["--fail-every", &fail_every.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start grpc_peer.py serve");
        let until = Instant::now() + Duration::from_secs(20);
        let port: u16 = loop {
            if let Some(p) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break p;
            }
            assert!(Instant::now() < until, "the gRPC server did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        GrpcServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            _dir: dir,
        }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One call's result as the client saw it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct GrpcResult {
    /// The status code's name (`OK`, `UNAVAILABLE`, …).
    pub code: String,
    /// The status message.
    pub details: String,
    /// Messages received.
    pub messages: u32,
    /// Trailing metadata.
    pub trailing: std::collections::BTreeMap<String, String>,
}

/// Makes `n` calls of `method` (`unary` or `stream`) with `request` to `target`
/// over one channel, `concurrency` at a time.
pub fn grpc_calls(
    target: SocketAddr,
    method: &str,
    request: &str,
    n: usize,
    concurrency: usize,
) -> Vec<GrpcResult> {
    grpc_calls_with_metadata(target, method, request, n, concurrency, &[])
}

/// [`grpc_calls`] with request metadata (`key`, `value`) sent on every call.
pub fn grpc_calls_with_metadata(
    target: SocketAddr,
    method: &str,
    request: &str,
    n: usize,
    concurrency: usize,
    metadata: &[(&str, &str)],
) -> Vec<GrpcResult> {
    let mut cmd = Command::new(python());
    cmd.arg(script())
        .args(["call", "--target", &target.to_string(), "--method", method])
        .args(["--request", request, "--n", &n.to_string()])
        .args(["--concurrency", &concurrency.to_string()]);
    for (k, v) in metadata {
        cmd.arg("--metadata").arg(format!("{k}={v}"));
    }
    let out = cmd.output().expect("run grpc_peer.py call");
    assert!(
        out.status.success(),
        "grpc_peer.py call failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}
