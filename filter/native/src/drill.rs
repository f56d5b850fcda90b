//! TEST ONLY (feature `panic-drill`): panics on `x-meshguard-trap`, so a test
//! shows that a panic stays inside the module (`integration-tests`, native).

use meshguard_core::host::HttpStream;

/// Panics when the request asks for it: `x-meshguard-trap: 1` in the request
/// hook, `x-meshguard-trap: body` in the request-body hook (after the decision,
/// the request already on its way upstream), `x-meshguard-trap: response` in
/// the response hook (after the decision, with a concurrency slot held).
#[allow(clippy::panic)] // the point of this build is to panic on demand
pub fn panic_on_demand(host: &impl HttpStream, stage: &[u8]) {
    if host
        .request_header("x-meshguard-trap")
        .ok()
        .flatten()
        .as_deref()
        == Some(stage)
    {
        panic!(
            "meshguard panic drill: panicking at stage {}",
            String::from_utf8_lossy(stage)
        );
    }
}
