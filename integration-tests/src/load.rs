//! Many requests at bounded concurrency, over a pool of keep-alive connections
//! (Envoy spreads connections over its workers, so both workers see traffic).

use std::sync::Arc;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

/// One request to send: path and headers.
#[derive(Debug, Clone)]
pub struct Req {
    /// Path and query.
    pub path: String,
    /// Headers (raw bytes allowed).
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Req {
    /// A GET of `path` with no extra headers.
    pub fn get(path: &str) -> Req {
        Req {
            path: path.to_string(),
            headers: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Req {
        self.headers
            .push((name.to_string(), value.as_ref().to_vec()));
        self
    }
}

/// What came back.
#[derive(Debug, Clone)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Response headers (lowercase names, lossy values).
    pub headers: Vec<(String, String)>,
    /// Body as text.
    pub body: String,
}

impl Resp {
    /// First value of response header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A client with a connection pool of up to `connections` idle connections.
pub fn client(connections: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .expect("reqwest client")
}

/// A client on one keep-alive connection from source address `from` (any
/// 127.0.0.0/8 address works on Linux loopback).
pub fn client_from(from: std::net::IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .local_address(from)
        .build()
        .expect("reqwest client")
}

/// Sends one request.
pub async fn send(client: &reqwest::Client, base: &str, req: &Req) -> Resp {
    let mut map = HeaderMap::new();
    for (k, v) in &req.headers {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            HeaderValue::from_bytes(v).expect("header value"),
        );
    }
    let r = client
        .get(format!("{base}{}", req.path))
        .headers(map)
        .send()
        .await
        .expect("request through Envoy");
    let status = r.status().as_u16();
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = r.text().await.expect("response body");
    Resp {
        status,
        headers,
        body,
    }
}

/// Sends every request with at most `concurrency` in flight; answers in input order.
pub async fn send_all(base: &str, reqs: Vec<Req>, concurrency: usize) -> Vec<Resp> {
    let client = client(concurrency);
    let base = Arc::new(base.to_string());
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(reqs.len());
    for req in reqs {
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        let (client, base) = (client.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let r = send(&client, &base, &req).await;
            drop(permit);
            r
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    out
}
