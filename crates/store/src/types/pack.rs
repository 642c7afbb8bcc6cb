//! `Pack`: a compact sequence of byte strings in one allocation, in the spirit of
//! Redis's listpack. Each entry is a LEB128 length followed by its bytes, so a small
//! hash or set costs one heap block instead of one per field. Lookups are linear,
//! which is what Redis does too below its `*-max-listpack-entries` thresholds.

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pack {
    buf: Vec<u8>,
    len: u32,
}

/// One entry's place in the buffer: `start..end` covers the length prefix and data.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn encoded_len(n: usize) -> usize {
    let bits = usize::BITS - n.leading_zeros();
    (bits.max(1) as usize).div_ceil(7)
}

impl Pack {
    pub fn new() -> Self {
        Pack::default()
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held, including the spare capacity.
    pub fn mem_usage(&self) -> usize {
        self.buf.capacity()
    }

    pub fn push(&mut self, s: &[u8]) {
        // Exact growth, as a listpack reallocates: small collections are the
        // common case and doubling would waste up to half of each one.
        self.buf.reserve_exact(s.len() + encoded_len(s.len()));
        put_len(&mut self.buf, s.len());
        self.buf.extend_from_slice(s);
        self.len += 1;
    }

    pub fn iter(&self) -> PackIter<'_> {
        PackIter {
            buf: &self.buf,
            pos: 0,
        }
    }

    /// Entries with their spans, for in-place edits.
    pub fn spans(&self) -> impl Iterator<Item = (Span, &[u8])> + '_ {
        let mut pos = 0;
        std::iter::from_fn(move || {
            if pos >= self.buf.len() {
                return None;
            }
            let start = pos;
            let (data, next) = read_at(&self.buf, pos);
            pos = next;
            Some((Span { start, end: next }, data))
        })
    }

    pub fn get(&self, idx: usize) -> Option<&[u8]> {
        self.iter().nth(idx)
    }

    /// Removes the entries covered by `start..end` (whole entries), `count` of them.
    pub fn remove_span(&mut self, start: usize, end: usize, count: usize) {
        self.buf.drain(start..end);
        self.len -= count as u32;
    }

    /// Replaces one entry's bytes.
    pub fn replace(&mut self, span: Span, s: &[u8]) {
        let mut enc = Vec::with_capacity(s.len() + 4);
        put_len(&mut enc, s.len());
        enc.extend_from_slice(s);
        self.buf.splice(span.start..span.end, enc);
    }

    pub fn shrink_to_fit(&mut self) {
        self.buf.shrink_to_fit();
    }
}

fn read_at(buf: &[u8], mut pos: usize) -> (&[u8], usize) {
    let mut n = 0usize;
    let mut shift = 0;
    loop {
        let b = buf[pos];
        pos += 1;
        n |= ((b & 0x7f) as usize) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    (&buf[pos..pos + n], pos + n)
}

pub struct PackIter<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for PackIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let (data, next) = read_at(self.buf, self.pos);
        self.pos = next;
        Some(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_iter_remove_replace() {
        let mut p = Pack::new();
        let long = vec![b'x'; 300];
        p.push(b"a");
        p.push(&long);
        p.push(b"");
        p.push(b"ccc");
        assert_eq!(p.len(), 4);
        let all: Vec<&[u8]> = p.iter().collect();
        assert_eq!(all, vec![&b"a"[..], &long[..], &b""[..], &b"ccc"[..]]);
        let spans: Vec<Span> = p.spans().map(|(s, _)| s).collect();
        p.replace(spans[1], b"bb");
        assert_eq!(p.get(1), Some(&b"bb"[..]));
        let spans: Vec<Span> = p.spans().map(|(s, _)| s).collect();
        p.remove_span(spans[1].start, spans[2].end, 2);
        assert_eq!(p.iter().collect::<Vec<_>>(), vec![&b"a"[..], &b"ccc"[..]]);
        assert_eq!(encoded_len(0), 1);
        assert_eq!(encoded_len(127), 1);
        assert_eq!(encoded_len(128), 2);
    }
}
