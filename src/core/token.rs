//! The token rule, one for the socket and for REST: a refusal with code 40 (token expired) is cured by asking
//! the app's token provider for a fresh token and trying again; a static token cannot be renewed, so there the
//! refusal stands. The socket retries through its backoff (bounded by the connect budget); a REST call is sent
//! at most [`MAX_REST_SENDS`] times.

use presence_protocol::codes::error_code;

/// How often one REST call is sent at most when its fresh tokens keep being refused as expired.
pub const MAX_REST_SENDS: u32 = 3;

/// Whether a refusal with `code` is cured by reloading the token (`has_provider`: the token came from a provider).
pub fn reload_cures(code: i64, has_provider: bool) -> bool {
    code == error_code::TOKEN_EXPIRED && has_provider
}

/// The sends of one REST call.
#[derive(Debug, Default)]
pub struct RestAttempts {
    sent: u32,
}

impl RestAttempts {
    /// Records that a send was refused with `code`; returns whether to reload the token and send again.
    #[must_use]
    pub fn reload_after(&mut self, code: i64, has_provider: bool) -> bool {
        self.sent = self.sent.saturating_add(1);
        self.sent < MAX_REST_SENDS && reload_cures(code, has_provider)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_expired_token_from_a_provider_is_reloaded() {
        assert!(reload_cures(error_code::TOKEN_EXPIRED, true));
        assert!(!reload_cures(error_code::TOKEN_EXPIRED, false));
        assert!(!reload_cures(error_code::TOKEN_SIGNATURE_INVALID, true));
    }

    #[test]
    fn a_rest_call_is_sent_at_most_three_times() {
        let mut attempts = RestAttempts::default();
        assert!(attempts.reload_after(error_code::TOKEN_EXPIRED, true));
        assert!(attempts.reload_after(error_code::TOKEN_EXPIRED, true));
        assert!(!attempts.reload_after(error_code::TOKEN_EXPIRED, true));
    }
}
