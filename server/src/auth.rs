//! Token checks (protocol section 2): HS256 user and server JWTs, development tokens, and minting for the CLI.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::Value;

use crate::error::{Error, ErrorKind};
pub use crate::model::Caller;

/// Clock skew accepted for `iat` and `nbf`, in seconds. None for `exp`.
const LEEWAY_SECS: i64 = 5;

const DEV_SIGNATURE: &str = "devtoken";

pub struct TokenVerifier {
    decoding_key: DecodingKey,
    validation: Validation,
    dev_tokens: bool,
}

impl TokenVerifier {
    pub fn new(secret: &str, dev_tokens: bool) -> Self {
        // jsonwebtoken checks the shape, the algorithm and the signature; the time claims are checked here so
        // that each failure gets its own protocol code.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        TokenVerifier {
            decoding_key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            dev_tokens,
        }
    }

    /// Checks a raw token (no `Bearer ` prefix) at `now` (Unix seconds) and says who it belongs to.
    pub fn verify(&self, token: &str, now: i64) -> Result<Caller, Error> {
        if token.is_empty() {
            return Err(Error::new(
                ErrorKind::Authentication,
                "JWTAuth error: token is missing",
            ));
        }
        let segments: Vec<&str> = token.split('.').collect();
        if segments.len() != 3 {
            return Err(malformed("token does not have 3 segments"));
        }
        if segments[2] == DEV_SIGNATURE {
            if !self.dev_tokens {
                return Err(Error::new(
                    ErrorKind::TokenSignatureInvalid,
                    "JWTAuth error: signature is not valid (development tokens are disabled)",
                ));
            }
            // Anyone can write a development token: it may name a user, never act as the server.
            return match check_claims(&decode_segment(segments[1], true)?, now)? {
                Caller::Server => Err(Error::new(
                    ErrorKind::TokenSignatureInvalid,
                    "JWTAuth error: signature is not valid (a development token cannot be a server token)",
                )),
                user => Ok(user),
            };
        }
        let claims = {
            // The header is read here rather than by jsonwebtoken, which cannot even parse algorithms it does not
            // know (such as `none`): any algorithm but HS256 is a signature failure, not a malformed token.
            let header = decode_segment(segments[0], false)?;
            match header.get("alg").and_then(Value::as_str) {
                Some("HS256") => {}
                Some(alg) => {
                    return Err(Error::new(
                        ErrorKind::TokenSignatureInvalid,
                        format!(
                        "JWTAuth error: signature is not valid (algorithm {alg} is not accepted)"
                    ),
                    ))
                }
                None => return Err(malformed("token header has no alg")),
            }
            match jsonwebtoken::decode::<Value>(token, &self.decoding_key, &self.validation) {
                Ok(data) => data.claims,
                Err(e) => {
                    return Err(match e.kind() {
                        jsonwebtoken::errors::ErrorKind::InvalidSignature
                        | jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => Error::new(
                            ErrorKind::TokenSignatureInvalid,
                            "JWTAuth error: signature is not valid",
                        ),
                        _ => malformed(&e.to_string()),
                    })
                }
            }
        };
        check_claims(&claims, now)
    }
}

fn malformed(detail: &str) -> Error {
    Error::new(
        ErrorKind::Authentication,
        format!("JWTAuth error: token is malformed: {detail}"),
    )
}

/// A JSON token segment in base64 of either alphabet, padding optional (development tokens use standard base64
/// with padding). With `latin1`, bytes that are not UTF-8 are read as Latin-1, the way the SDK encodes dev tokens.
fn decode_segment(segment: &str, latin1: bool) -> Result<Value, Error> {
    let engine = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let normalized: String = segment
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    let bytes = engine
        .decode(normalized)
        .map_err(|e| malformed(&format!("segment is not base64: {e}")))?;
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) if latin1 => e.into_bytes().iter().map(|&b| b as char).collect(),
        Err(_) => return Err(malformed("segment is not UTF-8")),
    };
    serde_json::from_str(&text).map_err(|e| malformed(&format!("segment is not JSON: {e}")))
}

fn check_claims(claims: &Value, now: i64) -> Result<Caller, Error> {
    let Some(claims) = claims.as_object() else {
        return Err(malformed("payload is not an object"));
    };
    let number = |name: &str| -> Result<Option<i64>, Error> {
        match claims.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|f| Some(f as i64))
                .ok_or_else(|| malformed(&format!("claim {name} is not a number"))),
        }
    };
    if let Some(exp) = number("exp")? {
        if now >= exp {
            return Err(Error::new(
                ErrorKind::TokenExpired,
                "JWTAuth error: token is expired",
            ));
        }
    }
    if let Some(nbf) = number("nbf")? {
        if now + LEEWAY_SECS < nbf {
            return Err(Error::new(
                ErrorKind::TokenNotValidYet,
                "JWTAuth error: token is not valid yet",
            ));
        }
    }
    if let Some(iat) = number("iat")? {
        if iat > now + LEEWAY_SECS {
            return Err(Error::new(
                ErrorKind::TokenUsedBeforeIssuedAt,
                "JWTAuth error: token used before issued at (iat)",
            ));
        }
    }
    if let Some(user_id) = claims.get("user_id") {
        return match user_id.as_str() {
            Some(id) if !id.is_empty() => Ok(Caller::User(id.to_string())),
            _ => Err(malformed("claim user_id is not a non-empty string")),
        };
    }
    if claims.get("server") == Some(&Value::Bool(true)) {
        return Ok(Caller::Server);
    }
    Err(Error::new(
        ErrorKind::Authentication,
        "JWTAuth error: token has neither user_id nor server claim",
    ))
}

/// Signs a user token `{"user_id": id}` (plus `exp` when given), as Stream's server SDKs mint them.
pub fn mint_user_token(secret: &str, user_id: &str, exp: Option<i64>) -> String {
    let mut claims = serde_json::Map::new();
    claims.insert("user_id".into(), Value::String(user_id.to_string()));
    if let Some(exp) = exp {
        claims.insert("exp".into(), Value::from(exp));
    }
    sign(secret, &Value::Object(claims))
}

/// Signs the server-side token `{"server": true}`.
pub fn mint_server_token(secret: &str) -> String {
    sign(secret, &serde_json::json!({ "server": true }))
}

fn sign(secret: &str, claims: &Value) -> String {
    // HS256 over an in-memory JSON value cannot fail.
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn minted_tokens_verify_and_name_their_user() {
        let v = TokenVerifier::new("s3cret", false);
        let t = mint_user_token("s3cret", "john", None);
        assert_eq!(v.verify(&t, NOW), Ok(Caller::User("john".into())));
        assert_eq!(
            v.verify(&mint_server_token("s3cret"), NOW),
            Ok(Caller::Server)
        );
    }

    #[test]
    fn each_failure_has_its_code() {
        let v = TokenVerifier::new("s3cret", false);
        let code = |t: &str| v.verify(t, NOW).unwrap_err().code();
        assert_eq!(code(&mint_user_token("other", "john", None)), 43);
        assert_eq!(code(&mint_user_token("s3cret", "john", Some(NOW))), 40);
        assert_eq!(code("abc"), 5);
        assert_eq!(code(""), 5);
        // {"alg":"none","typ":"JWT"} . {"user_id":"john"} . (no signature)
        assert_eq!(
            code("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJ1c2VyX2lkIjoiam9obiJ9."),
            43
        );
        let sdk_dev = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VyX2lkIjoiam9obiJ9.devtoken";
        assert_eq!(code(sdk_dev), 43);
    }

    #[test]
    fn a_dev_token_never_acts_as_the_server() {
        let v = TokenVerifier::new("s3cret", true);
        // {"alg":"HS256","typ":"JWT"} . {"server":true} . devtoken
        let server_dev = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzZXJ2ZXIiOnRydWV9.devtoken";
        assert_eq!(v.verify(server_dev, NOW).unwrap_err().code(), 43);
        // {"user_id":"john","server":true}: the user, nothing more.
        let both = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VyX2lkIjoiam9obiIsInNlcnZlciI6dHJ1ZX0.devtoken";
        assert_eq!(v.verify(both, NOW), Ok(Caller::User("john".into())));
    }

    #[test]
    fn dev_tokens_decode_both_alphabets_with_or_without_padding() {
        let v = TokenVerifier::new("s3cret", true);
        for t in [
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VyX2lkIjoiYWxpY2UifQ==.devtoken",
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VyX2lkIjoiYWxpY2UifQ.devtoken",
        ] {
            assert_eq!(v.verify(t, NOW), Ok(Caller::User("alice".into())));
        }
    }
}
