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

/// `hubs`: the realtime apps whose figures `/metrics` reports.
pub fn router(
    store: Arc<Store>,
    rest: Arc<RestState>,
    mount: &str,
    http: &HttpConfig,
    hubs: Vec<Arc<tidewire_realtime::Hub>>,
) -> Router {
    let ops = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/ready", get(readyz))
        .with_state(store.clone())
        .merge(
            Router::new()
                .route("/metrics", get(metrics))
                .with_state((store, Arc::new(hubs))),
        );
    with_cors(ops.merge(upstash::routes(rest, mount)), http)
}

/// Answers an Upstash REST call sent to the root of the HTTP port instead of under
/// `mount` (a `UPSTASH_REDIS_REST_URL` without `/redis`) with a JSON error that
/// says so, as `@upstash/redis` shows a response's `error`. The realtime layer,
/// which owns the root, serves no POST there.
pub fn with_misplaced_upstash_error(router: Router, mount: &str) -> Router {
    if mount.is_empty() {
        return router;
    }
    let mount = mount.to_owned();
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let mount = mount.clone();
            async move {
                let misplaced = req.method() == Method::POST
                    && matches!(
                        req.uri().path().trim_end_matches('/'),
                        "" | "/pipeline" | "/multi-exec"
                    );
                if !misplaced {
                    return next.run(req).await;
                }
                let host = req
                    .headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("<host:port>")
                    .to_owned();
                let error = format!(
                    "ERR the Upstash REST API is served under {mount} on this port: \
                     set UPSTASH_REDIS_REST_URL=http://{host}{mount}"
                );
                (
                    StatusCode::NOT_FOUND,
                    [(header::CONTENT_TYPE, "application/json")],
                    serde_json::json!({ "error": error }).to_string(),
                )
                    .into_response()
            }
        },
    ))
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

type MetricsState = (Arc<Store>, Arc<Vec<Arc<tidewire_realtime::Hub>>>);

async fn metrics(State((store, hubs)): State<MetricsState>) -> impl IntoResponse {
    // The keyspace walk takes every shard lock briefly; keep it off the async workers.
    let text = tokio::task::spawn_blocking(move || crate::metrics::render(&store, &hubs))
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
