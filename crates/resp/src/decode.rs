//! Reply decoding: the wire form of a reply back into a [`Reply`].
//!
//! The server never reads replies; this exists so that tests and fuzz targets can
//! check [`Reply::encode`] against an independent, strict reader. Strict means it
//! refuses what Tidewire never sends instead of guessing: bare `\n` line ends,
//! non-canonical lengths, bulk payloads not followed by `\r\n`, non-UTF-8 status
//! lines, verbatim formats other than `txt`/`mkd`, attributes and streamed strings.
//! Declared lengths and counts are never trusted for an allocation, and nesting is
//! bounded, so hostile input costs at most its own size.

#![forbid(unsafe_code)]

use bytes::Bytes;

use crate::reply::Reply;

/// Deepest nesting of aggregates accepted; deeper input is an error, not a stack
/// overflow.
pub const MAX_DEPTH: usize = 128;

/// Why a buffer is not a well-formed reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

/// Decodes the first reply in `buf`. `Ok(None)` means the buffer holds the start of a
/// reply that needs more bytes; `Ok(Some((reply, used)))` gives the reply and how many
/// bytes of `buf` it took. Both RESP2 and RESP3 shapes are understood; `$-1` reads as
/// [`Reply::Null`], `*-1` as [`Reply::NullArray`], status lines as
/// [`Reply::SimpleString`].
pub fn decode(buf: &[u8]) -> Result<Option<(Reply, usize)>, DecodeError> {
    decode_with(buf, false)
}

/// [`decode`] for replies from another server (the engine a Tidewire node
/// forwards to): status and error lines that are not UTF-8 (a script's
/// `error_reply` may carry any bytes) are read with their invalid bytes replaced
/// instead of failing the whole connection.
pub fn decode_lossy(buf: &[u8]) -> Result<Option<(Reply, usize)>, DecodeError> {
    decode_with(buf, true)
}

fn decode_with(buf: &[u8], lossy: bool) -> Result<Option<(Reply, usize)>, DecodeError> {
    let mut reader = Reader { buf, pos: 0, lossy };
    match reader.value(0) {
        Ok(reply) => Ok(Some((reply, reader.pos))),
        Err(Stop::Incomplete) => Ok(None),
        Err(Stop::Invalid(e)) => Err(DecodeError(e)),
    }
}

/// Decodes a buffer that must hold exactly one complete reply.
pub fn decode_exact(buf: &[u8]) -> Result<Reply, DecodeError> {
    match decode(buf)? {
        Some((reply, used)) if used == buf.len() => Ok(reply),
        Some(_) => Err(DecodeError("trailing bytes after the reply".into())),
        None => Err(DecodeError("incomplete reply".into())),
    }
}

enum Stop {
    Incomplete,
    Invalid(String),
}

fn invalid<T>(what: &str) -> Result<T, Stop> {
    Err(Stop::Invalid(what.to_owned()))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Text lines that are not UTF-8 are read lossily instead of refused.
    lossy: bool,
}

impl Reader<'_> {
    fn value(&mut self, depth: usize) -> Result<Reply, Stop> {
        if depth > MAX_DEPTH {
            return invalid("nesting too deep");
        }
        let Some(&kind) = self.buf.get(self.pos) else {
            return Err(Stop::Incomplete);
        };
        self.pos += 1;
        match kind {
            b'+' => Ok(Reply::SimpleString(self.text_line()?)),
            b'-' => Ok(Reply::Error(self.text_line()?)),
            b':' => Ok(Reply::Int(self.int_line()?)),
            b'$' => match self.length_line()? {
                None => Ok(Reply::Null),
                Some(len) => Ok(Reply::Bulk(self.payload(len)?)),
            },
            b'*' => match self.length_line()? {
                None => Ok(Reply::NullArray),
                Some(n) => Ok(Reply::Array(self.items(n, depth)?)),
            },
            b'~' => {
                let n = self.count_line()?;
                Ok(Reply::Set(self.items(n, depth)?))
            }
            b'>' => {
                let n = self.count_line()?;
                Ok(Reply::Push(self.items(n, depth)?))
            }
            b'%' => {
                let n = self.count_line()?;
                let mut pairs = Vec::with_capacity(self.affordable(n, 6));
                for _ in 0..n {
                    let k = self.value(depth + 1)?;
                    let v = self.value(depth + 1)?;
                    pairs.push((k, v));
                }
                Ok(Reply::Map(pairs))
            }
            b'_' => {
                if self.line()?.is_empty() {
                    Ok(Reply::Null)
                } else {
                    invalid("null with a body")
                }
            }
            b'#' => match self.line()? {
                b"t" => Ok(Reply::Bool(true)),
                b"f" => Ok(Reply::Bool(false)),
                _ => invalid("boolean is neither t nor f"),
            },
            b',' => {
                let text = std::str::from_utf8(self.line()?)
                    .map_err(|_| Stop::Invalid("double is not text".into()))?;
                match text.parse::<f64>() {
                    Ok(d) => Ok(Reply::Double(d)),
                    Err(_) => invalid("invalid double"),
                }
            }
            b'(' => {
                let line = self.line()?;
                let digits = line.strip_prefix(b"-").unwrap_or(line);
                if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                    return invalid("invalid big number");
                }
                Ok(Reply::BigNumber(String::from_utf8_lossy(line).into_owned()))
            }
            b'=' => {
                let Some(len) = self.length_line()? else {
                    return invalid("null verbatim string");
                };
                let body = self.payload(len)?;
                let format = match body.get(..4) {
                    Some(b"txt:") => "txt",
                    Some(b"mkd:") => "mkd",
                    _ => return invalid("unsupported verbatim format"),
                };
                Ok(Reply::Verbatim(format, body.slice(4..)))
            }
            _ => invalid("unknown or unsupported reply type"),
        }
    }

    /// The rest of the current line, without its `\r\n`; the position moves past it.
    fn line(&mut self) -> Result<&[u8], Stop> {
        let rest = &self.buf[self.pos..];
        let Some(cr) = rest.iter().position(|&b| b == b'\r' || b == b'\n') else {
            return Err(Stop::Incomplete);
        };
        if rest[cr] == b'\n' {
            return invalid("line ends without \\r");
        }
        match rest.get(cr + 1) {
            None => Err(Stop::Incomplete),
            Some(b'\n') => {
                self.pos += cr + 2;
                Ok(&rest[..cr])
            }
            Some(_) => invalid("\\r not followed by \\n"),
        }
    }

    fn text_line(&mut self) -> Result<String, Stop> {
        let lossy = self.lossy;
        let line = self.line()?;
        if lossy {
            return Ok(String::from_utf8_lossy(line).into_owned());
        }
        String::from_utf8(line.to_vec()).map_err(|_| Stop::Invalid("line is not UTF-8".into()))
    }

    fn int_line(&mut self) -> Result<i64, Stop> {
        canonical_i64(self.line()?).map_or_else(|| invalid("invalid integer"), Ok)
    }

    /// A `$`/`*` length: `None` for `-1` (the RESP2 nulls).
    fn length_line(&mut self) -> Result<Option<usize>, Stop> {
        match self.int_line()? {
            -1 => Ok(None),
            n if n < 0 => invalid("negative length"),
            n => usize::try_from(n)
                .map(Some)
                .or_else(|_| invalid("length too large")),
        }
    }

    fn count_line(&mut self) -> Result<usize, Stop> {
        self.length_line()?
            .map_or_else(|| invalid("null aggregate in RESP3 form"), Ok)
    }

    /// `len` bytes followed by `\r\n`.
    fn payload(&mut self, len: usize) -> Result<Bytes, Stop> {
        let rest = &self.buf[self.pos..];
        if rest.len() < len.saturating_add(2) {
            return Err(Stop::Incomplete);
        }
        if &rest[len..len + 2] != b"\r\n" {
            return invalid("payload not followed by \\r\\n");
        }
        let body = Bytes::copy_from_slice(&rest[..len]);
        self.pos += len + 2;
        Ok(body)
    }

    fn items(&mut self, n: usize, depth: usize) -> Result<Vec<Reply>, Stop> {
        let mut items = Vec::with_capacity(self.affordable(n, 3));
        for _ in 0..n {
            items.push(self.value(depth + 1)?);
        }
        Ok(items)
    }

    /// How many of `n` declared elements, each at least `min_size` bytes on the wire,
    /// the unread input can hold: the most worth reserving room for.
    fn affordable(&self, n: usize, min_size: usize) -> usize {
        n.min((self.buf.len() - self.pos) / min_size)
    }
}

/// Strict decimal integer as the encoder writes it: optional `-`, digits, no leading
/// zeros (except `0` itself), no `-0`, within `i64`.
fn canonical_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.strip_prefix(b"-") {
        Some(d) => (true, d),
        None => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if digits[0] == b'0' && (digits.len() > 1 || neg) {
        return None;
    }
    let mut n: i64 = 0;
    for d in digits {
        let d = i64::from(d - b'0');
        // Accumulate negatively so i64::MIN, whose magnitude exceeds i64::MAX, fits.
        n = n.checked_mul(10)?.checked_sub(d)?;
    }
    if neg {
        Some(n)
    } else {
        n.checked_neg()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::Protocol;
    use crate::BulkArray;

    fn both_ways(reply: Reply, proto: Protocol) -> Reply {
        let wire = reply.to_bytes(proto);
        decode_exact(&wire).unwrap_or_else(|e| panic!("{e}: {wire:?}"))
    }

    #[test]
    fn scalars_read_back() {
        for p in [Protocol::Resp2, Protocol::Resp3] {
            assert_eq!(both_ways(Reply::ok(), p), Reply::SimpleString("OK".into()));
            assert_eq!(both_ways(Reply::error("ERR x"), p), Reply::error("ERR x"));
            for n in [0, -1, 42, i64::MAX, i64::MIN] {
                assert_eq!(both_ways(Reply::Int(n), p), Reply::Int(n));
            }
            assert_eq!(both_ways(Reply::bulk_str(""), p), Reply::bulk_str(""));
            let binary = Reply::bulk(Bytes::from_static(b"a\r\n\x00b"));
            assert_eq!(both_ways(binary.clone(), p), binary);
            assert_eq!(both_ways(Reply::Null, p), Reply::Null);
        }
        assert_eq!(
            both_ways(Reply::NullArray, Protocol::Resp2),
            Reply::NullArray
        );
        assert_eq!(both_ways(Reply::NullArray, Protocol::Resp3), Reply::Null);
        assert_eq!(
            both_ways(Reply::Double(-2.5), Protocol::Resp3),
            Reply::Double(-2.5)
        );
        assert_eq!(
            both_ways(Reply::Bool(true), Protocol::Resp3),
            Reply::Bool(true)
        );
        assert_eq!(
            both_ways(Reply::Bool(false), Protocol::Resp2),
            Reply::Int(0)
        );
        let big = Reply::BigNumber("-123456789012345678901234567890".into());
        assert_eq!(both_ways(big.clone(), Protocol::Resp3), big);
        let v = Reply::Verbatim("mkd", Bytes::from_static(b"# hi\r\n"));
        assert_eq!(both_ways(v.clone(), Protocol::Resp3), v);
        let Reply::Double(nan) = both_ways(Reply::Double(f64::NAN), Protocol::Resp3) else {
            panic!("double expected")
        };
        assert!(nan.is_nan());
    }

    #[test]
    fn aggregates_read_back() {
        let mut list = BulkArray::default();
        list.push(b"x");
        let tree = Reply::Array(vec![
            Reply::Map(vec![(
                Reply::bulk_str("k"),
                Reply::Set(vec![Reply::Int(1)]),
            )]),
            Reply::Push(vec![Reply::bulk_str("message")]),
            Reply::Bulks(list),
            Reply::Array(vec![]),
        ]);
        assert_eq!(both_ways(tree.clone(), Protocol::Resp3), tree);
        let flat = Reply::Array(vec![
            Reply::Array(vec![
                Reply::bulk_str("k"),
                Reply::Array(vec![Reply::Int(1)]),
            ]),
            Reply::Array(vec![Reply::bulk_str("message")]),
            Reply::Array(vec![Reply::bulk_str("x")]),
            Reply::Array(vec![]),
        ]);
        assert_eq!(both_ways(tree, Protocol::Resp2), flat);
    }

    #[test]
    fn incomplete_input_asks_for_more_at_every_cut() {
        let wire =
            Reply::Array(vec![Reply::bulk_str("hello"), Reply::Int(7)]).to_bytes(Protocol::Resp3);
        for cut in 0..wire.len() {
            assert_eq!(decode(&wire[..cut]), Ok(None), "cut at {cut}");
        }
        let (_, used) = decode(&[&wire[..], b"+next\r\n"].concat())
            .unwrap()
            .unwrap();
        assert_eq!(used, wire.len());
    }

    #[test]
    fn malformed_input_is_refused() {
        for bad in [
            &b"+OK\n"[..],
            b"+OK\rx",
            b":01\r\n",
            b":-0\r\n",
            b":9223372036854775808\r\n",
            b":1a\r\n",
            b"$-2\r\n",
            b"$01\r\na\r\n",
            b"$1\r\nab\r\n",
            b"*-2\r\n",
            b"%-1\r\n",
            b"#x\r\n",
            b"_x\r\n",
            b",abc\r\n",
            b"(12a\r\n",
            b"(\r\n",
            b"=5\r\nxyz:a\r\n",
            b"=2\r\nab\r\n",
            b"|1\r\n",
            b"$?\r\n",
            b"+\xff\r\n",
            b"?\r\n",
        ] {
            assert!(decode(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn declared_sizes_cost_nothing_until_the_bytes_arrive() {
        // A huge count or length with no data behind it is just "incomplete".
        assert_eq!(decode(b"*2147483647\r\n"), Ok(None));
        assert_eq!(decode(b"$9223372036854775807\r\nabc"), Ok(None));
        assert_eq!(decode(b"%4611686018427387903\r\n"), Ok(None));
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2) + ":1\r\n";
        assert!(decode(deep.as_bytes()).is_err());
        let ok = "*1\r\n".repeat(MAX_DEPTH) + ":1\r\n";
        assert!(decode(ok.as_bytes()).unwrap().is_some());
    }
}
