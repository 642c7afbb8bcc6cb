//! The background topology refresh of a cluster engine. Redirects alone would
//! notice a failover or a moved slot only when a request hits it (after a
//! connect error or a `MOVED`); reading `CLUSTER SLOTS` every few seconds from
//! one reachable node finds it first, and closes connections to nodes that are
//! no longer masters. A lost connection is the likeliest sign of a failover, so
//! after one the map is read at once and then often for a while, until the
//! cluster has had time to promote a replica.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use crate::cluster::Cluster;

/// The regular period: one `CLUSTER SLOTS` to one node.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(5);
/// The period right after a lost connection…
const QUICK_EVERY: Duration = Duration::from_millis(250);
/// …for this many reads (10 s: a replica is promoted within about twice the
/// cluster's node timeout, 15 s by default, so the regular period finishes the
/// job on a slow cluster).
const QUICK_READS: u32 = 40;

/// Starts the refresh of `cluster`; it stops once the cluster is dropped.
pub(crate) fn spawn(cluster: &Arc<Cluster>, lost: Arc<Notify>, every: Duration) {
    // Reads closer together than this would be skipped anyway (see
    // `Cluster::read_topology`); a zero period would spin.
    let every = every.max(QUICK_EVERY);
    let weak: Weak<Cluster> = Arc::downgrade(cluster);
    tokio::spawn(async move {
        let mut quick_left = 0u32;
        loop {
            let wait = if quick_left > 0 { QUICK_EVERY } else { every };
            tokio::select! {
                _ = tokio::time::sleep(wait) => quick_left = quick_left.saturating_sub(1),
                _ = lost.notified() => quick_left = QUICK_READS,
            }
            let Some(cluster) = weak.upgrade() else {
                return;
            };
            if let Err(e) = cluster.refresh().await {
                tracing::debug!(error = %e, "engine topology refresh failed");
            }
        }
    });
}
