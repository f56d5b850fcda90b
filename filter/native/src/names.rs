//! Metric names as the glue defines them (`meshguard.<family>.<label>.<value>…`,
//! see `meshguard_engine::metrics`), split back into a family and its labels, so
//! the native build can define real labelled metrics where the Wasm build relies
//! on Envoy's `stats_tags` to cut the same name apart.

/// A metric name split into its family (`meshguard_requests_total`) and its
/// `(label, value)` pairs, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split<'a> {
    /// The family as Prometheus shows it in the Wasm build: `meshguard_` and
    /// the metric. Envoy keeps it in its dynamic-module namespace
    /// (`dynamicmodulescustom.meshguard_requests_total`; Prometheus:
    /// `envoy_dynamicmodulescustom_meshguard_requests_total`, which the shipped
    /// scrape config renames back).
    pub family: String,
    /// Label names, in the order of the name.
    pub labels: Vec<&'a str>,
    /// Label values, one per name.
    pub values: Vec<&'a str>,
}

/// Splits `meshguard.<metric>(.<label>.<value>)*`; `None` for any other shape
/// (the glue defines no other name).
pub fn split(name: &str) -> Option<Split<'_>> {
    let mut parts = name.split('.');
    if parts.next()? != "meshguard" {
        return None;
    }
    let metric = parts.next().filter(|m| !m.is_empty())?;
    let mut labels = Vec::new();
    let mut values = Vec::new();
    while let Some(label) = parts.next() {
        let value = parts.next()?;
        if label.is_empty() || value.is_empty() {
            return None;
        }
        labels.push(label);
        values.push(value);
    }
    Some(Split {
        family: format!("meshguard_{metric}"),
        labels,
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshguard_engine::metrics::{requests_in_flight, requests_total, CodeClass};

    #[test]
    fn a_red_name_splits_into_its_family_and_labels() {
        let name = requests_total("web", "canary", CodeClass::of(503));
        let s = split(&name);
        assert_eq!(
            s,
            Some(Split {
                family: "meshguard_requests_total".into(),
                labels: vec!["route", "variant", "code_class"],
                values: vec!["web", "canary", "5xx"],
            })
        );
        let g = requests_in_flight("web");
        assert_eq!(split(&g).map(|s| s.labels), Some(vec!["route"]));
    }

    #[test]
    fn other_shapes_are_refused() {
        for bad in [
            "",
            "envoy.x",
            "meshguard",
            "meshguard.",
            "meshguard.m.route",
            "meshguard.m.route.",
            "meshguard.m..x",
        ] {
            assert_eq!(split(bad), None, "{bad:?}");
        }
        assert_eq!(
            split("meshguard.m").map(|s| (s.family, s.labels.len())),
            Some(("meshguard_m".into(), 0))
        );
    }
}
