//! Persistence: the append-only log ([`aof`]), snapshots ([`snapshot`]) taken from a
//! point-in-time [`capture`] of the keyspace, loading at startup ([`load`]) and
//! `check-aof` ([`check`]). Formats and guarantees: docs/persistence.md.
//!
//! Data flow: the dispatcher hands each executed write to [`aof::Aof`] (a
//! [`crate::WriteLog`]) under its shard locks; a writer thread writes and fsyncs.
//! Background jobs (BGSAVE, BGREWRITEAOF) run on their own threads, one at a time,
//! from a capture that costs each shard one copy under its own lock.

pub mod aof;
pub mod capture;
pub mod check;
pub mod format;
pub mod jobs;
pub mod load;
pub mod log_file;
pub mod snapshot;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::Store;
use aof::Aof;
pub use jobs::{bgrewrite, bgsave, disable_aof, enable_aof, save_now, RewriteStart};

/// Which background job runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Job {
    Save,
    Rewrite,
}

/// Persistence state kept in the store (`store.persist`).
#[derive(Default)]
pub struct Persistence {
    me: OnceLock<Weak<Store>>,
    pub aof: RwLock<Option<Arc<Aof>>>,
    job: Mutex<Option<Job>>,
    pub rewrite_scheduled: AtomicBool,
    pub save_scheduled: AtomicBool,
    /// Writes get -MISCONF (see `write_refusal`).
    pub refuse_writes: AtomicBool,
    /// Set once `startup` loaded the data and opened the log: until then the cron
    /// must not start jobs or turn the AOF on.
    pub ready: AtomicBool,
    pub last_save_try_secs: AtomicU64,
    pub peak_memory: AtomicU64,
    /// `evict::used_memory`'s cache.
    pub mem_cache_used: AtomicU64,
    pub mem_cache_at_us: AtomicU64,
    /// `stats.dirty` at the last successful save's cut.
    pub dirty_at_save: AtomicU64,
    pub last_bgsave_ok: AtomicBool,
    pub bgsave_in_progress: AtomicBool,
    pub rewrite_in_progress: AtomicBool,
    pub last_rewrite_ok: AtomicBool,
    pub rewrites: AtomicU64,
    pub saves: AtomicU64,
    /// Longest time a rewrite or save held shard locks (cut or one shard's copy), µs.
    pub max_pause_us: AtomicU64,
    pub last_pause_us: AtomicU64,
    pub last_save_duration_ms: AtomicI64,
    pub last_rewrite_duration_ms: AtomicI64,
    pub loading_started_ms: AtomicU64,
    pub loaded_commands: AtomicU64,
    /// Bytes of the files a load replays, and how many of them it has replayed
    /// (INFO's `loading_*` fields while `loading:1`).
    pub loading_total_bytes: AtomicU64,
    pub loading_loaded_bytes: AtomicU64,
    /// What the SHUTDOWN that stops the server asked for (see [`ShutdownSave`]).
    pub shutdown_save: AtomicU8,
}

/// SHUTDOWN's save choice, kept in `Persistence::shutdown_save`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum ShutdownSave {
    /// As the `save` points say (SIGTERM, plain SHUTDOWN).
    AsConfigured = 0,
    /// SHUTDOWN SAVE: save even without save points.
    Save = 1,
    /// SHUTDOWN NOSAVE: no snapshot, and nothing waited for (the AOF is still
    /// flushed and fsynced).
    NoSave = 2,
}

impl Persistence {
    pub fn shutdown_save(&self) -> ShutdownSave {
        match self.shutdown_save.load(Ordering::SeqCst) {
            1 => ShutdownSave::Save,
            2 => ShutdownSave::NoSave,
            _ => ShutdownSave::AsConfigured,
        }
    }
}

impl Persistence {
    pub(crate) fn init(&self, me: Weak<Store>) {
        let _ = self.me.set(me);
        self.last_bgsave_ok.store(true, Ordering::Relaxed);
        self.last_rewrite_ok.store(true, Ordering::Relaxed);
        self.last_save_duration_ms.store(-1, Ordering::Relaxed);
        self.last_rewrite_duration_ms.store(-1, Ordering::Relaxed);
    }

    fn store(&self) -> Option<Arc<Store>> {
        self.me.get().and_then(|w| w.upgrade())
    }

    pub fn aof(&self) -> Option<Arc<Aof>> {
        self.aof.read().clone()
    }

    /// Has `aof` wake the store's WAITAOF clients after each fsync.
    fn listen_to_fsyncs(&self, aof: &Aof) {
        let me = self.me.get().cloned();
        aof.set_fsync_listener(Box::new(move || {
            if let Some(store) = me.as_ref().and_then(Weak::upgrade) {
                store.blocking.wake_fsync_waiters();
            }
        }));
    }

    pub fn job(&self) -> Option<Job> {
        *self.job.lock()
    }
}

pub fn data_dir(store: &Store) -> PathBuf {
    PathBuf::from(store.config.get("dir").unwrap_or_else(|| ".".into()))
}

pub fn snapshot_path(store: &Store) -> PathBuf {
    data_dir(store).join(
        store
            .config
            .get("dbfilename")
            .unwrap_or_else(|| "dump.tw".into()),
    )
}

fn aof_dir(store: &Store) -> PathBuf {
    data_dir(store).join(
        store
            .config
            .get("appenddirname")
            .unwrap_or_else(|| "appendonlydir".into()),
    )
}

fn aof_stem(store: &Store) -> String {
    store
        .config
        .get("appendfilename")
        .unwrap_or_else(|| "appendonly.aof".into())
}

/// What [`startup`] will load: the AOF's manifest (if `appendonly yes` and one is
/// on disk) or the snapshot, and how many bytes that is.
pub struct LoadPlan {
    manifest: Option<aof::Manifest>,
    started: Instant,
}

/// Plans the startup load and enters the loading state: `store.loading` is set
/// together with INFO's progress totals, so nobody sees `loading:1` without them.
/// Call before any listener opens (commands get `-LOADING` from then on); cheap: it
/// reads the manifest and the files' sizes, not their contents.
pub fn begin_startup(store: &Arc<Store>) -> Result<LoadPlan, load::LoadError> {
    let started = Instant::now();
    remove_temp_files(&[data_dir(store), aof_dir(store)]);
    let manifest = if store.config.get_bool("appendonly") {
        load::read_manifest(&aof_dir(store), &aof_stem(store))?
    } else {
        None
    };
    let total: u64 = plan_files(store, &manifest)
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let p = &store.persist;
    p.loading_total_bytes.store(total, Ordering::Relaxed);
    p.loading_loaded_bytes.store(0, Ordering::Relaxed);
    p.loading_started_ms
        .store(crate::clock::now_ms(), Ordering::Relaxed);
    store.loading.store(true, Ordering::SeqCst);
    Ok(LoadPlan { manifest, started })
}

/// The files a plan reads, in order.
fn plan_files(store: &Store, manifest: &Option<aof::Manifest>) -> Vec<PathBuf> {
    match manifest {
        Some(m) => {
            let dir = aof_dir(store);
            m.base
                .iter()
                .chain(m.incrs.iter())
                .map(|name| dir.join(name))
                .collect()
        }
        None => vec![snapshot_path(store)],
    }
}

/// Loads what [`begin_startup`] planned, then leaves the loading state and opens the
/// AOF for appending. Blocking: call from a blocking thread.
pub fn startup(store: &Arc<Store>, plan: LoadPlan) -> Result<(), load::LoadError> {
    let started = plan.started;
    let result = startup_inner(store, plan.manifest);
    store.loading.store(false, Ordering::SeqCst);
    store.persist.ready.store(result.is_ok(), Ordering::SeqCst);
    if result.is_ok() {
        let n = store.persist.loaded_commands.load(Ordering::Relaxed);
        if n > 0 {
            tracing::info!(
                commands = n,
                seconds = started.elapsed().as_secs_f64(),
                "dataset loaded from disk"
            );
        }
    }
    result
}

/// Removes temp files of saves and rewrites a crash interrupted.
fn remove_temp_files(dirs: &[PathBuf]) {
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if name.to_string_lossy().starts_with("temp-") {
                tracing::info!(file = %e.path().display(), "removing temp file of an interrupted save");
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

fn startup_inner(
    store: &Arc<Store>,
    manifest: Option<aof::Manifest>,
) -> Result<(), load::LoadError> {
    let appendonly = store.config.get_bool("appendonly");
    let dir = aof_dir(store);
    let stem = aof_stem(store);
    let mut loader = load::Loader::new(store);
    let from_aof = manifest.is_some();
    let result = match &manifest {
        Some(m) => load::load_aof(
            &mut loader,
            &dir,
            m,
            store.config.get_bool("aof-load-truncated"),
        ),
        None => load::load_snapshot(&mut loader, &snapshot_path(store)).map(|_| ()),
    };
    store
        .persist
        .loaded_commands
        .store(loader.commands, Ordering::Relaxed);
    loader.finish();
    result?;
    // Replaying is not serving: SLOWLOG starts empty. (Command statistics are
    // process-wide, shared by every store, so they are left alone.)
    store.slowlog.reset();
    store
        .persist
        .dirty_at_save
        .store(store.stats.dirty.get(), Ordering::Relaxed);
    if appendonly {
        if !from_aof && total_keys(store) > 0 {
            // Data came from a snapshot: start the log from a base of it. The manifest
            // names the new log only once that base is on disk, so a crash meanwhile
            // restarts from the snapshot again.
            enable_aof(store).map_err(|e| load::LoadError(format!("cannot start the AOF: {e}")))?;
        } else {
            let aof = Aof::open(
                dir.clone(),
                stem,
                manifest.unwrap_or_default(),
                aof::parse_policy(&store.config.get("appendfsync").unwrap_or_default()),
            )
            .map_err(|e| {
                load::LoadError(format!("cannot open the AOF in {}: {e}", dir.display()))
            })?;
            store.persist.listen_to_fsyncs(&aof);
            *store.persist.aof.write() = Some(aof.clone());
            store.set_write_log(aof);
        }
    }
    Ok(())
}

/// DEBUG RELOAD: saves a snapshot (unless `save` is false), empties every database
/// and loads the snapshot back, as Redis's does with its RDB; the AOF stays as it
/// is (it already holds the same data). The file is read and checked before
/// anything is emptied, so a bad or missing file leaves the dataset alone.
pub fn debug_reload(store: &Store, save: bool) -> Result<(), String> {
    let Some(me) = store.persist.store() else {
        return Err("persistence is not set up".into());
    };
    if save {
        save_now(store)?;
    }
    let path = snapshot_path(store);
    let snapshot = match load::read_snapshot(&path) {
        Ok(Some(s)) => s,
        missing_or_bad => {
            if let Err(e) = missing_or_bad {
                tracing::error!(error = %e, "DEBUG RELOAD");
            }
            return Err("Error trying to load the RDB dump, check server logs.".into());
        }
    };
    replace_dataset(&me, |loader| load::replay_snapshot(loader, &path, snapshot))
}

/// DEBUG LOADAOF: empties every database and loads them back from the AOF's files,
/// as Redis's does (also with `appendonly no`, from what a BGREWRITEAOF left). With
/// the log open, it is cut first under every shard lock: the writer puts everything
/// appended so far on disk before it switches files. A missing manifest is an error
/// that leaves the dataset alone (Redis exits there).
pub fn debug_loadaof(store: &Store) -> Result<(), String> {
    let Some(me) = store.persist.store() else {
        return Err("persistence is not set up".into());
    };
    let dir = aof_dir(store);
    let stem = aof_stem(store);
    if let Some(aof) = store.persist.aof() {
        {
            // Eager: every write before the cut must be in the old file.
            let _every_shard = store.keyspace.lock_every_shard();
            aof.rotate_here();
        }
        aof.wait_rotated(Duration::from_secs(30))
            .ok_or("the AOF writer did not write the log out in time")?;
    }
    let manifest = load::read_manifest(&dir, &stem)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no AOF to load: no manifest in {}", dir.display()))?;
    let allow_truncated = store.config.get_bool("aof-load-truncated");
    replace_dataset(&me, |loader| {
        load::load_aof(loader, &dir, &manifest, allow_truncated)
    })
}

/// Empties every database and runs `load` with `loading` set (other clients get
/// `-LOADING`). What was just loaded is what is on disk: no save point is due for it.
fn replace_dataset(
    store: &Arc<Store>,
    load: impl FnOnce(&mut load::Loader) -> Result<(), load::LoadError>,
) -> Result<(), String> {
    store.loading.store(true, Ordering::SeqCst);
    {
        let mut ks = store.keyspace.lock_all();
        for db in 0..crate::keyspace::NUM_DBS {
            for part in ks.db_parts(db) {
                part.clear();
            }
        }
    }
    let mut loader = load::Loader::new(store);
    let result = load(&mut loader);
    loader.finish();
    store.loading.store(false, Ordering::SeqCst);
    store
        .persist
        .dirty_at_save
        .store(store.stats.dirty.get(), Ordering::Relaxed);
    result.map_err(|e| e.to_string())
}

fn total_keys(store: &Store) -> usize {
    let mut ks = store.keyspace.lock_all_readonly();
    (0..crate::keyspace::NUM_DBS).map(|db| ks.len(db)).sum()
}

/// Writes are refused (`-MISCONF`, as Redis) while the AOF cannot be written, or
/// when the last background save failed with save points and
/// `stop-writes-on-bgsave-error yes`. Checked on every write: the common case is one
/// relaxed load of a flag kept by [`update_refusal`].
pub fn write_refusal(store: &Store) -> Option<crate::error::CmdError> {
    if !store.persist.refuse_writes.load(Ordering::Relaxed) {
        return None;
    }
    refusal(store)
}

fn refusal(store: &Store) -> Option<crate::error::CmdError> {
    if let Some(aof) = store.persist.aof() {
        if !aof.last_write_ok.load(Ordering::Relaxed) {
            return Some(crate::error::CmdError::raw(format!(
                "MISCONF Errors writing to the AOF file: {}",
                aof.last_error.lock()
            )));
        }
    }
    if !store.persist.last_bgsave_ok.load(Ordering::Relaxed)
        && store.config.get_bool("stop-writes-on-bgsave-error")
        && !store
            .config
            .get("save")
            .unwrap_or_default()
            .trim()
            .is_empty()
    {
        return Some(crate::error::CmdError::raw(
            "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk. Commands that may modify the data set are disabled, because this instance is configured to report errors during writes if RDB snapshotting fails (stop-writes-on-bgsave-error option). Please check the Redis logs for details about the RDB error.",
        ));
    }
    None
}

/// Recomputes the flag [`write_refusal`] reads (cron, and after every save).
pub fn update_refusal(store: &Store) {
    store
        .persist
        .refuse_writes
        .store(refusal(store).is_some(), Ordering::Relaxed);
}

/// Background duties, called by the server's cron (10 Hz): scheduled rewrites,
/// `save` points, auto-rewrite, fsync policy changes.
pub fn cron(store: &Store) {
    crate::evict::sync_config(store);
    // WAITAOF's clients also look again on each tick: a wait registered just
    // after an fsync it missed, or on a log that turned off or on meanwhile.
    store.blocking.wake_fsync_waiters();
    if !store.persist.ready.load(Ordering::SeqCst) {
        return;
    }
    update_refusal(store);
    let want_aof = store.config.get_bool("appendonly");
    if want_aof != store.persist.aof().is_some() && store.persist.job().is_none() {
        if want_aof {
            if let Err(e) = enable_aof(store) {
                tracing::error!(error = %e, "could not turn the AOF on");
            }
        } else {
            disable_aof(store);
        }
        return;
    }
    if let Some(aof) = store.persist.aof() {
        let p = aof::parse_policy(&store.config.get("appendfsync").unwrap_or_default());
        if p != aof.policy() {
            aof.set_policy(p);
        }
    }
    if store.persist.job().is_some() {
        return;
    }
    if store
        .persist
        .rewrite_scheduled
        .swap(false, Ordering::Relaxed)
    {
        let _ = bgrewrite(store);
        return;
    }
    if store.persist.save_scheduled.swap(false, Ordering::Relaxed) {
        let _ = bgsave(store);
        return;
    }
    // save <seconds> <changes> …
    let changes = store
        .stats
        .dirty
        .get()
        .saturating_sub(store.persist.dirty_at_save.load(Ordering::Relaxed));
    if changes > 0 {
        let since = (crate::clock::now_ms() / 1000)
            .saturating_sub(store.last_save_secs.load(Ordering::Relaxed));
        let points = store.config.get("save").unwrap_or_default();
        let nums: Vec<u64> = points
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        if nums
            .chunks(2)
            .any(|p| p.len() == 2 && since >= p[0] && changes >= p[1])
        {
            // A failed save is retried only after a pause, as Redis does.
            let now = crate::clock::now_ms() / 1000;
            let last_try = store.persist.last_save_try_secs.load(Ordering::Relaxed);
            if store.persist.last_bgsave_ok.load(Ordering::Relaxed) || now >= last_try + 5 {
                tracing::info!(changes, seconds = since, "save point reached, saving");
                let _ = bgsave(store);
                return;
            }
        }
    }
    if let Some(aof) = store.persist.aof() {
        let pct = store.config.get_u64("auto-aof-rewrite-percentage");
        let min = store.config.get_u64("auto-aof-rewrite-min-size");
        let size = aof.total_size();
        let base = aof.size_at_rewrite.load(Ordering::Relaxed).max(1);
        if pct > 0 && size >= min && (size.saturating_sub(base)) * 100 / base >= pct {
            tracing::info!(size, base, "starting automatic AOF rewrite");
            let _ = bgrewrite(store);
        }
    }
}

/// Graceful shutdown: wait for a background job, save if save points are configured,
/// then flush and fsync the AOF and stop its writer.
pub fn shutdown(store: &Store) {
    // Never save over the files of a dataset that was not (fully) loaded.
    if !store.persist.ready.swap(false, Ordering::SeqCst) {
        return;
    }
    let choice = store.persist.shutdown_save();
    // NOSAVE waits for nothing: a background job may need shards a busy script
    // holds, and an unfinished job leaves the previous files in place.
    if choice != ShutdownSave::NoSave {
        let deadline = Instant::now() + Duration::from_secs(60);
        while store.persist.job().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let save_points = store.config.get("save").unwrap_or_default();
        if choice == ShutdownSave::Save || !save_points.trim().is_empty() {
            if let Err(e) = save_now(store) {
                tracing::error!(error = %e, "could not save the snapshot on shutdown");
            }
        }
    }
    if let Some(aof) = store.persist.aof.write().take() {
        aof.shutdown();
    }
}

/// INFO persistence fields.
pub fn info(store: &Store, o: &mut String) {
    use std::fmt::Write;
    let p = &store.persist;
    let aof = p.aof();
    let changes = store
        .stats
        .dirty
        .get()
        .saturating_sub(p.dirty_at_save.load(Ordering::Relaxed));
    let _ = write!(
        o,
        "loading:{}\r\nasync_loading:0\r\nrdb_changes_since_last_save:{changes}\r\nrdb_bgsave_in_progress:{}\r\nrdb_last_save_time:{}\r\nrdb_last_bgsave_status:{}\r\nrdb_last_bgsave_time_sec:{}\r\nrdb_saves:{}\r\naof_enabled:{}\r\naof_rewrite_in_progress:{}\r\naof_rewrite_scheduled:{}\r\naof_last_rewrite_time_sec:{}\r\naof_last_bgrewrite_status:{}\r\naof_rewrites:{}\r\naof_last_write_status:{}\r\naof_rewrite_max_pause_ms:{:.3}\r\naof_rewrite_last_pause_ms:{:.3}\r\n",
        store.loading.load(Ordering::Relaxed) as u8,
        p.bgsave_in_progress.load(Ordering::Relaxed) as u8,
        store.last_save_secs.load(Ordering::Relaxed),
        if p.last_bgsave_ok.load(Ordering::Relaxed) { "ok" } else { "err" },
        secs(p.last_save_duration_ms.load(Ordering::Relaxed)),
        p.saves.load(Ordering::Relaxed),
        // As Redis: the `appendonly` setting, also while loading (the log opens after).
        (aof.is_some() || store.config.get_bool("appendonly")) as u8,
        p.rewrite_in_progress.load(Ordering::Relaxed) as u8,
        p.rewrite_scheduled.load(Ordering::Relaxed) as u8,
        secs(p.last_rewrite_duration_ms.load(Ordering::Relaxed)),
        if p.last_rewrite_ok.load(Ordering::Relaxed) { "ok" } else { "err" },
        p.rewrites.load(Ordering::Relaxed),
        if aof.as_ref().is_none_or(|a| a.last_write_ok.load(Ordering::Relaxed)) { "ok" } else { "err" },
        p.max_pause_us.load(Ordering::Relaxed) as f64 / 1000.0,
        p.last_pause_us.load(Ordering::Relaxed) as f64 / 1000.0,
    );
    if store.loading.load(Ordering::Relaxed) {
        let total = p.loading_total_bytes.load(Ordering::Relaxed);
        let loaded = p.loading_loaded_bytes.load(Ordering::Relaxed).min(total);
        let started_ms = p.loading_started_ms.load(Ordering::Relaxed);
        let elapsed_s = crate::clock::now_ms().saturating_sub(started_ms) as f64 / 1000.0;
        let perc = if total > 0 {
            loaded as f64 * 100.0 / total as f64
        } else {
            0.0
        };
        // As Redis: the time so far, scaled to what is left; 1 until anything is loaded.
        let eta = if loaded > 0 {
            (elapsed_s * (total - loaded) as f64 / loaded as f64) as u64
        } else {
            1
        };
        let _ = write!(
            o,
            "loading_start_time:{}\r\nloading_total_bytes:{total}\r\nloading_rdb_used_mem:0\r\nloading_loaded_bytes:{loaded}\r\nloading_loaded_perc:{perc:.2}\r\nloading_eta_seconds:{eta}\r\n",
            started_ms / 1000,
        );
    }
    if let Some(a) = aof {
        let _ = write!(
            o,
            "aof_current_size:{}\r\naof_base_size:{}\r\naof_fsyncs:{}\r\naof_write_errors:{}\r\n",
            a.total_size(),
            a.base_size.load(Ordering::Relaxed),
            a.fsyncs.load(Ordering::Relaxed),
            a.write_errors.load(Ordering::Relaxed),
        );
    }
}

fn secs(ms: i64) -> i64 {
    if ms < 0 {
        -1
    } else {
        (ms + 999) / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;

    fn temp_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("tidewire-persist-{}", crate::random_hex(12)));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn loading_refuses_commands_but_not_the_loader() {
        let mut t = TestClient::new();
        t.store.loading.store(true, Ordering::SeqCst);
        assert_eq!(
            t.run(&["GET", "k"]),
            err("LOADING Redis is loading the dataset in memory")
        );
        let info = t.resp(&["INFO", "persistence"]);
        assert!(info.contains("loading:1"), "{info}");
        let p = &t.store.persist;
        p.loading_total_bytes.store(1000, Ordering::Relaxed);
        p.loading_loaded_bytes.store(250, Ordering::Relaxed);
        p.loading_started_ms
            .store(crate::clock::now_ms() - 2000, Ordering::Relaxed);
        let info = t.resp(&["INFO", "persistence"]);
        for want in [
            "loading_total_bytes:1000\r\n",
            "loading_loaded_bytes:250\r\n",
            "loading_loaded_perc:25.00\r\n",
            "loading_eta_seconds:6\r\n",
        ] {
            assert!(info.contains(want), "{want:?} in {info}");
        }
        let mut loader = load::Loader::new(&t.store);
        let mut buf = Vec::new();
        format::encode(&mut buf, &["SET", "k", "v"]);
        let (end, stopped) = loader.replay(&buf, 0..buf.len());
        assert_eq!((end, stopped), (buf.len(), None));
        loader.finish();
        t.store.loading.store(false, Ordering::SeqCst);
        assert_eq!(t.run(&["GET", "k"]), bulk("v"));
    }

    #[test]
    fn replay_drops_a_multi_without_exec() {
        let t = TestClient::new();
        let mut buf = Vec::new();
        format::encode(&mut buf, &["SET", "a", "1"]);
        let ok_end = buf.len();
        format::encode(&mut buf, &["MULTI"]);
        format::encode(&mut buf, &["SET", "b", "2"]);
        let mut loader = load::Loader::new(&t.store);
        let (end, stopped) = loader.replay(&buf, 0..buf.len());
        loader.finish();
        assert_eq!(end, ok_end);
        assert_eq!(stopped.map(|s| s.1), Some(format::Bad::Truncated));
        let mut t = t;
        assert_eq!(t.run(&["GET", "a"]), bulk("1"));
        assert_eq!(t.run(&["GET", "b"]), tidewire_resp::Reply::Null);
    }

    #[test]
    fn snapshot_round_trip_keeps_values_ttls_and_databases() {
        let dir = temp_dir();
        let mut t = TestClient::new();
        t.store.config.set("dir", dir.to_str().unwrap()).unwrap();
        t.store.config.set("appendonly", "no").unwrap();
        t.run(&["SET", "a", "1"]);
        t.run(&["SET", "t", "x", "PX", "100000"]);
        let exp = t.run(&["PEXPIRETIME", "t"]);
        t.run(&["SELECT", "5"]);
        t.run(&["SET", "b", "bin\r\n\0"]);
        assert_eq!(t.run(&["SAVE"]), ok());

        let store = Store::new();
        store.config.set("dir", dir.to_str().unwrap()).unwrap();
        store.config.set("appendonly", "no").unwrap();
        let plan = begin_startup(&store).unwrap();
        startup(&store, plan).unwrap();
        let mut u = TestClient::with_store(store);
        assert_eq!(u.run(&["GET", "a"]), bulk("1"));
        assert_eq!(u.run(&["PEXPIRETIME", "t"]), exp);
        assert_eq!(u.run(&["GET", "b"]), tidewire_resp::Reply::Null);
        u.run(&["SELECT", "5"]);
        assert_eq!(u.run(&["GET", "b"]), bulk("bin\r\n\0"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
