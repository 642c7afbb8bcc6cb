//! Replies as Upstash answers them: JSON (`{"result":…}` / `{"error":…}`), with every
//! string base64-encoded when the client asks (`Upstash-Encoding: base64`), or raw
//! RESP2 (`Upstash-Response-Format: resp2`).
//!
//! Upstash answers in RESP2 shapes whatever the client negotiated: maps become flat
//! arrays, doubles strings, booleans 0/1, nulls `null`. Without base64, a bulk string
//! that is not valid UTF-8 cannot travel in JSON; its invalid bytes become U+FFFD, as
//! a Go JSON encoder does. That is why the official client asks for base64 by default.

use std::io::Write;

use base64::Engine;
use tidewire_resp::{format_double, Protocol, Reply};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Base64,
    Resp2,
}

/// `{"result":…}` or `{"error":…}`.
pub fn envelope(out: &mut Vec<u8>, reply: &Reply, format: Format) {
    match reply {
        Reply::Error(e) => {
            out.extend_from_slice(b"{\"error\":");
            string(out, e.as_bytes(), Format::Json);
        }
        r => {
            out.extend_from_slice(b"{\"result\":");
            value(out, r, format);
        }
    }
    out.push(b'}');
}

/// One reply as a whole body: JSON envelope or RESP2 bytes.
pub fn body(reply: &Reply, format: Format) -> Vec<u8> {
    match format {
        Format::Resp2 => reply.to_bytes(Protocol::Resp2).to_vec(),
        f => {
            let mut out = Vec::with_capacity(64);
            envelope(&mut out, reply, f);
            out
        }
    }
}

/// An error message as a JSON body.
pub fn error_body(msg: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 12);
    out.extend_from_slice(b"{\"error\":");
    string(&mut out, msg.as_bytes(), Format::Json);
    out.push(b'}');
    out
}

/// Replies of a pipeline or transaction: a JSON array of envelopes, or the RESP2
/// replies one after another.
pub fn many(replies: &[Reply], format: Format) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 * replies.len() + 2);
    match format {
        Format::Resp2 => {
            for r in replies {
                out.extend_from_slice(&r.to_bytes(Protocol::Resp2));
            }
        }
        f => {
            out.push(b'[');
            for (i, r) in replies.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                envelope(&mut out, r, f);
            }
            out.push(b']');
        }
    }
    out
}

fn value(out: &mut Vec<u8>, reply: &Reply, format: Format) {
    match reply {
        // "OK" stays readable even in base64 mode: the official client relies on it.
        Reply::Status(s) => status(out, s, format),
        Reply::SimpleString(s) => status(out, s, format),
        // Nested errors (inside an array) travel as their text.
        Reply::Error(e) => string(out, e.as_bytes(), format),
        Reply::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Reply::Bulk(b) | Reply::Verbatim(_, b) => string(out, b, format),
        Reply::Null | Reply::NullArray => out.extend_from_slice(b"null"),
        Reply::Array(items) | Reply::Set(items) | Reply::Push(items) => {
            out.push(b'[');
            separated(out, b',', items, |out, r| value(out, r, format));
            out.push(b']');
        }
        Reply::Bulks(list) => {
            out.push(b'[');
            separated(out, b',', list.iter(), |out, b| string(out, b, format));
            out.push(b']');
        }
        // Maps travel flat, as in RESP2: [k1, v1, k2, v2, …].
        Reply::Map(pairs) => {
            out.push(b'[');
            separated(out, b',', pairs, |out, (k, v)| {
                value(out, k, format);
                out.push(b',');
                value(out, v, format);
            });
            out.push(b']');
        }
        Reply::Double(d) => string(out, format_double(*d).as_bytes(), format),
        Reply::Bool(b) => out.push(if *b { b'1' } else { b'0' }),
        Reply::BigNumber(n) => string(out, n.as_bytes(), format),
    }
}

/// Writes each of `items` with `each`, `sep` between them: the one loop behind
/// JSON arrays and SSE data lines.
fn separated<O: Extend<S>, S: Copy, T>(
    out: &mut O,
    sep: S,
    items: impl IntoIterator<Item = T>,
    mut each: impl FnMut(&mut O, T),
) {
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.extend([sep]);
        }
        each(out, item);
    }
}

fn status(out: &mut Vec<u8>, s: &str, format: Format) {
    if s == "OK" {
        out.extend_from_slice(b"\"OK\"");
    } else {
        string(out, s.as_bytes(), format);
    }
}

fn string(out: &mut Vec<u8>, b: &[u8], format: Format) {
    match format {
        Format::Base64 => {
            out.push(b'"');
            let start = out.len();
            let len = base64::encoded_len(b.len(), true).unwrap_or(0);
            out.resize(start + len, 0);
            let n = base64::engine::general_purpose::STANDARD
                .encode_slice(b, &mut out[start..])
                .unwrap_or(0);
            out.truncate(start + n);
            out.push(b'"');
        }
        _ => {
            let s = String::from_utf8_lossy(b);
            // Writing a str to a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, &*s);
        }
    }
}

/// A pub/sub or MONITOR push as one SSE data line: `message,<channel>,<message>`.
pub fn sse_line(reply: &Reply) -> String {
    fn part(r: &Reply, s: &mut String) {
        match r {
            Reply::Bulk(b) | Reply::Verbatim(_, b) => s.push_str(&String::from_utf8_lossy(b)),
            Reply::Status(t) => s.push_str(t),
            Reply::SimpleString(t) | Reply::Error(t) | Reply::BigNumber(t) => s.push_str(t),
            Reply::Int(n) => s.push_str(&n.to_string()),
            Reply::Double(d) => s.push_str(&format_double(*d)),
            Reply::Bool(b) => s.push(if *b { '1' } else { '0' }),
            Reply::Null | Reply::NullArray => {}
            Reply::Array(items) | Reply::Set(items) | Reply::Push(items) => {
                separated(s, ',', items, |s, r| part(r, s));
            }
            Reply::Bulks(list) => {
                separated(s, ',', list.iter(), |s, b| {
                    s.push_str(&String::from_utf8_lossy(b))
                });
            }
            Reply::Map(pairs) => {
                separated(s, ',', pairs, |s, (k, v)| {
                    part(k, s);
                    s.push(',');
                    part(v, s);
                });
            }
        }
    }
    let mut s = String::new();
    part(reply, &mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn bulk(b: &'static [u8]) -> Reply {
        Reply::Bulk(Bytes::from_static(b))
    }

    fn json(r: Reply, f: Format) -> String {
        String::from_utf8(body(&r, f)).unwrap()
    }

    #[test]
    fn shapes() {
        assert_eq!(json(Reply::ok(), Format::Json), r#"{"result":"OK"}"#);
        assert_eq!(json(Reply::ok(), Format::Base64), r#"{"result":"OK"}"#);
        assert_eq!(json(bulk(b"OK"), Format::Base64), r#"{"result":"T0s="}"#);
        assert_eq!(json(Reply::Int(-3), Format::Base64), r#"{"result":-3}"#);
        assert_eq!(json(Reply::Null, Format::Json), r#"{"result":null}"#);
        assert_eq!(
            json(Reply::error("ERR x \"y\""), Format::Base64),
            r#"{"error":"ERR x \"y\""}"#
        );
        assert_eq!(
            json(
                Reply::Map(vec![(bulk(b"f"), Reply::Double(1.5))]),
                Format::Json
            ),
            r#"{"result":["f","1.5"]}"#
        );
        assert_eq!(
            json(
                Reply::Array(vec![bulk(b"a\n"), Reply::Array(vec![Reply::Null])]),
                Format::Base64
            ),
            r#"{"result":["YQo=",[null]]}"#
        );
        assert_eq!(
            json(bulk(b"\xff\"a"), Format::Json),
            "{\"result\":\"\u{fffd}\\\"a\"}"
        );
        assert_eq!(json(Reply::Bool(true), Format::Json), r#"{"result":1}"#);
        assert_eq!(json(Reply::Int(5), Format::Resp2), ":5\r\n");
    }

    #[test]
    fn bulks_travel_as_an_array_of_strings() {
        let mut list = tidewire_resp::BulkArray::default();
        list.push(b"a\"b");
        list.push(b"\n");
        assert_eq!(
            json(Reply::Bulks(list.clone()), Format::Json),
            r#"{"result":["a\"b","\n"]}"#
        );
        assert_eq!(
            json(Reply::Bulks(list.clone()), Format::Base64),
            r#"{"result":["YSJi","Cg=="]}"#
        );
        assert_eq!(sse_line(&Reply::Bulks(list)), "a\"b,\n");
    }

    #[test]
    fn many_and_sse() {
        let rs = vec![Reply::Int(1), Reply::error("ERR no")];
        assert_eq!(
            String::from_utf8(many(&rs, Format::Json)).unwrap(),
            r#"[{"result":1},{"error":"ERR no"}]"#
        );
        let push = Reply::Push(vec![bulk(b"message"), bulk(b"ch"), bulk(b"hi,there")]);
        assert_eq!(sse_line(&push), "message,ch,hi,there");
    }
}
