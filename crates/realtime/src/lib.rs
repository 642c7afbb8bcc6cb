//! Tidewire's Ably-compatible realtime layer.
//!
//! Key types and data flow:
//! - [`Hub`] (shared as `Arc<Hub>`) owns the local channels, the connection registry,
//!   the [`auth::Keyring`], a [`HistoryStore`] and an [`engine::Engine`]: the
//!   interfaces ([`engine::Broker`], [`engine::PresenceStore`],
//!   [`engine::ConnectionStateStore`], [`engine::DedupeStore`]) behind which the state
//!   several nodes would share lives, in-process by default. Build it with
//!   [`Hub::new`] from a [`RealtimeConfig`].
//! - [`router`] serves the WebSocket endpoint at `/` ([`ws`] → [`connection`]) and the
//!   Ably REST routes ([`rest`]). A WebSocket frame is decoded by [`codec`] into a
//!   [`protocol::ProtocolMessage`], handled by the session in [`connection`], and
//!   publishes go to [`Hub::publish_async`] → the engine's broker, which assigns the
//!   channel serial and appends to history (atomically per channel, the ordering
//!   point) and hands the publication to every node's hub →
//!   [`channel::Channel::deliver`], which queues it for every attached connection
//!   under the channel's lock.
//! - Presence ([`presence`]) lives beside the subscribers in each channel and changes
//!   under the same lock; attaching returns the set for SYNC. Changes are written
//!   through to the engine's presence store, which REST reads.
//! - Connections are registered in [`registry`] by connectionId/connectionKey; a lost
//!   transport leaves the connection resumable for `connectionStateTtl`, and
//!   re-attaching with a `channelSerial` replays what was missed from history.
//! - Access control: [`auth`] turns keys and tokens ([`token`]) into a principal with a
//!   [`capability::Capability`], checked on attach, publish, subscribe, presence and
//!   history.
//! - Bridge to the Redis side: [`Hub::publish_from_backend`] injects messages and
//!   [`Hub::subscribe_all`] observes every message (see docs/realtime.md).
//! - Errors: every client-visible failure is an [`AblyError`] from the single
//!   [`error::ErrorCode`] table.

#![forbid(unsafe_code)]

pub mod apps;
pub mod auth;
pub mod capability;
pub mod channel;
pub mod codec;
pub mod config;
pub mod connect;
pub mod connection;
pub mod delta;
pub mod engine;
pub mod error;
pub mod filter;
pub mod history;
pub mod hub;
pub mod outbox;
pub mod presence;
pub mod protocol;
pub mod qualifier;
pub mod ratelimit;
pub mod registry;
pub mod rest;
pub mod stats;
pub mod token;
pub mod vcdiff;
pub mod ws;

use std::sync::Arc;

use axum::http::{header, HeaderName, Method};
use axum::routing::get;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

pub use channel::{ChannelEvent, Origin};
pub use config::{CapabilityConfig, KeyConfig, RealtimeConfig};
pub use error::{AblyError, ErrorCode};
pub use history::{HistoryQuery, HistoryStore, MemoryHistoryStore, StoredMessage};
pub use hub::Hub;
pub use protocol::{Message, MessageData};

/// The realtime HTTP surface: WebSocket at `/`, Ably REST routes, CORS for browsers,
/// for the configured app and (with `sandbox`) the apps made by `POST /apps`.
/// Merge it at the root of the HTTP port; it claims no path under `/redis`.
pub fn router(hub: Arc<Hub>) -> axum::Router {
    router_with_apps(hub, Vec::new())
}

/// [`router`] for a server with further apps (`[[realtime.apps]]`), each served by
/// its own hub and chosen per request by the app id in its credentials.
pub fn router_with_apps(hub: Arc<Hub>, others: Vec<Arc<Hub>>) -> axum::Router {
    apps::router(apps::Apps::new(hub, others))
}

/// One app's routes, bound to its hub.
pub(crate) fn hub_router(hub: Arc<Hub>) -> axum::Router {
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_credentials(true)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers([
            header::LINK,
            HeaderName::from_static("x-ably-errorcode"),
            HeaderName::from_static("x-ably-errormessage"),
            HeaderName::from_static("x-ably-serverid"),
        ]);
    rest::routes()
        .route("/", get(ws::ws_root))
        .fallback(rest::not_found)
        .method_not_allowed_fallback(rest::not_found)
        .layer(cors)
        .with_state(hub)
}
