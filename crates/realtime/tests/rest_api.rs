//! REST endpoints: publish, history pagination, metadata, batch, errors, CORS, time.

mod common;

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn rest_publish_reaches_ws_subscribers_json_and_msgpack() {
    let s = start(base_config()).await;
    let (mut c, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    c.attach("rest:in").await;
    let r = http()
        .post(s.http("/channels/rest%3Ain/messages"))
        .header("authorization", basic(FULL_KEY))
        .json(&json!([{"name": "a", "data": "one"}, {"name": "b", "data": {"k": 1}}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["serials"].as_array().unwrap().len(), 2);
    let m = c.expect(15).await;
    assert_eq!(m["messages"][0]["data"], "one");
    assert_eq!(m["messages"][1]["data"], json!({"k": 1}));

    // msgpack body with binary data, as ably-js in Node sends it.
    #[derive(serde::Serialize)]
    struct M<'a> {
        name: &'a str,
        #[serde(serialize_with = "as_bin")]
        data: &'a [u8],
    }
    fn as_bin<S: serde::Serializer>(v: &&[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
    let body = rmp_serde::to_vec_named(&M {
        name: "bin",
        data: &[7, 8, 9],
    })
    .unwrap();
    let r = http()
        .post(s.http("/channels/rest%3Ain/messages"))
        .header("authorization", basic(FULL_KEY))
        .header("content-type", "application/x-msgpack")
        .header("accept", "application/x-msgpack")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/x-msgpack"
    );
    let m = c.expect(15).await;
    assert_eq!(m["messages"][0]["data"], "BwgJ");
    assert_eq!(m["messages"][0]["encoding"], "base64");
}

#[tokio::test]
async fn history_paginates_with_relative_link_headers() {
    let s = start(base_config()).await;
    let auth = basic(FULL_KEY);
    for i in 0..25 {
        let r = http()
            .post(s.http("/channels/hist/messages"))
            .header("authorization", &auth)
            .json(&json!({"name": "n", "data": format!("m{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let mut url = s.http("/channels/hist/messages?limit=10");
    let mut all = Vec::new();
    for _ in 0..10 {
        let r = http()
            .get(&url)
            .header("authorization", &auth)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let link = r
            .headers()
            .get("link")
            .map(|v| v.to_str().unwrap().to_owned());
        let page: Vec<Value> = r.json().await.unwrap();
        all.extend(
            page.into_iter()
                .map(|m| m["data"].as_str().unwrap().to_owned()),
        );
        let Some(link) = link else { break };
        let next = link
            .split(',')
            .find(|p| p.contains("rel=\"next\""))
            .expect("next link");
        let rel = next
            .trim()
            .trim_start_matches('<')
            .split('>')
            .next()
            .unwrap();
        assert!(rel.starts_with("./messages?"), "relative form: {rel}");
        url = s.http(&format!("/channels/hist/{}", &rel[2..]));
    }
    let expected: Vec<String> = (0..25).rev().map(|i| format!("m{i}")).collect();
    assert_eq!(all, expected);

    // Forwards with a limit.
    let page: Vec<Value> = http()
        .get(s.http("/channels/hist/messages?direction=forwards&limit=3"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let datas: Vec<&str> = page.iter().map(|m| m["data"].as_str().unwrap()).collect();
    assert_eq!(datas, ["m0", "m1", "m2"]);
    assert!(page[0]["id"].is_string() && page[0]["timestamp"].is_i64());

    // A time window that excludes everything.
    let page: Vec<Value> = http()
        .get(s.http("/channels/hist/messages?start=0&end=1"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(page.is_empty());
}

#[tokio::test]
async fn client_ids_make_rest_publishes_idempotent() {
    let s = start(base_config()).await;
    for _ in 0..3 {
        let r = http()
            .post(s.http("/channels/idem/messages"))
            .header("authorization", basic(FULL_KEY))
            .json(&json!([{"id": "abc:0", "data": "x"}, {"id": "abc:1", "data": "y"}]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let page: Vec<Value> = http()
        .get(s.http("/channels/idem/messages"))
        .header("authorization", basic(FULL_KEY))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(page[0]["id"], "abc:1");
}

#[tokio::test]
async fn errors_are_ably_shaped_with_headers() {
    let s = start(base_config()).await;
    let r = http()
        .post(s.http("/channels/private/messages"))
        .header("authorization", basic(SUB_KEY))
        .json(&json!({"data": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["x-ably-errorcode"], "40160");
    assert!(r.headers().contains_key("x-ably-errormessage"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], 40160);
    assert_eq!(body["error"]["statusCode"], 401);
    assert!(body["error"]["href"].as_str().unwrap().ends_with("40160"));

    let r = http()
        .get(s.http("/channels/x/messages"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let r = http()
        .post(s.http("/channels/big/messages"))
        .header("authorization", basic(FULL_KEY))
        .json(&json!({"data": "x".repeat(70_000)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], 40009);

    let r = http()
        .post(s.http("/channels/bad/messages"))
        .header("authorization", basic(FULL_KEY))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // envelope=json wraps errors and results in a 200.
    let r = http()
        .get(s.http("/channels/private/messages?envelope=json"))
        .header("authorization", basic(SUB_KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["statusCode"], 401);
    assert_eq!(body["response"]["error"]["code"], 40160);
}

#[tokio::test]
async fn cors_preflight_and_exposed_headers() {
    let s = start(base_config()).await;
    let r = http()
        .request(reqwest::Method::OPTIONS, s.http("/channels/c/messages"))
        .header("origin", "http://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,x-ably-version",
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://app.example"
    );
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
    let r = http()
        .get(s.http("/time"))
        .header("origin", "http://app.example")
        .send()
        .await
        .unwrap();
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("link") && exposed.contains("x-ably-errorcode"));
    let t: Vec<i64> = r.json().await.unwrap();
    assert_eq!(t.len(), 1);
    assert!(t[0] > 1_600_000_000_000);
}

#[tokio::test]
async fn channel_metadata_and_listing() {
    let s = start(base_config()).await;
    let (mut c, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    c.attach("meta:one").await;
    c.attach("meta:two").await;
    let d: Value = http()
        .get(s.http("/channels/meta%3Aone"))
        .header("authorization", basic(FULL_KEY))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["channelId"], "meta:one");
    assert_eq!(d["status"]["isActive"], true);
    assert_eq!(d["status"]["occupancy"]["metrics"]["connections"], 1);
    assert_eq!(d["status"]["occupancy"]["metrics"]["subscribers"], 1);
    let ids: Vec<String> = http()
        .get(s.http("/channels?by=id&prefix=meta:"))
        .header("authorization", basic(FULL_KEY))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids, ["meta:one", "meta:two"]);
    let full: Vec<Value> = http()
        .get(s.http("/channels?prefix=meta:"))
        .header("authorization", basic(FULL_KEY))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(full.len(), 2);
}

#[tokio::test]
async fn batch_publish_reaches_each_channel() {
    let s = start(base_config()).await;
    let (mut c, _) = Client::connected(&s, &format!("key={SUB_KEY}")).await;
    c.attach("chat").await;
    let r = http()
        .post(s.http("/messages"))
        .header("authorization", basic(SUB_KEY))
        .json(&json!([{"channels": ["chat", "private"], "messages": [{"name": "b", "data": "batch"}]}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body[0]["successCount"], 1);
    assert_eq!(body[0]["failureCount"], 1);
    assert_eq!(body[0]["results"][1]["error"]["code"], 40160);
    assert!(!body[0]["results"][0]["messageId"]
        .as_str()
        .unwrap()
        .is_empty());
    let m = c.expect(15).await;
    assert_eq!(m["messages"][0]["data"], "batch");

    // One spec, not in an array: the answer is its channels' results alone.
    let r = http()
        .post(s.http("/messages"))
        .header("authorization", basic(SUB_KEY))
        .json(&json!({"channels": ["chat", "private"], "messages": {"data": "one"}}))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body[0]["channel"], "chat");
    assert_eq!(body[1]["error"]["code"], 40160);
}

#[tokio::test]
async fn unknown_paths_and_methods_are_ablys_404() {
    let s = start(base_config()).await;
    for (method, path) in [
        (reqwest::Method::GET, "/no/such/thing"),
        (reqwest::Method::GET, "/keys/test.full/requestToken"),
    ] {
        let r = http()
            .request(method, s.http(path))
            .header("authorization", basic(FULL_KEY))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], 40400, "{path}");
    }
}

/// A REST publish may name a realtime connection by its connectionKey: the
/// message is that connection's (its connectionId).
#[tokio::test]
async fn rest_publish_on_behalf_of_a_realtime_connection() {
    let s = start(base_config()).await;
    let (mut c, connected) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    let key = connected["connectionDetails"]["connectionKey"]
        .as_str()
        .unwrap()
        .to_owned();
    c.attach("behalf").await;
    let publish = |key: String| {
        http()
            .post(s.http("/channels/behalf/messages"))
            .header("authorization", basic(FULL_KEY))
            .json(&json!({"name": "foo", "data": "bar", "connectionKey": key}))
            .send()
    };
    assert_eq!(publish(key).await.unwrap().status(), 201);
    let m = c.expect(15).await;
    assert_eq!(m["messages"][0]["connectionId"], connected["connectionId"]);
    assert!(m["messages"][0].get("connectionKey").is_none());
    let r = publish("abcdefghijkl!nosuchconn".into()).await.unwrap();
    assert_eq!(r.status(), 400);
}

/// Mutable messages (`mutable_messages` channels): PATCH makes a new version
/// (update, append, delete) that subscribers receive, GET returns the latest,
/// `/versions` all of them; elsewhere updates are refused with 93002.
#[tokio::test]
async fn message_updates_appends_deletes_and_versions() {
    let mut config = base_config();
    config.mutable_messages = vec!["mutable:*".into()];
    let s = start(config).await;
    let (mut c, _) = Client::connected(&s, &format!("key={FULL_KEY}")).await;
    c.attach("mutable:m").await;
    let auth = basic(FULL_KEY);
    let r = http()
        .post(s.http("/channels/mutable:m/messages"))
        .header("authorization", &auth)
        .json(&json!({"name": "greeting", "data": "Hello"}))
        .send()
        .await
        .unwrap();
    let serial = r.json::<Value>().await.unwrap()["serials"][0]
        .as_str()
        .unwrap()
        .to_owned();
    c.expect(15).await;
    let patch = |body: Value| {
        http()
            .patch(s.http(&format!("/channels/mutable:m/messages/{serial}")))
            .header("authorization", &auth)
            .json(&body)
            .send()
    };
    let r = patch(json!({"action": 5, "data": " World",
        "version": {"clientId": "ed", "description": "more", "metadata": {"why": "x"}}}))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v1 = r.json::<Value>().await.unwrap()["versionSerial"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(v1 > serial);
    let sent = c.expect(15).await;
    assert_eq!(sent["messages"][0]["action"], 5);
    assert_eq!(sent["messages"][0]["data"], " World");
    assert_eq!(sent["messages"][0]["serial"], serial.as_str());
    assert_eq!(sent["messages"][0]["version"]["serial"], v1.as_str());
    let get = |path: String| {
        let url = s.http(&path);
        let auth = auth.clone();
        async move {
            let r = http()
                .get(url)
                .header("authorization", auth)
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let (_, latest) = get(format!("/channels/mutable:m/messages/{serial}")).await;
    assert_eq!(latest["data"], "Hello World");
    assert_eq!(latest["action"], 1);
    assert_eq!(latest["name"], "greeting");
    assert_eq!(latest["version"]["clientId"], "ed");
    assert_eq!(latest["version"]["metadata"], json!({"why": "x"}));

    assert_eq!(
        patch(json!({"action": 2, "data": ""}))
            .await
            .unwrap()
            .status(),
        200
    );
    let (_, versions) = get(format!("/channels/mutable:m/messages/{serial}/versions")).await;
    let actions: Vec<&Value> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["action"])
        .collect();
    assert_eq!(versions.as_array().unwrap().len(), 3);
    assert_eq!(actions[1..], [&json!(1), &json!(2)]);
    let (status, _) = get("/channels/mutable:m/messages/00000000000000ff".into()).await;
    assert_eq!(status, 404);

    // Not a mutable channel.
    let r = http()
        .post(s.http("/channels/plain/messages"))
        .header("authorization", &auth)
        .json(&json!({"data": "x"}))
        .send()
        .await
        .unwrap();
    let plain = r.json::<Value>().await.unwrap()["serials"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let r = http()
        .patch(s.http(&format!("/channels/plain/messages/{plain}")))
        .header("authorization", &auth)
        .json(&json!({"action": 1, "data": "y"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], 93002);
}
