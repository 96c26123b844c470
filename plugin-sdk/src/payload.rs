//! [`Payload`]: share bytes a backend passes along without holding them.
//!
//! Against `marsh:plugin@0.2.0` the bytes of a `write` arrive as a payload the host holds, and
//! a `read` answers with one; handing a payload to [`crate::Store::write_payload_at`],
//! [`crate::Store::put_payload`] or [`crate::Upload::append_payload`], or answering a read with
//! one from [`crate::Store::get_range_payload`], moves the bytes between the request and the
//! store without copying them into the plugin's memory. A payload can also hold bytes the
//! plugin has itself (built with `From<Vec<u8>>`): that is what it is natively, in unit tests,
//! and in a build against 0.1.0 (the SDK's `abi-0-1` feature), where the same code runs with
//! the bytes in plugin memory.

use std::fmt;

/// Bytes of a share, held by the host or by the plugin.
pub struct Payload {
    pub(crate) inner: PayloadInner,
}

pub(crate) enum PayloadInner {
    /// Bytes in the plugin's own memory.
    Bytes(Vec<u8>),
    /// Bytes the host holds.
    #[cfg(all(target_arch = "wasm32", not(feature = "abi-0-1")))]
    Host(crate::__private::imports::WasmPayload),
}

impl Payload {
    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        match &self.inner {
            PayloadInner::Bytes(b) => b.len() as u64,
            #[cfg(all(target_arch = "wasm32", not(feature = "abi-0-1")))]
            PayloadInner::Host(h) => h.len(),
        }
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of up to `len` bytes from `offset`, short at the end.
    pub fn read(&self, offset: u64, len: u64) -> Vec<u8> {
        match &self.inner {
            PayloadInner::Bytes(b) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(b.len());
                let end = start.saturating_add(usize::try_from(len).unwrap_or(usize::MAX)).min(b.len());
                b[start..end].to_vec()
            }
            #[cfg(all(target_arch = "wasm32", not(feature = "abi-0-1")))]
            PayloadInner::Host(h) => h.read(offset, len),
        }
    }

    /// All its bytes, in the plugin's memory (a copy when the host holds them).
    pub fn into_vec(self) -> Vec<u8> {
        match self.inner {
            PayloadInner::Bytes(b) => b,
            #[cfg(all(target_arch = "wasm32", not(feature = "abi-0-1")))]
            PayloadInner::Host(h) => h.to_vec(),
        }
    }
}

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Self {
        Payload { inner: PayloadInner::Bytes(bytes) }
    }
}

impl From<&[u8]> for Payload {
    fn from(bytes: &[u8]) -> Self {
        Payload::from(bytes.to_vec())
    }
}

impl<const N: usize> From<&[u8; N]> for Payload {
    fn from(bytes: &[u8; N]) -> Self {
        Payload::from(bytes.to_vec())
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            PayloadInner::Bytes(b) => write!(f, "Payload({} bytes in the plugin)", b.len()),
            #[cfg(all(target_arch = "wasm32", not(feature = "abi-0-1")))]
            PayloadInner::Host(h) => write!(f, "Payload({} bytes held by the host)", h.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_of_plugin_bytes_reads_like_a_slice() {
        let p = Payload::from(b"abcdef");
        assert_eq!(p.len(), 6);
        assert_eq!(p.read(2, 3), b"cde");
        assert_eq!(p.read(4, 100), b"ef", "short at the end");
        assert_eq!(p.read(100, 1), b"", "past the end");
        assert_eq!(p.read(u64::MAX, u64::MAX), b"");
        assert_eq!(p.into_vec(), b"abcdef");
        assert!(Payload::from(Vec::new()).is_empty());
    }
}
