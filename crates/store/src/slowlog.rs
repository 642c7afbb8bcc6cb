//! SLOWLOG: commands that ran longer than `slowlog-log-slower-than` microseconds.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;

pub struct SlowlogEntry {
    pub id: u64,
    pub time_secs: u64,
    pub duration_us: u64,
    pub argv: Vec<Bytes>,
    pub addr: String,
    pub name: String,
}

#[derive(Default)]
pub struct Slowlog {
    entries: Mutex<VecDeque<SlowlogEntry>>,
    next_id: AtomicU64,
}

/// Redis keeps at most 32 arguments and 128 bytes per argument in an entry.
const MAX_ARGS: usize = 32;
const MAX_ARG_LEN: usize = 128;

impl Slowlog {
    pub fn push(
        &self,
        argv: &[Bytes],
        duration_us: u64,
        addr: String,
        name: String,
        max_len: usize,
    ) {
        let mut args: Vec<Bytes> = Vec::with_capacity(argv.len().min(MAX_ARGS));
        for (i, a) in argv.iter().enumerate() {
            if i == MAX_ARGS - 1 && argv.len() > MAX_ARGS {
                args.push(Bytes::from(format!(
                    "... ({} more arguments)",
                    argv.len() - MAX_ARGS + 1
                )));
                break;
            }
            if a.len() > MAX_ARG_LEN {
                let mut s = a[..MAX_ARG_LEN].to_vec();
                s.extend_from_slice(
                    format!("... ({} more bytes)", a.len() - MAX_ARG_LEN).as_bytes(),
                );
                args.push(Bytes::from(s));
            } else {
                args.push(Bytes::copy_from_slice(a));
            }
        }
        let entry = SlowlogEntry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            time_secs: crate::clock::now_ms() / 1000,
            duration_us,
            argv: args,
            addr,
            name,
        };
        let mut e = self.entries.lock();
        e.push_front(entry);
        while e.len() > max_len {
            e.pop_back();
        }
    }

    pub fn with_entries<R>(&self, f: impl FnOnce(&VecDeque<SlowlogEntry>) -> R) -> R {
        f(&self.entries.lock())
    }

    pub fn reset(&self) {
        self.entries.lock().clear();
    }

    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
