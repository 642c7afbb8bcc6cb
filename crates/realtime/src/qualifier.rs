//! Qualified channel names: `[meta]log`, `[?rewind=1]chat`, `[filter=<base64>]chat`
//! and `[filter=<base64>?rewind=1]chat`.
//!
//! `[meta]` names a channel of its own. The other qualifiers name a *view* of
//! their base channel: the same messages (filtered, for a derived channel), with
//! channel params taken from the name. The SDK keeps the qualified name as the
//! channel's identity, so every frame to that attachment carries it.

use base64::Engine;

use crate::error::{AblyError, ErrorCode};
use crate::filter::Filter;

/// Longest channel name accepted.
const MAX_CHANNEL_NAME: usize = 1024;

/// A channel name taken apart.
#[derive(Debug, Clone, PartialEq)]
pub struct Qualified<'a> {
    /// The channel the messages come from (the whole name for `[meta]` and
    /// unqualified names).
    pub base: &'a str,
    /// A derived channel's filter.
    pub filter: Option<Filter>,
    /// Channel params given in the name (`[?rewind=1]`).
    pub params: Vec<(String, String)>,
}

impl Qualified<'_> {
    /// Whether the name is a view of another channel.
    pub fn is_view(&self) -> bool {
        self.filter.is_some() || !self.params.is_empty()
    }
}

/// Ably's naming rules (40010): not empty, no control characters, not starting
/// with `:` or `[` except for a qualifier Ably knows, which must be followed by a
/// name of its own; a derived channel's filter must parse.
pub fn parse(name: &str) -> Result<Qualified<'_>, AblyError> {
    let invalid = |why: &str| {
        AblyError::new(
            ErrorCode::InvalidChannelName,
            format!("Invalid channel name {name:?}: {why}"),
        )
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > MAX_CHANNEL_NAME {
        return Err(invalid("too long"));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid("control characters"));
    }
    let mut q = Qualified {
        base: name,
        filter: None,
        params: Vec::new(),
    };
    if let Some(rest) = name.strip_prefix('[') {
        let (qualifier, base) = rest
            .split_once(']')
            .ok_or_else(|| invalid("unterminated qualifier"))?;
        if qualifier != "meta" {
            let (filter, params) = match qualifier.split_once('?') {
                Some((f, p)) => (f, Some(p)),
                None => (qualifier, None),
            };
            if let Some(encoded) = filter.strip_prefix("filter=") {
                let source = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| invalid("filter is not base64 text"))?;
                let f = Filter::parse(&source)
                    .map_err(|e| invalid(&format!("invalid filter expression: {e}")))?;
                q.filter = Some(f);
            } else if !filter.is_empty() || params.is_none() {
                return Err(invalid("unknown qualifier"));
            }
            q.params = form_urlencoded::parse(params.unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
            q.base = base;
        }
        if base.is_empty() {
            return Err(invalid("must not start with ':' or '['"));
        }
        let b = base;
        if b.starts_with(':') || b.starts_with('[') {
            return Err(invalid("must not start with ':' or '['"));
        }
    } else if name.starts_with(':') {
        return Err(invalid("must not start with ':' or '['"));
    }
    Ok(q)
}

/// The channel whose messages `name` carries: the base of a view, else `name`.
/// Names that do not parse are their own (they are refused where they come in).
pub fn base(name: &str) -> &str {
    if !name.starts_with('[') {
        return name;
    }
    match parse(name) {
        Ok(q) if q.is_view() => q.base,
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn names_and_views() {
        // (The naming rules themselves: hub's `channel_names_follow_ablys_rules`.)
        let e = parse("[filter=!!!]c").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidChannelName);
        let q = parse("[?rewind=1&delta=vcdiff]chan").unwrap();
        assert_eq!(q.base, "chan");
        assert_eq!(
            q.params,
            vec![
                ("rewind".into(), "1".into()),
                ("delta".into(), "vcdiff".into())
            ]
        );
        let derived = format!("[filter={}?rewind=2]chan", b64("name == 'x'"));
        let q = parse(&derived).unwrap();
        assert!(q.filter.is_some());
        assert_eq!(q.params, vec![("rewind".into(), "2".into())]);
        assert_eq!(base(&derived), "chan");
        assert_eq!(base("[meta]log"), "[meta]log");
        let bad_expr = format!("[filter={}]chan", b64("name =="));
        assert!(parse(&bad_expr).is_err());
    }
}
