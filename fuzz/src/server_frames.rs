//! Target `server_frames`: what the server reads from a WebSocket client, the `/connect` query (API key, `json`
//! payload, token) and the client's text frames, and the engine they feed.
//!
//! Input: text lines. The first is the query string of `/connect` (after the `?`); the others are the client's
//! text frames, one per line. A query the HTTP layer would refuse as a URI is skipped. Because the fuzzer cannot
//! forge signatures, the `authorization` value may be a placeholder the harness replaces:
//! `@jwt` (an HS256 token for `json.user_id`), `@jwt:<claims>` (HS256 over those claims' bytes), `@dev` (the SDK's
//! development token for `json.user_id`), `@dev:<claims>` (a development token of those bytes).
//! Properties:
//! - The handshake either names a user (non-empty, the token's, matching `user_details.id` when given) or fails
//!   with one of the protocol's codes for it (2, 4, 5, 40 to 43) and a message. Development tokens are refused
//!   with 43 unless enabled; enabling them changes nothing else.
//! - A named user connects (a first connection is refused only with code 4, for `user_details` over the size
//!   limit, and then gets no frame and is not counted); the first frame on the connection is
//!   its `health.check` with `connection_id` and `me` (that user, online to themselves); every frame the engine
//!   emits reads as a protocol event.
//! - A client frame that is not JSON is refused (the server closes with 4004 and stops reading); a `health.check`
//!   is answered with a `health.check` carrying `me`; any other JSON gets nothing.
//! - After the disconnect and the grace window nobody is connected or online.

use std::collections::HashMap;

use axum::extract::Query;
use axum::http::Uri;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use presence_protocol::Event;
use presence_server::fuzzing::{
    authenticate, read_client_frame, ClientFrame, Config, ConnId, Ending, Engine, TokenVerifier,
};
use serde_json::Value;

const API_KEY: &str = "fuzz-key";
const API_SECRET: &str = "fuzz-secret-of-32-bytes-at-least!";
/// The handshake's clock (Unix seconds).
const NOW: i64 = 1_800_000_000;
/// The HS256 header Stream's server SDKs write, base64url.
const JWT_HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let query = lines.next().unwrap_or_default();
    let Ok(uri) = format!("/connect?{query}").parse::<Uri>() else {
        return;
    };
    let Ok(Query(mut params)) = Query::<HashMap<String, String>>::try_from_uri(&uri) else {
        return;
    };
    if let Some(token) = params.get("authorization") {
        let user_id = params
            .get("json")
            .and_then(|json| serde_json::from_str::<Value>(json).ok())
            .and_then(|json| {
                json.get("user_id")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let token = expand_token(token, &user_id);
        params.insert("authorization".into(), token);
    }

    let strict = authenticate(
        API_KEY,
        &TokenVerifier::new(API_SECRET, false),
        &params,
        NOW,
    );
    let dev = authenticate(API_KEY, &TokenVerifier::new(API_SECRET, true), &params, NOW);
    for result in [&strict, &dev] {
        if let Err(e) = result {
            assert!(
                [2, 4, 5, 40, 41, 42, 43].contains(&e.code()),
                "a refused handshake has a protocol code: {e:?}"
            );
            assert!(!e.message().is_empty(), "a refused handshake says why");
        }
    }
    let is_dev_token = params
        .get("authorization")
        .is_some_and(|t| t.split('.').count() == 3 && t.ends_with(".devtoken"));
    match (&strict, &dev) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "development tokens change nothing for other tokens"),
        (Err(a), Ok(_)) => assert!(
            is_dev_token && a.code() == 43,
            "only a development token is refused without them, with 43: {a:?}"
        ),
        (Ok(_), Err(b)) => panic!("enabling development tokens refused a handshake: {b:?}"),
        (Err(a), Err(b)) if !is_dev_token => {
            assert_eq!(a, b, "development tokens change nothing for other tokens")
        }
        (Err(_), Err(_)) => {}
    }
    let Ok((user_id, details)) = dev else {
        return;
    };
    assert!(!user_id.is_empty(), "a connection has a user");
    if let Some(id) = details.get("id") {
        assert_eq!(
            id.as_str(),
            Some(user_id.as_str()),
            "user_details.id is the user's"
        );
    }

    let now = chrono::DateTime::from_timestamp(NOW, 0).unwrap_or_default();
    let grace = std::time::Duration::from_secs(5);
    let mut engine = Engine::new(
        Config {
            offline_grace: grace,
            watch_implies_presence: false,
            max_connections_per_user: 2,
            max_channels_per_user: 1000,
            last_active_refresh: std::time::Duration::from_secs(15 * 60),
            max_follows_per_connection: 5000,
            distinct_channel_key: presence_server::fuzzing::distinct_channel_key(""),
            webhook_url: None,
            webhook_events: Vec::new(),
        },
        Vec::new(),
        Vec::new(),
    );
    let conn: ConnId = "conn-0".into();
    match engine.connect(conn.clone(), &user_id, &details, &[], now) {
        Ok(replaced) => assert_eq!(replaced, None, "a first connection replaces none"),
        Err(e) => {
            // The one refusal a first connection may get: `user_details` too large.
            assert_eq!(e.code(), 4, "a first connection is accepted: {e:?}");
            assert!(
                engine.poll_deliveries().is_empty(),
                "a refused connection gets no frame"
            );
            assert_eq!(
                engine.view().open_connections(),
                0,
                "a refused connection is not counted"
            );
            return;
        }
    }
    let frames = delivered(&mut engine, &conn);
    let first = frames.first().expect("the connection gets a first frame");
    assert_eq!(
        first.kind, "health.check",
        "the first frame is health.check"
    );
    assert_eq!(first.connection_id.as_deref(), Some(&*conn));
    assert_own_user(first, &user_id);

    let mut ending = Ending::Explicit;
    for line in lines {
        match read_client_frame(line) {
            Err(reason) => {
                assert!(
                    serde_json::from_str::<Value>(line).is_err(),
                    "only non-JSON is refused"
                );
                assert!(!reason.is_empty(), "a refused frame says why");
                ending = Ending::Abnormal;
                break;
            }
            Ok(ClientFrame::HealthCheck) => {
                engine.health_check(&conn, now);
                let frames = delivered(&mut engine, &conn);
                assert_eq!(frames.len(), 1, "a health.check gets one answer");
                assert_eq!(frames[0].kind, "health.check");
                assert_own_user(&frames[0], &user_id);
            }
            Ok(ClientFrame::Ignored) => {
                assert!(
                    delivered(&mut engine, &conn).is_empty(),
                    "other JSON gets nothing"
                );
            }
        }
    }
    engine.disconnect(&conn, ending, now);
    let later = now + grace + grace;
    engine.handle_timeout(later);
    let _ = delivered(&mut engine, &conn);
    let _ = engine.poll_writes();
    assert_eq!(
        engine.view().open_connections(),
        0,
        "nobody is connected after the disconnect"
    );
    assert_eq!(
        engine.view().online_users(),
        0,
        "nobody is online after the grace window"
    );
}

/// The token the placeholder stands for (see the module's documentation), or the token itself.
fn expand_token(token: &str, user_id: &str) -> String {
    let user_claims = || serde_json::json!({ "user_id": user_id }).to_string();
    let (kind, claims) = match token.split_once(':') {
        Some((kind, claims)) => (kind, claims.to_string()),
        None => (token, user_claims()),
    };
    match kind {
        "@jwt" => {
            let message = [
                JWT_HEADER,
                ".",
                &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims),
            ]
            .concat();
            let key = EncodingKey::from_secret(API_SECRET.as_bytes());
            let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256)
                .unwrap_or_default();
            [message.as_str(), ".", &signature].concat()
        }
        // As the SDK writes them: standard base64 with padding.
        "@dev" => [
            JWT_HEADER,
            ".",
            &base64::engine::general_purpose::STANDARD.encode(claims),
            ".devtoken",
        ]
        .concat(),
        _ => token.to_string(),
    }
}

/// The frames the engine queued for `conn` since the last call, each read as a protocol event.
fn delivered(engine: &mut Engine, conn: &ConnId) -> Vec<Event> {
    engine
        .poll_deliveries()
        .into_iter()
        .map(|d| {
            let event = serde_json::from_str::<Event>(&d.frame)
                .unwrap_or_else(|e| panic!("the engine's frames are events ({e}): {}", d.frame));
            (d, event)
        })
        .filter(|(d, _)| d.to.contains(conn))
        .map(|(_, event)| event)
        .collect()
}

fn assert_own_user(frame: &Event, user_id: &str) {
    let me = frame.me.as_ref().expect("health.check carries me");
    assert_eq!(me.id, user_id, "me is the connected user");
    assert!(me.online, "the user is online to themselves");
}
