//! Request parsing: multibulk (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) and inline (`GET k\r\n`).
//!
//! The parser is incremental: a large multibulk arriving over many reads is consumed
//! argument by argument, so each byte is looked at once. Arguments are zero-copy slices
//! (`Bytes`) of the read buffer.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Inline requests and the header lines of multibulk requests may not exceed this
/// without a newline (Redis's `PROTO_INLINE_MAX_SIZE`).
pub const INLINE_MAX_SIZE: usize = 64 * 1024;

/// Size limits applied while parsing; violations close the connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest single argument (`proto-max-bulk-len`, 512 MB by default).
    pub max_bulk_len: u64,
    /// Largest argument count of one multibulk request.
    pub max_multibulk_len: u64,
    /// Longest inline request line.
    pub max_inline_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_multibulk_len: i32::MAX as u64,
            max_inline_len: INLINE_MAX_SIZE,
        }
    }
}

/// A framing error. The text is what follows `-ERR ` in Redis's reply, e.g.
/// `Protocol error: invalid bulk length`. After one of these the stream position is
/// unknown, so the connection must be closed once the error is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl ProtocolError {
    fn new(what: &str) -> Self {
        ProtocolError(format!("Protocol error: {what}"))
    }
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// A multibulk request whose arguments are still arriving.
#[derive(Debug)]
struct Partial {
    remaining: usize,
    args: Vec<Bytes>,
    /// Length of the bulk currently awaited, once its `$n` header has been read.
    bulk_len: Option<usize>,
}

/// Incremental request parser; one per connection.
#[derive(Debug)]
pub struct RequestParser {
    limits: Limits,
    partial: Option<Partial>,
}

impl RequestParser {
    pub fn new(limits: Limits) -> Self {
        RequestParser {
            limits,
            partial: None,
        }
    }

    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Bytes still needed to complete the bulk being read, so the caller can reserve a
    /// buffer of the right size for large values instead of growing it step by step.
    pub fn pending_bulk_len(&self) -> Option<usize> {
        self.partial.as_ref().and_then(|p| p.bulk_len)
    }

    /// Whether the parser is in the middle of a request.
    pub fn is_mid_request(&self) -> bool {
        self.partial.is_some()
    }

    /// Takes the next complete command out of `buf`, if there is one. Empty requests
    /// (blank inline lines, `*0`) are skipped, as Redis does.
    pub fn next_command(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        loop {
            if self.partial.is_none() {
                if buf.is_empty() {
                    return Ok(None);
                }
                if buf[0] == b'*' {
                    if let Some(args) = self.whole_multibulk(buf) {
                        return Ok(Some(args));
                    }
                    match self.start_multibulk(buf)? {
                        Start::Incomplete => return Ok(None),
                        Start::Empty => continue,
                        Start::Started => {}
                    }
                } else {
                    match self.inline(buf)? {
                        None => return Ok(None),
                        Some(args) if args.is_empty() => continue,
                        Some(args) => return Ok(Some(args)),
                    }
                }
            }
            return self.continue_multibulk(buf);
        }
    }

    /// The common case in one pass: a small, well-formed multibulk that is already
    /// complete in the buffer is cut out as one frame and its arguments sliced from
    /// it, instead of being consumed header by header. Anything else (incomplete,
    /// large, malformed) returns `None` having consumed nothing, and goes the
    /// incremental way, which also produces the protocol errors.
    fn whole_multibulk(&self, buf: &mut BytesMut) -> Option<Vec<Bytes>> {
        const MAX_ARGS: usize = 16;
        let data = &buf[..];
        let (count, mut pos) = small_decimal(data, 1)?;
        if count == 0 || count > MAX_ARGS || count as u64 > self.limits.max_multibulk_len {
            return None;
        }
        let mut ranges = [(0usize, 0usize); MAX_ARGS];
        for range in ranges.iter_mut().take(count) {
            if *data.get(pos)? != b'$' {
                return None;
            }
            let (len, start) = small_decimal(data, pos + 1)?;
            if len as u64 > self.limits.max_bulk_len {
                return None;
            }
            let end = start.checked_add(len)?;
            // Like the incremental path, the two bytes after the payload are skipped.
            pos = end.checked_add(2)?;
            if pos > data.len() {
                return None;
            }
            *range = (start, end);
        }
        let frame = buf.split_to(pos).freeze();
        Some(
            ranges[..count]
                .iter()
                .map(|&(a, b)| frame.slice(a..b))
                .collect(),
        )
    }

    fn start_multibulk(&mut self, buf: &mut BytesMut) -> Result<Start, ProtocolError> {
        let Some(line_end) = find_crlf(buf) else {
            if buf.len() > self.limits.max_inline_len {
                return Err(ProtocolError::new("too big mbulk count string"));
            }
            return Ok(Start::Incomplete);
        };
        let count = parse_i64(&buf[1..line_end])
            .filter(|n| *n <= self.limits.max_multibulk_len as i64 && *n <= i32::MAX as i64)
            .ok_or_else(|| ProtocolError::new("invalid multibulk length"))?;
        buf.advance(line_end + 2);
        if count <= 0 {
            return Ok(Start::Empty);
        }
        let count = count as usize;
        self.partial = Some(Partial {
            remaining: count,
            // Never trust the client's count for an allocation.
            args: Vec::with_capacity(count.min(1024)),
            bulk_len: None,
        });
        Ok(Start::Started)
    }

    fn continue_multibulk(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let Some(partial) = self.partial.as_mut() else {
            return Ok(None);
        };
        while partial.remaining > 0 {
            let len = match partial.bulk_len {
                Some(len) => len,
                None => {
                    let Some(line_end) = find_crlf(buf) else {
                        if buf.len() > self.limits.max_inline_len {
                            return Err(ProtocolError::new("too big bulk count string"));
                        }
                        return Ok(None);
                    };
                    if buf[0] != b'$' {
                        return Err(ProtocolError(format!(
                            "Protocol error: expected '$', got '{}'",
                            buf[0] as char
                        )));
                    }
                    let len = parse_i64(&buf[1..line_end])
                        .filter(|n| *n >= 0 && (*n as u64) <= self.limits.max_bulk_len)
                        .ok_or_else(|| ProtocolError::new("invalid bulk length"))?;
                    buf.advance(line_end + 2);
                    partial.bulk_len = Some(len as usize);
                    len as usize
                }
            };
            if buf.len() < len + 2 {
                return Ok(None);
            }
            let arg = buf.split_to(len).freeze();
            // Like Redis, the two bytes after the payload are skipped unchecked.
            buf.advance(2);
            partial.args.push(arg);
            partial.bulk_len = None;
            partial.remaining -= 1;
        }
        Ok(self.partial.take().map(|p| p.args))
    }

    fn inline(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        // Redis finds the line end with `strchr`, which stops at a NUL byte: a NUL
        // before the newline leaves the request incomplete until the inline limit
        // refuses it. Same here, byte for byte, and the scan stops at the NUL too.
        let nl = match buf.iter().position(|b| *b == b'\n' || *b == 0) {
            Some(at) if buf[at] == b'\n' => Some(at),
            _ => None,
        };
        let Some(nl) = nl else {
            if buf.len() > self.limits.max_inline_len {
                return Err(ProtocolError::new("too big inline request"));
            }
            return Ok(None);
        };
        if nl > self.limits.max_inline_len {
            return Err(ProtocolError::new("too big inline request"));
        }
        let line = buf.split_to(nl + 1);
        let mut end = nl;
        if end > 0 && line[end - 1] == b'\r' {
            end -= 1;
        }
        split_args(&line[..end])
            .map(Some)
            .ok_or_else(|| ProtocolError::new("unbalanced quotes in request"))
    }
}

enum Start {
    Incomplete,
    Empty,
    Started,
}

/// Reads `digits\r\n` at `at` (at most 9 digits, so no overflow and nothing a
/// limit could refuse); returns the number and the position after the line end.
fn small_decimal(data: &[u8], at: usize) -> Option<(usize, usize)> {
    let mut n = 0usize;
    let mut i = at;
    loop {
        let b = *data.get(i)?;
        match b {
            b'0'..=b'9' if i - at < 9 => n = n * 10 + (b - b'0') as usize,
            b'\r' if i > at && *data.get(i + 1)? == b'\n' => return Some((n, i + 2)),
            _ => return None,
        }
        i += 1;
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    let cr = buf.iter().position(|b| *b == b'\r')?;
    (cr + 1 < buf.len()).then_some(cr)
}

/// Strict decimal integer as Redis's `string2ll`: optional '-', digits, no spaces.
fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.first()? {
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut n: i64 = 0;
    for d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add((d - b'0') as i64)?;
    }
    Some(if neg { -n } else { n })
}

/// Appends one command in the multibulk form the parser reads (an array of bulk
/// strings): what a client sends, what the append-only log stores, what MIGRATE
/// and the engine client send to another server.
pub fn encode_command<A: AsRef<[u8]>>(out: &mut impl BufMut, argv: &[A]) {
    let mut number = itoa::Buffer::new();
    out.put_u8(b'*');
    out.put_slice(number.format(argv.len()).as_bytes());
    out.put_slice(b"\r\n");
    for arg in argv {
        let arg = arg.as_ref();
        out.put_u8(b'$');
        out.put_slice(number.format(arg.len()).as_bytes());
        out.put_slice(b"\r\n");
        out.put_slice(arg);
        out.put_slice(b"\r\n");
    }
}

/// Splits an inline line into arguments the way Redis's `sdssplitargs` does: spaces
/// separate, `"..."` understands `\n \r \t \b \a \\ \" \xHH`, `'...'` understands `\'`.
/// A closing quote must be followed by a space or the end. `None` means unbalanced.
/// As in Redis, which reads the line as a C string, a NUL byte ends the line: what
/// follows it is not seen, and a quote still open there is unbalanced.
pub fn split_args(line: &[u8]) -> Option<Vec<Bytes>> {
    let line = match line.iter().position(|b| *b == 0) {
        Some(nul) => &line[..nul],
        None => line,
    };
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && is_c_space(line[i]) {
            i += 1;
        }
        if i >= line.len() {
            return Some(args);
        }
        let mut current = Vec::new();
        let mut in_double = false;
        let mut in_single = false;
        loop {
            if in_double {
                let c = *line.get(i)?;
                if c == b'\\'
                    && i + 3 < line.len()
                    && line[i + 1] == b'x'
                    && is_hex(line[i + 2])
                    && is_hex(line[i + 3])
                {
                    current.push(hex_val(line[i + 2]) * 16 + hex_val(line[i + 3]));
                    i += 3;
                } else if c == b'\\' && i + 1 < line.len() {
                    i += 1;
                    current.push(match line[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                } else if c == b'"' {
                    if i + 1 < line.len() && !is_c_space(line[i + 1]) {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    current.push(c);
                }
            } else if in_single {
                let c = *line.get(i)?;
                if c == b'\\' && i + 1 < line.len() && line[i + 1] == b'\'' {
                    i += 1;
                    current.push(b'\'');
                } else if c == b'\'' {
                    if i + 1 < line.len() && !is_c_space(line[i + 1]) {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    current.push(c);
                }
            } else {
                match line.get(i) {
                    None => break,
                    Some(b' ' | b'\n' | b'\r' | b'\t') => break,
                    Some(b'"') => in_double = true,
                    Some(b'\'') => in_single = true,
                    Some(c) => current.push(*c),
                }
            }
            i += 1;
        }
        args.push(Bytes::from(current));
    }
}

/// C's `isspace`, which Redis's splitter uses: Rust's `is_ascii_whitespace` leaves
/// out the vertical tab.
fn is_c_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn is_hex(c: u8) -> bool {
    c.is_ascii_hexdigit()
}

fn hex_val(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
        let mut p = RequestParser::new(Limits::default());
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(cmd) = p.next_command(&mut buf)? {
            out.push(cmd);
        }
        Ok(out)
    }

    fn strs(cmds: Vec<Vec<Bytes>>) -> Vec<Vec<String>> {
        cmds.into_iter()
            .map(|c| {
                c.into_iter()
                    .map(|a| String::from_utf8_lossy(&a).into_owned())
                    .collect()
            })
            .collect()
    }

    /// Feeds `input` one byte at a time: no command is ever complete in the buffer
    /// on arrival, so this exercises only the incremental path.
    fn parse_bytewise(input: &[u8]) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
        let mut p = RequestParser::new(Limits::default());
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for b in input {
            buf.extend_from_slice(&[*b]);
            while let Some(cmd) = p.next_command(&mut buf)? {
                out.push(cmd);
            }
        }
        Ok(out)
    }

    #[test]
    fn whole_frame_path_matches_incremental_path() {
        // Pseudo-random pipelines of well-formed and damaged requests: parsing them
        // from a full buffer (fast path where it applies) must give exactly what
        // byte-by-byte parsing gives, errors included.
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..400 {
            let mut input = Vec::new();
            for _ in 0..1 + rand(6) {
                let argc = 1 + rand(20) as usize;
                input.extend_from_slice(format!("*{argc}\r\n").as_bytes());
                for _ in 0..argc {
                    let len = rand(30) as usize;
                    let arg: Vec<u8> = (0..len).map(|_| rand(256) as u8).collect();
                    input.extend_from_slice(format!("${len}\r\n").as_bytes());
                    input.extend_from_slice(&arg);
                    input.extend_from_slice(b"\r\n");
                }
            }
            if round % 3 == 0 {
                // Damage one byte somewhere.
                let at = rand(input.len() as u64) as usize;
                input[at] = b"*$-\r\n0x"[rand(7) as usize];
            }
            assert_eq!(parse_all(&input), parse_bytewise(&input), "input {input:?}");
        }
    }

    #[test]
    fn whole_frame_edge_cases() {
        for input in [
            &b"*3\r\n$3\r\nSET\r\n$0\r\n\r\n$1\r\nv\r\n"[..],
            b"*1\r\n$0999\r\n",
            b"*01\r\n$4\r\nPING\r\n",
            b"*17\r\n$1\r\na\r\n",
            b"*1\r\n$-1\r\n",
            b"*1\n$4\r\nPING\r\n",
            b"*1\r\n$4\r\nPINGxx*1\r\n$4\r\nPING\r\n",
        ] {
            assert_eq!(parse_all(input), parse_bytewise(input), "input {input:?}");
        }
    }

    #[test]
    fn multibulk_pipeline() {
        let cmds = parse_all(b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").unwrap();
        assert_eq!(strs(cmds), vec![vec!["PING"], vec!["GET", "k"]]);
    }

    #[test]
    fn multibulk_byte_by_byte() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
        let mut p = RequestParser::new(Limits::default());
        let mut buf = BytesMut::new();
        let mut got = None;
        for b in input.iter() {
            buf.extend_from_slice(&[*b]);
            if let Some(cmd) = p.next_command(&mut buf).unwrap() {
                got = Some(cmd);
            }
        }
        assert_eq!(strs(vec![got.unwrap()]), vec![vec!["SET", "k", "hello"]]);
        assert!(buf.is_empty());
    }

    #[test]
    fn binary_safe_bulk() {
        let cmds = parse_all(b"*2\r\n$3\r\nGET\r\n$4\r\na\r\nb\r\n").unwrap();
        assert_eq!(&cmds[0][1][..], b"a\r\nb");
    }

    #[test]
    fn empty_requests_skipped() {
        let cmds = parse_all(b"\r\n*0\r\n*-1\r\n  \r\nPING\r\n").unwrap();
        assert_eq!(strs(cmds), vec![vec!["PING"]]);
    }

    #[test]
    fn inline_quotes() {
        let cmds = parse_all(b"set \"a b\" 'c\\'d' \"\\x41\\n\"\n").unwrap();
        assert_eq!(strs(cmds), vec![vec!["set", "a b", "c'd", "A\n"]]);
    }

    #[test]
    fn inline_unbalanced() {
        let err = parse_all(b"set \"abc\r\n").unwrap_err();
        assert_eq!(err.0, "Protocol error: unbalanced quotes in request");
        let err = parse_all(b"set \"abc\"x\r\n").unwrap_err();
        assert_eq!(err.0, "Protocol error: unbalanced quotes in request");
    }

    #[test]
    fn nul_before_newline_leaves_the_request_incomplete() {
        // Redis's strchr stops at the NUL: no reply, until the inline limit.
        for input in [
            &b"PING\x00\n"[..],
            b"\x00\n",
            b"GET a\x00b\r\n",
            b"PING\x00\nPING\r\n",
        ] {
            let mut p = RequestParser::new(Limits::default());
            let mut buf = BytesMut::from(input);
            assert_eq!(p.next_command(&mut buf), Ok(None), "{input:?}");
            assert_eq!(&buf[..], input, "nothing consumed");
        }
        let mut input = b"PING\x00\n".to_vec();
        input.resize(INLINE_MAX_SIZE + 1, b'x');
        assert_eq!(
            parse_all(&input).unwrap_err().0,
            "Protocol error: too big inline request"
        );
        // A NUL after the newline belongs to the next request.
        let mut p = RequestParser::new(Limits::default());
        let mut buf = BytesMut::from(&b"PING\r\n\x00\n"[..]);
        assert_eq!(
            strs(vec![p.next_command(&mut buf).unwrap().unwrap()]),
            vec![vec!["PING"]]
        );
        assert_eq!(p.next_command(&mut buf), Ok(None));
    }

    #[test]
    fn split_args_ends_at_nul_and_always_terminates() {
        let s = |line: &[u8]| split_args(line).map(|v| strs(vec![v]).remove(0));
        assert_eq!(s(b"PING\x00"), Some(vec!["PING".to_string()]));
        assert_eq!(s(b"\x00"), Some(vec![]));
        assert_eq!(s(b"GET a\x00b"), Some(vec!["GET".into(), "a".into()]));
        assert_eq!(s(b"\"PI\x00NG\""), None, "the quote is open at the NUL");
        assert_eq!(s(b"\x0bPING\x0c"), Some(vec!["PING\x0c".to_string()]));
        // Every byte value alone and between words ends with a bounded result.
        for b in 0..=255u8 {
            for line in [vec![b], vec![b'a', b, b'b'], vec![b, b, b]] {
                if let Some(args) = split_args(&line) {
                    assert!(args.len() <= line.len(), "{line:?}");
                }
            }
        }
    }

    #[test]
    fn errors_match_redis() {
        assert_eq!(
            parse_all(b"*x\r\n").unwrap_err().0,
            "Protocol error: invalid multibulk length"
        );
        assert_eq!(
            parse_all(b"*3000000000\r\n").unwrap_err().0,
            "Protocol error: invalid multibulk length"
        );
        assert_eq!(
            parse_all(b"*1\r\n+GET\r\n").unwrap_err().0,
            "Protocol error: expected '$', got '+'"
        );
        assert_eq!(
            parse_all(b"*1\r\n$-1\r\n").unwrap_err().0,
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            parse_all(b"*1\r\n$600000000\r\n").unwrap_err().0,
            "Protocol error: invalid bulk length"
        );
        let big = vec![b'a'; INLINE_MAX_SIZE + 1];
        assert_eq!(
            parse_all(&big).unwrap_err().0,
            "Protocol error: too big inline request"
        );
        let mut big_mb = b"*1".to_vec();
        big_mb.extend(vec![b'1'; INLINE_MAX_SIZE + 1]);
        assert_eq!(
            parse_all(&big_mb).unwrap_err().0,
            "Protocol error: too big mbulk count string"
        );
    }

    #[test]
    fn huge_count_does_not_allocate() {
        let mut p = RequestParser::new(Limits::default());
        let mut buf = BytesMut::from(&b"*2000000000\r\n$1\r\na\r\n"[..]);
        assert!(p.next_command(&mut buf).unwrap().is_none());
        assert!(p.is_mid_request());
    }

    #[test]
    fn pending_bulk_len_hint() {
        let mut p = RequestParser::new(Limits::default());
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$100000\r\nabc"[..]);
        assert!(p.next_command(&mut buf).unwrap().is_none());
        assert_eq!(p.pending_bulk_len(), Some(100000));
    }
}
