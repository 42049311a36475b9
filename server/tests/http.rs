//! Cross-cutting HTTP behaviour: health, CORS and CORP on every response, preflight, metrics on the admin address
//! only, static files.

mod common;

use common::*;
use presence_protocol::codes::error_code;
use reqwest::Method;
use serde_json::json;

const ORIGIN: &str = "http://localhost:8123";

fn assert_cors(r: &Resp) {
    let allow = r.header("access-control-allow-origin").unwrap_or_else(|| {
        panic!(
            "{}: no Access-Control-Allow-Origin (HTTP {})",
            r.desc, r.status
        )
    });
    assert!(
        allow == "*" || allow == ORIGIN,
        "{}: Access-Control-Allow-Origin {allow:?}",
        r.desc
    );
    assert_eq!(
        r.header("cross-origin-resource-policy").as_deref(),
        Some("cross-origin"),
        "{}: Cross-Origin-Resource-Policy (HTTP {})",
        r.desc,
        r.status
    );
}

#[tokio::test]
async fn healthz() {
    let s = Server::in_process().await;
    let r = s.get("/healthz").no_api_key().send().await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn cors_headers_on_success_and_error_responses() {
    let s = Server::in_process().await;
    let responses = vec![
        s.get("/healthz")
            .no_api_key()
            .header("Origin", ORIGIN)
            .send()
            .await,
        s.post("/users")
            .auth(&Auth::Server)
            .header("Origin", ORIGIN)
            .json(json!({ "users": { "a": { "id": "a" } } }))
            .send()
            .await,
        s.get("/users")
            .auth(&Auth::Server)
            .header("Origin", ORIGIN)
            .query("payload", r#"{"filter_conditions":{}}"#)
            .send()
            .await,
        // 401 (api key), 401 (token), 400, 404, 413, unknown route.
        s.get("/users")
            .api_key("wrong")
            .auth(&Auth::Server)
            .header("Origin", ORIGIN)
            .query("payload", "{}")
            .send()
            .await,
        s.get("/users")
            .auth(&Auth::Token("junk".into()))
            .header("Origin", ORIGIN)
            .query("payload", "{}")
            .send()
            .await,
        s.post("/users")
            .auth(&Auth::Server)
            .header("Origin", ORIGIN)
            .raw_json("{oops")
            .send()
            .await,
        s.post("/channels/messaging/none/stop-watching")
            .auth(&Auth::Server)
            .header("Origin", ORIGIN)
            .json(json!({}))
            .send()
            .await,
        s.post("/users")
            .auth(&Auth::Server)
            .header("Origin", ORIGIN)
            .json(json!({ "users": { "b": { "id": "b", "blob": "z".repeat(1100 * 1024) } } }))
            .send()
            .await,
        s.get("/no/such/route")
            .header("Origin", ORIGIN)
            .send()
            .await,
    ];
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![200, 201, 200, 401, 401, 400, 404, 413, 404]);
    for r in &responses {
        assert_cors(r);
    }
    responses[3].err(401, error_code::ACCESS_KEY);
    responses[6].err(404, error_code::DOES_NOT_EXIST);
    responses[7].err(413, error_code::PAYLOAD_TOO_BIG);
}

#[tokio::test]
async fn preflight_allows_the_sdk_headers() {
    let s = Server::in_process().await;
    for (path, method) in [
        ("/users", "PATCH"),
        ("/users", "POST"),
        ("/channels/messaging/c1/query", "POST"),
        ("/users", "GET"),
    ] {
        let r = s
            .call(Method::OPTIONS, path)
            .no_api_key()
            .header("Origin", ORIGIN)
            .header("Access-Control-Request-Method", method)
            .header(
                "Access-Control-Request-Headers",
                "authorization,content-type,stream-auth-type,x-client-request-id,x-stream-client",
            )
            .send()
            .await;
        assert!(
            (200..300).contains(&r.status),
            "preflight {method} {path}: HTTP {} {}",
            r.status,
            r.text
        );
        let allow_origin = r.header("access-control-allow-origin").unwrap_or_default();
        assert!(
            allow_origin == "*" || allow_origin == ORIGIN,
            "allow-origin {allow_origin:?}"
        );
        let headers = r
            .header("access-control-allow-headers")
            .unwrap_or_default()
            .to_lowercase();
        let listed: Vec<&str> = headers.split(',').map(|h| h.trim()).collect();
        // `*` does not cover Authorization in browsers, so it must be named.
        assert!(
            listed.contains(&"authorization"),
            "allow-headers {headers:?}"
        );
        for h in [
            "content-type",
            "stream-auth-type",
            "x-client-request-id",
            "x-stream-client",
        ] {
            assert!(
                listed.contains(&h) || listed.contains(&"*"),
                "allow-headers {headers:?} lacks {h}"
            );
        }
        let methods = r
            .header("access-control-allow-methods")
            .unwrap_or_default()
            .to_uppercase();
        assert!(
            methods.contains(method) || methods.trim() == "*",
            "allow-methods {methods:?} lacks {method}"
        );
    }
}

#[tokio::test]
async fn metrics_reflect_connections_and_events() {
    let s = Server::start().await;
    let text = s.metrics().await;
    for name in [
        "presence_open_connections",
        "presence_online_users",
        "presence_follows",
        "presence_events_sent_total",
        "presence_auth_failures_total",
    ] {
        assert!(
            metric_value(&text, name).is_some(),
            "metric {name} missing:\n{text}"
        );
    }
    assert_eq!(s.metric("presence_open_connections").await, 0.0);
    assert_eq!(s.metric("presence_online_users").await, 0.0);
    assert_eq!(s.metric("presence_follows").await, 0.0);

    s.upsert(&[json!({ "id": "alice" }), json!({ "id": "bob" })])
        .await;
    let mut bob = s.connect("bob").await;
    s.subscribe_users(&bob, &["alice"]).await;
    // Following alice again adds nothing; following bob too makes two.
    s.subscribe_users(&bob, &["alice", "bob"]).await;
    s.wait_metric("presence_follows", 2.0).await;
    let events_before = s.metric("presence_events_sent_total").await;
    let a1 = s.connect("alice").await;
    let a2 = s.connect("alice").await;
    s.wait_metric("presence_open_connections", 3.0).await;
    s.wait_metric("presence_online_users", 2.0).await;
    bob.wait_presence("alice", true, WAIT).await;
    let events_after = s.metric("presence_events_sent_total").await;
    assert!(
        events_after > events_before,
        "presence_events_sent_total did not grow ({events_before} -> {events_after}) after a presence event"
    );

    a1.close(1000).await;
    s.wait_metric("presence_open_connections", 2.0).await;
    assert_eq!(s.metric("presence_online_users").await, 2.0);
    a2.close(1000).await;
    s.wait_metric("presence_open_connections", 1.0).await;
    s.wait_metric("presence_online_users", 1.0).await;
    bob.close(1000).await;
    s.wait_metric("presence_open_connections", 0.0).await;
    s.wait_metric("presence_online_users", 0.0).await;
    s.wait_metric("presence_follows", 0.0).await;
}

#[tokio::test]
async fn metrics_are_served_on_the_admin_address_only() {
    let s = Server::start().await;
    s.upsert(&[json!({ "id": "alice" })]).await;
    // An invisible user connecting moves the connection count but not the online count: anyone reading both on
    // the public port would learn that someone invisible just came in.
    let _alice = s
        .connect_with("alice", json!({ "id": "alice", "invisible": true }))
        .await;
    s.wait_metric("presence_open_connections", 1.0).await;
    assert_eq!(s.metric("presence_online_users").await, 0.0);
    for (key, origin) in [(Some(API_KEY), None), (None, Some(ORIGIN))] {
        let mut call = s.get("/metrics").no_api_key();
        if let Some(key) = key {
            call = call.api_key(key);
        }
        if let Some(origin) = origin {
            call = call.header("Origin", origin);
        }
        let r = call.send().await;
        r.err(404, error_code::DOES_NOT_EXIST);
        assert!(!r.text.contains("presence_"), "{}", r.text);
    }
    // The admin address has the operator endpoints and nothing else; browsers on other origins may not read it.
    let r = s
        .admin_call(Method::GET, "/metrics")
        .header("Origin", ORIGIN)
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("access-control-allow-origin"), None);
    let r = s.admin_call(Method::GET, "/healthz").send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .admin_call(Method::GET, "/users")
        .query("payload", r#"{"filter_conditions":{}}"#)
        .send()
        .await;
    r.err(404, error_code::DOES_NOT_EXIST);
    // The public port keeps /healthz.
    let r = s.get("/healthz").no_api_key().send().await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn the_admin_address_can_be_turned_off() {
    let s = Server::binary(ServerOpts::default().admin_off()).await;
    s.get("/metrics")
        .no_api_key()
        .send()
        .await
        .err(404, error_code::DOES_NOT_EXIST);
    s.upsert(&[json!({ "id": "alice" })]).await;
    s.connect("alice").await;
    let stdout = s.stdout_lines();
    assert_eq!(
        stdout.iter().filter(|l| l.contains("listening on")).count(),
        1,
        "only the public address is announced: {stdout:?}"
    );
    // A malformed address is refused before anything listens, naming the flag.
    let run = run_to_exit(
        &[
            "--addr",
            "127.0.0.1:0",
            "--db",
            ":memory:",
            "--api-key",
            API_KEY,
            "--api-secret",
            API_SECRET,
            "--admin-addr",
            "loopback",
        ],
        &[],
    )
    .await;
    assert!(!run.status.success(), "{run:?}");
    assert!(!run.stdout.contains("listening on"), "{run:?}");
    assert!(run.stderr.contains("--admin-addr"), "{}", run.stderr);
}

#[tokio::test]
async fn static_dir_is_served_beside_the_api() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("index.html"),
        "<!doctype html><title>demo page</title>",
    )
    .unwrap();
    std::fs::write(dir.path().join("app.js"), "console.log('demo');").unwrap();
    let s = Server::in_process_with(ServerOpts::default().static_dir(dir.path())).await;
    let r = s.get("/index.html").no_api_key().send().await;
    assert_eq!(r.status, 200);
    assert!(r.text.contains("demo page"));
    let r = s.get("/").no_api_key().send().await;
    assert_eq!(r.status, 200, "GET / serves index.html");
    assert!(r.text.contains("demo page"));
    let r = s
        .get("/app.js")
        .no_api_key()
        .header("Origin", ORIGIN)
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text, "console.log('demo');");
    assert_cors(&r);
    // The API is still there.
    let r = s.get("/healthz").no_api_key().send().await;
    assert_eq!(r.status, 200);
    s.upsert(&[json!({ "id": "x" })]).await;
}
