//! A real Envoy process for one test.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::bootstrap::Bootstrap;

/// How long Envoy may take to load the wasm and open its listeners.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long after a request its counts may take to reach Envoy: meshguard's
/// workers hand batched counters over on their 50 ms tick (`metrics.counters`);
/// two ticks and some scheduling slack.
pub const COUNTS_LAG: Duration = Duration::from_millis(120);

/// A running Envoy; killed (and its log printed if the test failed) on drop.
pub struct Envoy {
    child: Child,
    dir: tempfile::TempDir,
    /// The admin API address.
    pub admin: SocketAddr,
    /// Listener name → address.
    pub listeners: Vec<(String, SocketAddr)>,
}

fn command(config: &Path, dir: &Path, concurrency: u32, log: &Path) -> Command {
    let log_file = std::fs::File::create(log).expect("create envoy log file");
    let mut cmd = Command::new(crate::envoy_bin());
    cmd.arg("-c")
        .arg(config)
        .arg("--concurrency")
        .arg(concurrency.to_string())
        .arg("--disable-hot-restart")
        .arg("--admin-address-path")
        .arg(dir.join("admin.txt"))
        .arg("--log-level")
        .arg("info")
        .arg("--drain-time-s")
        .arg("0")
        // Access log files reach the disk within 100 ms (tests read them).
        .arg("--file-flush-interval-msec")
        .arg("100")
        .stdin(Stdio::null())
        .env(
            "ENVOY_DYNAMIC_MODULES_SEARCH_PATH",
            if crate::native() {
                crate::native_dir()
            } else {
                PathBuf::new()
            },
        )
        .stdout(log_file.try_clone().expect("clone log handle"))
        .stderr(log_file);
    // Envoy dies with the test process even if the test runner kills it hard.
    #[allow(unsafe_code)]
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd
}

/// The Wasm module the bootstrap names (none for the native build).
fn filter_code() -> PathBuf {
    if crate::native() {
        PathBuf::new()
    } else {
        crate::wasm_path()
    }
}

fn write_config(b: &Bootstrap, dir: &Path) -> PathBuf {
    let path = dir.join("envoy.json");
    let json = b.to_json(&filter_code(), dir);
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&json).expect("bootstrap JSON"),
    )
    .expect("write bootstrap");
    if b.dynamic {
        write_lds(b, dir);
    }
    path
}

/// Writes `lds.json` atomically (Envoy watches for the rename).
fn write_lds(b: &Bootstrap, dir: &Path) {
    let tmp = dir.join("lds.json.tmp");
    let json = b.lds_json(&filter_code());
    std::fs::write(&tmp, serde_json::to_vec_pretty(&json).expect("LDS JSON")).expect("write LDS");
    std::fs::rename(&tmp, dir.join("lds.json")).expect("move LDS into place");
}

impl Envoy {
    /// Starts Envoy with `bootstrap` and `--concurrency concurrency`, and waits until
    /// it is ready. Panics (printing Envoy's log) if it does not come up.
    pub fn start(bootstrap: &Bootstrap, concurrency: u32) -> Envoy {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = write_config(bootstrap, dir.path());
        Self::start_file(&config, dir, concurrency)
    }

    /// Starts Envoy with an existing config file (an `envoy/*.yaml` of the repo).
    pub fn start_file(config: &Path, dir: tempfile::TempDir, concurrency: u32) -> Envoy {
        let log = dir.path().join("envoy.log");
        let child = command(config, dir.path(), concurrency, &log)
            .current_dir(crate::repo_root())
            .spawn()
            .expect("spawn envoy");
        let mut envoy = Envoy {
            child,
            dir,
            admin: "127.0.0.1:0".parse().expect("placeholder address"),
            listeners: Vec::new(),
        };
        envoy.wait_ready();
        envoy
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let admin_file = self.dir.path().join("admin.txt");
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("Envoy exited during startup ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "Envoy not ready after {START_TIMEOUT:?}:\n{}",
                self.log()
            );
            if let Some(addr) = std::fs::read_to_string(&admin_file)
                .ok()
                .and_then(|s| s.trim().parse::<SocketAddr>().ok())
            {
                self.admin = addr;
                if self
                    .admin_get("/ready")
                    .is_ok_and(|(code, body)| code == 200 && body.trim() == "LIVE")
                {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.read_listeners();
    }

    /// Starts a config shipped in the repo (`envoy/NAME.yaml`) with its fixed ports
    /// replaced: each `(from, to)` pair rewrites `port_value: from`; every other
    /// `port_value` in `ports` gets a free port. Returns Envoy and the port map.
    pub fn start_repo_config(
        name: &str,
        upstreams: &[(u16, u16)],
        ports: &[u16],
        concurrency: u32,
    ) -> Envoy {
        let mut yaml = std::fs::read_to_string(crate::repo_root().join("envoy").join(name))
            .unwrap_or_else(|e| panic!("envoy/{name}: {e}"));
        let mut map: Vec<(u16, u16)> = upstreams.to_vec();
        for p in ports {
            let free = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            map.push((*p, free));
        }
        for (from, to) in &map {
            let before = yaml.clone();
            yaml = yaml.replace(
                &format!("port_value: {from} "),
                &format!("port_value: {to} "),
            );
            assert_ne!(before, yaml, "envoy/{name} has no port_value: {from}");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(name);
        std::fs::write(&path, yaml).expect("write config");
        Self::start_file(&path, dir, concurrency)
    }

    /// Runs Envoy with `bootstrap` expecting it to refuse the config and exit.
    /// Returns the exit status and the log. Panics if it is still running after `timeout`.
    pub fn run_expecting_exit(bootstrap: &Bootstrap, timeout: Duration) -> (ExitStatus, String) {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = write_config(bootstrap, dir.path());
        let log = dir.path().join("envoy.log");
        let mut child = command(&config, dir.path(), 1, &log)
            .spawn()
            .expect("spawn envoy");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("poll envoy") {
                return (status, std::fs::read_to_string(&log).unwrap_or_default());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "Envoy still running after {timeout:?}; it accepted the config:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Replaces the listener (and so the plugin config) of a `dynamic()` Envoy and
    /// waits until Envoy has applied it. Returns false if Envoy rejected it.
    pub fn reload(&mut self, b: &Bootstrap) -> bool {
        let stat = |e: &Envoy, n: &str| e.stat(&format!("listener_manager.lds.{n}")).unwrap_or(0);
        let (ok0, bad0) = (stat(self, "update_success"), stat(self, "update_rejected"));
        write_lds(b, self.dir.path());
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if stat(self, "update_rejected") > bad0 {
                return false;
            }
            if stat(self, "update_success") > ok0
                && self.stat("listener_manager.total_listeners_warming") == Some(0)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "LDS update not applied:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.read_listeners();
        true
    }

    /// Reads the listeners' real addresses (they bind port 0) from the admin API.
    fn read_listeners(&mut self) {
        self.listeners.clear();
        let (_, body) = self
            .admin_get("/listeners?format=json")
            .expect("list listeners");
        let v: serde_json::Value = serde_json::from_str(&body).expect("listeners JSON");
        for l in v["listener_statuses"].as_array().into_iter().flatten() {
            let sa = &l["local_address"]["socket_address"];
            let addr = format!(
                "{}:{}",
                sa["address"].as_str().unwrap_or(""),
                sa["port_value"]
            );
            if let (Some(name), Ok(addr)) = (l["name"].as_str(), addr.parse()) {
                self.listeners.push((name.to_string(), addr));
            }
        }
    }

    /// Address of listener `name`.
    pub fn listener(&self, name: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no listener {name:?}; have {:?}", self.listeners))
    }

    /// `http://<listener main><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.listener("main"), path)
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    /// GET on the admin API: status code and body.
    pub fn admin_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        crate::http_get(self.admin, path)
    }

    /// A counter or gauge from `/stats` by exact name, if Envoy has it, read after
    /// [`COUNTS_LAG`] (meshguard hands its counters to Envoy on each worker's tick).
    pub fn stat(&self, name: &str) -> Option<u64> {
        std::thread::sleep(COUNTS_LAG);
        self.stat_now(name)
    }

    /// A counter or gauge as Envoy has it at this moment.
    pub fn stat_now(&self, name: &str) -> Option<u64> {
        // The Wasm build's `wasmcustom.meshguard.<metric>.<labels>` is the native
        // build's `dynamicmodulescustom.meshguard_<metric>.<labels>`.
        let native_name;
        let name = match name.strip_prefix("wasmcustom.meshguard.") {
            Some(rest) if crate::native() => {
                native_name = format!("dynamicmodulescustom.meshguard_{rest}");
                native_name.as_str()
            }
            _ => name,
        };
        let (_, body) = self
            .admin_get(&format!("/stats?filter=^{}$", name.replace('.', "\\.")))
            .ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
    }

    /// `/stats/prometheus`, read after [`COUNTS_LAG`].
    pub fn scrape(&self) -> String {
        std::thread::sleep(COUNTS_LAG);
        let body = self
            .admin_get("/stats/prometheus")
            .map(|(_, body)| body)
            .unwrap_or_default();
        if crate::native() {
            // What the shipped scrape config's `metric_relabel_configs` does: the
            // native build's series get the Wasm build's names.
            body.replace("envoy_dynamicmodulescustom_meshguard_", "meshguard_")
        } else {
            body
        }
    }

    /// Connections worker `w` of the listener `main` accepted so far.
    pub fn worker_connections(&self, w: u32) -> u64 {
        let (_, body) = self
            .admin_get(&format!("/stats?filter=worker_{w}\\.downstream_cx_total$"))
            .unwrap_or_default();
        body.lines()
            .filter(|l| l.starts_with("listener.127.0.0.1_"))
            .filter_map(|l| l.rsplit(": ").next()?.trim().parse::<u64>().ok())
            .sum()
    }

    /// Lines of Envoy's log that show a VM trap, a Rust panic or a failed plugin call.
    pub fn wasm_failures(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| {
                l.contains("panicked at")
                    || l.contains("caught at the module boundary")
                    || l.contains("wasm trap")
                    || l.contains("[critical][wasm]")
                    // Envoy's own "[wasm] ... failed" lines; not meshguard's logs,
                    // which may say a host call failed and what it did instead.
                    || (l.contains("[wasm]") && l.contains("failed") && !l.contains(" wasm log "))
            })
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- Envoy log ({}) ----\n{}\n---- end of Envoy log ----",
                self.dir.path().display(),
                self.log()
            );
        }
    }
}
