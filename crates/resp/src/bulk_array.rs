//! An array of bulk strings kept in its wire form.
//!
//! Range reads (ZRANGE and friends) answer with many short strings. As `Reply::Array`
//! of `Reply::Bulk`s each one costs a heap block, a `Reply` and a free after encoding;
//! here they are appended to one buffer as RESP bulk strings (`$3\r\nfoo\r\n`), which
//! encoding copies out in one go, as Redis writes straight into its reply buffer.
//! Bulk strings are written alike in RESP2 and RESP3, so the body suits either.

/// See the module docs. Built only through [`BulkArray::push`], so the body is always
/// a well-formed run of bulk strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BulkArray {
    len: usize,
    wire: Vec<u8>,
}

impl BulkArray {
    /// Room for `elements` strings of `payload` bytes in all, to grow once at most.
    pub fn with_capacity(elements: usize, payload: usize) -> Self {
        // `$`, up to 4 length digits and two CRLFs per element covers the usual case.
        BulkArray {
            len: 0,
            wire: Vec::with_capacity(payload + elements * 9),
        }
    }

    pub fn push(&mut self, element: &[u8]) {
        let mut digits = itoa::Buffer::new();
        let len = digits.format(element.len()).as_bytes();
        self.wire.reserve(element.len() + len.len() + 5);
        self.wire.push(b'$');
        self.wire.extend_from_slice(len);
        self.wire.extend_from_slice(b"\r\n");
        self.wire.extend_from_slice(element);
        self.wire.extend_from_slice(b"\r\n");
        self.len += 1;
    }

    /// Number of strings.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The strings, in order.
    pub fn iter(&self) -> BulkArrayIter<'_> {
        BulkArrayIter { rest: &self.wire }
    }

    /// The elements' wire form, without the array header.
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }
}

/// Walks a [`BulkArray`]'s body string by string.
pub struct BulkArrayIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for BulkArrayIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let header_end = self.rest.iter().position(|&b| b == b'\r')?;
        let len: usize = std::str::from_utf8(self.rest.get(1..header_end)?)
            .ok()?
            .parse()
            .ok()?;
        let start = header_end + 2;
        let element = self.rest.get(start..start + len)?;
        self.rest = self.rest.get(start + len + 2..).unwrap_or_default();
        Some(element)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushed_strings_come_back_in_order_including_empty_and_binary_ones() {
        let mut a = BulkArray::with_capacity(3, 8);
        a.push(b"foo");
        a.push(b"");
        a.push(b"a\r\nb$1\r\n");
        assert_eq!(a.len(), 3);
        assert_eq!(a.wire(), b"$3\r\nfoo\r\n$0\r\n\r\n$8\r\na\r\nb$1\r\n\r\n");
        let back: Vec<&[u8]> = a.iter().collect();
        assert_eq!(back, vec![&b"foo"[..], b"", b"a\r\nb$1\r\n"]);
    }

    #[test]
    fn an_empty_array_has_no_body() {
        let a = BulkArray::default();
        assert!(a.is_empty());
        assert_eq!(a.iter().count(), 0);
        assert!(a.wire().is_empty());
    }
}
