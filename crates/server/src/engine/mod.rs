//! The engine behind the front doors: the embedded store (the default), or a
//! Redis/Valkey Cluster shared by several Tidewire nodes (`--engine redis://…`).
//!
//! The seam is one question a front door asks per command, through an
//! [`EngineSession`] it holds only when an engine is configured: "do you run
//! this?" On the embedded engine there is no session and the front door calls
//! the store exactly as before. With a session, keyspace commands go to the
//! cluster ([`route`] decides where) and the reply comes back as the engine gave
//! it, in the client's protocol; commands about the connection or this node
//! (PING, HELLO, AUTH, CLIENT, COMMAND, INFO, CONFIG, ACL …) stay on the local
//! store, which also keeps Tidewire's users and their permissions.

mod fan_out;
mod pipeline;
mod primitives;
pub mod realtime;
mod route;
mod scan;
mod session;
mod subscriptions;
mod tracking;
mod transaction;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tidewire_engine::{Cluster, ConnectOptions};
use tidewire_store::Store;

pub use pipeline::{Answers, Gathered, MAX_BATCH};
pub use route::CROSSSLOT;
pub use session::{EngineSession, Forwarded};
pub use tracking::Invalidations;

/// The sink of subscriber connection `id` whose pushes go to `owner` (held
/// weakly: a connection outliving its owner delivers nowhere): `on_push` for
/// each push, `on_lost` once the connection is gone.
pub(crate) fn owner_sink<T: Send + Sync + 'static>(
    owner: &Arc<T>,
    id: u64,
    on_push: fn(&Arc<T>, u64, tidewire_resp::Reply),
    on_lost: fn(&Arc<T>, u64),
) -> tidewire_engine::PushSink {
    let weak = Arc::downgrade(owner);
    Arc::new(move |push| {
        if let Some(owner) = weak.upgrade() {
            match push {
                Some(push) => on_push(&owner, id, push),
                None => on_lost(&owner, id),
            }
        }
    })
}

/// Where keyspace commands run.
#[derive(Clone, Default)]
pub enum Engine {
    /// In this process's store.
    #[default]
    Embedded,
    /// On a Redis/Valkey Cluster (or one standalone server), with the node's
    /// listener for changes there (`CLIENT TRACKING`).
    Redis(Arc<Cluster>, Invalidations),
}

impl Engine {
    /// The engine the configuration names: connects and reads the topology, so a
    /// wrong URL, password or certificate stops the start with a clear error.
    /// `tls_ca`: the CA a `rediss://` engine's certificates chain to. `store`:
    /// the node's, whose tracking clients hear of changes on the engine.
    pub async fn connect(
        urls: Option<&str>,
        tls_ca: Option<&Path>,
        store: &Arc<Store>,
    ) -> anyhow::Result<Engine> {
        let Some(urls) = urls.filter(|u| !u.trim().is_empty()) else {
            return Ok(Engine::Embedded);
        };
        let seeds = tidewire_engine::parse_seeds(urls)?;
        if tls_ca.is_some() && !seeds.iter().any(|s| s.tls) {
            tracing::warn!(
                "engine-tls-ca is set but the engine URLs are redis://, not rediss://: no TLS"
            );
        }
        let options = ConnectOptions {
            tls_ca: tls_ca.map(Path::to_path_buf),
            ..ConnectOptions::default()
        };
        let cluster = Cluster::connect_with(seeds, options)
            .await
            .context("cannot reach the engine (--engine)")?;
        tracing::info!(
            masters = cluster.masters().len(),
            "keyspace on the redis engine"
        );
        let invalidations = Invalidations::new(cluster.clone(), store);
        Ok(Engine::Redis(cluster, invalidations))
    }

    /// A RESP connection's session: `None` on the embedded engine, where the
    /// store serves every command itself.
    pub fn session(&self) -> Option<EngineSession> {
        match self {
            Engine::Embedded => None,
            Engine::Redis(cluster, invalidations) => Some(EngineSession::new(
                cluster.clone(),
                invalidations.clone(),
                true,
            )),
        }
    }

    /// A REST request's session: as [`Engine::session`], but commands that
    /// would block are refused (a request never waits).
    pub fn request_session(&self) -> Option<EngineSession> {
        match self {
            Engine::Embedded => None,
            Engine::Redis(cluster, invalidations) => Some(EngineSession::new(
                cluster.clone(),
                invalidations.clone(),
                false,
            )),
        }
    }
}
