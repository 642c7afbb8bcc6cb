//! In-process test helpers: run commands against a fresh store without sockets,
//! e.g. `t.run(&["SET", "k", "v"])`. Used by the unit tests beside each family.

use std::sync::Arc;

use bytes::Bytes;
use tidewire_resp::{Protocol, Reply};

use crate::{Client, Outcome, Store};

pub struct TestClient {
    pub store: Arc<Store>,
    pub client: Client,
}

impl TestClient {
    pub fn new() -> Self {
        Self::with_store(Store::new())
    }

    /// A client of a store whose config allows DEBUG (`enable-debug-command yes`).
    pub fn with_debug() -> Self {
        let t = Self::new();
        t.store
            .config
            .set("enable-debug-command", "yes")
            .expect("enable-debug-command is a config");
        t
    }

    pub fn with_store(store: Arc<Store>) -> Self {
        let client = store.new_client("127.0.0.1:1".into(), "127.0.0.1:6379".into(), "internal");
        TestClient { store, client }
    }

    /// Runs a command that must block, and returns its parked waiter.
    pub fn block(&mut self, args: &[&str]) -> crate::Blocked {
        let argv: Vec<Bytes> = args
            .iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        let mut out = Vec::new();
        match self.store.execute(&mut self.client, &argv, &mut out) {
            Outcome::Blocked(b) => b,
            Outcome::Replies => panic!("expected {args:?} to block, got {out:?}"),
        }
    }

    /// Another client on the same store.
    pub fn other(&self) -> Self {
        Self::with_store(self.store.clone())
    }

    /// Runs one command; returns its (last) reply. A command that would block
    /// returns `Reply::Status("BLOCKED")` and leaves no waiter behind.
    pub fn run(&mut self, args: &[&str]) -> Reply {
        let argv: Vec<Bytes> = args
            .iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        self.run_bytes(argv)
    }

    pub fn run_bytes(&mut self, argv: Vec<Bytes>) -> Reply {
        let mut out = Vec::new();
        match self.store.execute(&mut self.client, &argv, &mut out) {
            Outcome::Replies => out.pop().unwrap_or(Reply::Null),
            Outcome::Blocked(b) => {
                self.store.blocking.unregister(&b.waiter, &b.keys);
                Reply::Status("BLOCKED")
            }
        }
    }

    /// Runs a command and returns the reply as RESP text in the client's protocol,
    /// handy for exact comparisons: `assert_eq!(t.resp(&["GET","k"]), "$1\r\nv\r\n")`.
    pub fn resp(&mut self, args: &[&str]) -> String {
        let proto = self.client.proto;
        let r = self.run(args);
        String::from_utf8_lossy(&r.to_bytes(proto)).into_owned()
    }

    pub fn set_proto(&mut self, proto: Protocol) {
        self.client.proto = proto;
    }
}

impl Default for TestClient {
    fn default() -> Self {
        Self::new()
    }
}

/// Shorthands for expected replies.
pub fn bulk(s: &str) -> Reply {
    Reply::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}

pub fn err(s: &str) -> Reply {
    Reply::Error(s.to_string())
}

pub fn ok() -> Reply {
    Reply::Status("OK")
}

pub fn int(n: i64) -> Reply {
    Reply::Int(n)
}

pub fn bulks(items: &[&str]) -> Reply {
    Reply::Array(items.iter().map(|s| bulk(s)).collect())
}

/// OBJECT ENCODING of a key in db 0, read straight from the keyspace.
pub fn encoding_of(t: &TestClient, key: &str) -> &'static str {
    let mut ks = t.store.keyspace.lock_all();
    ks.get(0, key.as_bytes(), crate::clock::now_ms())
        .map_or("none", |e| e.value.encoding())
}

/// A write log that keeps what the store logs as lines (`"SET k v"`), for tests
/// of what commands propagate.
#[derive(Default)]
pub struct LogRecorder(pub parking_lot::Mutex<Vec<String>>);

impl crate::WriteLog for LogRecorder {
    fn append(&self, cmds: &[(usize, Vec<Bytes>)]) -> u64 {
        let mut v = self.0.lock();
        for (_, argv) in cmds {
            let words: Vec<String> = argv
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            v.push(words.join(" "));
        }
        v.len() as u64
    }
}
