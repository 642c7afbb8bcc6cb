//! Which master owns which slot. Read from `CLUSTER SLOTS`; a standalone server
//! (cluster support disabled) is one master owning every slot.

use std::sync::Arc;

use tidewire_resp::Reply;

use crate::slot::SLOT_COUNT;

/// The slot map: an owner per slot, and the distinct masters.
#[derive(Clone, Debug)]
pub struct SlotMap {
    owners: Vec<Option<Arc<str>>>,
    masters: Vec<Arc<str>>,
}

impl Default for SlotMap {
    fn default() -> Self {
        SlotMap {
            owners: vec![None; SLOT_COUNT as usize],
            masters: Vec::new(),
        }
    }
}

impl SlotMap {
    /// One server owning every slot.
    pub fn standalone(addr: &str) -> SlotMap {
        let addr: Arc<str> = addr.into();
        SlotMap {
            owners: vec![Some(addr.clone()); SLOT_COUNT as usize],
            masters: vec![addr],
        }
    }

    /// Reads a `CLUSTER SLOTS` reply given by the node at `asked` (whose address
    /// stands in for an empty or unknown host). `None` if it is not one.
    pub fn from_cluster_slots(reply: &Reply, asked: &str) -> Option<SlotMap> {
        let Reply::Array(ranges) = reply else {
            return None;
        };
        let asked_host = split_addr(asked).0;
        let mut map = SlotMap::default();
        for range in ranges {
            let Reply::Array(fields) = range else {
                return None;
            };
            let (Some(Reply::Int(start)), Some(Reply::Int(end)), Some(Reply::Array(master))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                return None;
            };
            let host = match master.first() {
                Some(Reply::Bulk(h)) => String::from_utf8_lossy(h).into_owned(),
                Some(Reply::SimpleString(h)) => h.clone(),
                _ => return None,
            };
            let Some(Reply::Int(port)) = master.get(1) else {
                return None;
            };
            let host = if host.is_empty() || host == "?" {
                asked_host.to_owned()
            } else {
                host
            };
            let addr = map.intern(&join_addr(&host, *port));
            let last = SLOT_COUNT as i64 - 1;
            if !(0..=last).contains(start) || !(*start..=last).contains(end) {
                return None;
            }
            for slot in *start..=*end {
                map.owners[slot as usize] = Some(addr.clone());
            }
        }
        Some(map)
    }

    /// The master serving `slot`, if known.
    pub fn owner(&self, slot: u16) -> Option<Arc<str>> {
        self.owners.get(slot as usize).cloned().flatten()
    }

    /// Every master, each once, in address order (stable while the topology is).
    pub fn masters(&self) -> &[Arc<str>] {
        &self.masters
    }

    /// Records what a `MOVED` said: `slot` is now served by `addr`.
    pub fn moved(&mut self, slot: u16, addr: &str) {
        let addr = self.intern(addr);
        if let Some(owner) = self.owners.get_mut(slot as usize) {
            *owner = Some(addr);
        }
    }

    fn intern(&mut self, addr: &str) -> Arc<str> {
        if let Some(known) = self.masters.iter().find(|m| &***m == addr) {
            return known.clone();
        }
        let addr: Arc<str> = addr.into();
        let at = self.masters.partition_point(|m| **m < *addr);
        self.masters.insert(at, addr.clone());
        addr
    }
}

/// `host:port` (an IPv6 host in brackets) → (host, port text).
pub fn split_addr(addr: &str) -> (&str, &str) {
    addr.rsplit_once(':').unwrap_or((addr, ""))
}

/// An address for `connect`: IPv6 hosts get their brackets.
pub fn join_addr(host: &str, port: i64) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: i64) -> Reply {
        Reply::Array(vec![
            Reply::Bulk(host.as_bytes().to_vec().into()),
            Reply::Int(port),
            Reply::Bulk("id".into()),
        ])
    }

    #[test]
    fn reads_cluster_slots() {
        let reply = Reply::Array(vec![
            Reply::Array(vec![
                Reply::Int(0),
                Reply::Int(5460),
                node("10.0.0.1", 7000),
            ]),
            Reply::Array(vec![
                Reply::Int(5461),
                Reply::Int(16383),
                node("", 7001),
                node("10.0.0.9", 7009),
            ]),
        ]);
        let map = SlotMap::from_cluster_slots(&reply, "10.0.0.5:7005").unwrap();
        assert_eq!(map.owner(0).as_deref(), Some("10.0.0.1:7000"));
        assert_eq!(map.owner(5460).as_deref(), Some("10.0.0.1:7000"));
        assert_eq!(map.owner(5461).as_deref(), Some("10.0.0.5:7001"));
        assert_eq!(map.masters().len(), 2);
        let mut map = map;
        map.moved(0, "10.0.0.5:7001");
        assert_eq!(map.owner(0).as_deref(), Some("10.0.0.5:7001"));
        assert_eq!(map.masters().len(), 2);
    }

    #[test]
    fn refuses_what_is_not_a_slot_map() {
        assert!(SlotMap::from_cluster_slots(&Reply::Int(1), "h:1").is_none());
        let bad = Reply::Array(vec![Reply::Array(vec![
            Reply::Int(10),
            Reply::Int(99999),
            node("h", 1),
        ])]);
        assert!(SlotMap::from_cluster_slots(&bad, "h:1").is_none());
        // An empty map is a cluster with no slots assigned yet.
        let empty = SlotMap::from_cluster_slots(&Reply::Array(vec![]), "h:1").unwrap();
        assert!(empty.owner(0).is_none());
    }

    #[test]
    fn addresses() {
        assert_eq!(split_addr("[::1]:7000"), ("[::1]", "7000"));
        assert_eq!(join_addr("::1", 7000), "[::1]:7000");
        assert_eq!(join_addr("h", 1), "h:1");
        assert_eq!(
            SlotMap::standalone("h:1").owner(16383).as_deref(),
            Some("h:1")
        );
    }
}
