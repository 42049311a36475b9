//! Authentication and authorization: API key, JWT validation codes on REST and WebSocket, dev tokens,
//! per-user write permissions and reserved fields.

mod common;

use common::*;
use jsonwebtoken::Algorithm;
use presence_protocol::codes::{close_code, error_code, event_type};
use serde_json::{json, Value};

/// A representative authenticated REST call.
async fn list_users(s: &Server, auth: &Auth) -> Resp {
    s.query_users(auth, None, json!({ "filter_conditions": {} }))
        .await
}

/// Connect to `/connect` as `user_id` with `token` and expect the auth failure protocol: the upgrade
/// completes, exactly one `connection.error` frame with the code, then a close with 1000.
async fn expect_ws_rejected(s: &Server, user_id: &str, token: &str, api_key: &str, code: i64) {
    let mut params = Server::connect_params(user_id, &json!({ "id": user_id }), token);
    for (k, v) in params.iter_mut() {
        if k == "api_key" {
            *v = api_key.to_string();
        }
    }
    expect_ws_rejected_params(s, user_id, &params, code).await;
}

async fn expect_ws_rejected_params(
    s: &Server,
    user_id: &str,
    params: &[(String, String)],
    code: i64,
) {
    let mut ws = s.open_ws(params, user_id).await;
    let frame = match ws.next(WAIT).await {
        Some(Incoming::Json(v)) => v,
        other => panic!("expected a connection.error frame (code {code}), got {other:?}"),
    };
    assert_eq!(
        frame["type"],
        event_type::CONNECTION_ERROR,
        "frame: {frame}"
    );
    assert_eq!(frame["error"]["code"], code, "error code in {frame}");
    assert_eq!(frame["error"]["StatusCode"], 401, "StatusCode in {frame}");
    assert!(
        frame["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error.message in {frame}"
    );
    assert!(frame["created_at"].is_string(), "created_at in {frame}");
    assert_eq!(
        ws.wait_closed(WAIT).await,
        Closed::Frame(Some(close_code::NORMAL)),
        "a rejected handshake closes with 1000 after the error frame"
    );
}

#[tokio::test]
async fn api_key_missing_or_wrong_is_code_2() {
    let s = Server::start().await;
    let r = s
        .get("/users")
        .no_api_key()
        .auth(&Auth::Server)
        .query("payload", r#"{"filter_conditions":{}}"#)
        .send()
        .await;
    r.err(401, error_code::ACCESS_KEY);
    let r = s
        .get("/users")
        .api_key("not-the-key")
        .auth(&Auth::Server)
        .query("payload", r#"{"filter_conditions":{}}"#)
        .send()
        .await;
    r.err(401, error_code::ACCESS_KEY);
    let r = s
        .post("/users")
        .api_key("not-the-key")
        .auth(&Auth::Server)
        .json(json!({ "users": { "a": { "id": "a" } } }))
        .send()
        .await;
    r.err(401, error_code::ACCESS_KEY);
    // Nothing was written by the rejected upsert.
    assert!(s.user_ids(json!({ "id": "a" })).await.is_empty());

    let token = s.user_token("alice");
    expect_ws_rejected(&s, "alice", &token, "not-the-key", error_code::ACCESS_KEY).await;
    expect_ws_rejected(&s, "alice", &token, "", error_code::ACCESS_KEY).await;
}

#[tokio::test]
async fn missing_and_malformed_tokens_are_code_5() {
    let s = Server::start().await;
    list_users(&s, &Auth::Missing)
        .await
        .err(401, error_code::AUTHENTICATION);
    for bad in ["", "not-a-jwt", "a.b", "a.b.c.d", "...."] {
        list_users(&s, &Auth::Token(bad.to_string()))
            .await
            .err(401, error_code::AUTHENTICATION);
    }
    // Correctly signed, but the payload is not JSON / not base64.
    for payload_seg in [b64url(b"not json"), "%%%".to_string()] {
        let token = sign_segments(DEV_TOKEN_HEADER, &payload_seg);
        list_users(&s, &Auth::Token(token))
            .await
            .err(401, error_code::AUTHENTICATION);
    }
    // Correctly signed, but neither a user token nor a server token.
    let no_subject = sign(&json!({ "foo": "bar" }));
    list_users(&s, &Auth::Token(no_subject.clone()))
        .await
        .err(401, error_code::AUTHENTICATION);

    expect_ws_rejected(&s, "alice", "", API_KEY, error_code::AUTHENTICATION).await;
    expect_ws_rejected(
        &s,
        "alice",
        "not-a-jwt",
        API_KEY,
        error_code::AUTHENTICATION,
    )
    .await;
    expect_ws_rejected(
        &s,
        "alice",
        &no_subject,
        API_KEY,
        error_code::AUTHENTICATION,
    )
    .await;
}

#[tokio::test]
async fn wrong_algorithm_or_signature_is_code_43() {
    let s = Server::start().await;
    let claims = json!({ "user_id": "alice" });
    let cases = [
        ("HS512", sign_with(Algorithm::HS512, API_SECRET, &claims)),
        ("HS384", sign_with(Algorithm::HS384, API_SECRET, &claims)),
        (
            "alg none",
            raw_token(&json!({ "alg": "none", "typ": "JWT" }), &claims, ""),
        ),
        (
            "wrong secret",
            sign_with(Algorithm::HS256, "another-secret", &claims),
        ),
        ("devtoken signature", dev_token("alice")),
        (
            "RS256 header",
            raw_token(
                &json!({ "alg": "RS256", "typ": "JWT" }),
                &claims,
                "c2lnbmF0dXJl",
            ),
        ),
    ];
    let mut wrong = Vec::new();
    for (what, token) in &cases {
        let r = list_users(&s, &Auth::Token(token.clone())).await;
        if (r.status, r.json["code"].as_i64()) != (401, Some(error_code::TOKEN_SIGNATURE_INVALID)) {
            wrong.push(format!("{what}: HTTP {} {}", r.status, r.text));
            continue;
        }
        r.err(401, error_code::TOKEN_SIGNATURE_INVALID);
        expect_ws_rejected(
            &s,
            "alice",
            token,
            API_KEY,
            error_code::TOKEN_SIGNATURE_INVALID,
        )
        .await;
    }
    assert!(
        wrong.is_empty(),
        "expected 401 code 43 for:\n{}",
        wrong.join("\n")
    );
    // A server token signed with the wrong secret is no better.
    let forged_server = sign_with(
        Algorithm::HS256,
        "another-secret",
        &json!({ "server": true }),
    );
    s.upsert_as(
        &Auth::Token(forged_server),
        &[json!({ "id": "mallory", "role": "admin" })],
    )
    .await
    .err(401, error_code::TOKEN_SIGNATURE_INVALID);
    assert!(s.user_ids(json!({ "id": "mallory" })).await.is_empty());
}

#[tokio::test]
async fn time_claims_map_to_40_41_42() {
    let s = Server::start().await;
    let now = now_secs();
    let expired = sign(&json!({ "user_id": "alice", "exp": now - 10 }));
    let not_yet = sign(&json!({ "user_id": "alice", "nbf": now + 120 }));
    let future_iat = sign(&json!({ "user_id": "alice", "iat": now + 120 }));
    for (token, code) in [
        (&expired, error_code::TOKEN_EXPIRED),
        (&not_yet, error_code::TOKEN_NOT_VALID_YET),
        (&future_iat, error_code::TOKEN_USED_BEFORE_ISSUED_AT),
    ] {
        list_users(&s, &Auth::Token(token.clone()))
            .await
            .err(401, code);
        expect_ws_rejected(&s, "alice", token, API_KEY, code).await;
    }
    // Expired server tokens are rejected too.
    let expired_server = sign(&json!({ "server": true, "exp": now - 10 }));
    list_users(&s, &Auth::Token(expired_server))
        .await
        .err(401, error_code::TOKEN_EXPIRED);

    // Valid time claims, including an iat slightly ahead (inside the 5 s leeway), are accepted.
    let good =
        sign(&json!({ "user_id": "alice", "exp": now + 3600, "iat": now - 60, "nbf": now - 60 }));
    list_users(&s, &Auth::Token(good.clone())).await.ok(200);
    s.connect_token("alice", json!({ "id": "alice" }), &good)
        .await;
    let skewed = sign(&json!({ "user_id": "alice", "iat": now + 2 }));
    list_users(&s, &Auth::Token(skewed.clone())).await.ok(200);
    s.connect_token("alice", json!({ "id": "alice" }), &skewed)
        .await;
}

#[tokio::test]
async fn token_user_must_match_connecting_user() {
    let s = Server::start().await;
    let bobs = s.user_token("bob");
    expect_ws_rejected(&s, "alice", &bobs, API_KEY, error_code::AUTHENTICATION).await;
    // user_details.id disagreeing with the token is no way around it either.
    let mut params = Server::connect_params("bob", &json!({ "id": "alice" }), &bobs);
    params.retain(|(k, _)| k != "json");
    params.push((
        "json".into(),
        json!({ "user_id": "alice", "user_details": { "id": "alice" } }).to_string(),
    ));
    expect_ws_rejected_params(&s, "alice", &params, error_code::AUTHENTICATION).await;
    // Alice never came online.
    assert!(s
        .user_ids(json!({ "id": "alice", "online": true }))
        .await
        .is_empty());
}

#[tokio::test]
async fn ws_without_json_payload_is_rejected_not_dropped() {
    let s = Server::start().await;
    let token = s.user_token("alice");
    let params = vec![
        ("api_key".to_string(), API_KEY.to_string()),
        ("authorization".to_string(), token),
        ("stream-auth-type".to_string(), "jwt".to_string()),
    ];
    let mut ws = s.open_ws(&params, "alice").await;
    match ws.next(WAIT).await {
        Some(Incoming::Json(v)) => {
            assert_eq!(v["type"], event_type::CONNECTION_ERROR, "{v}");
            // A malformed request (code 4, HTTP 400), not an authentication failure.
            assert_eq!(v["error"]["code"], error_code::INPUT, "{v}");
            assert_eq!(v["error"]["StatusCode"], 400, "{v}");
        }
        other => panic!("expected connection.error, got {other:?}"),
    }
    assert_eq!(
        ws.wait_closed(WAIT).await,
        Closed::Frame(Some(close_code::NORMAL)),
        "a rejected handshake closes with 1000 after the error frame"
    );
    // The server is still fine.
    s.connect("alice").await;
}

#[tokio::test]
async fn dev_tokens_only_with_flag() {
    // Without --dev-tokens: rejected on both transports (covered above for REST; WS here for bob).
    let strict = Server::start().await;
    expect_ws_rejected(
        &strict,
        "bob",
        &dev_token("bob"),
        API_KEY,
        error_code::TOKEN_SIGNATURE_INVALID,
    )
    .await;

    let s = Server::start_with(ServerOpts::default().dev_tokens()).await;
    // The SDK's exact dev token (standard base64 with `=` padding) works for WS and REST.
    let token = dev_token("ab");
    assert!(
        token.contains("=="),
        "the test token must exercise padding: {token}"
    );
    let ws = s
        .connect_token("ab", json!({ "id": "ab", "name": "Ab" }), &token)
        .await;
    assert_own_user(ws.me(), "ab");
    assert_eq!(ws.me()["name"], "Ab");
    list_users(&s, &Auth::Token(token.clone())).await.ok(200);
    // base64url without padding decodes too.
    let unpadded = format!(
        "{DEV_TOKEN_HEADER}.{}.devtoken",
        b64url(json!({ "user_id": "carol" }).to_string().as_bytes())
    );
    s.connect_token("carol", json!({ "id": "carol" }), &unpadded)
        .await;
    // A dev token still names its user.
    expect_ws_rejected(
        &s,
        "alice",
        &dev_token("bob"),
        API_KEY,
        error_code::AUTHENTICATION,
    )
    .await;
    // Real signatures are still checked when dev tokens are enabled.
    let forged = sign_with(
        Algorithm::HS256,
        "another-secret",
        &json!({ "user_id": "alice" }),
    );
    expect_ws_rejected(
        &s,
        "alice",
        &forged,
        API_KEY,
        error_code::TOKEN_SIGNATURE_INVALID,
    )
    .await;
    // A dev token may act only for its own user.
    s.upsert_as(&Auth::Token(dev_token("ab")), &[json!({ "id": "zed" })])
        .await
        .err(403, error_code::NOT_ALLOWED);
}

#[tokio::test]
async fn a_dev_token_never_carries_server_privileges() {
    let s = Server::in_process_with(ServerOpts::default().dev_tokens()).await;
    s.upsert(&[json!({ "id": "bob", "name": "Bob" })]).await;
    let header = json!({ "alg": "HS256", "typ": "JWT" });
    let dev = |claims: Value| Auth::Token(raw_token(&header, &claims, "devtoken"));

    // Anyone can write `{"server": true}` with the devtoken signature: refused as a bad signature, on every
    // endpoint, and it changes nothing.
    let server_claim = dev(json!({ "server": true }));
    let e = s
        .upsert_as(
            &server_claim,
            &[json!({ "id": "bob", "name": "Hacked", "role": "admin" })],
        )
        .await
        .err(401, error_code::TOKEN_SIGNATURE_INVALID);
    assert!(e.message.contains("development token"), "{}", e.message);
    s.partial_update(&server_claim, "bob", json!({ "name": "Hacked" }), &[])
        .await
        .err(401, error_code::TOKEN_SIGNATURE_INVALID);
    list_users(&s, &server_claim)
        .await
        .err(401, error_code::TOKEN_SIGNATURE_INVALID);
    let bob = s.user_as(&Auth::Server, "bob").await;
    assert_eq!(
        (&bob["name"], &bob["role"]),
        (&json!("Bob"), &json!("user"))
    );

    // With a user id as well, it is that user and nothing more: no other user, no server-only field.
    let both = dev(json!({ "user_id": "ab", "server": true }));
    s.upsert_as(&both, &[json!({ "id": "bob", "name": "Hacked" })])
        .await
        .err(403, error_code::NOT_ALLOWED);
    s.upsert_as(&both, &[json!({ "id": "ab", "role": "admin" })])
        .await
        .err(400, error_code::INPUT);
    s.upsert_as(&both, &[json!({ "id": "ab", "name": "Ab" })])
        .await
        .ok(201);
    // Neither claim: not a token at all.
    list_users(&s, &dev(json!({})))
        .await
        .err(401, error_code::AUTHENTICATION);
}

#[tokio::test]
async fn open_socket_survives_its_token_expiring() {
    let s = Server::start().await;
    let token = sign(&json!({ "user_id": "alice", "exp": now_secs() + 2 }));
    let mut ws = s
        .connect_token("alice", json!({ "id": "alice" }), &token)
        .await;
    sleep_ms(3200).await;
    let reply = ws.health_ping().await;
    assert_eq!(reply["connection_id"], ws.connection_id.as_str());
    // A new connection with that token is refused now.
    expect_ws_rejected(&s, "alice", &token, API_KEY, error_code::TOKEN_EXPIRED).await;
}

#[tokio::test]
async fn user_tokens_write_only_their_own_user() {
    let s = Server::in_process().await;
    s.upsert(&[json!({ "id": "bob", "name": "Bob" })]).await;
    let alice = Auth::user("alice");

    // Own user: allowed (creates it).
    let body = s
        .upsert_as(
            &alice,
            &[json!({ "id": "alice", "name": "Alice", "status": "hi" })],
        )
        .await;
    let body = body.ok(201);
    assert_eq!(body["users"]["alice"]["name"], "Alice");
    assert_eq!(body["users"]["alice"]["status"], "hi");

    // Someone else: 403 / 17, for upsert and partial update, and nothing changes.
    s.upsert_as(&alice, &[json!({ "id": "bob", "name": "Hacked" })])
        .await
        .err(403, error_code::NOT_ALLOWED);
    s.partial_update(&alice, "bob", json!({ "name": "Hacked" }), &[])
        .await
        .err(403, error_code::NOT_ALLOWED);
    s.upsert_as(
        &alice,
        &[
            json!({ "id": "alice", "name": "A2" }),
            json!({ "id": "bob", "name": "Hacked" }),
        ],
    )
    .await
    .err(403, error_code::NOT_ALLOWED);
    assert_eq!(s.user_as(&Auth::Server, "bob").await["name"], "Bob");

    // Own partial update: allowed.
    let r = s
        .partial_update(&alice, "alice", json!({ "status": "away" }), &[])
        .await;
    assert_eq!(r.ok(200)["users"]["alice"]["status"], "away");
}

#[tokio::test]
async fn user_tokens_may_not_set_role() {
    let s = Server::start().await;
    let alice = Auth::user("alice");
    s.upsert_as(&alice, &[json!({ "id": "alice" })])
        .await
        .ok(201);

    let e = s
        .upsert_as(&alice, &[json!({ "id": "alice", "role": "admin" })])
        .await
        .err(400, error_code::INPUT);
    assert_eq!(
        e.message,
        r#"UpdateUsers failed with error: "users[alice].role is a reserved field""#
    );
    let e = s
        .partial_update(&alice, "alice", json!({ "role": "admin" }), &[])
        .await
        .err(400, error_code::INPUT);
    assert!(
        e.message.contains("users[alice].role is a reserved field"),
        "{}",
        e.message
    );
    assert_eq!(s.user_as(&Auth::Server, "alice").await["role"], "user");

    // Role in user_details on connect is silently ignored.
    let ws = s
        .connect_with("alice", json!({ "id": "alice", "role": "admin" }))
        .await;
    assert_eq!(ws.me()["role"], "user");

    // A server token may set it.
    let body = s.upsert(&[json!({ "id": "alice", "role": "admin" })]).await;
    assert_eq!(body["users"]["alice"]["role"], "admin");
    let r = s
        .partial_update(&Auth::Server, "alice", json!({ "role": "moderator" }), &[])
        .await;
    assert_eq!(r.ok(200)["users"]["alice"]["role"], "moderator");
}

#[tokio::test]
async fn reserved_fields_are_rejected_for_everyone() {
    let s = Server::start().await;
    s.upsert(&[json!({ "id": "alice", "name": "Alice" })]).await;
    let fields: [(&str, Value); 6] = [
        ("online", json!(true)),
        ("last_active", json!("2020-01-01T00:00:00Z")),
        ("created_at", json!("2020-01-01T00:00:00Z")),
        ("updated_at", json!("2020-01-01T00:00:00Z")),
        ("banned", json!(true)),
        ("mutes", json!([])),
    ];
    for auth in [Auth::Server, Auth::user("alice")] {
        for (field, value) in &fields {
            let mut user = json!({ "id": "alice", "name": "Changed" });
            user[*field] = value.clone();
            let e = s
                .upsert_as(&auth, &[user])
                .await
                .err(400, error_code::INPUT);
            assert_eq!(
                e.message,
                format!(
                    r#"UpdateUsers failed with error: "users[alice].{field} is a reserved field""#
                ),
                "{auth:?}"
            );
            let e = s
                .partial_update(&auth, "alice", json!({ *field: value }), &[])
                .await
                .err(400, error_code::INPUT);
            assert!(
                e.message
                    .contains(&format!("users[alice].{field} is a reserved field")),
                "{auth:?}: {}",
                e.message
            );
        }
    }
    // Rejected writes changed nothing.
    let alice = s.user_as(&Auth::Server, "alice").await;
    assert_eq!(alice["name"], "Alice");
    assert_eq!(alice["online"], false);
    assert_eq!(alice["banned"], false);

    // On connect they are ignored, not rejected.
    let ws = s
        .connect_with(
            "alice",
            json!({ "id": "alice", "online": false, "created_at": "2000-01-01T00:00:00Z", "banned": true }),
        )
        .await;
    assert_eq!(ws.me()["online"], true);
    assert_eq!(ws.me()["banned"], false);
    assert!(time(&ws.me()["created_at"]).timestamp() > 1_000_000_000 + 600_000_000);
}

#[tokio::test]
async fn auth_failures_are_counted() {
    let s = Server::start().await;
    let before = s.metric("presence_auth_failures_total").await;
    list_users(&s, &Auth::Token("garbage".into()))
        .await
        .err(401, error_code::AUTHENTICATION);
    expect_ws_rejected(&s, "alice", "garbage", API_KEY, error_code::AUTHENTICATION).await;
    let after = s.metric("presence_auth_failures_total").await;
    assert_eq!(
        after,
        before + 2.0,
        "presence_auth_failures_total went from {before} to {after} after two failures"
    );
}
