//! The connection registry: every connection by connectionId, live or resumable.
//!
//! A connection whose transport drops (as opposed to a CLOSE or a fatal error) stays
//! registered as *disconnected* for `connectionStateTtl`; a new transport presenting
//! its connectionKey in `resume=`/`recover=` takes it over and keeps the
//! connectionId and the msgSerial sequence (so re-sent publishes are not duplicated).
//! Channel continuity is restored separately, from history, when the client
//! re-attaches with its last `channelSerial` (see `Backlog::FromSerial` in `channel.rs`).
//!
//! Each registration carries a *generation* (the transport's slot id) so that a stale
//! transport finishing late cannot clobber the entry a newer one took over.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::error::{AblyError, ErrorCode};

/// A registered connection, as seen from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRecord {
    pub connection_id: String,
    /// `<secret>!<connectionId>`: names the connection and proves possession.
    pub connection_key: String,
    pub client_id: Option<String>,
    /// Key the connection authenticated with (resume requires the same one).
    pub key_name: String,
    pub connected_ms: i64,
    /// `None` while a transport is attached; otherwise when it was lost.
    pub disconnected_ms: Option<i64>,
}

/// State shared between a registry entry and the transport currently serving it.
#[derive(Debug, Clone)]
pub struct SessionLink {
    /// Last msgSerial processed, `i64::MIN` when none.
    pub msg_serial: Arc<AtomicI64>,
    /// Signalled when a resume takes the connection over from a transport that has
    /// not noticed its own loss yet.
    pub superseded: Arc<Notify>,
    /// Signalled when an operator closes the connection (the dashboard's
    /// disconnect): the transport serving it says DISCONNECTED and ends, not
    /// resumable. A stored permit means a transport that is between wake-ups
    /// still sees it.
    pub kicked: Arc<Notify>,
    /// Channels where this connection has entered presence members.
    presence_channels: Arc<Mutex<HashSet<String>>>,
    /// Channels whose members were removed while the connection was parked: the
    /// next re-attach must not claim continuity, so the client re-enters.
    presence_lost: Arc<Mutex<HashSet<String>>>,
    /// For a connection taken over from another node ([`Registry::adopt`]): the
    /// channels re-attached here since. Its members are that node's, which
    /// removes them (after its grace, or when reaped as dead), so each channel's
    /// first re-attach here must not claim continuity either. `None` otherwise.
    adopted: Arc<Mutex<Option<HashSet<String>>>>,
}

impl SessionLink {
    fn new() -> Self {
        SessionLink {
            msg_serial: Arc::new(AtomicI64::new(i64::MIN)),
            superseded: Arc::new(Notify::new()),
            kicked: Arc::new(Notify::new()),
            presence_channels: Arc::default(),
            presence_lost: Arc::default(),
            adopted: Arc::default(),
        }
    }

    /// Records that the connection has presence members on `channel`.
    pub fn note_presence(&self, channel: &str) {
        let mut set = self
            .presence_channels
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !set.contains(channel) {
            set.insert(channel.to_owned());
        }
    }

    /// Channels with presence members, forgetting them (they are being removed).
    pub fn take_presence_channels(&self) -> Vec<String> {
        let mut set = self
            .presence_channels
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        set.drain().collect()
    }

    /// Notes that members on `channels` were removed while parked.
    pub fn mark_presence_lost(&self, channels: &[String]) {
        let mut set = self.presence_lost.lock().unwrap_or_else(|p| p.into_inner());
        set.extend(channels.iter().cloned());
    }

    /// Whether members on `channel` were removed while parked (clears the mark),
    /// or may be removed by the node the connection was taken over from (true
    /// once per channel after [`Registry::adopt`]).
    pub fn take_presence_lost(&self, channel: &str) -> bool {
        let lost = {
            let mut set = self.presence_lost.lock().unwrap_or_else(|p| p.into_inner());
            set.remove(channel)
        };
        let mut adopted = self.adopted.lock().unwrap_or_else(|p| p.into_inner());
        let first_here = adopted
            .as_mut()
            .is_some_and(|reattached| reattached.insert(channel.to_owned()));
        lost || first_here
    }

    /// Last processed msgSerial.
    pub fn last_msg_serial(&self) -> Option<i64> {
        match self.msg_serial.load(Ordering::Relaxed) {
            i64::MIN => None,
            n => Some(n),
        }
    }

    pub fn set_last_msg_serial(&self, n: i64) {
        self.msg_serial.store(n, Ordering::Relaxed);
    }
}

struct Entry {
    record: ConnectionRecord,
    generation: u64,
    link: SessionLink,
}

/// All connections, keyed by connectionId.
#[derive(Default)]
pub struct Registry {
    entries: Mutex<HashMap<String, Entry>>,
}

/// Why a resume could not take over a connection (reported in CONNECTED.error).
fn resume_error(code: ErrorCode, why: &str) -> AblyError {
    AblyError::new(
        code,
        format!("Unable to resume connection ({why}); a new connection was created"),
    )
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new live connection served by transport `generation`.
    pub fn register(&self, record: ConnectionRecord, generation: u64) -> SessionLink {
        let link = SessionLink::new();
        self.lock().insert(
            record.connection_id.clone(),
            Entry {
                record,
                generation,
                link: link.clone(),
            },
        );
        link
    }

    /// Lets transport `generation` take over the connection named by `key`, if the
    /// credentials match and its state is still within `ttl_ms`.
    pub fn resume(
        &self,
        key: &str,
        key_name: &str,
        client_id: Option<&str>,
        generation: u64,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<(ConnectionRecord, SessionLink), AblyError> {
        // Keys this server makes are `<12 alphanumerics>!<10 alphanumerics>`; any
        // other shape was never one of ours (80018), where a well-formed key that
        // is not known any more has expired (80008).
        let well_formed =
            |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_alphanumeric());
        let Some((_, id)) = key
            .split_once('!')
            .filter(|(secret, id)| well_formed(secret, 12) && well_formed(id, 10))
        else {
            return Err(resume_error(
                ErrorCode::InvalidConnectionKey,
                "invalid connection key",
            ));
        };
        let mut map = self.lock();
        let Some(entry) = map.get_mut(id).filter(|e| e.record.connection_key == key) else {
            return Err(resume_error(
                ErrorCode::ConnectionExpired,
                "connection not found or expired",
            ));
        };
        if entry
            .record
            .disconnected_ms
            .is_some_and(|t| now_ms - t > ttl_ms)
        {
            map.remove(id);
            return Err(resume_error(
                ErrorCode::ConnectionExpired,
                "connection expired",
            ));
        }
        if entry.record.key_name != key_name || entry.record.client_id.as_deref() != client_id {
            return Err(resume_error(
                ErrorCode::IncompatibleResumeAuth,
                "incompatible auth params",
            ));
        }
        if entry.record.disconnected_ms.is_none() {
            // The old transport is still running: tell it to step aside.
            entry.link.superseded.notify_one();
        }
        entry.generation = generation;
        entry.record.disconnected_ms = None;
        // A new key for the same connection (as Ably): the transport this one
        // replaces can no longer take it back with the old key.
        entry.record.connection_key = connection_key_for(id);
        entry.link.superseded = Arc::new(Notify::new());
        Ok((entry.record.clone(), entry.link.clone()))
    }

    /// Registers a connection another node served, parked (since that node lost
    /// its transport, or since now if that node died serving it), with its
    /// msgSerial, so that [`Registry::resume`] can take it over. Generation 0 is
    /// never a transport's. Its presence members stay the other node's: each
    /// channel's first re-attach here reports them lost
    /// ([`SessionLink::take_presence_lost`]), so that the client enters them
    /// again, here.
    pub fn adopt(&self, mut record: ConnectionRecord, msg_serial: Option<i64>) {
        let link = SessionLink::new();
        if let Some(n) = msg_serial {
            link.set_last_msg_serial(n);
        }
        *link.adopted.lock().unwrap_or_else(|p| p.into_inner()) = Some(HashSet::new());
        record
            .disconnected_ms
            .get_or_insert_with(crate::auth::now_ms);
        self.lock().insert(
            record.connection_id.clone(),
            Entry {
                record,
                generation: 0,
                link,
            },
        );
    }

    /// Forgets a connection (an adopted one another node took over first).
    pub fn forget(&self, connection_id: &str) {
        self.lock().remove(connection_id);
    }

    /// Forgets a connection if it still has connectionKey `key` (one another node
    /// took over while this one kept it parked).
    pub fn forget_if_key(&self, connection_id: &str, key: &str) {
        let mut map = self.lock();
        if map
            .get(connection_id)
            .is_some_and(|e| e.record.connection_key == key)
        {
            map.remove(connection_id);
        }
    }

    /// Transport `generation` ended. A resumable end keeps the entry for resume; any
    /// other end forgets it. Ignored if a newer transport owns the entry.
    pub fn ended(&self, connection_id: &str, generation: u64, resumable: bool, now_ms: i64) {
        let mut map = self.lock();
        let Some(entry) = map.get_mut(connection_id) else {
            return;
        };
        if entry.generation != generation {
            return;
        }
        if resumable {
            entry.record.disconnected_ms = Some(now_ms);
        } else {
            map.remove(connection_id);
        }
    }

    /// Forgets disconnected connections older than `ttl_ms`.
    pub fn sweep(&self, now_ms: i64, ttl_ms: i64) {
        self.lock().retain(|_, e| {
            e.record
                .disconnected_ms
                .is_none_or(|t| now_ms - t <= ttl_ms)
        });
    }

    /// Every connection (live or resumable) with the transport generation serving
    /// it: read-only, for operators' views (the dashboard), which have no other
    /// way to enumerate connections.
    pub fn list(&self) -> Vec<(ConnectionRecord, u64)> {
        let mut v: Vec<(ConnectionRecord, u64)> = self
            .lock()
            .values()
            .map(|e| (e.record.clone(), e.generation))
            .collect();
        v.sort_by(|a, b| a.0.connection_id.cmp(&b.0.connection_id));
        v
    }

    /// Asks the transport serving a live connection to close it, or forgets a
    /// parked (resumable) one so it cannot be resumed. False if unknown.
    pub fn kick(&self, connection_id: &str) -> bool {
        let mut map = self.lock();
        let Some(entry) = map.get(connection_id) else {
            return false;
        };
        if entry.record.disconnected_ms.is_some() {
            map.remove(connection_id);
        } else {
            entry.link.kicked.notify_one();
        }
        true
    }

    /// Snapshot of one connection.
    pub fn get(&self, connection_id: &str) -> Option<ConnectionRecord> {
        self.lock().get(connection_id).map(|e| e.record.clone())
    }

    /// Snapshot of one connection with its last msgSerial (what the engine keeps)
    /// and the transport generation serving it.
    pub fn state(&self, connection_id: &str) -> Option<(ConnectionRecord, Option<i64>, u64)> {
        self.lock()
            .get(connection_id)
            .map(|e| (e.record.clone(), e.link.last_msg_serial(), e.generation))
    }

    /// Snapshot of the connection named by a connectionKey.
    pub fn get_by_key(&self, key: &str) -> Option<ConnectionRecord> {
        let (_, id) = key.split_once('!')?;
        self.lock()
            .get(id)
            .filter(|e| e.record.connection_key == key)
            .map(|e| e.record.clone())
    }
}

/// A fresh connectionKey for connection `id`: `<12 alphanumerics>!<id>`.
pub(crate) fn connection_key_for(id: &str) -> String {
    use rand::distributions::{Alphanumeric, DistString};
    format!(
        "{}!{id}",
        Alphanumeric.sample_string(&mut rand::thread_rng(), 12)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str) -> ConnectionRecord {
        ConnectionRecord {
            connection_id: id.into(),
            connection_key: format!("s3cr3ts3cr3t!{id}"),
            client_id: Some("c".into()),
            key_name: "a.b".into(),
            connected_ms: 0,
            disconnected_ms: None,
        }
    }

    #[test]
    fn resume_within_ttl_keeps_id_and_msg_serial() {
        let r = Registry::default();
        let link = r.register(rec("xxxxxxxxxx"), 1);
        link.set_last_msg_serial(7);
        r.ended("xxxxxxxxxx", 1, true, 1_000);
        let (got, link2) = r
            .resume(
                "s3cr3ts3cr3t!xxxxxxxxxx",
                "a.b",
                Some("c"),
                2,
                2_000,
                120_000,
            )
            .unwrap();
        assert_eq!(got.connection_id, "xxxxxxxxxx");
        assert_eq!(got.disconnected_ms, None);
        assert_eq!(link2.last_msg_serial(), Some(7));
        // The old transport ending late changes nothing.
        r.ended("xxxxxxxxxx", 1, false, 3_000);
        assert!(r.get("xxxxxxxxxx").is_some());
    }

    #[test]
    fn an_adopted_connection_claims_no_presence_continuity_on_first_reattach() {
        let r = Registry::default();
        r.adopt(rec("xxxxxxxxxx"), Some(3));
        let (_, link) = r
            .resume("s3cr3ts3cr3t!xxxxxxxxxx", "a.b", Some("c"), 2, 0, 120_000)
            .unwrap();
        assert_eq!(link.last_msg_serial(), Some(3));
        // The other node's members may be gone: re-enter, once per channel.
        assert!(link.take_presence_lost("a"));
        assert!(!link.take_presence_lost("a"), "re-attached here since");
        assert!(link.take_presence_lost("b"));
        // A connection this node registered keeps the usual rule.
        let own = r.register(rec("yyyyyyyyyy"), 3);
        assert!(!own.take_presence_lost("a"));
        own.mark_presence_lost(&["a".to_owned()]);
        assert!(own.take_presence_lost("a"));
    }

    #[test]
    fn resume_refusals() {
        let r = Registry::default();
        r.register(rec("xxxxxxxxxx"), 1);
        r.ended("xxxxxxxxxx", 1, true, 0);
        let code = |res: Result<_, AblyError>| res.map(|_| ()).unwrap_err().code;
        assert_eq!(
            code(r.resume("nobang", "a.b", Some("c"), 2, 0, 10)),
            ErrorCode::InvalidConnectionKey
        );
        assert_eq!(
            code(r.resume("_____!ablyjs_test_fake-key____", "a.b", None, 2, 0, 10)),
            ErrorCode::InvalidConnectionKey
        );
        assert_eq!(
            code(r.resume("wrongwrong00!xxxxxxxxxx", "a.b", Some("c"), 2, 0, 10)),
            ErrorCode::ConnectionExpired
        );
        assert_eq!(
            code(r.resume("s3cr3ts3cr3t!xxxxxxxxxx", "a.other", Some("c"), 2, 0, 10)),
            ErrorCode::IncompatibleResumeAuth
        );
        assert_eq!(
            code(r.resume("s3cr3ts3cr3t!xxxxxxxxxx", "a.b", Some("c"), 2, 100, 10)),
            ErrorCode::ConnectionExpired
        );
        assert!(r.get("xxxxxxxxxx").is_none());
    }

    #[tokio::test]
    async fn kick_signals_live_and_forgets_parked() {
        let r = Registry::default();
        let link = r.register(rec("xxxxxxxxxx"), 1);
        r.register(rec("yyyyyyyyyy"), 2);
        r.ended("yyyyyyyyyy", 2, true, 0);
        assert_eq!(r.list().len(), 2);
        assert!(r.kick("xxxxxxxxxx"));
        // The permit is kept for a transport that is not waiting right now.
        tokio::time::timeout(std::time::Duration::from_secs(1), link.kicked.notified())
            .await
            .expect("kick signalled");
        assert!(r.get("xxxxxxxxxx").is_some());
        assert!(r.kick("yyyyyyyyyy"));
        assert!(r.get("yyyyyyyyyy").is_none());
        assert!(!r.kick("zzzzzzzzzz"));
    }

    #[test]
    fn clean_end_forgets_and_sweep_expires() {
        let r = Registry::default();
        r.register(rec("xxxxxxxxxx"), 1);
        r.ended("xxxxxxxxxx", 1, false, 0);
        assert!(r.get("xxxxxxxxxx").is_none());
        r.register(rec("yyyyyyyyyy"), 2);
        r.ended("yyyyyyyyyy", 2, true, 0);
        r.sweep(5, 10);
        assert!(r.get_by_key("s3cr3ts3cr3t!yyyyyyyyyy").is_some());
        r.sweep(11, 10);
        assert!(r.get_by_key("s3cr3ts3cr3t!yyyyyyyyyy").is_none());
    }
}
