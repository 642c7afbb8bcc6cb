//! The HTTP listener: health and readiness checks now; the Upstash REST API (mounted
//! at `/redis`), metrics and the realtime layer are merged into this router.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tidewire_store::Store;

pub fn router(store: Arc<Store>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/ready", get(readyz))
        .with_state(store)
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
