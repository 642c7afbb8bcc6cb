//! Background jobs, one at a time: snapshots (SAVE, BGSAVE), AOF rewrites
//! (BGREWRITEAOF, automatic) and turning the AOF on at runtime. Each starts from a
//! [`super::capture`] and writes with [`super::snapshot`].

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::aof::{self, Aof, Manifest};
use super::{aof_dir, aof_stem, capture, load, snapshot, snapshot_path, Job};
use crate::Store;

/// Claims the single background-job slot.
pub(super) fn claim(store: &Store, job: Job) -> bool {
    let mut j = store.persist.job.lock();
    if j.is_some() {
        return false;
    }
    *j = Some(job);
    match job {
        Job::Save => store
            .persist
            .bgsave_in_progress
            .store(true, Ordering::Relaxed),
        Job::Rewrite => store
            .persist
            .rewrite_in_progress
            .store(true, Ordering::Relaxed),
    }
    true
}

pub(super) fn release(store: &Store) {
    *store.persist.job.lock() = None;
    store
        .persist
        .bgsave_in_progress
        .store(false, Ordering::Relaxed);
    store
        .persist
        .rewrite_in_progress
        .store(false, Ordering::Relaxed);
}

fn note_pause(store: &Store, us: u64) {
    store.persist.last_pause_us.store(us, Ordering::Relaxed);
    store.persist.max_pause_us.fetch_max(us, Ordering::Relaxed);
}

/// Writes a snapshot now, in this thread (SAVE, shutdown). Error if a job runs.
pub fn save_now(store: &Store) -> Result<(), String> {
    if !claim(store, Job::Save) {
        return Err("Background save already in progress".into());
    }
    let r = do_save(store);
    release(store);
    r
}

fn do_save(store: &Store) -> Result<(), String> {
    let t = Instant::now();
    store
        .persist
        .last_save_try_secs
        .store(crate::clock::now_ms() / 1000, Ordering::Relaxed);
    let dirty = store.stats.dirty.get();
    let (cap, held) = capture::begin(&store.keyspace, &store.functions, || {});
    let r = snapshot::write_file(&store.keyspace, &cap, &snapshot_path(store));
    capture::end(&store.keyspace);
    note_pause(store, held.max(cap.max_copy_us.load(Ordering::Relaxed)));
    store
        .persist
        .last_save_duration_ms
        .store(t.elapsed().as_millis() as i64, Ordering::Relaxed);
    store
        .persist
        .last_bgsave_ok
        .store(r.is_ok(), Ordering::Relaxed);
    super::update_refusal(store);
    match r {
        Ok((keys, bytes)) => {
            store.persist.dirty_at_save.store(dirty, Ordering::Relaxed);
            store
                .last_save_secs
                .store(crate::clock::now_ms() / 1000, Ordering::Relaxed);
            store.persist.last_bgsave_ok.store(true, Ordering::Relaxed);
            store.persist.saves.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                keys,
                bytes,
                ms = t.elapsed().as_millis() as u64,
                "DB saved on disk"
            );
            Ok(())
        }
        Err(e) => {
            store.persist.last_bgsave_ok.store(false, Ordering::Relaxed);
            tracing::error!(error = %e, "snapshot failed");
            Err(format!("snapshot failed: {e}"))
        }
    }
}

/// Starts BGSAVE on a background thread.
pub fn bgsave(store: &Store) -> Result<(), String> {
    let Some(me) = store.persist.store() else {
        return Err("store not shared".into());
    };
    if !claim(store, Job::Save) {
        return Err(match store.persist.job() {
            Some(Job::Rewrite) => "Another child process is active (AOF?): can't BGSAVE right now. Use BGSAVE SCHEDULE in order to schedule a BGSAVE whenever possible.".into(),
            _ => "Background save already in progress".into(),
        });
    }
    std::thread::Builder::new()
        .name("tidewire-bgsave".into())
        .spawn(move || {
            let _ = do_save(&me);
            release(&me);
        })
        .map(|_| ())
        .map_err(|e| {
            release(store);
            e.to_string()
        })
}

/// What BGREWRITEAOF did.
pub enum RewriteStart {
    Started,
    Scheduled,
}

/// Starts an AOF rewrite in the background (or schedules it behind a BGSAVE).
pub fn bgrewrite(store: &Store) -> Result<RewriteStart, String> {
    let Some(me) = store.persist.store() else {
        return Err("store not shared".into());
    };
    if !claim(store, Job::Rewrite) {
        return match store.persist.job() {
            Some(Job::Rewrite) => {
                Err("Background append only file rewriting already in progress".into())
            }
            _ => {
                store
                    .persist
                    .rewrite_scheduled
                    .store(true, Ordering::Relaxed);
                Ok(RewriteStart::Scheduled)
            }
        };
    }
    std::thread::Builder::new()
        .name("tidewire-rewrite".into())
        .spawn(move || {
            let _ = do_rewrite(&me);
            release(&me);
        })
        .map(|_| RewriteStart::Started)
        .map_err(|e| {
            release(store);
            e.to_string()
        })
}

fn do_rewrite(store: &Store) -> Result<(), String> {
    let t = Instant::now();
    let result = match store.persist.aof() {
        Some(aof) => rewrite_open_log(store, &aof),
        None => rewrite_closed_log(store),
    };
    store
        .persist
        .last_rewrite_duration_ms
        .store(t.elapsed().as_millis() as i64, Ordering::Relaxed);
    store
        .persist
        .last_rewrite_ok
        .store(result.is_ok(), Ordering::Relaxed);
    match &result {
        Ok(()) => {
            store.persist.rewrites.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                ms = t.elapsed().as_millis() as u64,
                "background AOF rewrite finished successfully"
            );
        }
        Err(e) => tracing::error!(error = %e, "AOF rewrite failed"),
    }
    result
}

/// BGREWRITEAOF with `appendonly no`, which Redis allows too: the AOF directory
/// gets a base of the dataset and a manifest naming only it (the files it named
/// before are removed), ready for a later start or `CONFIG SET appendonly yes`.
fn rewrite_closed_log(store: &Store) -> Result<(), String> {
    let dir = aof_dir(store);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let stem = aof_stem(store);
    let old = load::read_manifest(&dir, &stem)
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let n = old.next.max(1);
    let base_name = aof::base_file(&stem, n);
    let (cap, held) = capture::begin(&store.keyspace, &store.functions, || {});
    let written = snapshot::write_file(&store.keyspace, &cap, &dir.join(&base_name));
    capture::end(&store.keyspace);
    note_pause(store, held.max(cap.max_copy_us.load(Ordering::Relaxed)));
    written.map_err(|e| e.to_string())?;
    let manifest = Manifest {
        base: Some(base_name),
        incrs: Vec::new(),
        next: n + 1,
    };
    manifest
        .save(&dir, &aof::manifest_file(&stem))
        .map_err(|e| e.to_string())?;
    for f in old.base.into_iter().chain(old.incrs) {
        let _ = std::fs::remove_file(dir.join(f));
    }
    Ok(())
}

/// The rewrite of a log in use: cut it (new writes go to a new incremental file),
/// write a base of the dataset at the cut, then swap the manifest.
fn rewrite_open_log(store: &Store, aof: &Aof) -> Result<(), String> {
    let (cap, held) = capture::begin(&store.keyspace, &store.functions, || aof.rotate_here());
    let result = (|| {
        let new_incr = aof
            .wait_rotated(Duration::from_secs(30))
            .filter(|n| !n.is_empty())
            .ok_or("the AOF writer did not switch to a new file")?;
        let base_name = {
            let mut m = aof.manifest.lock();
            let n = m.next;
            m.next += 1;
            aof::base_file(&aof.stem, n)
        };
        let (_keys, bytes) = snapshot::write_file(&store.keyspace, &cap, &aof.dir.join(&base_name))
            .map_err(|e| e.to_string())?;
        // Swap the manifest: new base + the files from the cut on.
        let (old, incr_size) = {
            let mut m = aof.manifest.lock();
            let pos = m
                .incrs
                .iter()
                .position(|n| *n == new_incr)
                .ok_or("new incremental file missing from the manifest")?;
            let mut next = m.clone();
            let mut old: Vec<String> = next.incrs.drain(..pos).collect();
            old.extend(next.base.replace(base_name.clone()));
            next.save(&aof.dir, &aof.manifest_name())
                .map_err(|e| e.to_string())?;
            *m = next;
            let incr_size: u64 = m
                .incrs
                .iter()
                .map(|n| super::log_file::logical_size(&aof.dir.join(n)))
                .sum();
            (old, incr_size)
        };
        for f in old {
            let _ = std::fs::remove_file(aof.dir.join(f));
        }
        aof.base_size.store(bytes, Ordering::Relaxed);
        aof.incr_size.store(incr_size, Ordering::Relaxed);
        aof.size_at_rewrite
            .store(bytes + incr_size, Ordering::Relaxed);
        Ok::<_, String>(())
    })();
    capture::end(&store.keyspace);
    note_pause(store, held.max(cap.max_copy_us.load(Ordering::Relaxed)));
    result
}

/// `CONFIG SET appendonly yes` at runtime: a new log starts at a cut (the write log
/// is installed with every shard locked), its base is written from the capture, and
/// only then does the manifest name it — until that moment a crash restarts from
/// whatever was there before (snapshot, or the previous log).
pub fn enable_aof(store: &Store) -> Result<(), String> {
    if !claim(store, Job::Rewrite) {
        return Err("a background job is running".into());
    }
    let r = enable_aof_inner(store);
    release(store);
    r
}

fn enable_aof_inner(store: &Store) -> Result<(), String> {
    let t = Instant::now();
    let dir = aof_dir(store);
    let stem = aof_stem(store);
    let previous = load::read_manifest(&dir, &stem)
        .ok()
        .flatten()
        .unwrap_or_default();
    let aof = Aof::open_unlisted(
        dir.clone(),
        stem.clone(),
        &previous,
        aof::parse_policy(&store.config.get("appendfsync").unwrap_or_default()),
    )
    .map_err(|e| e.to_string())?;
    store.persist.listen_to_fsyncs(&aof);
    let (cap, held) = capture::begin(&store.keyspace, &store.functions, || {
        *store.persist.aof.write() = Some(aof.clone());
        store.set_write_log(aof.clone());
    });
    let result = (|| {
        let base_name = {
            let mut m = aof.manifest.lock();
            let n = m.next;
            m.next += 1;
            aof::base_file(&stem, n)
        };
        let (_, bytes) = snapshot::write_file(&store.keyspace, &cap, &dir.join(&base_name))
            .map_err(|e| e.to_string())?;
        let mut m = aof.manifest.lock();
        let mut next = m.clone();
        next.base = Some(base_name);
        next.save(&dir, &aof.manifest_name())
            .map_err(|e| e.to_string())?;
        *m = next;
        aof.base_size.store(bytes, Ordering::Relaxed);
        aof.size_at_rewrite
            .store(aof.total_size(), Ordering::Relaxed);
        // The base is on disk (the snapshot writer fsyncs it): WAITAOF may count
        // this log from now on.
        aof.mark_complete();
        Ok::<_, String>(())
    })();
    capture::end(&store.keyspace);
    note_pause(store, held.max(cap.max_copy_us.load(Ordering::Relaxed)));
    match result {
        Ok(()) => {
            for f in previous.base.iter().chain(previous.incrs.iter()) {
                let _ = std::fs::remove_file(dir.join(f));
            }
            store.persist.rewrites.fetch_add(1, Ordering::Relaxed);
            tracing::info!(ms = t.elapsed().as_millis() as u64, "AOF turned on");
            Ok(())
        }
        Err(e) => {
            disable_aof(store);
            Err(e)
        }
    }
}

/// `CONFIG SET appendonly no` at runtime: stop logging, flush what was logged.
pub fn disable_aof(store: &Store) {
    let Some(aof) = store.persist.aof.write().take() else {
        return;
    };
    store.clear_write_log();
    // (Its last fsync wakes WAITAOF's clients: wanting the local copy, they now
    // get its error.)
    aof.shutdown();
    tracing::info!("AOF turned off");
}
