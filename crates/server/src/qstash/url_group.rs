//! URL groups (QStash's topics): a name for several endpoints. A message
//! published to the name becomes one message per endpoint, each delivered,
//! retried and dead-lettered on its own. Kept in the keyspace beside the
//! messages: `qstash:urlgroup:<name>` (JSON) and `qstash:urlgroups` (names by
//! creation time).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tidewire_store::Reply;

use super::message::{destination, Refused};
use super::storage::{argv, ids, Storage};

const GROUPS: &str = "qstash:urlgroups";
/// Most endpoints one group holds.
pub const MAX_ENDPOINTS: usize = 100;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Endpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UrlGroup {
    pub name: String,
    pub created_at: u64,
    pub updated_at: u64,
    pub endpoints: Vec<Endpoint>,
}

impl UrlGroup {
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "endpoints": self.endpoints,
        })
    }
}

/// A group name: letters, digits, `-`, `_` and `.`, at most 128 bytes; anything
/// else is neither a URL nor a group.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn key(name: &str) -> String {
    format!("qstash:urlgroup:{name}")
}

/// `{"endpoints":[{"name"?,"url"?}, …]}` from a request body.
pub fn parse_endpoints(body: &[u8], need_url: bool) -> Result<Vec<Endpoint>, Refused> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| Refused::bad("body must be {\"endpoints\": [{\"name\", \"url\"}, …]}"))?;
    let Some(list) = v.get("endpoints").and_then(Value::as_array) else {
        return Err(Refused::bad(
            "body must be {\"endpoints\": [{\"name\", \"url\"}, …]}",
        ));
    };
    if list.is_empty() || list.len() > MAX_ENDPOINTS {
        return Err(Refused::bad(format!(
            "give between 1 and {MAX_ENDPOINTS} endpoints"
        )));
    }
    list.iter()
        .map(|e| {
            let name = e.get("name").and_then(Value::as_str).map(str::to_string);
            let url = match e.get("url").and_then(Value::as_str) {
                Some(u) => destination(u)?,
                None if need_url => return Err(Refused::bad("every endpoint needs a url")),
                None if name.is_none() => {
                    return Err(Refused::bad("every endpoint needs a name or a url"))
                }
                None => String::new(),
            };
            Ok(Endpoint { name, url })
        })
        .collect()
}

impl Storage {
    pub fn url_group(&self, name: &str) -> Option<UrlGroup> {
        match self.one(argv(&["GET", &key(name)])) {
            Reply::Bulk(b) => serde_json::from_slice(&b).ok(),
            _ => None,
        }
    }

    pub fn url_groups(&self) -> Vec<UrlGroup> {
        ids(self.one(argv(&["ZRANGE", GROUPS, "0", "-1"])))
            .iter()
            .filter_map(|n| self.url_group(n))
            .collect()
    }

    /// Stores a group; with no endpoints left, deletes it.
    pub fn save_url_group(&self, g: &UrlGroup) -> Result<u64, String> {
        if g.endpoints.is_empty() {
            return Ok(self.delete_url_group(&g.name).1);
        }
        let json = serde_json::to_vec(g).unwrap_or_default();
        self.write(&[
            vec![
                Bytes::from_static(b"SET"),
                Bytes::from(key(&g.name)),
                Bytes::from(json),
            ],
            argv(&["ZADD", GROUPS, "NX", &g.created_at.to_string(), &g.name]),
        ])
        .map(|(_, seq)| seq)
    }

    pub fn delete_url_group(&self, name: &str) -> (bool, u64) {
        let (r, seq) = self.run(&[argv(&["DEL", &key(name)]), argv(&["ZREM", GROUPS, name])]);
        (matches!(r.first(), Some(Reply::Int(1))), seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_endpoint_lists() {
        assert!(valid_name("orders.v2_eu-1"));
        assert!(!valid_name("") && !valid_name("a/b") && !valid_name("https://x"));
        assert!(!valid_name(&"a".repeat(129)));
        let eps = parse_endpoints(
            br#"{"endpoints":[{"name":"a","url":"https://a.example/x"},{"url":"http://b.example"}]}"#,
            true,
        )
        .unwrap();
        assert_eq!(eps[0].name.as_deref(), Some("a"));
        assert_eq!(eps[1].url, "http://b.example");
        assert!(parse_endpoints(br#"{"endpoints":[{"name":"a"}]}"#, true).is_err());
        assert_eq!(
            parse_endpoints(br#"{"endpoints":[{"name":"a"}]}"#, false).unwrap()[0].url,
            ""
        );
        assert!(parse_endpoints(br#"{"endpoints":[{"url":"nope"}]}"#, true).is_err());
        assert!(parse_endpoints(br#"{"endpoints":[]}"#, true).is_err());
        assert!(parse_endpoints(b"[]", true).is_err());
    }
}
