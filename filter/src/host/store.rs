//! Proxy-wasm shared data as the engine's compare-and-swap store.

use meshguard_engine::{SharedStore, StoreError};

use super::Host;

/// A [`Host`]'s shared data, as a [`SharedStore`].
pub struct HostStore<'h, H: Host>(pub &'h H);

impl<H: Host> SharedStore for HostStore<'_, H> {
    fn get(&mut self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        self.0
            .shared_get(key)
            .map_err(|e| StoreError::Host(e.to_string()))
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match self.0.shared_set(key, value, cas) {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::CasMismatch),
            Err(e) => Err(StoreError::Host(e.to_string())),
        }
    }

    fn creates_atomically(&self) -> bool {
        self.0.shared_creates_atomically()
    }
}
