//! The fleet's shared pieces for global rate limits: a real Redis (Debian's
//! `redis-server`, or `REDIS_BIN`) and the repo's rate limit server
//! (`target/release/meshguard-rls`, built by `make build`), each on a free
//! loopback port, killed on drop, and killable mid-test for fault drills.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::repo_root;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn die_with_parent(cmd: &mut Command) {
    #[allow(unsafe_code)]
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// A running Redis.
pub struct Redis {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    /// Every write is on disk before Redis answers (append-only file, fsync
    /// always): a restart keeps everything written.
    persistent: bool,
}

impl Redis {
    /// Starts Redis on a free port (no persistence) and waits for `PONG`.
    pub fn start() -> Redis {
        Self::start_with(false)
    }

    /// Starts Redis with every write on disk before it answers (the fleet
    /// service's store, restarted mid-test).
    pub fn start_persistent() -> Redis {
        Self::start_with(true)
    }

    fn start_with(persistent: bool) -> Redis {
        let mut r = Redis {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            persistent,
        };
        r.restart();
        r
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (an outage).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port: empty, or with what it had written
    /// when persistent.
    pub fn restart(&mut self) {
        self.kill();
        let bin = std::env::var("REDIS_BIN").unwrap_or_else(|_| "redis-server".into());
        let mut cmd = Command::new(&bin);
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(if self.persistent {
                ["--appendonly", "yes", "--appendfsync", "always"].as_slice()
            } else {
                ["--appendonly", "no"].as_slice()
            })
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut cmd);
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("cannot run {bin}: {e} (run `make setup`)")),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.ping() {
                return;
            }
            assert!(Instant::now() < deadline, "redis did not answer PING");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The rate limit server binary.
pub fn rls_bin() -> PathBuf {
    let p = std::env::var_os("MESHGUARD_RLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/release/meshguard-rls"));
    assert!(p.exists(), "{} missing — run `make build`", p.display());
    p
}

/// A running `meshguard-rls`.
pub struct RlsServer {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    redis: Option<String>,
    delay_ms: u64,
}

impl RlsServer {
    /// Starts the server with the limits file `limits` (YAML), counting in the Redis
    /// at `redis` (`None`: in memory), each answer held `delay_ms`.
    pub fn start(limits: &str, redis: Option<&str>, delay_ms: u64) -> RlsServer {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("limits.yaml"), limits).expect("limits file");
        let mut s = RlsServer {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            dir,
            redis: redis.map(str::to_string),
            delay_ms,
        };
        s.restart();
        s
    }

    /// Kills it (an outage).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again holding every answer `delay_ms`.
    pub fn restart_with_delay(&mut self, delay_ms: u64) {
        self.delay_ms = delay_ms;
        self.restart();
    }

    /// Starts it again on the same address and waits until it accepts.
    pub fn restart(&mut self) {
        self.kill();
        let mut cmd = Command::new(rls_bin());
        cmd.arg("--limits")
            .arg(self.dir.path().join("limits.yaml"))
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--delay-ms")
            .arg(self.delay_ms.to_string());
        match &self.redis {
            Some(url) => cmd.args(["--redis", url]),
            None => cmd.arg("--memory"),
        };
        let log = std::fs::File::create(self.dir.path().join("rls.log")).expect("log file");
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        die_with_parent(&mut cmd);
        self.child = Some(cmd.spawn().expect("spawn meshguard-rls"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(self.addr).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("meshguard-rls exited ({status}):\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "meshguard-rls did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rls.log")).unwrap_or_default()
    }
}

impl Drop for RlsServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- meshguard-rls log ----\n{}", self.log());
        }
    }
}
