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
pub mod realtime;
mod route;
mod scan;
mod session;
mod subscriptions;
mod transaction;

use std::sync::Arc;

use anyhow::Context;
use tidewire_engine::Cluster;

pub use pipeline::{Answers, Gathered};
pub use route::CROSSSLOT;
pub use session::{EngineSession, Forwarded};

/// Where keyspace commands run.
#[derive(Clone, Default)]
pub enum Engine {
    /// In this process's store.
    #[default]
    Embedded,
    /// On a Redis/Valkey Cluster (or one standalone server).
    Redis(Arc<Cluster>),
}

impl Engine {
    /// The engine the configuration names: connects and reads the topology, so a
    /// wrong URL or password stops the start with a clear error.
    pub async fn connect(urls: Option<&str>) -> anyhow::Result<Engine> {
        let Some(urls) = urls.filter(|u| !u.trim().is_empty()) else {
            return Ok(Engine::Embedded);
        };
        let seeds = tidewire_engine::parse_seeds(urls)?;
        let cluster = Cluster::connect(seeds)
            .await
            .context("cannot reach the engine (--engine)")?;
        tracing::info!(
            masters = cluster.masters().len(),
            "keyspace on the redis engine"
        );
        Ok(Engine::Redis(cluster))
    }

    /// A RESP connection's session: `None` on the embedded engine, where the
    /// store serves every command itself.
    pub fn session(&self) -> Option<EngineSession> {
        match self {
            Engine::Embedded => None,
            Engine::Redis(cluster) => Some(EngineSession::new(cluster.clone(), true)),
        }
    }

    /// A REST request's session: as [`Engine::session`], but commands that
    /// would block are refused (a request never waits).
    pub fn request_session(&self) -> Option<EngineSession> {
        match self {
            Engine::Embedded => None,
            Engine::Redis(cluster) => Some(EngineSession::new(cluster.clone(), false)),
        }
    }
}
