//! Capabilities: which operations a key or token may perform on which channels.
//!
//! A [`Capability`] maps resource patterns to operation sets, parsed from Ably's JSON
//! form `{"resource": ["subscribe", "publish", ...]}`. Matching follows Ably's rules:
//! `*` stands for one whole `:`-separated segment, a trailing `*` for one or more
//! segments (`stream:*` matches `stream:a:chat`), `foo*` is a literal name, a lone `*`
//! matches every channel except `[meta]…` ones, and `[*]*` matches everything.
//! Tokens get the intersection of what they ask for and what their key holds
//! ([`Capability::intersect`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{AblyError, ErrorCode};

/// Operations a capability can grant.
pub mod ops {
    pub const SUBSCRIBE: &str = "subscribe";
    pub const PUBLISH: &str = "publish";
    pub const PRESENCE: &str = "presence";
    pub const HISTORY: &str = "history";
    pub const CHANNEL_METADATA: &str = "channel-metadata";
    pub const ANNOTATION_PUBLISH: &str = "annotation-publish";
    pub const ANNOTATION_SUBSCRIBE: &str = "annotation-subscribe";
    pub const MESSAGE_UPDATE_ANY: &str = "message-update-any";
    pub const MESSAGE_DELETE_ANY: &str = "message-delete-any";
    pub const ALL: &str = "*";
}

/// Every operation name Ably's capabilities know (a capability naming another
/// is refused, as Ably refuses it).
const KNOWN_OPS: [&str; 18] = [
    "*",
    "subscribe",
    "publish",
    "presence",
    "history",
    "channel-metadata",
    "push-subscribe",
    "push-admin",
    "statistics",
    "privileged-headers",
    "object-subscribe",
    "object-publish",
    "annotation-subscribe",
    "annotation-publish",
    "message-update-own",
    "message-update-any",
    "message-delete-own",
    "message-delete-any",
];

/// A parsed, canonical capability.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capability {
    grants: BTreeMap<String, BTreeSet<String>>,
}

impl Capability {
    /// Everything on every channel: `{"*":["*"]}`.
    pub fn all() -> Self {
        let mut grants = BTreeMap::new();
        grants.insert("*".to_owned(), BTreeSet::from(["*".to_owned()]));
        Capability { grants }
    }

    /// Parses the JSON text form (as in TokenRequests and JWT claims).
    pub fn parse(text: &str) -> Result<Self, AblyError> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            AblyError::new(
                ErrorCode::InvalidParameterValue,
                format!("Invalid capability JSON: {e}"),
            )
        })?;
        Self::from_value(&v)
    }

    /// Parses the JSON value form (map of resource to operation list).
    pub fn from_value(v: &serde_json::Value) -> Result<Self, AblyError> {
        let bad = |m: &str| {
            AblyError::new(
                ErrorCode::InvalidParameterValue,
                format!("Invalid capability: {m}"),
            )
        };
        let map = v.as_object().ok_or_else(|| bad("expected an object"))?;
        let mut grants = BTreeMap::new();
        for (resource, ops) in map {
            let list = ops
                .as_array()
                .ok_or_else(|| bad("operations must be an array"))?;
            let mut set = BTreeSet::new();
            for op in list {
                let op = op
                    .as_str()
                    .ok_or_else(|| bad("operations must be strings"))?;
                if !KNOWN_OPS.contains(&op) {
                    return Err(bad(&format!("unknown operation {op:?}")));
                }
                set.insert(op.to_owned());
            }
            if set.is_empty() {
                return Err(bad("empty operation list"));
            }
            if set.len() > 1 && set.contains(ops::ALL) {
                return Err(bad("'*' cannot be combined with other operations"));
            }
            grants.insert(resource.clone(), set);
        }
        if grants.is_empty() {
            return Err(bad("no resources"));
        }
        Ok(Capability { grants })
    }

    /// Canonical JSON text: sorted resources, sorted operations, no whitespace.
    pub fn to_canonical_json(&self) -> String {
        let m: BTreeMap<&String, Vec<&String>> = self
            .grants
            .iter()
            .map(|(k, v)| (k, v.iter().collect()))
            .collect();
        serde_json::to_string(&m).unwrap_or_else(|_| "{}".to_owned())
    }

    /// Whether `op` is permitted on `channel`.
    pub fn allows(&self, channel: &str, op: &str) -> bool {
        self.grants.iter().any(|(pattern, set)| {
            (set.contains(op) || set.contains(ops::ALL)) && resource_matches(pattern, channel)
        })
    }

    /// Whether any operation at all is permitted on `channel` (needed to attach).
    pub fn allows_any(&self, channel: &str) -> bool {
        self.grants
            .keys()
            .any(|pattern| resource_matches(pattern, channel))
    }

    /// The capability a token gets: the parts of `requested` that `self` (the key's
    /// capability) also grants. Empty intersection is a 40160 error, as in Ably.
    pub fn intersect(&self, requested: &Capability) -> Result<Capability, AblyError> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (rreq, oreq) in &requested.grants {
            for (rkey, okey) in &self.grants {
                let ops = intersect_ops(okey, oreq);
                if ops.is_empty() {
                    continue;
                }
                let target = if pattern_covers(rkey, rreq) {
                    rreq
                } else if pattern_covers(rreq, rkey) {
                    rkey
                } else {
                    continue;
                };
                out.entry(target.clone()).or_default().extend(ops);
            }
        }
        if out.is_empty() {
            return Err(AblyError::new(
                ErrorCode::CapabilityDenied,
                "Requested capability is not permitted by the key",
            ));
        }
        Ok(Capability { grants: out })
    }
}

fn intersect_ops(a: &BTreeSet<String>, b: &BTreeSet<String>) -> BTreeSet<String> {
    if a.contains(ops::ALL) {
        return b.clone();
    }
    if b.contains(ops::ALL) {
        return a.clone();
    }
    a.intersection(b).cloned().collect()
}

/// Whether resource `pattern` matches channel `name`.
pub fn resource_matches(pattern: &str, name: &str) -> bool {
    if pattern == "[*]*" {
        return true;
    }
    if let Some(meta_name) = name.strip_prefix("[meta]") {
        // Only explicit `[meta]` patterns (or `[*]*`) reach metachannels.
        return pattern
            .strip_prefix("[meta]")
            .is_some_and(|p| segments_match(p, meta_name));
    }
    if pattern == "*" {
        return true;
    }
    segments_match(pattern, name)
}

fn segments_match(pattern: &str, name: &str) -> bool {
    let p: Vec<&str> = pattern.split(':').collect();
    let n: Vec<&str> = name.split(':').collect();
    for (i, seg) in p.iter().enumerate() {
        let last = i + 1 == p.len();
        if *seg == "*" && last {
            // A trailing `*` needs at least one more segment.
            return n.len() > i;
        }
        match n.get(i) {
            Some(ns) if *seg == "*" || seg == ns => {}
            _ => return false,
        }
    }
    p.len() == n.len()
}

/// Whether every name that `inner` matches is also matched by `outer` (approximate,
/// conservative: treats `inner`'s wildcards as literals that only `*` can cover).
fn pattern_covers(outer: &str, inner: &str) -> bool {
    if outer == "[*]*" || outer == inner {
        return true;
    }
    if inner == "[*]*" {
        return false;
    }
    // Metachannels are matched only by `[meta]` patterns (see `resource_matches`), so
    // a `[meta]` pattern is covered only by another one, compared without the prefix.
    match (outer.strip_prefix("[meta]"), inner.strip_prefix("[meta]")) {
        (Some(outer), Some(inner)) => return outer == inner || segments_match(outer, inner),
        (None, Some(_)) | (Some(_), None) => return false,
        (None, None) => {}
    }
    if outer == "*" {
        return !inner.starts_with("[meta]");
    }
    if inner == "*" {
        return false;
    }
    // Segment-wise: `*` in outer covers any single inner segment including `*`;
    // a trailing `*` in outer covers any tail.
    segments_match(outer, inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(s: &str) -> Capability {
        Capability::parse(s).expect("valid capability")
    }

    #[test]
    fn wildcard_rules() {
        assert!(resource_matches("*", "anything:at:all"));
        assert!(!resource_matches("*", "[meta]log"));
        assert!(resource_matches("[*]*", "[meta]log"));
        assert!(resource_matches("stream:*", "stream:a"));
        assert!(resource_matches("stream:*", "stream:a:chat"));
        assert!(!resource_matches("stream:*", "stream"));
        assert!(!resource_matches("stream:*", "streams:a"));
        assert!(resource_matches("user:*:inbox", "user:42:inbox"));
        assert!(!resource_matches("user:*:inbox", "user:42:outbox"));
        assert!(!resource_matches("user:*:inbox", "user:42:x:inbox"));
        assert!(resource_matches("foo*", "foo*"));
        assert!(!resource_matches("foo*", "foobar"));
        assert!(resource_matches("exact", "exact"));
        assert!(!resource_matches("exact", "exact:more"));
    }

    #[test]
    fn allows_checks_operation() {
        let c = cap(r#"{"user:u1":["subscribe","history"],"stream:*":["*"]}"#);
        assert!(c.allows("user:u1", "subscribe"));
        assert!(!c.allows("user:u1", "publish"));
        assert!(c.allows("stream:9:chat", "publish"));
        assert!(!c.allows("user:u2", "subscribe"));
        assert!(c.allows_any("user:u1"));
        assert!(!c.allows_any("other"));
    }

    #[test]
    fn canonical_form_sorts_and_strips_whitespace() {
        let c = cap(r#"{ "b": ["subscribe", "publish"], "a": ["history"] }"#);
        assert_eq!(
            c.to_canonical_json(),
            r#"{"a":["history"],"b":["publish","subscribe"]}"#
        );
    }

    #[test]
    fn intersection() {
        let key = cap(r#"{"stream:*":["subscribe","publish"],"user:u1":["*"]}"#);
        let req = cap(r#"{"stream:1":["subscribe","presence"],"user:*":["history"]}"#);
        let got = key.intersect(&req).unwrap();
        assert_eq!(
            got.to_canonical_json(),
            r#"{"stream:1":["subscribe"],"user:u1":["history"]}"#
        );
        let all = Capability::all();
        assert_eq!(all.intersect(&req).unwrap(), req);
        let none = cap(r#"{"x":["publish"]}"#);
        assert_eq!(
            key.intersect(&none).unwrap_err().code,
            ErrorCode::CapabilityDenied
        );
    }

    #[test]
    fn intersection_never_reaches_metachannels_the_key_does_not() {
        // Found by the realtime_capability fuzz target: `*:*` segment-matches
        // `[meta]a:b`, yet a key holding `*:*` may not touch `[meta]` channels.
        let key = cap(r#"{"*:*":["subscribe","publish"]}"#);
        let req = cap(r#"{"[meta]a:b":["subscribe"],"x:y":["subscribe"]}"#);
        let got = key.intersect(&req).unwrap();
        assert_eq!(got.to_canonical_json(), r#"{"x:y":["subscribe"]}"#);
        assert!(!got.allows("[meta]a:b", "subscribe"));
        // Nor one the request did not ask for.
        let key = cap(r#"{"[meta]a:b":["subscribe"]}"#);
        let req = cap(r#"{"*:*":["subscribe"]}"#);
        assert_eq!(
            key.intersect(&req).unwrap_err().code,
            ErrorCode::CapabilityDenied
        );
        // `[meta]` patterns still intersect with each other and with `[*]*`.
        let key = cap(r#"{"[meta]*":["subscribe"]}"#);
        let req = cap(r#"{"[meta]log":["*"]}"#);
        assert_eq!(
            key.intersect(&req).unwrap().to_canonical_json(),
            r#"{"[meta]log":["subscribe"]}"#
        );
        let all = cap(r#"{"[*]*":["*"]}"#);
        assert_eq!(all.intersect(&req).unwrap(), req);
    }

    #[test]
    fn invalid_forms_rejected() {
        for s in [
            "[]",
            "{}",
            r#"{"a":"publish"}"#,
            r#"{"a":[]}"#,
            "nope",
            r#"{"a":["publish_"]}"#,
            r#"{"a":["*","publish"]}"#,
        ] {
            assert!(Capability::parse(s).is_err(), "{s}");
        }
    }
}
