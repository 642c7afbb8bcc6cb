//! `Pack`: a compact sequence of byte strings in one buffer, in the spirit of
//! Redis's listpack. Each entry is a LEB128 length followed by its bytes, so a small
//! hash or set costs one heap block instead of one per field. Lookups are linear,
//! which is what Redis does too below its `*-max-listpack-entries` thresholds.
//! A pack of at most [`INLINE`] bytes lives inside the value itself (no heap block
//! at all): `Value` is 40 bytes for `Bytes` anyway, and tiny hashes such as
//! `{name: user1, age: 42}` are a common shape for millions of keys.

/// Encoded bytes held inline: what fits beside the counters in 32 bytes.
pub const INLINE: usize = 29;

#[derive(Debug, Clone)]
pub enum Pack {
    Inline {
        count: u8,
        used: u8,
        data: [u8; INLINE],
    },
    Heap {
        buf: Vec<u8>,
        count: u32,
    },
}

impl Default for Pack {
    fn default() -> Self {
        Pack::Inline {
            count: 0,
            used: 0,
            data: [0; INLINE],
        }
    }
}

/// Equal content is equal whichever way it is stored.
impl PartialEq for Pack {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.bytes() == other.bytes()
    }
}

impl Eq for Pack {}

/// One entry's place in the buffer: `start..end` covers the length prefix and data.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

/// The LEB128 encoding of an entry's length: the buffer and how much of it is used.
fn len_prefix(mut n: usize) -> ([u8; 10], usize) {
    let mut out = [0u8; 10];
    let mut i = 0;
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out[i] = b;
            return (out, i + 1);
        }
        out[i] = b | 0x80;
        i += 1;
    }
}

impl Pack {
    pub fn new() -> Self {
        Pack::default()
    }

    pub fn len(&self) -> usize {
        match self {
            Pack::Inline { count, .. } => *count as usize,
            Pack::Heap { count, .. } => *count as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The encoded entries.
    fn bytes(&self) -> &[u8] {
        match self {
            Pack::Inline { used, data, .. } => &data[..*used as usize],
            Pack::Heap { buf, .. } => buf,
        }
    }

    /// Heap bytes held, including the spare capacity.
    pub fn mem_usage(&self) -> usize {
        match self {
            Pack::Inline { .. } => 0,
            Pack::Heap { buf, .. } => buf.capacity(),
        }
    }

    fn set_count(&mut self, n: usize) {
        match self {
            Pack::Inline { count, .. } => *count = n as u8,
            Pack::Heap { count, .. } => *count = n as u32,
        }
    }

    /// Replaces `start..end` of the encoded bytes with `prefix` + `data` (one
    /// entry, or nothing), staying inline while the result fits and moving to an
    /// exactly sized heap buffer otherwise.
    fn splice(&mut self, start: usize, end: usize, prefix: &[u8], data: &[u8]) {
        let add = prefix.len() + data.len();
        match self {
            Pack::Inline {
                count,
                used,
                data: inline,
            } => {
                let old = *used as usize;
                let new = old - (end - start) + add;
                if new <= INLINE {
                    inline.copy_within(end..old, start + add);
                    inline[start..start + prefix.len()].copy_from_slice(prefix);
                    inline[start + prefix.len()..start + add].copy_from_slice(data);
                    *used = new as u8;
                    return;
                }
                let mut buf = Vec::with_capacity(new);
                buf.extend_from_slice(&inline[..start]);
                buf.extend_from_slice(prefix);
                buf.extend_from_slice(data);
                buf.extend_from_slice(&inline[end..old]);
                let count = *count as u32;
                *self = Pack::Heap { buf, count };
            }
            Pack::Heap { buf, .. } => {
                if end == start && start == buf.len() {
                    // Exact growth, as a listpack reallocates: small collections
                    // are the common case and doubling would waste up to half.
                    buf.reserve_exact(add);
                    buf.extend_from_slice(prefix);
                    buf.extend_from_slice(data);
                } else {
                    // Exact here too: a hash given TTLs field by field grows every
                    // expiry entry in place, and doubling left a third unused.
                    let grow = add.saturating_sub(end - start);
                    if buf.len() + grow > buf.capacity() {
                        buf.reserve_exact(grow);
                    }
                    buf.splice(start..end, prefix.iter().chain(data).copied());
                }
            }
        }
    }

    pub fn push(&mut self, s: &[u8]) {
        let (prefix, n) = len_prefix(s.len());
        let end = self.bytes().len();
        self.splice(end, end, &prefix[..n], s);
        self.set_count(self.len() + 1);
    }

    /// A pack of `entries` built in one buffer: converting a whole hash costs one
    /// allocation instead of one exact-size growth per entry.
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut buf = Vec::new();
        let mut count = 0u32;
        for s in entries {
            let (prefix, n) = len_prefix(s.len());
            buf.extend_from_slice(&prefix[..n]);
            buf.extend_from_slice(s);
            count += 1;
        }
        if buf.len() <= INLINE {
            let mut data = [0; INLINE];
            data[..buf.len()].copy_from_slice(&buf);
            return Pack::Inline {
                count: count as u8,
                used: buf.len() as u8,
                data,
            };
        }
        buf.shrink_to_fit();
        Pack::Heap { buf, count }
    }

    pub fn iter(&self) -> PackIter<'_> {
        PackIter {
            buf: self.bytes(),
            pos: 0,
        }
    }

    /// Entries with their spans, for in-place edits.
    pub fn spans(&self) -> impl Iterator<Item = (Span, &[u8])> + '_ {
        let buf = self.bytes();
        let mut pos = 0;
        std::iter::from_fn(move || {
            if pos >= buf.len() {
                return None;
            }
            let start = pos;
            let (data, next) = read_at(buf, pos);
            pos = next;
            Some((Span { start, end: next }, data))
        })
    }

    pub fn get(&self, idx: usize) -> Option<&[u8]> {
        self.iter().nth(idx)
    }

    /// Removes the entries covered by `start..end` (whole entries), `count` of them.
    pub fn remove_span(&mut self, start: usize, end: usize, count: usize) {
        self.splice(start, end, &[], &[]);
        self.set_count(self.len() - count);
    }

    /// Replaces one entry's bytes.
    pub fn replace(&mut self, span: Span, s: &[u8]) {
        let (prefix, n) = len_prefix(s.len());
        self.splice(span.start, span.end, &prefix[..n], s);
    }

    pub fn shrink_to_fit(&mut self) {
        if let Pack::Heap { buf, .. } = self {
            buf.shrink_to_fit();
        }
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

    fn encoded_len(n: usize) -> usize {
        len_prefix(n).1
    }

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

    #[test]
    fn from_entries_matches_pushes() {
        let items: [&[u8]; 4] = [b"a", b"", b"bb", &[b'x'; 200]];
        for n in 0..=items.len() {
            let mut pushed = Pack::new();
            for s in &items[..n] {
                pushed.push(s);
            }
            let built = Pack::from_entries(items[..n].iter().copied());
            assert_eq!(built, pushed);
            assert_eq!(built.mem_usage() == 0, pushed.mem_usage() == 0);
        }
    }

    #[test]
    fn inline_until_full_then_heap() {
        assert_eq!(std::mem::size_of::<Pack>(), 32);
        let mut p = Pack::new();
        p.push(b"name");
        p.push(b"user123456");
        p.push(b"age");
        p.push(b"56");
        assert_eq!(p.mem_usage(), 0, "23 encoded bytes stay inline");
        let spans: Vec<Span> = p.spans().map(|(s, _)| s).collect();
        p.replace(spans[3], b"57");
        assert_eq!(p.get(3), Some(&b"57"[..]));
        let before = p.clone();
        p.push(b"city");
        p.push(b"Lisbon");
        assert!(
            p.mem_usage() > 0,
            "past INLINE bytes the pack moves to the heap"
        );
        assert_eq!(
            p.iter().collect::<Vec<_>>(),
            vec![
                &b"name"[..],
                b"user123456",
                b"age",
                b"57",
                b"city",
                b"Lisbon"
            ]
        );
        let spans: Vec<Span> = p.spans().map(|(s, _)| s).collect();
        p.remove_span(spans[4].start, spans[5].end, 2);
        assert_eq!(p, before);
        // Growing an inline entry past the limit also moves to the heap.
        let spans: Vec<Span> = p.spans().map(|(s, _)| s).collect();
        let mut q = before.clone();
        q.replace(spans[0], &[b'x'; 40]);
        assert_eq!(q.len(), 4);
        assert_eq!(q.get(0), Some(&[b'x'; 40][..]));
        assert_eq!(q.get(1), Some(&b"user123456"[..]));
    }

    #[test]
    fn growing_an_entry_in_place_allocates_exactly() {
        let mut p = Pack::from_entries((0..100).map(|_| &b""[..]));
        let before = p.mem_usage();
        for i in 0..100 {
            let span = p.spans().nth(i).map(|(s, _)| s).expect("entry");
            p.replace(span, b"123456");
        }
        assert_eq!(p.len(), 100);
        assert_eq!(p.mem_usage(), before + 100 * 6);
    }
}
