//! `SmallBytes`: an immutable byte string for keys and collection members.
//!
//! Keys and members are mostly short ("user:1234", "member:42"), so they are kept
//! inline in the 24 bytes the value takes anyway, with no heap block of their own;
//! longer ones take one exact-size `Box<[u8]>`. `Bytes` costs 32 bytes inline plus
//! a heap block for every string, which dominated the memory of big keyspaces.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

/// Longest string stored inline (fills the enum to 24 bytes).
pub const INLINE_CAP: usize = 22;

#[derive(Clone)]
pub enum SmallBytes {
    Inline { len: u8, buf: [u8; INLINE_CAP] },
    Heap(Box<[u8]>),
}

impl SmallBytes {
    pub const fn new() -> Self {
        SmallBytes::Inline {
            len: 0,
            buf: [0; INLINE_CAP],
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            SmallBytes::Inline { len, buf } => &buf[..*len as usize],
            SmallBytes::Heap(b) => b,
        }
    }

    /// Heap bytes held beyond the inline part (for MEMORY USAGE estimates).
    pub fn heap_size(&self) -> usize {
        match self {
            SmallBytes::Inline { .. } => 0,
            SmallBytes::Heap(b) => b.len(),
        }
    }

    /// An owned `Bytes` copy, for replies and APIs that keep `Bytes`.
    pub fn to_bytes(&self) -> bytes::Bytes {
        bytes::Bytes::copy_from_slice(self.as_slice())
    }
}

impl Default for SmallBytes {
    fn default() -> Self {
        SmallBytes::new()
    }
}

impl From<&[u8]> for SmallBytes {
    fn from(s: &[u8]) -> Self {
        if s.len() <= INLINE_CAP {
            let mut buf = [0; INLINE_CAP];
            buf[..s.len()].copy_from_slice(s);
            SmallBytes::Inline {
                len: s.len() as u8,
                buf,
            }
        } else {
            SmallBytes::Heap(s.into())
        }
    }
}

impl From<&bytes::Bytes> for SmallBytes {
    fn from(b: &bytes::Bytes) -> Self {
        SmallBytes::from(&b[..])
    }
}

impl From<bytes::Bytes> for SmallBytes {
    fn from(b: bytes::Bytes) -> Self {
        SmallBytes::from(&b[..])
    }
}

impl From<&str> for SmallBytes {
    fn from(s: &str) -> Self {
        SmallBytes::from(s.as_bytes())
    }
}

impl Deref for SmallBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for SmallBytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Borrow<[u8]> for SmallBytes {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

/// Equality, order and hash are those of the byte content, as `Borrow` requires.
impl PartialEq for SmallBytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for SmallBytes {}

impl PartialEq<[u8]> for SmallBytes {
    fn eq(&self, other: &[u8]) -> bool {
        self.as_slice() == other
    }
}

impl PartialOrd for SmallBytes {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SmallBytes {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl Hash for SmallBytes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state)
    }
}

impl fmt::Debug for SmallBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&bytes::Bytes::copy_from_slice(self.as_slice()), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_is_three_words() {
        assert_eq!(std::mem::size_of::<SmallBytes>(), 24);
    }

    #[test]
    fn inline_and_heap_round_trip() {
        for n in [0, 1, INLINE_CAP - 1, INLINE_CAP, INLINE_CAP + 1, 1000] {
            let v: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let s = SmallBytes::from(&v[..]);
            assert_eq!(&s[..], &v[..]);
            assert_eq!(s.heap_size(), if n <= INLINE_CAP { 0 } else { n });
            assert_eq!(s.clone(), s);
            assert_eq!(s.to_bytes(), bytes::Bytes::from(v.clone()));
        }
    }

    #[test]
    fn hash_and_order_follow_content() {
        let h = ahash::RandomState::with_seeds(1, 2, 3, 4);
        let a = SmallBytes::from(&b"abc"[..]);
        assert_eq!(h.hash_one(&a), h.hash_one(&b"abc"[..]));
        let long = [b'z'; 40];
        let long_small = SmallBytes::from(&long[..]);
        assert!(a < long_small);
        assert!(SmallBytes::new() < a);
        assert_eq!(
            h.hash_one(SmallBytes::from(&long[..])),
            h.hash_one(&long[..])
        );
    }
}
