//! A rollout as the fleet service receives it: [`fleet_spec`] writes the spec that
//! a compiled fleet rollout carries to the service, which reads it back with
//! [`crate::rollout::compile_fleet_spec`].

use crate::raw::{Canary, Method, SCHEMA_VERSION};

/// The rollout of canary `c` on route `route` as the fleet service compiles it:
/// a meshguard config (JSON) of one route whose canary keeps what judging needs
/// (variant names and weights, revision, analysis, ramp, manual controls) and
/// nothing that routes requests. The service validates it with this crate's own
/// code ([`compile_fleet_spec`](crate::rollout::compile_fleet_spec)).
///
/// Written field by field rather than through serde: serialising the raw types
/// costs the Wasm module about 29 KB, and it must stay under 1 MiB. Only a
/// valid config's spec is ever used, so names need no escaping (their
/// characters are `A-Z a-z 0-9 _ -`) and numbers are finite; a test compiles
/// the spec back and compares.
pub fn fleet_spec(c: &Canary, route: &str) -> String {
    let mut w = Json {
        out: String::with_capacity(384),
        fresh: false,
    };
    w.raw(&format!(
        r#"{{"schemaVersion":{SCHEMA_VERSION},"routes":[{{"name":"{route}","canary":{{"variants":["#
    ));
    for (i, v) in c.variants.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        w.raw(&format!(
            r#"{sep}{{"name":"{}","weight":{}}}"#,
            v.name, v.weight
        ));
    }
    w.raw("]");
    w.string("revision", c.revision.as_deref());
    if let Some(a) = &c.analysis {
        w.open("analysis");
        w.value("shadow", Some(&a.shadow));
        w.value("alpha", shown(&a.alpha));
        w.value("minRequests", shown(&a.min_requests));
        w.value("slowCallMs", shown(&a.slow_call_ms));
        w.value("sequential", shown(&a.sequential));
        w.string("method", a.method.map(Method::name));
        w.value("horizonSeconds", shown(&a.horizon_seconds));
        if let Some(g) = &a.success_rate {
            w.open("successRate");
            w.value("min", Some(&g.min));
            w.value("intervalSeconds", shown(&g.interval_seconds));
            w.value("intervals", shown(&g.intervals));
            w.raw("}");
        }
        if let Some(g) = &a.z_test {
            w.open("zTest");
            w.value("z", shown(&g.z));
            w.value("intervalSeconds", shown(&g.interval_seconds));
            w.raw("}");
        }
        w.raw("}");
    }
    if let Some(r) = &c.ramp {
        let steps: Vec<String> = r.steps.iter().map(u32::to_string).collect();
        w.open("ramp");
        w.raw(&format!(r#""steps":[{}]"#, steps.join(",")));
        w.value("holdSeconds", shown(&r.hold_seconds));
        w.value("minRequests", shown(&r.min_requests));
        w.raw("}");
    }
    w.value("pause", Some(&c.pause));
    w.value("rollback", Some(&c.rollback));
    w.raw("}}]}");
    w.out
}

/// An optional field as [`Json::value`] takes it.
fn shown<T: std::fmt::Display>(v: &Option<T>) -> Option<&dyn std::fmt::Display> {
    v.as_ref().map(|v| v as &dyn std::fmt::Display)
}

/// A JSON document written by hand (see [`fleet_spec`]).
struct Json {
    out: String,
    /// An object was just opened: its first field takes no comma.
    fresh: bool,
}

impl Json {
    fn raw(&mut self, s: &str) {
        self.out.push_str(s);
        self.fresh = false;
    }
    fn key(&mut self, name: &str) {
        let sep = if self.fresh { "" } else { "," };
        self.raw(&format!(r#"{sep}"{name}":"#));
    }
    /// `"name":{`, its fields to follow.
    fn open(&mut self, name: &str) {
        self.key(name);
        self.raw("{");
        self.fresh = true;
    }
    /// `"name":value` when there is a value (a number or a boolean); `dyn`,
    /// so it is one function in the module, not one per type.
    fn value(&mut self, name: &str, v: Option<&dyn std::fmt::Display>) {
        if let Some(v) = v {
            self.key(name);
            self.raw(&v.to_string());
        }
    }
    fn string(&mut self, name: &str, v: Option<&str>) {
        if let Some(v) = v {
            self.key(name);
            self.raw(&format!(r#""{v}""#));
        }
    }
}
