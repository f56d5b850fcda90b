//! TEST ONLY (feature `panic-drill`): panics on `x-meshguard-trap: 1`, so a test
//! shows that a panic stays inside the module (`integration-tests`, native).

use meshguard::host::Host;

/// Panics when the request asks for it.
#[allow(clippy::panic)] // the point of this build is to panic on demand
pub fn panic_on_demand(host: &impl Host) {
    if host
        .request_header("x-meshguard-trap")
        .ok()
        .flatten()
        .as_deref()
        == Some(b"1")
    {
        panic!("meshguard panic drill: panicking on request");
    }
}
