//! Where the book (`docs/src`) explains a config field: the CLI points each
//! problem it prints to the page about it.

/// The book page (a path from the repository's root) that explains the field at
/// `path` (`routes[0].canary.analysis.alpha`).
pub fn page_of(path: &str) -> &'static str {
    // Brackets and indices do not matter: `routes[2].canary` reads `routes.canary`.
    let mut plain = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => in_index = true,
            ']' => in_index = false,
            c if !in_index => plain.push(c),
            _ => {}
        }
    }
    let has = |part: &str| plain.split('.').any(|p| p == part);
    if has("fleet") || has("fleetService") {
        "docs/src/fleet.md"
    } else if has("analysis") || has("ramp") || has("revision") || has("pause") || has("rollback") {
        "docs/src/canary-analysis.md"
    } else if has("canary") {
        "docs/src/canary-routing.md"
    } else if has("global") || has("rateLimitService") {
        "docs/src/global-limits.md"
    } else if has("rateLimits") {
        "docs/src/rate-limits.md"
    } else if has("breaker") {
        "docs/src/circuit-breaking.md"
    } else if has("explain") {
        "docs/src/explanations.md"
    } else if has("metrics") || has("latency") {
        "docs/src/metrics.md"
    } else if has("protocol") {
        "docs/src/protocols.md"
    } else {
        "docs/src/configuration.md"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_field_points_to_the_page_about_its_feature() {
        for (path, page) in [
            ("routes[0].canary.analysis.alpha", "canary-analysis"),
            ("routes[3].canary.ramp.steps[1]", "canary-analysis"),
            ("routes[0].canary.fleet.whileUnreachable", "fleet"),
            ("fleetService.syncMs", "fleet"),
            ("routes[0].canary.variants", "canary-routing"),
            ("rateLimits[0].limit.burst", "rate-limits"),
            ("routes[1].rateLimits[0].global.lease.hits", "global-limits"),
            ("rateLimitService.timeoutMs", "global-limits"),
            ("routes[0].breaker.window.calls", "circuit-breaking"),
            ("explain.statusPath", "explanations"),
            ("metrics.unmatched", "metrics"),
            ("routes[0].protocol", "protocols"),
            ("routes[0].match.pathPrefix", "configuration"),
            ("(root)", "configuration"),
        ] {
            assert_eq!(page_of(path), format!("docs/src/{page}.md"), "{path}");
        }
    }

    #[test]
    fn every_page_it_names_exists() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for path in [
            "fleetService",
            "routes.canary.analysis",
            "routes.canary",
            "rateLimitService",
            "rateLimits",
            "routes.breaker",
            "explain",
            "metrics",
            "routes.protocol",
            "routes",
        ] {
            let page = page_of(path);
            assert!(root.join(page).exists(), "{page}");
        }
    }
}
