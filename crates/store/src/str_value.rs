//! `StrValue`: the bytes of a string key.
//!
//! Most string values are short: counters, flags, lock tokens, small cached
//! fragments. Those are kept inline in the entry, so reading one touches no memory
//! beyond the entry the lookup already brought in, and writing one allocates
//! nothing. (A heap `Bytes` costs an allocation per write, and on every read a
//! reference-count update on a block the lookup did not touch: two cache misses per
//! GET on a large keyspace.) Longer values stay in shared `Bytes`, so a reply
//! references them instead of copying.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

/// Longest value stored inline: with the tag and length this fills the 40 bytes
/// the `Bytes` variant takes anyway, so `Value` does not grow.
pub const INLINE_CAP: usize = 38;

#[derive(Clone)]
pub enum StrValue {
    Inline { len: u8, buf: [u8; INLINE_CAP] },
    Shared(Bytes),
}

impl StrValue {
    /// A copy of `s` (inline when short; a fresh exact-size block otherwise, so a
    /// value never pins a larger buffer it was sliced from).
    pub fn copy_from_slice(s: &[u8]) -> Self {
        Self::inline(s).unwrap_or_else(|| StrValue::Shared(Bytes::copy_from_slice(s)))
    }

    fn inline(s: &[u8]) -> Option<Self> {
        (s.len() <= INLINE_CAP).then(|| {
            let mut buf = [0; INLINE_CAP];
            buf[..s.len()].copy_from_slice(s);
            StrValue::Inline {
                len: s.len() as u8,
                buf,
            }
        })
    }

    /// The decimal digits of `n` (INCR's result), always inline.
    pub fn from_i64(n: i64) -> Self {
        let mut digits = itoa::Buffer::new();
        StrValue::copy_from_slice(digits.format(n).as_bytes())
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            StrValue::Inline { len, buf } => &buf[..*len as usize],
            StrValue::Shared(b) => b,
        }
    }

    /// The value as `Bytes` for a reply or a log record: a reference for a shared
    /// value, a copy of an inline one.
    pub fn to_bytes(&self) -> Bytes {
        match self {
            StrValue::Inline { .. } => Bytes::copy_from_slice(self.as_slice()),
            StrValue::Shared(b) => b.clone(),
        }
    }
}

impl Default for StrValue {
    fn default() -> Self {
        StrValue::Inline {
            len: 0,
            buf: [0; INLINE_CAP],
        }
    }
}

/// Takes `b` as it is when long (no copy: callers pass buffers they built), inline
/// when short.
impl From<Bytes> for StrValue {
    fn from(b: Bytes) -> Self {
        Self::inline(&b).unwrap_or(StrValue::Shared(b))
    }
}

impl From<Vec<u8>> for StrValue {
    fn from(v: Vec<u8>) -> Self {
        Self::inline(&v).unwrap_or_else(|| StrValue::Shared(Bytes::from(v)))
    }
}

impl From<&[u8]> for StrValue {
    fn from(s: &[u8]) -> Self {
        StrValue::copy_from_slice(s)
    }
}

impl Deref for StrValue {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for StrValue {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

/// Equality is that of the content, whichever way it is stored.
impl PartialEq for StrValue {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for StrValue {}

impl fmt::Debug for StrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&Bytes::copy_from_slice(self.as_slice()), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_inline_and_long_ones_shared() {
        let short = StrValue::from(Bytes::from_static(b"12345"));
        assert!(matches!(short, StrValue::Inline { len: 5, .. }));
        assert_eq!(&short[..], b"12345");

        let edge = StrValue::copy_from_slice(&[7u8; INLINE_CAP]);
        assert!(matches!(edge, StrValue::Inline { .. }));
        let over = StrValue::copy_from_slice(&[7u8; INLINE_CAP + 1]);
        assert!(matches!(over, StrValue::Shared(_)));
        assert_eq!(over.len(), INLINE_CAP + 1);
    }

    #[test]
    fn a_long_value_is_referenced_not_copied() {
        let big = Bytes::from(vec![1u8; 1000]);
        let v = StrValue::from(big.clone());
        assert_eq!(v.to_bytes().as_ptr(), big.as_ptr());
    }

    #[test]
    fn equality_and_debug_follow_the_content() {
        let a = StrValue::from(Vec::from(&b"hello"[..]));
        let b = StrValue::Shared(Bytes::from_static(b"hello"));
        assert_eq!(a, b);
        assert_eq!(format!("{a:?}"), "b\"hello\"");
        assert_eq!(StrValue::default().len(), 0);
        assert_eq!(&StrValue::from_i64(i64::MIN)[..], b"-9223372036854775808");
    }

    #[test]
    fn value_keeps_its_size() {
        // The inline variant must not make every keyspace entry bigger.
        assert_eq!(std::mem::size_of::<StrValue>(), 40);
    }
}
