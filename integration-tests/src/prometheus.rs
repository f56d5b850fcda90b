//! A real Prometheus (Debian's package, or `PROMETHEUS_BIN`) scraping a test's
//! Envoy, started on a free loopback port with the shipped scrape config.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::repo_root;

/// A running Prometheus; killed on drop.
pub struct Prometheus {
    child: Child,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

/// The Prometheus binary.
pub fn prometheus_bin() -> PathBuf {
    std::env::var_os("PROMETHEUS_BIN").map_or_else(|| PathBuf::from("prometheus"), PathBuf::from)
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`host:port` of Envoy's admin) every
    /// second, using `envoy/observability/prometheus.yml` with its target and
    /// intervals swapped, and the shipped alert rules.
    pub fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let obs = repo_root().join("envoy/observability");
        let shipped =
            std::fs::read_to_string(obs.join("prometheus.yml")).expect("shipped prometheus.yml");
        assert!(
            shipped.contains("\"127.0.0.1:9901\""),
            "shipped scrape config lost its demo target"
        );
        let config = shipped
            .replace("\"127.0.0.1:9901\"", &format!("\"{target}\""))
            .replace("15s", "1s")
            .replace(
                "- alerts.yml",
                &format!("- {}", obs.join("alerts.yml").display()),
            );
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("write config");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(prometheus_bin())
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (run `make setup`)",
                    prometheus_bin().display()
                )
            });
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let p = Prometheus {
            child,
            dir,
            base: format!("http://{addr}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if crate::http_get(addr, "/-/ready").is_ok_and(|(code, _)| code == 200) {
                return p;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("Prometheus not ready:\n{}", p.log());
    }

    /// Prometheus's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Runs an instant query; returns `(labels, value)` per series.
    pub async fn query(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        let url = format!("{}/api/v1/query", self.base);
        let body: serde_json::Value = reqwest::Client::new()
            .get(url)
            .query(&[("query", promql)])
            .send()
            .await
            .expect("query Prometheus")
            .json()
            .await
            .expect("Prometheus JSON");
        assert_eq!(body["status"], "success", "{promql}: {body}");
        body["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let v = r["value"][1]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(f64::NAN);
                (r["metric"].clone(), v)
            })
            .collect()
    }

    /// The single value of `promql`, waiting (up to 30 s) until it equals `want`.
    pub async fn wait_for(&self, promql: &str, want: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = f64::NAN;
        while Instant::now() < deadline {
            if let [(_, v)] = self.query(promql).await.as_slice() {
                last = *v;
                if (last - want).abs() < 1e-9 {
                    return last;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        last
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- Prometheus log ----\n{}", self.log());
        }
    }
}
