//! Tokens: signed with the test secret, hand-built, and the SDK's dev tokens.

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::*;

impl Server {
    pub fn user_token(&self, user_id: &str) -> String {
        sign_with(
            Algorithm::HS256,
            &self.opts.api_secret,
            &json!({ "user_id": user_id }),
        )
    }

    pub fn server_token(&self) -> String {
        sign_with(
            Algorithm::HS256,
            &self.opts.api_secret,
            &json!({ "server": true }),
        )
    }
}

pub fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// HS256 with the test secret.
pub fn sign(claims: &Value) -> String {
    sign_with(Algorithm::HS256, API_SECRET, claims)
}

pub fn sign_with(alg: Algorithm, secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode jwt")
}

/// A token with an arbitrary header, payload and signature segment (no signing).
pub fn raw_token(header: &Value, payload: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(payload.to_string().as_bytes()),
        signature
    )
}

/// Correctly HS256-sign arbitrary (possibly malformed) header and payload segments.
pub fn sign_segments(header_seg: &str, payload_seg: &str) -> String {
    let message = format!("{header_seg}.{payload_seg}");
    let sig = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(API_SECRET.as_bytes()),
        Algorithm::HS256,
    )
    .expect("hmac");
    format!("{message}.{sig}")
}

/// `client.devToken(id)` exactly as the SDK builds it: standard base64 with padding, signature `devtoken`.
pub fn dev_token(user_id: &str) -> String {
    let payload = json!({ "user_id": user_id }).to_string();
    format!(
        "{DEV_TOKEN_HEADER}.{}.devtoken",
        base64::engine::general_purpose::STANDARD.encode(payload)
    )
}

/// Base64url without padding, as JWT segments are encoded.
pub fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}
