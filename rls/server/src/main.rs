//! `meshguard-rls`: a rate limit server for Envoy's RLS API v3
//! (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`), so that a
//! fleet of Envoys (meshguard's global policies, or Envoy's own ratelimit filter)
//! shares one set of counters; and meshguard's fleet service
//! (`meshguard.fleet.v1.Fleet/Sync`, `fleet/`), so that a fleet judges each
//! canary as one.
//!
//! Counters are fixed windows in Redis (`--redis URL`: shared by any number of
//! these servers, each request's hits added by one atomic script) or in memory
//! (`--memory`). The limits file is described in `limits.rs`. Every answer carries
//! a status per descriptor: code, the tightest limit, hits remaining and the time
//! until its window resets, so clients can remember a rejection until then.
//!
//! Why not Kuadrant's limitador: its server is not on the registries, and its
//! library (0.11 to 0.14) does not build with Redis storage alone (its key code
//! names a module only compiled with its RocksDB storage), while RocksDB takes
//! more than 20 minutes to compile on this project's 2-core machines and needs
//! libclang. A fixed window in one Redis script is short and exact.
//!
//! ```text
//! meshguard-rls [--limits limits.yaml] (--redis redis://127.0.0.1:6379 | --memory)
//!               [--listen 127.0.0.1:8081] [--port-file PATH] [--delay-ms N]
//!               [--fleet-ttl-hours N]
//! ```
//! Without `--limits` every rate limit request is answered `OK`. `--delay-ms`
//! holds every answer (fault drills: a server slower than its clients'
//! timeout). `--fleet-ttl-hours` (default 168) is how long a rollout's fleet
//! record stays after its last write.

mod counters;
mod fleet;
mod limits;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use counters::{Charge, Counters};
use limits::LimitsFile;
use meshguard_rls_proto::fleet::fleet_server::FleetServer;
use meshguard_rls_proto::rate_limit_response::rate_limit::Unit;
use meshguard_rls_proto::rate_limit_response::{Code, DescriptorStatus, RateLimit};
use meshguard_rls_proto::rate_limit_service_server::{RateLimitService, RateLimitServiceServer};
use meshguard_rls_proto::{RateLimitRequest, RateLimitResponse};
use tonic::{Request, Response, Status};

/// Command-line options.
struct Options {
    limits: Option<String>,
    fleet_ttl: Duration,
    redis: Option<String>,
    listen: SocketAddr,
    port_file: Option<String>,
    delay: Duration,
}

const USAGE: &str = "usage: meshguard-rls [--limits FILE] (--redis URL | --memory) [--listen ADDR] [--port-file PATH] [--delay-ms N] [--fleet-ttl-hours N]";

fn options() -> Result<Options, String> {
    let mut o = Options {
        limits: None,
        fleet_ttl: Duration::from_secs(168 * 3_600),
        redis: None,
        listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
        port_file: None,
        delay: Duration::ZERO,
    };
    let mut memory = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--limits" => o.limits = Some(value("--limits")?),
            "--fleet-ttl-hours" => {
                let h: u64 = value("--fleet-ttl-hours")?
                    .parse()
                    .map_err(|e| format!("--fleet-ttl-hours: {e}"))?;
                if h == 0 {
                    return Err("--fleet-ttl-hours: must be at least 1".into());
                }
                o.fleet_ttl = Duration::from_secs(h.saturating_mul(3_600));
            }
            "--redis" => o.redis = Some(value("--redis")?),
            "--memory" => memory = true,
            "--listen" => {
                o.listen = value("--listen")?
                    .parse()
                    .map_err(|e| format!("--listen: {e}"))?
            }
            "--port-file" => o.port_file = Some(value("--port-file")?),
            "--delay-ms" => {
                let ms: u64 = value("--delay-ms")?
                    .parse()
                    .map_err(|e| format!("--delay-ms: {e}"))?;
                o.delay = Duration::from_millis(ms);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if o.redis.is_some() == memory {
        return Err("give exactly one of --redis, --memory".into());
    }
    Ok(o)
}

struct Service {
    limits: LimitsFile,
    counters: Counters,
    delay: Duration,
}

fn unit(seconds: u64) -> Unit {
    match seconds {
        1 => Unit::Second,
        60 => Unit::Minute,
        3_600 => Unit::Hour,
        86_400 => Unit::Day,
        _ => Unit::Unknown,
    }
}

#[tonic::async_trait]
impl RateLimitService for Service {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let req = request.into_inner();
        if req.domain.is_empty() {
            return Err(Status::invalid_argument("empty domain"));
        }
        let hits = u64::from(req.hits_addend.max(1));
        // Every (descriptor, limit) that applies, remembering which descriptor.
        let mut charges = Vec::new();
        let mut owners = Vec::new();
        if req.domain == self.limits.domain {
            for (d, desc) in req.descriptors.iter().enumerate() {
                let entries: Vec<(String, String)> = desc
                    .entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.clone()))
                    .collect();
                for limit in &self.limits.limits {
                    if let Some(key) = limit.counter(&req.domain, &entries) {
                        charges.push(Charge {
                            key,
                            max: u64::from(limit.requests),
                            window_ms: limit.window_s() * 1_000,
                        });
                        owners.push((d, limit));
                    }
                }
            }
        }
        let outcome = self
            .counters
            .charge(&charges, hits)
            .await
            .map_err(Status::unavailable)?;
        let code = if outcome.over {
            Code::OverLimit
        } else {
            Code::Ok
        };
        let mut statuses: Vec<DescriptorStatus> = req
            .descriptors
            .iter()
            .map(|_| DescriptorStatus {
                code: Code::Ok as i32,
                ..DescriptorStatus::default()
            })
            .collect();
        // Each descriptor's tightest counter speaks for it.
        for ((d, limit), counted) in owners.iter().zip(&outcome.counted) {
            let Some(s) = statuses.get_mut(*d) else {
                continue;
            };
            let tighter =
                s.current_limit.is_none() || u64::from(s.limit_remaining) > counted.remaining;
            if tighter {
                let over = outcome.over && counted.remaining < hits;
                s.code = if over || (outcome.over && s.code == Code::OverLimit as i32) {
                    Code::OverLimit as i32
                } else {
                    s.code
                };
                s.current_limit = Some(RateLimit {
                    requests_per_unit: limit.requests,
                    unit: unit(limit.window_s()) as i32,
                    name: limit.name.clone(),
                });
                s.limit_remaining = u32::try_from(counted.remaining).unwrap_or(u32::MAX);
                s.duration_until_reset = Some(prost_types::Duration {
                    seconds: i64::try_from(counted.reset_ms / 1_000).unwrap_or(i64::MAX),
                    nanos: i32::try_from(counted.reset_ms % 1_000 * 1_000_000).unwrap_or(0),
                });
            }
        }
        Ok(Response::new(RateLimitResponse {
            overall_code: code as i32,
            statuses,
            response_headers_to_add: Vec::new(),
            request_headers_to_add: Vec::new(),
        }))
    }
}

async fn run(o: Options) -> Result<(), String> {
    let limits = match &o.limits {
        Some(path) => limits::load(path)?,
        None => LimitsFile::default(),
    };
    let (counters, records) = match &o.redis {
        Some(url) => {
            let client =
                redis::Client::open(url.as_str()).map_err(|e| format!("redis {url}: {e}"))?;
            let conn = client
                .get_connection_manager()
                .await
                .map_err(|e| format!("redis {url}: {e}"))?;
            let records = fleet::store::RedisStore::new(client);
            (
                Counters::Redis(conn),
                fleet::store::Store::Redis(Box::new(records)),
            )
        }
        None => (
            Counters::Memory(Mutex::new(HashMap::new())),
            fleet::store::Store::Memory(Mutex::new(HashMap::new())),
        ),
    };
    let fleet = Arc::new(fleet::FleetService::new(records, o.fleet_ttl, o.delay));
    let listener = tokio::net::TcpListener::bind(o.listen)
        .await
        .map_err(|e| format!("listen {}: {e}", o.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    if let Some(p) = &o.port_file {
        std::fs::write(p, addr.port().to_string()).map_err(|e| format!("{p}: {e}"))?;
    }
    println!(
        "meshguard-rls: listening on {addr}, domain {:?}, {} limit(s)",
        limits.domain,
        limits.limits.len()
    );
    let service = Arc::new(Service {
        limits,
        counters,
        delay: o.delay,
    });
    tonic::transport::Server::builder()
        .add_service(RateLimitServiceServer::from_arc(service))
        .add_service(FleetServer::from_arc(fleet))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        )
        .await
        .map_err(|e| format!("serve: {e}"))
}

fn main() {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("meshguard-rls: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshguard-rls: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(o)) {
        eprintln!("meshguard-rls: {e}");
        std::process::exit(1);
    }
}
