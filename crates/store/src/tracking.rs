//! Client-side caching (Redis's `tracking.c`): `CLIENT TRACKING`. A client with
//! tracking on is told when keys it may have cached change:
//!
//! - default mode: the keys of the read-only commands it ran are remembered (key →
//!   client ids, across databases as in Redis); when one changes, each client that
//!   read it gets one `invalidate` message for it and the key is forgotten;
//! - BCAST mode: nothing is remembered; every changed key under one of the
//!   client's prefixes is announced, batched per command (a MULTI … EXEC is one
//!   command) and per prefix.
//!
//! Messages go to the client itself as a RESP3 push (`>2 invalidate [keys]`), or
//! to its REDIRECT client: a RESP3 push there too, or, for a RESP2 client
//! subscribed to `__redis__:invalidate`, a pub/sub message on that channel. A
//! flush invalidates everything (`invalidate` with nil). The common case (no client
//! tracking) costs one atomic load per change.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tidewire_resp::Reply;

use crate::client::ClientInfo;

/// The channel RESP2 clients subscribe to for redirected invalidations.
pub const CHANNEL: &[u8] = b"__redis__:invalidate";

/// What `CLIENT TRACKING on` asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrackingOptions {
    /// Client id to send invalidations to; 0 = the client itself.
    pub redirect: u64,
    pub bcast: bool,
    pub optin: bool,
    pub optout: bool,
    pub noloop: bool,
    pub prefixes: Vec<Bytes>,
}

struct Tracker {
    info: Arc<ClientInfo>,
    opts: TrackingOptions,
    /// The redirect client went away (TRACKINGINFO's `broken_redirect`).
    broken: bool,
}

#[derive(Default)]
struct State {
    clients: HashMap<u64, Tracker>,
    /// Default mode: key → ids of the clients that read it.
    keys: HashMap<Bytes, HashSet<u64>>,
    /// BCAST mode: prefix → ids of the clients registered for it.
    prefixes: BTreeMap<Bytes, HashSet<u64>>,
}

#[derive(Default)]
pub struct Tracking {
    /// Clients with tracking on.
    active: AtomicUsize,
    state: Mutex<State>,
}

thread_local! {
    /// While set, invalidations for this client id are kept here instead of
    /// pushed: they go out before the reply of the command being checked.
    static EARLY: std::cell::RefCell<Option<(u64, Vec<Reply>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` (the eviction check before a command) keeping the invalidations it
/// sends to `client_id`, to be written before that command's reply.
pub fn capture_for<R>(client_id: u64, f: impl FnOnce() -> R) -> (R, Vec<Reply>) {
    EARLY.with(|e| *e.borrow_mut() = Some((client_id, Vec::new())));
    let r = f();
    let early = EARLY.with(|e| e.borrow_mut().take().map(|(_, v)| v).unwrap_or_default());
    (r, early)
}

/// Keeps `msg` for the command being checked if it is for that client.
fn captured(target: u64, msg: &Reply) -> bool {
    EARLY.with(|e| match e.borrow_mut().as_mut() {
        Some((id, v)) if *id == target => {
            v.push(msg.clone());
            true
        }
        _ => false,
    })
}

/// Finds a connected client by id (the store's registry).
pub type Lookup<'a> = &'a dyn Fn(u64) -> Option<Arc<ClientInfo>>;

impl Tracking {
    /// Whether any client has tracking on.
    pub fn any(&self) -> bool {
        self.active.load(Ordering::Relaxed) > 0
    }

    /// Number of clients with tracking on (INFO's `tracking_clients`).
    pub fn clients(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Keys in the default-mode table (INFO's `tracking_total_keys`) and the
    /// number of (key, client) entries (`tracking_total_items`).
    pub fn table_size(&self) -> (usize, usize) {
        let st = self.state.lock();
        (st.keys.len(), st.keys.values().map(|s| s.len()).sum())
    }

    /// Number of BCAST prefixes (INFO's `tracking_total_prefixes`).
    pub fn prefix_count(&self) -> usize {
        self.state.lock().prefixes.len()
    }

    pub fn options(&self, id: u64) -> Option<(TrackingOptions, bool)> {
        let st = self.state.lock();
        st.clients.get(&id).map(|t| (t.opts.clone(), t.broken))
    }

    /// A new BCAST prefix list for a client: Redis's overlap errors.
    pub fn check_prefixes(&self, id: u64, new: &[Bytes]) -> Result<(), String> {
        let overlap = |a: &[u8], b: &[u8]| {
            let n = a.len().min(b.len());
            a[..n] == b[..n]
        };
        let st = self.state.lock();
        let existing: Vec<Bytes> = st
            .clients
            .get(&id)
            .map(|t| t.opts.prefixes.clone())
            .unwrap_or_default();
        for (i, p) in new.iter().enumerate() {
            if let Some(q) = existing.iter().find(|q| overlap(q, p)) {
                return Err(format!(
                    "Prefix '{}' overlaps with an existing prefix '{}'. Prefixes for a single client must not overlap.",
                    String::from_utf8_lossy(p),
                    String::from_utf8_lossy(q)
                ));
            }
            if let Some(q) = new[i + 1..].iter().find(|q| overlap(p, q)) {
                return Err(format!(
                    "Prefix '{}' overlaps with another provided prefix '{}'. Prefixes for a single client must not overlap.",
                    String::from_utf8_lossy(p),
                    String::from_utf8_lossy(q)
                ));
            }
        }
        Ok(())
    }

    /// `CLIENT TRACKING on`: options replace the previous ones; BCAST prefixes
    /// add to those the client has (the empty prefix when none is given).
    pub fn enable(&self, info: &Arc<ClientInfo>, mut opts: TrackingOptions) {
        let id = info.id;
        let mut st = self.state.lock();
        let previous = st.clients.remove(&id);
        if previous.is_none() {
            self.active.fetch_add(1, Ordering::Relaxed);
        }
        if opts.bcast {
            let mut prefixes = previous.map(|t| t.opts.prefixes).unwrap_or_default();
            if opts.prefixes.is_empty() && prefixes.is_empty() {
                opts.prefixes.push(Bytes::new());
            }
            for p in &opts.prefixes {
                st.prefixes.entry(p.clone()).or_default().insert(id);
                if !prefixes.contains(p) {
                    prefixes.push(p.clone());
                }
            }
            opts.prefixes = prefixes;
        }
        st.clients.insert(
            id,
            Tracker {
                info: info.clone(),
                opts,
                broken: false,
            },
        );
    }

    /// `CLIENT TRACKING off`, or the client went away. Its entries in the key
    /// table are dropped lazily (as Redis does), its prefixes at once.
    pub fn disable(&self, id: u64) {
        if !self.any() {
            return;
        }
        let mut st = self.state.lock();
        let Some(t) = st.clients.remove(&id) else {
            return;
        };
        self.active.fetch_sub(1, Ordering::Relaxed);
        for p in &t.opts.prefixes {
            if let Some(ids) = st.prefixes.get_mut(p) {
                ids.remove(&id);
                if ids.is_empty() {
                    st.prefixes.remove(p);
                }
            }
        }
    }

    /// After a read-only command of a default-mode client: remember its keys.
    /// `caching` is the pending `CLIENT CACHING yes|no`.
    pub fn remember<'k>(
        &self,
        id: u64,
        caching: Option<bool>,
        keys: impl Iterator<Item = &'k Bytes>,
        max_keys: usize,
        lookup: Lookup<'_>,
    ) {
        let mut st = self.state.lock();
        let Some(t) = st.clients.get(&id) else {
            return;
        };
        if t.opts.bcast
            || (t.opts.optin && caching != Some(true))
            || (t.opts.optout && caching == Some(false))
        {
            return;
        }
        for k in keys {
            st.keys.entry(k.clone()).or_default().insert(id);
        }
        Self::limit_table(&mut st, max_keys, lookup);
    }

    /// `tracking-table-max-keys` (0: no limit): keys beyond it are forgotten and
    /// their readers told to drop them, as Redis's `trackingLimitUsedSlots`.
    /// Also run periodically, so a lowered limit applies without new reads.
    pub fn enforce_limit(&self, max_keys: usize, lookup: Lookup<'_>) {
        if !self.any() {
            return;
        }
        Self::limit_table(&mut self.state.lock(), max_keys, lookup);
    }

    fn limit_table(st: &mut State, max_keys: usize, lookup: Lookup<'_>) {
        if max_keys == 0 {
            return;
        }
        while st.keys.len() > max_keys {
            let Some(k) = st.keys.keys().next().cloned() else {
                break;
            };
            Self::invalidate_key(st, &k, 0, lookup);
        }
    }

    /// Keys changed by one command (or one EXEC, one expiry pass …), each with
    /// the id of the client that changed it (0: the server itself).
    pub fn invalidate(&self, changed: &[(Bytes, u64)], lookup: Lookup<'_>) {
        if changed.is_empty() || !self.any() {
            return;
        }
        let mut st = self.state.lock();
        for (key, origin) in changed {
            Self::invalidate_key(&mut st, key, *origin, lookup);
        }
        if st.prefixes.is_empty() {
            return;
        }
        // BCAST: one message per prefix and client with the keys under it.
        let mut batches: Vec<(u64, Vec<Bytes>)> = Vec::new();
        for (prefix, ids) in &st.prefixes {
            for id in ids {
                let noloop = st.clients.get(id).is_some_and(|t| t.opts.noloop);
                let keys: Vec<Bytes> = changed
                    .iter()
                    .filter(|(k, origin)| k.starts_with(prefix) && !(noloop && origin == id))
                    .map(|(k, _)| k.clone())
                    .collect();
                if !keys.is_empty() {
                    batches.push((*id, keys));
                }
            }
        }
        for (id, keys) in batches {
            let payload = Reply::Array(keys.into_iter().map(Reply::Bulk).collect());
            Self::send(&mut st, id, payload, lookup);
        }
    }

    /// FLUSHDB / FLUSHALL: every tracking client drops its whole cache.
    pub fn flush(&self, lookup: Lookup<'_>) {
        let mut st = self.state.lock();
        // Entries of clients that turned tracking off go too.
        st.keys.clear();
        let ids: Vec<u64> = st.clients.keys().copied().collect();
        for id in ids {
            Self::send(&mut st, id, Reply::Null, lookup);
        }
    }

    fn invalidate_key(st: &mut State, key: &Bytes, origin: u64, lookup: Lookup<'_>) {
        let Some(ids) = st.keys.remove(key) else {
            return;
        };
        for id in ids {
            let skip = match st.clients.get(&id) {
                None => true,
                Some(t) => t.opts.bcast || (t.opts.noloop && id == origin),
            };
            if !skip {
                let payload = Reply::Array(vec![Reply::Bulk(key.clone())]);
                Self::send(st, id, payload, lookup);
            }
        }
    }

    /// Delivers one invalidation (`payload`: the keys, or nil for a flush) to a
    /// tracking client or its redirect target (Redis's `sendTrackingMessage`).
    fn send(st: &mut State, id: u64, payload: Reply, lookup: Lookup<'_>) {
        let Some(t) = st.clients.get_mut(&id) else {
            return;
        };
        let (target, redirected) = if t.opts.redirect != 0 {
            match lookup(t.opts.redirect) {
                Some(target) => (target, true),
                None => {
                    t.broken = true;
                    if resp3(&t.info) {
                        let msg = Reply::Push(vec![
                            Reply::Bulk(Bytes::from_static(b"tracking-redir-broken")),
                            Reply::Int(t.opts.redirect as i64),
                        ]);
                        t.info.push(msg, 64, 0);
                    }
                    return;
                }
            }
        } else {
            (t.info.clone(), false)
        };
        let size = 64
            + match &payload {
                Reply::Array(keys) => keys.len() * 32,
                _ => 0,
            };
        let msg = if resp3(&target) {
            Reply::Push(vec![
                Reply::Bulk(Bytes::from_static(b"invalidate")),
                payload,
            ])
        } else if redirected && subscribed(&target) {
            Reply::Push(vec![
                Reply::Bulk(Bytes::from_static(b"message")),
                Reply::Bulk(Bytes::from_static(CHANNEL)),
                payload,
            ])
        } else {
            return;
        };
        if !captured(target.id, &msg) {
            target.push(msg, size, 0);
        }
    }
}

/// In subscribed mode (any channel, pattern or shard channel): where Redis
/// sends a RESP2 redirect target its invalidations as pub/sub messages.
fn subscribed(info: &ClientInfo) -> bool {
    info.subscriptions.load(Ordering::Relaxed)
        + info.psubscriptions.load(Ordering::Relaxed)
        + info.ssubscriptions.load(Ordering::Relaxed)
        > 0
}

fn resp3(info: &ClientInfo) -> bool {
    info.resp.load(Ordering::Relaxed) == 3
}

#[cfg(test)]
mod tests {
    use tidewire_resp::{Protocol, Reply};

    use crate::testkit::*;

    type Rx = tokio::sync::mpsc::UnboundedReceiver<(Reply, usize)>;

    fn pushes(rx: &mut Rx) -> Vec<Reply> {
        let mut out = Vec::new();
        while let Ok((r, _)) = rx.try_recv() {
            out.push(r);
        }
        out
    }

    fn listen(t: &mut TestClient) -> Rx {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        t.client.info.set_push_channel(tx);
        rx
    }

    fn invalidate(keys: &[&str]) -> Reply {
        Reply::Push(vec![bulk("invalidate"), bulks(keys)])
    }

    #[test]
    fn default_mode_bcast_noloop_and_flush() {
        let mut a = TestClient::new();
        a.run(&["HELLO", "3"]);
        let mut rx = listen(&mut a);
        let mut w = a.other();
        assert_eq!(a.run(&["CLIENT", "TRACKING", "on"]), ok());
        w.run(&["MSET", "k1", "1", "k2", "2"]);
        a.run(&["MGET", "k1", "k2"]);
        // Written keys the client never read are not announced.
        w.run(&["SET", "other", "x"]);
        w.run(&["INCR", "k1"]);
        assert_eq!(pushes(&mut rx), vec![invalidate(&["k1"])]);
        // Once told, a key is forgotten until read again.
        w.run(&["INCR", "k1"]);
        assert_eq!(pushes(&mut rx), vec![]);
        // Its own writes too, unless NOLOOP.
        a.run(&["SET", "k2", "mine"]);
        assert_eq!(pushes(&mut rx), vec![invalidate(&["k2"])]);
        a.run(&["CLIENT", "TRACKING", "on", "NOLOOP"]);
        a.run(&["GET", "k2"]);
        a.run(&["SET", "k2", "again"]);
        assert_eq!(pushes(&mut rx), vec![]);
        assert_eq!(
            a.run(&["CLIENT", "TRACKING", "on", "BCAST"]),
            err("ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode.")
        );
        // BCAST: one message per command and prefix.
        a.run(&["CLIENT", "TRACKING", "off"]);
        a.run(&[
            "CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "user:", "PREFIX", "cart:",
        ]);
        w.run(&[
            "MSET", "user:1", "a", "user:2", "b", "cart:1", "c", "misc", "d",
        ]);
        let mut got = pushes(&mut rx);
        got.sort_by_key(|r| format!("{r:?}"));
        assert_eq!(
            got,
            vec![invalidate(&["cart:1"]), invalidate(&["user:1", "user:2"])]
        );
        assert_eq!(
            a.run(&["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "use"]),
            err("ERR Prefix 'use' overlaps with an existing prefix 'user:'. Prefixes for a single client must not overlap.")
        );
        w.run(&["FLUSHALL"]);
        assert_eq!(
            pushes(&mut rx),
            vec![Reply::Push(vec![bulk("invalidate"), Reply::Null])]
        );
    }

    #[test]
    fn redirect_to_a_resp2_subscriber_and_optin() {
        let mut a = TestClient::new();
        let mut sub = a.other();
        let mut rx = listen(&mut sub);
        sub.run(&["SUBSCRIBE", "__redis__:invalidate"]);
        pushes(&mut rx);
        let mut w = a.other();
        let redirect = sub.client.id().to_string();
        a.run(&["CLIENT", "TRACKING", "on", "REDIRECT", &redirect, "OPTIN"]);
        assert_eq!(a.run(&["CLIENT", "GETREDIR"]), int(sub.client.id() as i64));
        a.run(&["GET", "k"]);
        w.run(&["SET", "k", "1"]);
        assert_eq!(pushes(&mut rx), vec![], "OPTIN without CLIENT CACHING yes");
        a.run(&["CLIENT", "CACHING", "yes"]);
        a.run(&["GET", "k"]);
        a.run(&["GET", "k2"]);
        w.run(&["MSET", "k", "2", "k2", "2"]);
        assert_eq!(
            pushes(&mut rx),
            vec![Reply::Push(vec![
                bulk("message"),
                bulk("__redis__:invalidate"),
                bulks(&["k"]),
            ])],
            "CLIENT CACHING covers one command"
        );
        assert_eq!(
            a.run(&["CLIENT", "CACHING", "no"]),
            err("ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.")
        );
        a.set_proto(Protocol::Resp2);
        assert_eq!(
            a.run(&["CLIENT", "TRACKING", "on", "REDIRECT", "999999"]),
            err("ERR The client ID you want redirect to does not exist")
        );
    }
}
