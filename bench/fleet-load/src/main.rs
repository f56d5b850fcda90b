//! `meshguard-fleet-load`: simulated Envoys syncing with the fleet service, as
//! `make bench BENCH_ARGS=--fleet` runs it. Each Envoy is a task that sends
//! one rollout's batch every interval (its own id and sequence numbers, a
//! batch sent again until acknowledged, as a real Envoy does) over a few
//! shared HTTP/2 connections, and times each call.
//!
//! ```text
//! meshguard-fleet-load --target 127.0.0.1:8081[,127.0.0.1:8082] --envoys 1000
//!                      [--interval-ms 250] [--seconds 10] [--connections 8]
//! ```
//! Prints one JSON line: calls, errors, batches folded, calls per second,
//! latency p50 / p99 / max in ms.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meshguard_rls_proto::fleet::fleet_client::FleetClient;
use meshguard_rls_proto::fleet::{Counts, RolloutSync, SyncRequest};
use tokio::sync::Mutex;
use tonic::transport::{Channel, Endpoint};

struct Options {
    targets: Vec<String>,
    envoys: u64,
    interval: Duration,
    seconds: u64,
    connections: usize,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        targets: Vec::new(),
        envoys: 100,
        interval: Duration::from_millis(250),
        seconds: 10,
        connections: 8,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| e.to_string());
        match a.as_str() {
            "--target" => o.targets = value()?.split(',').map(str::to_owned).collect(),
            "--envoys" => o.envoys = num(value()?)?,
            "--interval-ms" => o.interval = Duration::from_millis(num(value()?)?),
            "--seconds" => o.seconds = num(value()?)?,
            "--connections" => o.connections = usize::try_from(num(value()?)?).unwrap_or(1).max(1),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if o.targets.is_empty() {
        return Err("give --target host:port[,host:port]".into());
    }
    Ok(o)
}

/// The spec a real Envoy would send for a 5% canary with the default analysis.
fn spec() -> Result<(String, String), String> {
    let json = r#"{"schemaVersion":1,"fleetService":{"cluster":"fleet"},"routes":[{"name":"bench",
        "canary":{"variants":[{"name":"stable","weight":9500},{"name":"canary","weight":500}],
        "revision":"bench","analysis":{"minRequests":1000000},"fleet":{}}}]}"#;
    let config = meshguard_config::load_json(json.as_bytes()).map_err(|e| format!("{e:?}"))?;
    let fleet = config
        .routes
        .first()
        .and_then(|r| r.canary.as_ref())
        .and_then(|c| c.rollout.as_ref())
        .and_then(|r| r.fleet.clone())
        .ok_or("no fleet rollout")?;
    Ok((fleet.key, fleet.spec))
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    errors: u64,
    folded: u64,
}

/// A salt for this run's Envoy ids: each run's Envoys are new ones (their
/// sequence numbers start at 1 again), not a previous run's replayed.
fn salt() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(1))
}

async fn envoy(
    id: u64,
    salt: u64,
    client: FleetClient<Channel>,
    o: Arc<Options>,
    key: Arc<(String, String)>,
    end: Instant,
    tally: Arc<Mutex<Tally>>,
) {
    let mut client = client;
    // Spread the Envoys' phases over the interval, as real ones are.
    let phase = o.interval.mul_f64((id % 997) as f64 / 997.0);
    tokio::time::sleep(phase).await;
    let mut tick = tokio::time::interval(o.interval);
    let (mut seq, mut acked) = (1u64, 0u64);
    let (mut lat, mut errors, mut folded) = (Vec::new(), 0u64, 0u64);
    while Instant::now() < end {
        tick.tick().await;
        let batch = RolloutSync {
            key: key.0.clone(),
            envoy: (id ^ salt).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            spec: key.1.clone(),
            seq,
            counts: vec![
                Counts {
                    requests: 237,
                    errors: 0,
                    slow: 0,
                },
                Counts {
                    requests: 13,
                    errors: 0,
                    slow: 0,
                },
            ],
            local_verdicts: Vec::new(),
        };
        let request = SyncRequest {
            envoy_name: format!("load-{id}"),
            rollouts: vec![batch],
        };
        let t0 = Instant::now();
        let mut call = tonic::Request::new(request);
        call.set_timeout(Duration::from_millis(1_000));
        match client.sync(call).await {
            Ok(answer) => {
                lat.push(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX));
                let state = answer.into_inner().rollouts.into_iter().next();
                match state {
                    Some(s) if s.error.is_empty() && s.acked_seq >= seq => {
                        if s.acked_seq > acked {
                            folded += 1;
                            acked = s.acked_seq;
                        }
                        seq += 1;
                    }
                    _ => errors += 1,
                }
            }
            Err(_) => errors += 1,
        }
    }
    let mut t = tally.lock().await;
    t.latencies_us.extend(lat);
    t.errors += errors;
    t.folded += folded;
}

fn quantile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted.get(i).copied().unwrap_or(0) as f64 / 1_000.0
}

async fn run(o: Options) -> Result<(), String> {
    let o = Arc::new(o);
    let key = Arc::new(spec()?);
    let mut clients = Vec::new();
    for i in 0..o.connections {
        let target = o.targets.get(i % o.targets.len()).ok_or("no target")?;
        let channel = Endpoint::from_shared(format!("http://{target}"))
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("{target}: {e}"))?;
        clients.push(FleetClient::new(channel));
    }
    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = Instant::now();
    let end = start + Duration::from_secs(o.seconds);
    let salt = salt();
    let mut tasks = Vec::new();
    for id in 0..o.envoys {
        let client = clients
            .get(usize::try_from(id).unwrap_or(0) % clients.len())
            .cloned()
            .ok_or("no client")?;
        tasks.push(tokio::spawn(envoy(
            id,
            salt,
            client,
            o.clone(),
            key.clone(),
            end,
            tally.clone(),
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut t = tally.lock().await;
    t.latencies_us.sort_unstable();
    let calls = t.latencies_us.len() as u64 + t.errors;
    println!(
        "{{\"envoys\":{},\"interval_ms\":{},\"seconds\":{:.1},\"calls\":{},\"errors\":{},\"folded\":{},\"calls_per_s\":{:.0},\"folds_per_s\":{:.0},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2}}}",
        o.envoys,
        o.interval.as_millis(),
        elapsed,
        calls,
        t.errors,
        t.folded,
        calls as f64 / elapsed,
        t.folded as f64 / elapsed,
        quantile(&t.latencies_us, 0.5),
        quantile(&t.latencies_us, 0.99),
        quantile(&t.latencies_us, 1.0),
    );
    Ok(())
}

fn main() {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("meshguard-fleet-load: {e}");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshguard-fleet-load: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(o)) {
        eprintln!("meshguard-fleet-load: {e}");
        std::process::exit(1);
    }
}
