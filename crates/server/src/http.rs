//! The HTTP listener's router: health and readiness checks, Prometheus metrics, and
//! the Upstash REST API ([`crate::upstash`]) under its mount (`/redis`). The realtime
//! layer's routes are merged into the same router. CORS, when configured, wraps it
//! all.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tidewire_store::Store;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::config::HttpConfig;
use crate::upstash::{self, RestState};

pub fn router(store: Arc<Store>, rest: Arc<RestState>, mount: &str, http: &HttpConfig) -> Router {
    let ops = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/ready", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(store);
    with_cors(ops.merge(upstash::routes(rest, mount)), http)
}

/// Wraps a router in the configured CORS policy (none by default).
pub fn with_cors(router: Router, http: &HttpConfig) -> Router {
    if http.cors_origins.is_empty() {
        return router;
    }
    let origins = if http.cors_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            http.cors_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    let layer = CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers(Any)
        .expose_headers([HeaderName::from_static("upstash-sync-token")]);
    router.layer(layer)
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready once data is loaded: load balancers hold traffic back until then.
async fn readyz(State(store): State<Arc<Store>>) -> (StatusCode, &'static str) {
    if store.loading.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "loading")
    } else {
        (StatusCode::OK, "ready")
    }
}

async fn metrics(State(store): State<Arc<Store>>) -> impl IntoResponse {
    // The keyspace walk takes every shard lock briefly; keep it off the async workers.
    let text = tokio::task::spawn_blocking(move || crate::metrics::render(&store))
        .await
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}
