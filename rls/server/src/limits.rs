//! The limits file: which descriptors a limit applies to, what keys its counter,
//! and its fixed window.
//!
//! ```yaml
//! domain: meshguard              # the RLS domain these limits answer
//! limits:
//!   - name: api-per-key          # a name for logs and the answer
//!     match: { route: api }      # entries that must be present with these values
//!     key: [api_key]             # entries whose values make the counter (none: one counter)
//!     requests: 100              # per window
//!     per: second                # second | minute | hour | day
//! ```
//!
//! A descriptor is counted by every limit whose `match` entries it carries with
//! those values and whose `key` entries it carries at all; it is over the limit
//! when any of them is.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// The RLS domain; requests for another domain are answered `OK`.
    pub domain: String,
    /// The limits.
    pub limits: Vec<Limit>,
}

/// One limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Its name.
    pub name: String,
    /// Entries the descriptor must carry, with these values.
    #[serde(default, rename = "match")]
    pub matches: BTreeMap<String, String>,
    /// Entries whose values key the counter.
    #[serde(default)]
    pub key: Vec<String>,
    /// Requests per window.
    pub requests: u32,
    /// The window: `second`, `minute`, `hour` or `day`.
    pub per: String,
}

impl Limit {
    /// The window in seconds.
    pub fn window_s(&self) -> u64 {
        match self.per.as_str() {
            "minute" => 60,
            "hour" => 3_600,
            "day" => 86_400,
            _ => 1,
        }
    }

    /// The counter for a descriptor's entries, if the limit applies to them.
    pub fn counter(&self, domain: &str, entries: &[(String, String)]) -> Option<String> {
        let get = |k: &str| entries.iter().find(|(key, _)| key == k).map(|(_, v)| v);
        let applies = self
            .matches
            .iter()
            .all(|(k, v)| get(k).is_some_and(|got| got == v));
        if !applies {
            return None;
        }
        let mut parts = vec![
            domain.len().to_string(),
            domain.to_string(),
            self.name.clone(),
        ];
        for k in &self.key {
            let v = get(k)?;
            parts.push(v.len().to_string());
            parts.push(v.clone());
        }
        Some(format!("mgrls:{}", parts.join(":")))
    }
}

/// Reads and checks the file.
pub fn load(path: &str) -> Result<LimitsFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let f: LimitsFile = serde_yaml_ng::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    for (i, l) in f.limits.iter().enumerate() {
        if l.requests == 0 {
            return Err(format!("{path}: limits[{i}].requests: must be at least 1"));
        }
        if !["second", "minute", "hour", "day"].contains(&l.per.as_str()) {
            return Err(format!(
                "{path}: limits[{i}].per: must be second, minute, hour or day, got {:?}",
                l.per
            ));
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(yaml: &str) -> Limit {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn a_limit_counts_the_descriptors_it_matches_by_their_key_entries() {
        let l = limit("{name: api, match: {route: api}, key: [api_key], requests: 5, per: minute}");
        let e = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let a = l.counter("d", &e(&[("route", "api"), ("api_key", "k1")]));
        let b = l.counter("d", &e(&[("api_key", "k2"), ("route", "api")]));
        assert!(a.is_some() && b.is_some() && a != b);
        assert_eq!(
            l.counter("d", &e(&[("route", "web"), ("api_key", "k1")])),
            None
        );
        assert_eq!(
            l.counter("d", &e(&[("route", "api")])),
            None,
            "key entry missing"
        );
        assert_ne!(
            a,
            l.counter("other", &e(&[("route", "api"), ("api_key", "k1")]))
        );
        assert_eq!(l.window_s(), 60);
        // Values cannot run together.
        let two = limit("{name: n, key: [a, b], requests: 1, per: second}");
        assert_ne!(
            two.counter("d", &e(&[("a", "x:1"), ("b", "y")])),
            two.counter("d", &e(&[("a", "x"), ("b", "1:y")]))
        );
    }
}
