//! Clients blocked on keys (BLPOP and friends). A blocked command registers a waiter
//! on each of its keys while still holding the keys' shard locks, so a push that
//! happens afterwards always finds it.
//!
//! Serving works as in Redis: the command that made a key ready (a push, ZADD,
//! LMOVE, EXEC …) serves that key's waiters itself, oldest first, right after
//! releasing its locks and before its connection runs anything else
//! (`Store::serve_ready` in `exec.rs`). It re-runs each waiter's command on the
//! waiter's behalf and hands the reply over; keys made ready by that run are served
//! next, in order. So service is FIFO per key, a pipelined `LPUSH k x; BLPOP k 0`
//! cannot overtake a client already waiting, and chains (BRPOPLPUSH into a list
//! another client waits on) resolve in Redis's order.
//!
//! A waiter is in one of four states: waiting, being served, served (reply ready),
//! gone (timed out, unblocked or disconnected). The waiting connection and a serving
//! pusher race only through that state, so a timeout never loses a served element.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tidewire_resp::{Protocol, Reply};
use tokio::sync::Notify;

use crate::client::ClientInfo;

use crate::error::CmdError;

/// `strtold` also reads hexadecimal (`0x1F`, `0x1.8p3`); Redis's timeout parsing
/// inherits that, so `0x7FFFFFFFFFFFFF` is "out of range" rather than "not a float".
fn parse_hex_float(arg: &[u8]) -> Option<f64> {
    let (neg, rest) = match arg.first()? {
        b'-' => (true, &arg[1..]),
        b'+' => (false, &arg[1..]),
        _ => (false, arg),
    };
    let rest = rest
        .strip_prefix(b"0x")
        .or_else(|| rest.strip_prefix(b"0X"))?;
    let (mant, exp) = match rest.iter().position(|c| *c == b'p' || *c == b'P') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let (int, frac) = match mant.iter().position(|c| *c == b'.') {
        Some(i) => (&mant[..i], &mant[i + 1..]),
        None => (mant, &mant[..0]),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut v = 0f64;
    for c in int {
        v = v * 16.0 + (*c as char).to_digit(16)? as f64;
    }
    let mut scale = 1.0 / 16.0;
    for c in frac {
        v += (*c as char).to_digit(16)? as f64 * scale;
        scale /= 16.0;
    }
    if let Some(e) = exp {
        let e: i32 = std::str::from_utf8(e).ok()?.parse().ok()?;
        v *= 2f64.powi(e);
    }
    Some(if neg { -v } else { v })
}

/// A blocking command's timeout argument: float seconds with millisecond resolution
/// (rounded up, as Redis does), `None` for 0 = forever. Redis's error texts.
pub fn parse_timeout(arg: &[u8]) -> Result<Option<Duration>, CmdError> {
    let secs = crate::num::parse_f64(arg)
        .or_else(|| parse_hex_float(arg))
        .ok_or_else(|| CmdError::err("timeout is not a float or out of range"))?;
    let ms = secs * 1000.0;
    if ms > i64::MAX as f64 {
        return Err(CmdError::err("timeout is out of range"));
    }
    let ms = ms.ceil();
    if ms < 0.0 {
        return Err(CmdError::err("timeout is negative"));
    }
    if ms == 0.0 {
        return Ok(None);
    }
    let ms = ms as i64;
    if ms > i64::MAX - crate::clock::now_ms() as i64 {
        return Err(CmdError::err("timeout is out of range"));
    }
    Ok(Some(Duration::from_millis(ms as u64)))
}

/// What a blocked command waits for, declared in the command table
/// (`CommandSpec::blocks_on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Elements in a list (BLPOP …).
    List,
    /// Members in a sorted set (BZPOPMIN …).
    ZSet,
    /// Entries in a stream (XREAD).
    Stream,
    /// Entries for a consumer group (XREADGROUP); also woken when the key is
    /// deleted, retyped or loses the group, to reply with the error.
    StreamGroup,
    /// A lock's release (TW.LOCK.ACQUIRE … WAIT): served when the key is gone
    /// (released, deleted or expired), oldest waiter first.
    Lock,
    /// A single-flight fill (TW.FILL.GET … WAIT): served when the value lands or
    /// the fill's lease ends (one waiter then becomes the filler).
    Fill,
    /// The append-only log's fsync (WAITAOF): no key; woken to look again after
    /// each fsync, when the log is turned off, and by the cron.
    Fsync,
}

impl BlockKind {
    /// Whether serving a waiter takes what it got (pops): then, once one waiter
    /// finds nothing, the ones behind it would not either.
    pub fn consumes(self) -> bool {
        matches!(
            self,
            BlockKind::List | BlockKind::ZSet | BlockKind::Lock | BlockKind::Fill
        )
    }
}

/// What a pusher needs to run a blocked command on its client's behalf.
pub struct Job {
    pub argv: Vec<Bytes>,
    pub db: usize,
    pub proto: Protocol,
    pub info: Arc<ClientInfo>,
    pub kind: BlockKind,
    pub keys: Vec<(usize, Bytes)>,
    /// Time (µs) of the run that blocked (see `Events::blocked_us`).
    pub blocked_us: u64,
}

enum State {
    Waiting,
    Serving,
    Served(Vec<Reply>),
    Gone,
}

pub struct Waiter {
    pub client_id: u64,
    pub notify: Notify,
    woken: AtomicBool,
    registered: AtomicBool,
    job: Option<Job>,
    state: Mutex<State>,
}

impl Waiter {
    pub fn take_wakeup(&self) -> bool {
        self.woken.swap(false, Ordering::SeqCst)
    }

    pub fn job(&self) -> Option<&Job> {
        self.job.as_ref()
    }

    fn waits_for_fsync(&self) -> bool {
        self.job
            .as_ref()
            .is_some_and(|j| j.kind == BlockKind::Fsync)
    }

    /// Pusher side: claims a waiting waiter for serving.
    pub fn begin_serving(&self) -> bool {
        let mut s = self.state.lock();
        if matches!(*s, State::Waiting) {
            *s = State::Serving;
            true
        } else {
            false
        }
    }

    /// Pusher side: the command found nothing after all; the waiter keeps waiting
    /// (and keeps its place in every queue).
    pub fn not_served(&self) {
        let mut s = self.state.lock();
        if matches!(*s, State::Serving) {
            *s = State::Waiting;
        }
    }

    /// Pusher side: hands the replies over and wakes the connection.
    pub fn finish_served(&self, replies: Vec<Reply>) {
        *self.state.lock() = State::Served(replies);
        self.woken.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// Connection side: the replies, if a pusher served this waiter.
    pub fn take_served(&self) -> Option<Vec<Reply>> {
        let mut s = self.state.lock();
        if let State::Served(_) = &*s {
            if let State::Served(r) = std::mem::replace(&mut *s, State::Gone) {
                return Some(r);
            }
        }
        None
    }

    /// Connection side: is a pusher running the command right now?
    pub fn is_serving(&self) -> bool {
        matches!(*self.state.lock(), State::Serving)
    }

    /// Connection side: stops waiting (timeout, CLIENT UNBLOCK, disconnect). False
    /// when a pusher is serving or has served the waiter: its reply must be used.
    pub fn abandon(&self) -> bool {
        let mut s = self.state.lock();
        match *s {
            State::Waiting | State::Gone => {
                *s = State::Gone;
                true
            }
            State::Serving | State::Served(_) => false,
        }
    }
}

/// (db, key) → waiters in arrival order.
type WaiterQueues = HashMap<(usize, Bytes), VecDeque<Arc<Waiter>>>;

#[derive(Default)]
pub struct Blocking {
    waiters: Mutex<WaiterQueues>,
    blocked_clients: AtomicUsize,
    /// Keys with waiters, mirrored from `waiters` under its lock, so that every
    /// push can ask "is anyone blocked at all?" without taking that global lock.
    keys_waited: AtomicUsize,
    /// Clients in WAITAOF ([`BlockKind::Fsync`]), and how many (read on each fsync
    /// without the lock).
    fsync_waiters: Mutex<Vec<Arc<Waiter>>>,
    fsync_waiting: AtomicUsize,
}

impl Blocking {
    /// Parks a client on `keys`; `job` lets pushers serve it directly.
    pub fn register(
        &self,
        client_id: u64,
        keys: &[(usize, Bytes)],
        job: Option<Job>,
    ) -> Arc<Waiter> {
        let waiter = Arc::new(Waiter {
            client_id,
            notify: Notify::new(),
            woken: AtomicBool::new(false),
            registered: AtomicBool::new(true),
            job,
            state: Mutex::new(State::Waiting),
        });
        if waiter.waits_for_fsync() {
            let mut list = self.fsync_waiters.lock();
            list.push(waiter.clone());
            self.fsync_waiting.store(list.len(), Ordering::Release);
        }
        let mut map = self.waiters.lock();
        for k in keys {
            map.entry(k.clone()).or_default().push_back(waiter.clone());
        }
        self.keys_waited.store(map.len(), Ordering::Release);
        self.blocked_clients.fetch_add(1, Ordering::Relaxed);
        waiter
    }

    /// Wakes every client in WAITAOF to look at the log again.
    pub fn wake_fsync_waiters(&self) {
        if self.fsync_waiting.load(Ordering::Acquire) == 0 {
            return;
        }
        for w in self.fsync_waiters.lock().iter() {
            if !w.woken.swap(true, Ordering::SeqCst) {
                w.notify.notify_one();
            }
        }
    }

    /// Removes a waiter from every key (served, timed out, or disconnected).
    /// Idempotent: the pusher that serves a waiter and its connection may both call it.
    pub fn unregister(&self, waiter: &Arc<Waiter>, keys: &[(usize, Bytes)]) {
        if !waiter.registered.swap(false, Ordering::SeqCst) {
            return;
        }
        if waiter.waits_for_fsync() {
            let mut list = self.fsync_waiters.lock();
            list.retain(|w| !Arc::ptr_eq(w, waiter));
            self.fsync_waiting.store(list.len(), Ordering::Release);
        }
        {
            let mut map = self.waiters.lock();
            for k in keys {
                if let Some(q) = map.get_mut(k) {
                    q.retain(|w| !Arc::ptr_eq(w, waiter));
                    if q.is_empty() {
                        map.remove(k);
                    }
                }
            }
            self.keys_waited.store(map.len(), Ordering::Release);
        }
        self.blocked_clients.fetch_sub(1, Ordering::Relaxed);
        // A legacy wake-up this waiter took but never used goes to the next one.
        if waiter.take_wakeup() && waiter.job.is_none() {
            for (db, key) in keys {
                self.signal(*db, key);
            }
        }
    }

    /// Whether some client waits on this key (no copy of the key is made).
    pub fn is_waited(&self, db: usize, key: &Bytes) -> bool {
        let map = self.waiters.lock();
        !map.is_empty() && map.contains_key(&(db, key.clone()))
    }

    /// The waiters of a key, oldest first (a snapshot: serving happens unlocked).
    pub fn queue(&self, db: usize, key: &[u8]) -> Vec<Arc<Waiter>> {
        let map = self.waiters.lock();
        if map.is_empty() {
            return Vec::new();
        }
        map.get(&(db, Bytes::copy_from_slice(key)))
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Wakes the oldest not-yet-woken waiter on the key, which then runs its command
    /// again itself (used for waiters registered without a job).
    pub fn signal(&self, db: usize, key: &[u8]) {
        let map = self.waiters.lock();
        if map.is_empty() {
            return;
        }
        if let Some(q) = map.get(&(db, Bytes::copy_from_slice(key))) {
            if let Some(w) = q.iter().find(|w| !w.woken.load(Ordering::SeqCst)) {
                w.woken.store(true, Ordering::SeqCst);
                w.notify.notify_one();
            }
        }
    }

    /// The keys clients wait on in `db`, for commands that change a database as
    /// a whole (FLUSHDB, SWAPDB).
    pub fn waited_keys(&self, db: usize) -> Vec<(usize, Bytes)> {
        self.waiters
            .lock()
            .keys()
            .filter(|(d, _)| *d == db)
            .cloned()
            .collect()
    }

    /// INFO's `total_blocking_keys` and `total_blocking_keys_on_nokey`: keys with
    /// waiters, and those with a waiter that must hear of the key's deletion.
    pub fn key_counts(&self) -> (usize, usize) {
        let map = self.waiters.lock();
        let nokey = map
            .values()
            .filter(|q| {
                q.iter().any(|w| {
                    w.job
                        .as_ref()
                        .is_some_and(|j| j.kind == BlockKind::StreamGroup)
                })
            })
            .count();
        (map.len(), nokey)
    }

    /// Whether any client is blocked on any key. A client blocks while holding its
    /// keys' shard locks, so a pusher asking under the same lock cannot miss it.
    pub fn has_waiters(&self) -> bool {
        self.keys_waited.load(Ordering::Acquire) != 0
    }

    pub fn blocked_clients(&self) -> usize {
        self.blocked_clients.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testkit::*;
    use tidewire_resp::Reply;

    #[test]
    fn pusher_serves_waiters_in_order() {
        let mut a = TestClient::new();
        let mut b = a.other();
        let mut c = a.other();
        let wa = a.block(&["BLPOP", "q", "0"]);
        let wb = b.block(&["BRPOPLPUSH", "q", "dst", "0"]);
        let wc = c.block(&["BLPOP", "dst", "0"]);
        assert_eq!(a.store.blocking.blocked_clients(), 3);
        // One push, two elements: a then b, and b's move serves c.
        let mut p = a.other();
        assert_eq!(p.run(&["RPUSH", "q", "x", "y"]), int(2));
        assert_eq!(wa.waiter.take_served(), Some(vec![bulks(&["q", "x"])]));
        assert_eq!(wb.waiter.take_served(), Some(vec![bulk("y")]));
        assert_eq!(wc.waiter.take_served(), Some(vec![bulks(&["dst", "y"])]));
        assert_eq!(a.store.blocking.blocked_clients(), 0);
        assert!(!a.store.blocking.has_waiters());
        // A push followed by a pop from the pusher cannot overtake a waiter.
        let wa = a.block(&["BZPOPMIN", "z", "0"]);
        assert_eq!(p.run(&["ZADD", "z", "1", "m"]), int(1));
        assert_eq!(p.run(&["ZPOPMIN", "z"]), Reply::Array(vec![]));
        assert_eq!(
            wa.waiter.take_served(),
            Some(vec![Reply::Array(vec![
                bulk("z"),
                bulk("m"),
                Reply::Double(1.0)
            ])])
        );
        // A waiter that gave up (timeout) is skipped; the next one is served.
        let wa = a.block(&["BLPOP", "k", "0"]);
        let wb = b.block(&["BLPOP", "k", "0"]);
        assert!(wa.waiter.abandon());
        a.store.blocking.unregister(&wa.waiter, &wa.keys);
        p.run(&["LPUSH", "k", "v"]);
        assert_eq!(wa.waiter.take_served(), None);
        assert_eq!(wb.waiter.take_served(), Some(vec![bulks(&["k", "v"])]));
        assert_eq!(p.run(&["EXISTS", "k"]), int(0));
    }

    #[test]
    fn blocking_pops_propagate_as_plain_pops() {
        let mut a = TestClient::new();
        let log = Arc::new(LogRecorder::default());
        a.store.set_write_log(log.clone());
        let mut p = a.other();
        p.run(&["RPUSH", "l", "x"]);
        a.run(&["BLPOP", "l", "0"]);
        let wa = a.block(&["BRPOPLPUSH", "l", "d", "0"]);
        p.run(&["RPUSH", "l", "y"]);
        assert_eq!(wa.waiter.take_served(), Some(vec![bulk("y")]));
        p.run(&["ZADD", "z", "1", "m", "2", "n"]);
        a.run(&["BZMPOP", "0", "1", "z", "MAX", "COUNT", "5"]);
        a.run(&["BLPOP", "nothing", "0"]);
        assert_eq!(
            *log.0.lock(),
            vec![
                "RPUSH l x",
                "LPOP l",
                "RPUSH l y",
                "RPOPLPUSH l d",
                "ZADD z 1 m 2 n",
                "ZPOPMAX z 2",
            ]
        );
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout(b"0").unwrap(), None);
        assert_eq!(
            parse_timeout(b"0.0001").unwrap(),
            Some(Duration::from_millis(1))
        );
        assert_eq!(
            parse_timeout(b"1.5").unwrap(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_timeout(b"0x10").unwrap(),
            Some(Duration::from_millis(16000))
        );
        assert_eq!(
            parse_timeout(b"0x7FFFFFFFFFFFFF").unwrap_err().text(),
            "ERR timeout is out of range"
        );
        assert_eq!(
            parse_timeout(b"inf").unwrap_err().text(),
            "ERR timeout is out of range"
        );
        assert_eq!(
            parse_timeout(b"-0.5").unwrap_err().text(),
            "ERR timeout is negative"
        );
        assert_eq!(
            parse_timeout(b"1x").unwrap_err().text(),
            "ERR timeout is not a float or out of range"
        );
    }
}
