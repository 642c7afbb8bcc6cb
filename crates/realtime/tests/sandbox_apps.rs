//! Sandbox apps (`[realtime] sandbox = true`): `POST /apps` makes an app of its own
//! (keys, channels, history, presence fixtures), requests are routed to it by their
//! credentials, `DELETE /apps/{id}` removes it; without the setting there are no
//! such routes.

mod common;

use common::*;
use serde_json::{json, Value};

fn sandbox_config() -> tidewire_realtime::RealtimeConfig {
    let mut c = base_config();
    c.sandbox = true;
    c
}

async fn create_app(s: &Server, body: Value) -> Value {
    let r = http()
        .post(s.http("/apps"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

#[tokio::test]
async fn apps_are_isolated_and_routed_by_their_keys() {
    let s = start(sandbox_config()).await;
    let app = create_app(
        &s,
        json!({
            "keys": [{}, {"capability": "{\"cansubscribe:*\":[\"subscribe\"]}"}],
            "namespaces": [{"id": "persisted", "persisted": true}],
            "channels": [{"name": "persisted:fixtures", "presence": [
                {"clientId": "client_bool", "data": "true"},
                {"clientId": "client_json", "data": "{\"a\":1}", "encoding": "json"}
            ]}]
        }),
    )
    .await;
    let key = app["keys"][0]["keyStr"].as_str().unwrap().to_owned();
    let limited = app["keys"][1]["keyStr"].as_str().unwrap().to_owned();
    let app_id = app["appId"].as_str().unwrap().to_owned();
    assert!(key.starts_with(&format!("{app_id}.")));
    assert_eq!(app["namespaces"].as_array().unwrap().len(), 1);
    assert_eq!(app["endpoint"], "127.0.0.1");
    assert_eq!(app["port"], s.addr.port());
    assert_eq!(app["tls"], false);

    // A message published in the app is in its history, not in the configured app's.
    let r = http()
        .post(s.http("/channels/room/messages"))
        .header("authorization", basic(&key))
        .json(&json!({"name": "n", "data": "in the app"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let history = |k: String| {
        let url = s.http("/channels/room/messages");
        async move {
            let r = http()
                .get(url)
                .header("authorization", basic(&k))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    assert_eq!(history(key.clone()).await[0]["data"], "in the app");
    assert_eq!(history(FULL_KEY.to_owned()).await, json!([]));
    // Its keys keep their capabilities.
    let r = http()
        .post(s.http("/channels/room/messages"))
        .header("authorization", basic(&limited))
        .json(&json!({"data": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Presence fixtures are present; a WebSocket client with the app's key sees them.
    let r = http()
        .get(s.http("/channels/persisted:fixtures/presence"))
        .header("authorization", basic(&key))
        .send()
        .await
        .unwrap();
    let members: Value = r.json().await.unwrap();
    let mut ids: Vec<&str> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["clientId"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["client_bool", "client_json"]);
    // … and their entering is in the channel's presence history.
    let r = http()
        .get(s.http("/channels/persisted:fixtures/presence/history"))
        .header("authorization", basic(&key))
        .send()
        .await
        .unwrap();
    let history: Value = r.json().await.unwrap();
    assert_eq!(history.as_array().unwrap().len(), 2, "{history}");
    let (mut c, connected) = Client::connected(&s, &format!("key={key}")).await;
    assert!(connected["connectionId"].is_string());
    c.attach("room").await;

    // Deleting needs one of the app's keys; afterwards its keys are unknown.
    let del = |auth: Option<String>| {
        let mut r = http().delete(s.http(&format!("/apps/{app_id}")));
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    assert_eq!(del(None).await.unwrap().status(), 401);
    assert_eq!(del(Some(basic(FULL_KEY))).await.unwrap().status(), 401);
    assert_eq!(del(Some(basic(&key))).await.unwrap().status(), 204);
    let r = http()
        .get(s.http("/channels/room/messages"))
        .header("authorization", basic(&key))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn without_the_setting_apps_cannot_be_created() {
    let s = start(base_config()).await;
    let r = http()
        .post(s.http("/apps"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// `GET /stats`: the app's own publishes in the current interval, fixtures posted
/// to a sandbox app, summed by unit, paged with Link headers.
#[tokio::test]
async fn stats_from_publishes_and_fixtures() {
    let s = start(sandbox_config()).await;
    let app = create_app(&s, json!({"keys": [{}]})).await;
    let key = app["keys"][0]["keyStr"].as_str().unwrap().to_owned();
    let get = |query: &str| {
        let url = s.http(&format!("/stats?{query}"));
        let key = key.clone();
        async move {
            let r = http()
                .get(url)
                .header("authorization", basic(&key))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let link = r
                .headers()
                .get("link")
                .map(|l| l.to_str().unwrap().to_owned());
            (r.json::<Value>().await.unwrap(), link)
        }
    };
    http()
        .post(s.http("/channels/c/messages"))
        .header("authorization", basic(&key))
        .json(&json!([{"data": "12345"}, {"data": "678"}]))
        .send()
        .await
        .unwrap();
    let (now, _) = get("unit=hour").await;
    assert_eq!(now[0]["entries"]["messages.inbound.rest.messages.count"], 2);
    assert_eq!(now[0]["entries"]["messages.inbound.all.messages.data"], 8);
    assert!(now[0]["inProgress"].is_string());
    assert_eq!(now[0]["appId"], app["appId"]);

    let fixtures = json!([
        {"intervalId": "2025-02-03:15:03", "inbound": {"realtime": {"messages": {"count": 50, "data": 5000}}}},
        {"intervalId": "2025-02-03:15:04", "inbound": {"realtime": {"messages": {"count": 60, "data": 6000}}}}
    ]);
    let r = http()
        .post(s.http("/stats"))
        .header("authorization", basic(&key))
        .json(&fixtures)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (day, _) = get("unit=day&start=2025-02-03&end=2025-02-03").await;
    assert_eq!(day.as_array().unwrap().len(), 1);
    assert_eq!(
        day[0]["entries"]["messages.inbound.all.messages.count"],
        110
    );
    assert_eq!(day[0]["intervalId"], "2025-02-03");
    let (page, link) = get("end=2025-02-03:15:04&limit=1").await;
    assert_eq!(page[0]["intervalId"], "2025-02-03:15:04");
    let link = link.unwrap();
    let next = link.split("rel=\"first\", <./stats?").nth(1).unwrap();
    let next = next.split('>').next().unwrap();
    let (page, link) = get(next).await;
    assert_eq!(page[0]["intervalId"], "2025-02-03:15:03");
    assert!(!link.unwrap().contains("rel=\"next\""));
    // A server without the sandbox takes no fixtures.
    let plain = start(base_config()).await;
    let r = http()
        .post(plain.http("/stats"))
        .header("authorization", basic(FULL_KEY))
        .json(&fixtures)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
