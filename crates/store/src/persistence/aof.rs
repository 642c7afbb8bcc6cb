//! The append-only log (Redis 7's multi-part AOF).
//!
//! `<dir>/<appenddirname>/` holds a manifest naming one base file (snapshot format)
//! and the incremental files written since, oldest first. Writes reach the log as
//! follows: [`Aof::append`] (called by the dispatcher under the written keys' shard
//! locks, so in execution order per key) only encodes into an in-memory buffer and
//! returns a sequence number; one writer thread swaps the buffer out, writes it to the
//! current incremental file and fsyncs per `appendfsync`, then publishes the highest
//! fsynced sequence ([`DurableRelay`]). With `appendfsync always` a connection holds
//! its replies until that sequence covers its writes — group commit: one fsync
//! acknowledges every write buffered meanwhile, from all clients.
//!
//! Under `always`, when the server runs a committer task ([`Aof::commit_here`]), the
//! group commit happens on the runtime instead, once the connections that were
//! ready have run (Redis's `beforeSleep`): no hand-over to the writer thread and
//! back, two cross-thread wake-ups per fsync. On a single-threaded runtime the
//! committer also does the plain write under `everysec` and `no`, as Redis's event
//! loop does, and the writer thread keeps only everysec's fsync: waking that thread
//! every millisecond to write cost the server ~15k context switches per 500k SETs,
//! on a machine whose cores busy polling and the clients keep busy. The writer
//! thread then only fsyncs, rotates files, zeroes space ahead, retries after errors
//! and catches anything left waiting (see `Aof::writer`).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};

use super::format;
use super::log_file::{self, LogFile};
use crate::durable::{DurableRelay, DurableWaiter};
use crate::{LogCommitter, WriteLog};

pub const FSYNC_ALWAYS: u8 = 0;
pub const FSYNC_EVERYSEC: u8 = 1;
pub const FSYNC_NO: u8 = 2;

/// The highest sequence any log of this process ended at: a log opened later
/// continues from it, so a client's write sequence (WAITAOF's "offset") never
/// compares against a restarted count after `appendonly` goes off and on again.
static SEQ_FLOOR: AtomicU64 = AtomicU64::new(0);

/// Called after each fsync that moved [`Aof::fsynced`] (wakes WAITAOF's clients).
pub type FsyncListener = Box<dyn Fn() + Send + Sync>;

/// What the runtime's committer takes: nothing (none attached), the group commit
/// under `always`, or the buffer under every policy.
const COMMITS_NONE: u8 = 0;
const COMMITS_ALWAYS: u8 = 1;
const COMMITS_EVERY_POLICY: u8 = 2;

pub fn parse_policy(s: &str) -> u8 {
    match s {
        "always" => FSYNC_ALWAYS,
        "no" => FSYNC_NO,
        _ => FSYNC_EVERYSEC,
    }
}

/// The manifest: which files make up the log, in load order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifest {
    pub base: Option<String>,
    pub incrs: Vec<String>,
    /// Next number to use in file names.
    pub next: u64,
}

pub const MANIFEST_SUFFIX: &str = ".manifest";

/// The manifest's file name for the log named `stem` (`appendonly.aof.manifest`).
pub fn manifest_file(stem: &str) -> String {
    format!("{stem}{MANIFEST_SUFFIX}")
}

/// A base file's name: number `n` in the manifest's sequence.
pub fn base_file(stem: &str, n: u64) -> String {
    format!("{stem}.{n}.base.tws")
}

/// An incremental file's name: number `n` in the manifest's sequence.
pub fn incr_file(stem: &str, n: u64) -> String {
    format!("{stem}.{n}.incr.aof")
}

impl Manifest {
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let mut m = Manifest::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            let (mut name, mut kind, mut seq) = (None, None, None);
            for kv in parts.chunks(2) {
                match kv {
                    ["file", v] => name = Some(v.to_string()),
                    ["type", v] => kind = Some(v.to_string()),
                    ["seq", v] => seq = v.parse::<u64>().ok(),
                    _ => return Err(format!("invalid manifest line {}: {line}", n + 1)),
                }
            }
            let (Some(name), Some(kind)) = (name, kind) else {
                return Err(format!("invalid manifest line {}: {line}", n + 1));
            };
            if name.contains('/') || name.contains("..") {
                return Err(format!("invalid file name in manifest: {name}"));
            }
            m.next = m.next.max(seq.unwrap_or(0) + 1);
            match kind.as_str() {
                "b" => m.base = Some(name),
                "i" => m.incrs.push(name),
                "h" => {}
                _ => return Err(format!("invalid file type in manifest line {}", n + 1)),
            }
        }
        m.next = m.next.max(1);
        Ok(m)
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        if let Some(b) = &self.base {
            s.push_str(&format!("file {b} seq {} type b\n", seq_of(b)));
        }
        for i in &self.incrs {
            s.push_str(&format!("file {i} seq {} type i\n", seq_of(i)));
        }
        s
    }

    /// Writes the manifest atomically: temp file, fsync, rename, fsync the dir.
    pub fn save(&self, dir: &Path, name: &str) -> std::io::Result<()> {
        let tmp = dir.join(format!("temp-{name}"));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(self.render().as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, dir.join(name))?;
        sync_dir(dir)
    }
}

fn seq_of(file: &str) -> u64 {
    file.split('.')
        .filter_map(|p| p.parse::<u64>().ok())
        .next_back()
        .unwrap_or(0)
}

pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Where one incremental file stops being valid, found at load time.
struct Buf {
    data: Vec<u8>,
    seq: u64,
    last_db: usize,
    /// Switch to a new incremental file at this offset of `data` (rewrite start).
    rotate_at: Option<usize>,
    writer_waiting: bool,
    /// Appends since the writer last took `data` (each is one command batch of one
    /// connection, so roughly one waiting client under `appendfsync always`).
    appends: u64,
    /// A parked writer wants waking once `appends` reaches this (see `linger`).
    wake_at: u64,
    /// Counts every time the buffer was taken for writing (the writer's safety net
    /// tells from it whether the committer is keeping up).
    taken: u64,
    /// The committer leaves the buffer to the writer thread: the file was busy, or
    /// writing or syncing failed.
    handoff: bool,
    /// The committer asks the writer thread to zero space ahead (off the runtime).
    reserve_wanted: bool,
    /// The committer wrote to a file with nothing left to fsync: under everysec the
    /// writer thread now has an fsync to schedule.
    fsync_wanted: bool,
}

/// The open incremental file and how much of the log it holds. Locked by whoever
/// writes: the writer thread or the committer. Lock order: `disk`, then `buf`.
struct Disk {
    file: LogFile,
    /// Highest sequence written to the file, and the highest fsynced.
    written: u64,
    synced: u64,
    last_fsync: Instant,
    /// The batch being written (swapped with the buffer, so both keep capacity).
    scratch: Vec<u8>,
}

impl Disk {
    /// Empties the written batch for the next swap, giving back the memory of an
    /// unusually large one.
    fn recycle_scratch(&mut self) {
        self.scratch.clear();
        if self.scratch.capacity() > 8 << 20 {
            self.scratch = Vec::with_capacity(64 * 1024);
        }
    }
}

pub struct Aof {
    pub dir: PathBuf,
    /// `appendfilename`, the stem of every file name.
    pub stem: String,
    buf: Mutex<Buf>,
    disk: Mutex<Disk>,
    wake: Condvar,
    /// The runtime's committer task, when one is attached.
    committer: parking_lot::RwLock<Option<LogCommitter>>,
    /// What the attached committer takes (`COMMITS_*`): read by every append, so
    /// the lock above is taken only to signal, once per batch.
    commits: AtomicU8,
    /// How long a batch may wait for the committer before the writer thread writes
    /// it itself (a detached or stuck committer). Tests lengthen it.
    committer_grace: Duration,
    durable: Arc<DurableRelay>,
    policy: AtomicU8,
    stop: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    pub manifest: Mutex<Manifest>,
    /// Set by the writer once it switched files: the first incremental file after
    /// the cut (the rewrite waits for it).
    rotated_to: Mutex<Option<String>>,
    pub base_size: AtomicU64,
    pub incr_size: AtomicU64,
    /// Size of the whole log right after the last rewrite (auto-rewrite growth base).
    pub size_at_rewrite: AtomicU64,
    pub write_errors: AtomicU64,
    pub last_write_ok: AtomicBool,
    pub last_error: Mutex<String>,
    pub fsyncs: AtomicU64,
    /// Highest sequence known fsynced (under every policy: `no` never moves it).
    fsynced: AtomicU64,
    /// Whether the log holds the whole dataset: false for a log turned on at
    /// runtime until its base is written ([`Aof::mark_complete`]).
    complete: AtomicBool,
    on_fsync: parking_lot::RwLock<Option<FsyncListener>>,
}

impl Aof {
    /// Opens the log in `dir` as described by `manifest` (already loaded), starting
    /// a new incremental file if there is none, and starts the writer thread.
    pub fn open(
        dir: PathBuf,
        stem: String,
        mut manifest: Manifest,
        policy: u8,
    ) -> std::io::Result<Arc<Aof>> {
        std::fs::create_dir_all(&dir)?;
        if manifest.incrs.is_empty() {
            // Redis numbers files from 1 and refuses a manifest line with `seq 0`.
            manifest.next = manifest.next.max(1);
            let name = incr_file(&stem, manifest.next);
            manifest.next += 1;
            File::create(dir.join(&name))?.sync_all()?;
            manifest.incrs.push(name);
            manifest.save(&dir, &manifest_file(&stem))?;
        }
        let aof = Aof::start(dir, stem, manifest, policy)?;
        aof.mark_complete();
        Ok(aof)
    }

    /// A new log whose manifest is not written yet (turning `appendonly` on at
    /// runtime: the manifest names it only once its base exists). File numbers
    /// continue after those of `previous`, whose files stay until then.
    pub fn open_unlisted(
        dir: PathBuf,
        stem: String,
        previous: &Manifest,
        policy: u8,
    ) -> std::io::Result<Arc<Aof>> {
        std::fs::create_dir_all(&dir)?;
        let mut m = Manifest {
            base: None,
            incrs: Vec::new(),
            next: previous.next.max(1),
        };
        let name = incr_file(&stem, m.next);
        m.next += 1;
        File::create(dir.join(&name))?.sync_all()?;
        m.incrs.push(name);
        Aof::start(dir, stem, m, policy)
    }

    fn start(
        dir: PathBuf,
        stem: String,
        manifest: Manifest,
        policy: u8,
    ) -> std::io::Result<Arc<Aof>> {
        Aof::start_with_grace(dir, stem, manifest, policy, Duration::from_millis(100))
    }

    fn start_with_grace(
        dir: PathBuf,
        stem: String,
        manifest: Manifest,
        policy: u8,
        committer_grace: Duration,
    ) -> std::io::Result<Arc<Aof>> {
        let current = manifest.incrs.last().cloned().unwrap_or_default();
        let file = LogFile::open(&dir.join(&current))?;
        let base_size = manifest
            .base
            .as_deref()
            .map_or(0, |n| std::fs::metadata(dir.join(n)).map_or(0, |m| m.len()));
        let incr_size: u64 = manifest
            .incrs
            .iter()
            .map(|n| log_file::logical_size(&dir.join(n)))
            .sum();
        let floor = SEQ_FLOOR.load(Ordering::Acquire);
        let aof = Arc::new(Aof {
            dir,
            stem,
            buf: Mutex::new(Buf {
                data: Vec::with_capacity(64 * 1024),
                seq: floor,
                last_db: usize::MAX,
                rotate_at: None,
                writer_waiting: false,
                appends: 0,
                wake_at: 1,
                taken: 0,
                handoff: false,
                reserve_wanted: false,
                fsync_wanted: false,
            }),
            disk: Mutex::new(Disk {
                file,
                written: floor,
                synced: floor,
                last_fsync: Instant::now(),
                scratch: Vec::with_capacity(64 * 1024),
            }),
            wake: Condvar::new(),
            committer: parking_lot::RwLock::new(None),
            commits: AtomicU8::new(COMMITS_NONE),
            committer_grace,
            durable: DurableRelay::new(),
            policy: AtomicU8::new(policy),
            stop: AtomicBool::new(false),
            thread: Mutex::new(None),
            manifest: Mutex::new(manifest),
            rotated_to: Mutex::new(None),
            base_size: AtomicU64::new(base_size),
            incr_size: AtomicU64::new(incr_size),
            size_at_rewrite: AtomicU64::new(base_size + incr_size),
            write_errors: AtomicU64::new(0),
            last_write_ok: AtomicBool::new(true),
            last_error: Mutex::new(String::new()),
            fsyncs: AtomicU64::new(0),
            fsynced: AtomicU64::new(floor),
            complete: AtomicBool::new(false),
            on_fsync: parking_lot::RwLock::new(None),
        });
        let a = aof.clone();
        let handle = std::thread::Builder::new()
            .name("tidewire-aof".into())
            .spawn(move || a.writer())?;
        *aof.thread.lock() = Some(handle);
        Ok(aof)
    }

    pub fn manifest_name(&self) -> String {
        manifest_file(&self.stem)
    }

    pub fn set_policy(&self, policy: u8) {
        self.policy.store(policy, Ordering::Relaxed);
        if policy == FSYNC_ALWAYS {
            // What was buffered before the switch never signalled the committer
            // (only a batch's first append does).
            if let Some(committer) = self.committer.read().as_ref() {
                committer.signal.notify_one();
            }
        }
        self.wake.notify_one();
    }

    pub fn policy(&self) -> u8 {
        self.policy.load(Ordering::Relaxed)
    }

    pub fn total_size(&self) -> u64 {
        self.base_size.load(Ordering::Relaxed) + self.incr_size.load(Ordering::Relaxed)
    }

    /// Marks the cut of a rewrite: what is appended from now on goes to a new
    /// incremental file. Call with every shard locked.
    pub fn rotate_here(&self) {
        let mut b = self.buf.lock();
        b.rotate_at = Some(b.data.len());
        b.last_db = usize::MAX;
        *self.rotated_to.lock() = None;
        drop(b);
        self.wake.notify_one();
    }

    /// Waits (bounded) for the writer to have switched files; returns the new name.
    pub fn wait_rotated(&self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(n) = self.rotated_to.lock().clone() {
                return Some(n);
            }
            if Instant::now() > deadline {
                return None;
            }
            self.wake.notify_one();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Stops the writer after it wrote and fsynced everything buffered.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake.notify_one();
        if let Some(h) = self.thread.lock().take() {
            let _ = h.join();
        }
        SEQ_FLOOR.fetch_max(self.buf.lock().seq, Ordering::AcqRel);
        self.notify_fsync();
    }

    /// The highest write sequence on disk, for WAITAOF; `None` while the log does
    /// not hold the whole dataset yet (turned on at runtime, base not written).
    pub fn fsynced(&self) -> Option<u64> {
        self.complete
            .load(Ordering::Acquire)
            .then(|| self.fsynced.load(Ordering::Acquire))
    }

    /// The sequence of the latest append.
    pub fn appended(&self) -> u64 {
        self.buf.lock().seq
    }

    /// The log now holds the whole dataset (its base is on disk).
    pub fn mark_complete(&self) {
        self.complete.store(true, Ordering::Release);
        self.notify_fsync();
    }

    /// Sets what to call after each fsync (see [`FsyncListener`]).
    pub fn set_fsync_listener(&self, listener: FsyncListener) {
        *self.on_fsync.write() = Some(listener);
    }

    fn notify_fsync(&self) {
        if let Some(f) = &*self.on_fsync.read() {
            f();
        }
    }

    /// Everything up to `seq` is fsynced: tells the waiting replies and WAITAOF.
    fn synced_to(&self, d: &mut Disk, seq: u64) {
        d.synced = seq;
        self.durable.publish(seq);
        if self.fsynced.fetch_max(seq, Ordering::AcqRel) < seq {
            self.notify_fsync();
        }
    }

    /// Whether the runtime's committer writes the buffer (see the module doc).
    fn committed_by_runtime(&self) -> bool {
        match self.commits.load(Ordering::Acquire) {
            COMMITS_EVERY_POLICY => true,
            COMMITS_ALWAYS => self.policy() == FSYNC_ALWAYS,
            _ => false,
        }
    }

    fn writer(self: Arc<Self>) {
        // Group commit under `always`: how many appends the last fsync covered and
        // how long it took (see `linger`).
        let mut last_batch_appends = 0u64;
        let mut last_fsync_time = Duration::ZERO;
        loop {
            // When everysec's next fsync is due, if one is pending.
            let fsync_due = {
                let d = self.disk.lock();
                (d.written > d.synced && self.policy() != FSYNC_NO)
                    .then(|| d.last_fsync + Duration::from_secs(1))
            };
            let mut b = self.buf.lock();
            b.wake_at = 1;
            // Appended while the last batch was being written and fsynced: their
            // clients wait for the next fsync, beside those it just released.
            let arrived_meanwhile = b.appends;
            loop {
                if b.rotate_at.is_some()
                    || b.handoff
                    || b.reserve_wanted
                    || std::mem::take(&mut b.fsync_wanted)
                    || self.stop.load(Ordering::Acquire)
                {
                    break;
                }
                let by_runtime = self.committed_by_runtime();
                if !b.data.is_empty() && !by_runtime {
                    break;
                }
                // With a committer, look again after `committer_grace`: a buffer
                // nobody took meanwhile (the committer stopped, or the runtime is
                // stuck) is written here. Wake for everysec's pending fsync when it
                // is due (no sooner than 100 ms from now: a failing fsync is retried
                // at that pace, not in a loop), and once a second anyway.
                let taken = b.taken;
                let had_data = !b.data.is_empty();
                let mut wait = if by_runtime {
                    self.committer_grace
                } else {
                    Duration::from_secs(1)
                };
                if let Some(due) = fsync_due {
                    let until_due = due.saturating_duration_since(Instant::now());
                    wait = wait.min(until_due.max(Duration::from_millis(100)));
                }
                b.writer_waiting = true;
                let timed_out = self.wake.wait_for(&mut b, wait).timed_out();
                b.writer_waiting = false;
                if timed_out
                    && (!by_runtime || fsync_due.is_some() || (had_data && b.taken == taken))
                {
                    break;
                }
            }
            if self.policy() == FSYNC_ALWAYS && !self.committed_by_runtime() {
                self.linger(
                    &mut b,
                    last_batch_appends + arrived_meanwhile,
                    last_fsync_time,
                );
            }
            drop(b);
            let mut disk = self.disk.lock();
            let d = &mut *disk;
            let (seq, rotate_at, stopping, appends, reserve_wanted) = {
                let mut b = self.buf.lock();
                std::mem::swap(&mut b.data, &mut d.scratch);
                b.taken += 1;
                b.handoff = false;
                (
                    b.seq,
                    b.rotate_at.take(),
                    self.stop.load(Ordering::Acquire),
                    std::mem::take(&mut b.appends),
                    std::mem::take(&mut b.reserve_wanted),
                )
            };
            let policy = self.policy();
            let scratch_was_empty = d.scratch.is_empty();
            if !d.scratch.is_empty() || rotate_at.is_some() {
                let (before, after) = match rotate_at {
                    Some(at) => d.scratch.split_at(at),
                    None => (&d.scratch[..], &[][..]),
                };
                // Usually the zeroed space is there already (see below). A batch
                // larger than a chunk is appended past it instead: zeroing first
                // would write it twice.
                if policy == FSYNC_ALWAYS && d.scratch.len() as u64 <= log_file::CHUNK {
                    d.file.reserve(d.scratch.len() as u64);
                }
                self.write_all(&mut d.file, before);
                if rotate_at.is_some() {
                    // Everything before the cut is on disk before the switch; the
                    // file it leaves ends with its last entry.
                    if let Err(e) = d.file.trim() {
                        tracing::warn!(error = %e, "cannot cut the zeroed tail off the AOF file");
                    }
                    self.fsync(&mut d.file);
                    match self.rotate() {
                        Ok(f) => d.file = f,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot start a new AOF file; staying on the current one");
                            *self.rotated_to.lock() = Some(String::new());
                        }
                    }
                    self.write_all(&mut d.file, after);
                }
                d.recycle_scratch();
                d.written = seq;
            }
            let due = match policy {
                FSYNC_ALWAYS => d.written > d.synced,
                FSYNC_EVERYSEC => {
                    d.written > d.synced && d.last_fsync.elapsed() >= Duration::from_secs(1)
                }
                _ => false,
            } || (stopping && d.written > d.synced);
            let fsync_started = Instant::now();
            if due && self.fsync(&mut d.file) {
                d.last_fsync = Instant::now();
                last_fsync_time = d.last_fsync - fsync_started;
                last_batch_appends = appends;
                let written = d.written;
                self.synced_to(d, written);
            } else if policy != FSYNC_ALWAYS && self.last_write_ok.load(Ordering::Relaxed) {
                // Not waited on in these modes; keep the published sequence moving anyway.
                self.durable.publish(d.written.max(d.synced));
            }
            if policy == FSYNC_ALWAYS && (due || reserve_wanted) {
                // Zero the next chunk now, while the released clients prepare
                // their next writes, rather than in front of a batch.
                d.file.reserve(log_file::CHUNK / 2);
            }
            if stopping && self.buf.lock().data.is_empty() {
                // Without the zeroed tail: a plain log for any reader.
                if let Err(e) = d.file.trim() {
                    tracing::warn!(error = %e, "cannot cut the zeroed tail off the AOF file");
                }
                if self.fsync(&mut d.file) {
                    self.synced_to(d, seq);
                } else {
                    self.durable.publish(seq);
                }
                return;
            }
            drop(disk);
            if policy != FSYNC_ALWAYS && !stopping && !scratch_was_empty {
                // Nobody waits for this write: let a millisecond of appends gather
                // into one write() instead of waking this thread for each (appends
                // only wake a writer parked on an empty buffer).
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Attaches (or, with `None`, detaches) the runtime's committer task.
    pub fn attach_committer(&self, committer: Option<LogCommitter>) {
        let commits = match &committer {
            None => COMMITS_NONE,
            Some(c) if c.every_policy => COMMITS_EVERY_POLICY,
            Some(_) => COMMITS_ALWAYS,
        };
        *self.committer.write() = committer;
        self.commits.store(commits, Ordering::Release);
        // A detached committer leaves the buffer to this thread again.
        self.wake.notify_one();
    }

    /// The group commit under `appendfsync always`, run by the committer task on the
    /// runtime after the ready connections have run, as Redis does in
    /// `beforeSleep`: writes and fsyncs everything buffered, then releases the
    /// waiting replies. Under `everysec` and `no` (a committer for every policy) it
    /// only writes, and tells the writer thread when an fsync becomes due. Anything
    /// that cannot be done in one go here (the file busy with a rotation or zeroing,
    /// a write or fsync error, which are retried) is handed to the writer thread, so
    /// the runtime never sleeps on a retry.
    pub fn commit_here(&self) {
        if !self.committed_by_runtime() {
            return;
        }
        let always = self.policy() == FSYNC_ALWAYS;
        let Some(mut disk) = self.disk.try_lock() else {
            self.hand_off();
            return;
        };
        let d = &mut *disk;
        let was_synced = d.written == d.synced;
        let seq = {
            let mut b = self.buf.lock();
            if b.data.is_empty() && (!always || was_synced) {
                return;
            }
            if b.rotate_at.is_some() || b.handoff || !self.last_write_ok.load(Ordering::Relaxed) {
                b.handoff = true;
                drop(b);
                self.wake.notify_one();
                return;
            }
            std::mem::swap(&mut b.data, &mut d.scratch);
            b.taken += 1;
            b.appends = 0;
            b.seq
        };
        if !d.scratch.is_empty() {
            if let Err(e) = d.file.append(&d.scratch) {
                self.write_failed(&e);
                // Back to the front of the buffer, for the writer thread's retries.
                let mut b = self.buf.lock();
                let newer = std::mem::take(&mut b.data);
                b.data = std::mem::take(&mut d.scratch);
                let older = b.data.len();
                if let Some(at) = b.rotate_at.as_mut() {
                    *at += older;
                }
                b.data.extend_from_slice(&newer);
                b.handoff = true;
                drop(b);
                self.wake.notify_one();
                return;
            }
            self.wrote(d.scratch.len());
            d.recycle_scratch();
            d.written = seq;
        }
        if !always {
            // Nobody waits for it. The writer thread fsyncs everysec's writes, and
            // is told when a second starts counting.
            self.durable.publish(d.written.max(d.synced));
            if was_synced && self.policy() == FSYNC_EVERYSEC {
                self.buf.lock().fsync_wanted = true;
                self.wake.notify_one();
            }
            return;
        }
        if !self.fsync(&mut d.file) {
            self.hand_off();
            return;
        }
        d.last_fsync = Instant::now();
        let written = d.written;
        self.synced_to(d, written);
        if d.file.wants_zeroing(log_file::CHUNK / 2) {
            self.buf.lock().reserve_wanted = true;
            self.wake.notify_one();
        }
    }

    fn hand_off(&self) {
        self.buf.lock().handoff = true;
        self.wake.notify_one();
    }

    /// Under `appendfsync always`, waits a little for the clients released by the
    /// last fsync to send their next writes, so that they share the next fsync
    /// instead of splitting into two groups that take turns (which halves the
    /// writes per fsync). Waits until as many appends are buffered as the last
    /// fsync covered plus those that arrived while it ran, at most as long as that
    /// fsync took (capped at 2 ms): a lone client (one append per fsync) never
    /// waits, and a client that does not come back costs the others at most one
    /// fsync's time. Counting only the last fsync's batch kept two groups taking
    /// turns once they had split (each group's size became the other's target):
    /// ~40% more fsyncs per 100k SETs and 4–13% fewer SETs/s.
    fn linger(&self, b: &mut parking_lot::MutexGuard<'_, Buf>, target: u64, fsync_time: Duration) {
        if target <= 1 || b.data.is_empty() || b.appends >= target || b.rotate_at.is_some() {
            return;
        }
        let deadline = Instant::now() + fsync_time.min(Duration::from_millis(2));
        b.wake_at = target;
        while b.appends < target && !self.stop.load(Ordering::Acquire) {
            b.writer_waiting = true;
            let timed_out = self.wake.wait_until(b, deadline).timed_out();
            b.writer_waiting = false;
            if timed_out || b.rotate_at.is_some() {
                break;
            }
        }
        b.wake_at = 1;
    }

    fn write_all(&self, file: &mut LogFile, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let mut attempt = 0;
        loop {
            match file.append(data) {
                Ok(()) => {
                    self.wrote(data.len());
                    return;
                }
                Err(e) => {
                    // Keep the data: retry until the disk accepts it (replies in
                    // `always` mode wait meanwhile; nothing acknowledged is lost).
                    self.write_failed(&e);
                    // `append` dropped whatever part of the batch made it; the retry
                    // writes at the same place.
                    if attempt % 50 == 0 {
                        tracing::error!(error = %e, "error writing the AOF; retrying");
                    }
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(20));
                    if self.stop.load(Ordering::Acquire) && attempt > 100 {
                        return;
                    }
                }
            }
        }
    }

    fn wrote(&self, len: usize) {
        self.last_write_ok.store(true, Ordering::Relaxed);
        self.incr_size.fetch_add(len as u64, Ordering::Relaxed);
    }

    fn write_failed(&self, e: &std::io::Error) {
        self.write_errors.fetch_add(1, Ordering::Relaxed);
        self.last_write_ok.store(false, Ordering::Relaxed);
        *self.last_error.lock() = e.to_string();
    }

    fn fsync(&self, file: &mut LogFile) -> bool {
        match file.sync() {
            Ok(()) => {
                self.fsyncs.fetch_add(1, Ordering::Relaxed);
                self.last_write_ok.store(true, Ordering::Relaxed);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "AOF fsync failed");
                self.last_write_ok.store(false, Ordering::Relaxed);
                *self.last_error.lock() = e.to_string();
                false
            }
        }
    }

    /// Creates the next incremental file and records it in the manifest.
    fn rotate(&self) -> std::io::Result<LogFile> {
        let mut m = self.manifest.lock();
        let name = incr_file(&self.stem, m.next);
        let file = LogFile::open(&self.dir.join(&name))?;
        let mut next = m.clone();
        next.next += 1;
        next.incrs.push(name.clone());
        next.save(&self.dir, &self.manifest_name())?;
        *m = next;
        *self.rotated_to.lock() = Some(name);
        Ok(file)
    }
}

impl WriteLog for Aof {
    fn append(&self, cmds: &[(usize, Vec<Bytes>)]) -> u64 {
        let mut b = self.buf.lock();
        for (db, argv) in cmds {
            if *db != b.last_db {
                let d = db.to_string();
                format::encode(&mut b.data, &["SELECT", d.as_str()]);
                b.last_db = *db;
            }
            format::encode(&mut b.data, argv);
        }
        b.seq += 1;
        b.appends += 1;
        let seq = b.seq;
        if self.committed_by_runtime() {
            // One wake-up per batch: the committer takes all that gathers until it
            // runs. (Detached meanwhile: the writer thread's grace catches it.)
            if b.appends == 1 {
                if let Some(committer) = self.committer.read().as_ref() {
                    committer.signal.notify_one();
                }
            }
            return seq;
        }
        // A lingering writer (see `Aof::linger`) is woken once, when enough
        // appends have gathered, not by each of them.
        let wake = b.writer_waiting && b.appends >= b.wake_at;
        drop(b);
        if wake {
            self.wake.notify_one();
        }
        seq
    }

    fn durable_waiter(&self) -> Option<DurableWaiter> {
        (self.policy() == FSYNC_ALWAYS).then(|| self.durable.waiter())
    }

    fn attach_committer(&self, committer: Option<LogCommitter>) {
        Aof::attach_committer(self, committer)
    }

    fn commit_here(&self) {
        Aof::commit_here(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::{Context, Waker};

    fn open(grace: Duration) -> (Arc<Aof>, PathBuf) {
        let dir = std::env::temp_dir().join(format!("tidewire-aof-{}", crate::random_hex(12)));
        std::fs::create_dir_all(&dir).unwrap();
        let name = "appendonly.aof.1.incr.aof".to_string();
        let manifest = Manifest {
            next: 2,
            incrs: vec![name.clone()],
            ..Manifest::default()
        };
        let aof = Aof::start_with_grace(
            dir.clone(),
            "appendonly.aof".into(),
            manifest,
            FSYNC_ALWAYS,
            grace,
        )
        .unwrap();
        (aof, dir.join(name))
    }

    fn set(key: &str) -> Vec<(usize, Vec<Bytes>)> {
        vec![(
            0,
            vec![
                Bytes::from_static(b"SET"),
                Bytes::copy_from_slice(key.as_bytes()),
                Bytes::from_static(b"1"),
            ],
        )]
    }

    fn durable_now(aof: &Aof, seq: u64) -> bool {
        let mut waiter = aof.durable.waiter();
        let fut = std::pin::pin!(waiter.wait_for(seq));
        fut.poll(&mut Context::from_waker(Waker::noop())).is_ready()
    }

    /// Polls (bounded, ~10 s) for `cond`.
    fn soon(cond: impl Fn() -> bool) -> bool {
        (0..1000).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            cond()
        })
    }

    fn durable_soon(aof: &Aof, seq: u64) -> bool {
        soon(|| durable_now(aof, seq))
    }

    /// Attaches a committer to `aof`, returning its signal.
    fn attach(aof: &Aof, every_policy: bool) -> Arc<tokio::sync::Notify> {
        let signal = Arc::new(tokio::sync::Notify::new());
        aof.attach_committer(Some(LogCommitter {
            signal: signal.clone(),
            every_policy,
        }));
        signal
    }

    fn signalled(signal: &tokio::sync::Notify) -> bool {
        let fut = std::pin::pin!(signal.notified());
        fut.poll(&mut Context::from_waker(Waker::noop())).is_ready()
    }

    fn close(aof: Arc<Aof>, file: PathBuf) {
        aof.shutdown();
        let _ = std::fs::remove_dir_all(file.parent().unwrap());
    }

    fn on_disk(path: &Path, key: &str) -> bool {
        let bytes = std::fs::read(path).unwrap();
        let needle = format!("${}\r\n{key}\r\n", key.len());
        bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
    }

    #[test]
    fn the_committer_writes_and_fsyncs_on_its_own_thread() {
        // The writer thread would wait an hour: only `commit_here` can have done it.
        let (aof, file) = open(Duration::from_secs(3600));
        let signal = attach(&aof, false);
        let first = aof.append(&set("a"));
        let second = aof.append(&set("b"));
        assert!(!durable_now(&aof, first));
        aof.commit_here();
        assert!(durable_now(&aof, second), "both in one group commit");
        assert_eq!(aof.fsyncs.load(Ordering::Relaxed), 1);
        assert!(on_disk(&file, "a") && on_disk(&file, "b"));
        // Signalled once per batch: the first append of the next batch signals again.
        let third = aof.append(&set("c"));
        assert!(signalled(&signal));
        aof.commit_here();
        // Done here, or handed over if the writer thread is zeroing space ahead (the
        // first commit asked it to): either way without waiting for the grace.
        assert!(durable_soon(&aof, third));
        close(aof, file);
    }

    #[test]
    fn switching_to_always_signals_the_committer_for_what_is_buffered() {
        let (aof, file) = open(Duration::from_secs(3600));
        aof.set_policy(FSYNC_NO);
        let signal = attach(&aof, false);
        aof.append(&set("before"));
        aof.set_policy(FSYNC_ALWAYS);
        assert!(signalled(&signal));
        let seq = aof.append(&set("after"));
        aof.commit_here();
        assert!(durable_soon(&aof, seq));
        assert!(on_disk(&file, "before") && on_disk(&file, "after"));
        close(aof, file);
    }

    #[test]
    fn a_busy_file_or_a_missing_committer_falls_back_to_the_writer_thread() {
        let (aof, file) = open(Duration::from_secs(3600));
        attach(&aof, false);
        // The writer thread holds the file (zeroing, a rotation, a retry): the
        // runtime must not wait for it, and the batch is handed over.
        let seq = {
            let _busy = aof.disk.lock();
            let seq = aof.append(&set("busy"));
            aof.commit_here();
            assert!(!durable_now(&aof, seq));
            seq
        };
        assert!(durable_soon(&aof, seq), "the writer thread took it over");
        assert!(on_disk(&file, "busy"));
        // Detached (the committer task ended): appends go to the writer thread.
        aof.attach_committer(None);
        let seq = aof.append(&set("after"));
        assert!(durable_soon(&aof, seq));
        close(aof, file);
    }

    /// Lets the writer thread take in the policy and committer set up just before
    /// (each wakes it once) and park again.
    fn settle(aof: &Aof) {
        std::thread::sleep(Duration::from_millis(50));
        assert!(soon(|| aof.buf.lock().writer_waiting));
    }

    #[test]
    fn under_everysec_the_committer_writes_and_the_writer_thread_fsyncs() {
        // The writer thread would wait an hour for the committer: only
        // `commit_here` can write, and only the committer's call can start the
        // writer thread's one-second fsync clock.
        let (aof, file) = open(Duration::from_secs(3600));
        aof.set_policy(FSYNC_EVERYSEC);
        let signal = attach(&aof, true);
        settle(&aof);
        aof.append(&set("a"));
        aof.append(&set("b"));
        assert!(signalled(&signal), "the batch's first append signals");
        assert!(!on_disk(&file, "a"));
        aof.commit_here();
        assert!(on_disk(&file, "a") && on_disk(&file, "b"));
        assert_eq!(
            aof.fsyncs.load(Ordering::Relaxed),
            0,
            "no fsync on the runtime"
        );
        assert!(soon(|| aof.fsyncs.load(Ordering::Relaxed) == 1));
        // Under `no` it writes too, and nothing is fsynced.
        aof.set_policy(FSYNC_NO);
        aof.append(&set("c"));
        assert!(signalled(&signal));
        aof.commit_here();
        assert!(on_disk(&file, "c"));
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(aof.fsyncs.load(Ordering::Relaxed), 1);
        close(aof, file);
    }

    #[test]
    fn a_committer_for_always_only_leaves_everysec_to_the_writer_thread() {
        // A multi-threaded runtime's committer: each call would block a worker.
        let (aof, file) = open(Duration::from_secs(3600));
        aof.set_policy(FSYNC_EVERYSEC);
        let signal = attach(&aof, false);
        aof.append(&set("plain"));
        assert!(!signalled(&signal));
        aof.commit_here();
        assert!(soon(|| on_disk(&file, "plain")));
        assert!(soon(|| aof.fsyncs.load(Ordering::Relaxed) == 1));
        close(aof, file);
    }

    #[test]
    fn a_batch_no_committer_takes_is_written_after_the_grace() {
        let (aof, file) = open(Duration::from_millis(50));
        attach(&aof, false);
        let seq = aof.append(&set("stuck"));
        assert!(durable_soon(&aof, seq));
        assert!(on_disk(&file, "stuck"));
        close(aof, file);
    }
}
