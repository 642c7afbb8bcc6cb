//! A tiny server for compatibility tests: builds a [`Hub`] and serves [`router`] on
//! 127.0.0.1 with an OS-chosen port, then prints `LISTENING <port>` on stdout.
//!
//! Configuration (JSON, the shape of [`RealtimeConfig`]) comes from the first argument
//! or the `TIDEWIRE_REALTIME_CONFIG` environment variable; without either, a test
//! setup with a full-access key `test.full:fullsecret` is used.

use std::io::Write;
use std::sync::Arc;

use tidewire_realtime::{router, Hub, MemoryHistoryStore, RealtimeConfig};

fn load_config() -> Result<RealtimeConfig, String> {
    let text = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("TIDEWIRE_REALTIME_CONFIG").ok());
    match text {
        Some(t) => serde_json::from_str(&t).map_err(|e| format!("bad config JSON: {e}")),
        None => serde_json::from_str(r#"{"keys":[{"key":"test.full:fullsecret"}]}"#)
            .map_err(|e| e.to_string()),
    }
}

#[tokio::main]
async fn main() {
    let config = match load_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let hub = match Hub::try_new(config, Arc::new(MemoryHistoryStore::default())) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bind failed: {e}");
            std::process::exit(1);
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    println!("LISTENING {port}");
    let _ = std::io::stdout().flush();
    if let Err(e) = axum::serve(listener, router(hub)).await {
        eprintln!("server error: {e}");
        std::process::exit(1);
    }
}
