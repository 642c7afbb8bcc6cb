//! With `appendfsync always`, a write acknowledged over the Upstash REST API must be
//! on disk first, exactly as for RESP. Proven with a write log whose "fsync" the test
//! holds back: the REST response must not arrive until the test releases it.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tidewire_store::durable::{DurableRelay, DurableWaiter};
use tidewire_store::WriteLog;

struct HeldLog {
    next: AtomicU64,
    durable: Arc<DurableRelay>,
}

impl WriteLog for HeldLog {
    fn append(&self, _cmds: &[(usize, Vec<Bytes>)]) -> u64 {
        self.next.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn durable_waiter(&self) -> Option<DurableWaiter> {
        Some(self.durable.waiter())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_write_reply_waits_for_durability() {
    let (server, dir) = common::start().await;
    let durable = DurableRelay::new();
    server.store.set_write_log(Arc::new(HeldLog {
        next: AtomicU64::new(0),
        durable: durable.clone(),
    }));
    let token = std::fs::read_to_string(dir.path().join("rest-token")).expect("generated token");
    let url = format!("http://{}/redis", server.http_addr);
    let http = reqwest::Client::new();

    // A read needs no disk: it answers at once.
    let read = http
        .post(&url)
        .bearer_auth(token.trim())
        .json(&serde_json::json!(["GET", "k"]))
        .send();
    let read = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("read not held");
    assert!(read.unwrap().status().is_success());

    // A write is held while its log entry is not durable…
    let write = {
        let http = http.clone();
        let (url, token) = (url.clone(), token.clone());
        tokio::spawn(async move {
            http.post(&url)
                .bearer_auth(token.trim())
                .json(&serde_json::json!(["SET", "k", "v"]))
                .send()
                .await
                .map(|r| r.status())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !write.is_finished(),
        "REST acknowledged a write before it was durable"
    );

    // …and answered once it is.
    durable.publish(u64::MAX);
    let status = tokio::time::timeout(Duration::from_secs(10), write)
        .await
        .expect("write answered after durability")
        .unwrap()
        .unwrap();
    assert!(status.is_success());
    server.shutdown().await;
}
