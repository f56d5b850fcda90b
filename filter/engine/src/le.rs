//! Reading little-endian integers out of stored shared-data values. Every read
//! is checked: a short or corrupt value gives `None`, never a panic.

/// The `u16` at byte `at`.
pub fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

/// The `u32` at byte `at`.
pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// The `u64` at byte `at`.
pub fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Reads a stored value front to back; every read is checked.
pub struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `b`.
    pub fn new(b: &'a [u8]) -> Self {
        Reader { b, at: 0 }
    }
    /// The next byte.
    pub fn u8(&mut self) -> Option<u8> {
        let v = *self.b.get(self.at)?;
        self.at += 1;
        Some(v)
    }
    /// The next `u16`.
    pub fn u16(&mut self) -> Option<u16> {
        let v = u16_at(self.b, self.at)?;
        self.at += 2;
        Some(v)
    }
    /// The next `u32`.
    pub fn u32(&mut self) -> Option<u32> {
        let v = u32_at(self.b, self.at)?;
        self.at += 4;
        Some(v)
    }
    /// The next `u64`.
    pub fn u64(&mut self) -> Option<u64> {
        let v = u64_at(self.b, self.at)?;
        self.at += 8;
        Some(v)
    }
    /// The next `len` bytes.
    pub fn bytes(&mut self, len: usize) -> Option<&'a [u8]> {
        let v = self.b.get(self.at..self.at.checked_add(len)?)?;
        self.at += len;
        Some(v)
    }
    /// Whether every byte was read.
    pub fn done(&self) -> bool {
        self.at == self.b.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn reads_are_checked() {
        let b = [1, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            (u16_at(&b, 0), u32_at(&b, 2), u64_at(&b, 6)),
            (Some(1), Some(2), Some(3))
        );
        assert_eq!(
            (u16_at(&b, 13), u32_at(&b, 11), u64_at(&b, 7)),
            (None, None, None)
        );
        assert_eq!(u64_at(&b, usize::MAX), None);
    }
}
