//! Every URL the client requests: the REST and WebSocket bases derived from the options, REST calls with the
//! common query parameters, the `/connect` handshake, channel paths. Components are percent-encoded exactly as
//! `encodeURIComponent` does, as the reference SDK sends them.

use crate::core::error::ClientError;

/// The `X-Stream-Client` value this client identifies with.
pub const CLIENT_NAME: &str = concat!("presence-client-v", env!("CARGO_PKG_VERSION"), "-browser");

/// The API the client talks to when the app names none.
pub const DEFAULT_BASE_URL: &str = "https://chat.stream-io-api.com";

/// The API key and the two base URLs of one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    api_key: String,
    base_url: String,
    ws_url: String,
}

impl Endpoints {
    /// `base_url` defaults to [`DEFAULT_BASE_URL`]; `ws_base_url` to the base URL with `http` turned into `ws`.
    /// Trailing slashes are dropped from both. A URL given that no browser could request (another scheme, no
    /// host, blanks) is refused here, naming the option, rather than failing every call later.
    pub fn new(
        api_key: String,
        base_url: Option<String>,
        ws_base_url: Option<String>,
    ) -> Result<Self, ClientError> {
        if let Some(url) = &base_url {
            check_url("baseURL", url, "http", "https")?;
        }
        if let Some(url) = &ws_base_url {
            check_url("wsBaseURL", url, "ws", "wss")?;
        }
        let base_url =
            without_trailing_slashes(base_url.unwrap_or_else(|| DEFAULT_BASE_URL.to_string()));
        let ws_url = ws_base_url
            .map(without_trailing_slashes)
            .unwrap_or_else(|| match base_url.strip_prefix("http") {
                Some(rest) => ["ws", rest].concat(),
                None => base_url.clone(),
            });
        Ok(Endpoints {
            api_key,
            base_url,
            ws_url,
        })
    }

    /// The REST base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The WebSocket base URL, without a trailing slash.
    pub fn ws_url(&self) -> &str {
        &self.ws_url
    }

    /// A REST call: `{base}{path}?user_id=…&connection_id=…&api_key=…` and then `query`, in that order.
    pub fn rest(
        &self,
        path: &str,
        user_id: Option<&str>,
        connection_id: Option<&str>,
        query: &[(&str, &str)],
    ) -> String {
        let mut url = [&self.base_url, path, "?"].concat();
        for (key, value) in [("user_id", user_id), ("connection_id", connection_id)] {
            if let Some(value) = value {
                push_param(&mut url, key, value);
                url.push('&');
            }
        }
        push_param(&mut url, "api_key", &self.api_key);
        for (key, value) in query {
            url.push('&');
            push_param(&mut url, key, value);
        }
        url
    }

    /// The WebSocket handshake: `{ws base}/connect?json=…&api_key=…&authorization=…` with `payload_json`
    /// (`{user_id, user_details, client_request_id}`) and the token; `&batch_ms=N` when `batch_ms` is not 0 (the
    /// server may then send frames holding an array of the events of up to N ms).
    pub fn connect(&self, payload_json: &str, token: &str, batch_ms: u32) -> String {
        let mut url = [&self.ws_url, "/connect?"].concat();
        push_param(&mut url, "json", payload_json);
        url.push('&');
        push_param(&mut url, "api_key", &self.api_key);
        url.push('&');
        push_param(&mut url, "authorization", token);
        url.push_str("&stream-auth-type=jwt&");
        push_param(&mut url, "X-Stream-Client", CLIENT_NAME);
        if batch_ms > 0 {
            url.push_str("&batch_ms=");
            url.push_str(&crate::core::error::decimal(i64::from(batch_ms)));
        }
        url
    }
}

/// `url` is `scheme://host…` with scheme `plain` or `secure` (any case), a host, and no blanks or control
/// characters. Checked on bytes with nothing that can panic: `str` searching and the panic paths of slicing and
/// indexing link core's formatting into the bundle (measured: +5.9 KB of gzip for this check written with them).
fn check_url(option: &str, url: &str, plain: &str, secure: &str) -> Result<(), ClientError> {
    let bytes = url.as_bytes();
    let well_formed = bytes
        .windows(3)
        .position(|w| w == b"://")
        .is_some_and(|at| {
            let scheme = bytes.get(..at).unwrap_or_default();
            let rest = bytes.get(at + 3..).unwrap_or_default();
            [plain, secure]
                .iter()
                .any(|s| s.as_bytes().eq_ignore_ascii_case(scheme))
                && rest
                    .first()
                    .is_some_and(|b| !matches!(b, b'/' | b'?' | b'#'))
        });
    let clean = !bytes.iter().any(|b| *b <= b' ' || *b == 0x7f);
    if well_formed && clean {
        return Ok(());
    }
    Err(ClientError::invalid_argument(
        [
            "new Client(): ",
            option,
            " \"",
            url,
            "\" is not a URL of the form ",
            plain,
            "://host[:port] or ",
            secure,
            "://host[:port]",
        ]
        .concat(),
    ))
}

/// `/channels/{type}/{id}/query`, or `/channels/{type}/query` for a distinct channel (identified by members).
pub fn channel_query_path(channel_type: &str, id: Option<&str>) -> String {
    let mut path = channel_path(channel_type, id);
    path.push_str("query");
    path
}

/// `/channels/{type}/{id}/stop-watching`.
pub fn stop_watching_path(channel_type: &str, id: &str) -> String {
    let mut path = channel_path(channel_type, Some(id));
    path.push_str("stop-watching");
    path
}

/// `/channels/{type}/` and `{id}/` when there is one.
fn channel_path(channel_type: &str, id: Option<&str>) -> String {
    let mut path = String::from("/channels/");
    push_component(&mut path, channel_type);
    path.push('/');
    if let Some(id) = id {
        push_component(&mut path, id);
        path.push('/');
    }
    path
}

fn push_param(url: &mut String, key: &str, value: &str) {
    url.push_str(key);
    url.push('=');
    push_component(url, value);
}

/// Appends `value` percent-encoded like `encodeURIComponent`: everything but ASCII letters, digits and
/// `-_.!~*'()` becomes `%XX` per UTF-8 byte.
pub fn push_component(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in value.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
            )
        {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

fn without_trailing_slashes(mut url: String) -> String {
    while url.as_bytes().last() == Some(&b'/') {
        url.pop();
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(value: &str) -> String {
        let mut out = String::new();
        push_component(&mut out, value);
        out
    }

    #[test]
    fn components_are_encoded_like_encode_uri_component() {
        assert_eq!(encoded("AZaz09-_.!~*'()"), "AZaz09-_.!~*'()");
        assert_eq!(encoded("a b&c=d/e?f#g:h"), "a%20b%26c%3Dd%2Fe%3Ff%23g%3Ah");
        assert_eq!(encoded("{\"id\":\"é\"}"), "%7B%22id%22%3A%22%C3%A9%22%7D");
        assert_eq!(encoded("😀+%"), "%F0%9F%98%80%2B%25");
    }

    #[test]
    fn bases_follow_the_options() {
        let e = Endpoints::new("key".into(), Some("http://127.0.0.1:3030//".into()), None).unwrap();
        assert_eq!(
            e.rest("/users", None, None, &[]),
            "http://127.0.0.1:3030/users?api_key=key"
        );
        assert!(e
            .connect("{}", "t", 0)
            .starts_with("ws://127.0.0.1:3030/connect?json=%7B%7D&"));
        let e = Endpoints::new("key".into(), None, Some("wss://ws.example/".into())).unwrap();
        assert!(e
            .rest("/users", None, None, &[])
            .starts_with("https://chat.stream-io-api.com/users?"));
        assert!(e
            .connect("{}", "t", 0)
            .starts_with("wss://ws.example/connect?"));
        let e = Endpoints::new("key".into(), Some("https://api.example".into()), None).unwrap();
        assert!(e
            .connect("{}", "t", 0)
            .starts_with("wss://api.example/connect?"));
    }

    #[test]
    fn rest_calls_carry_user_connection_and_key_before_their_own_parameters() {
        let e = Endpoints::new("k y".into(), Some("http://h".into()), None).unwrap();
        assert_eq!(
            e.rest("/users", Some("jo hn"), Some("c-1"), &[("payload", "{\"a\":1}")]),
            "http://h/users?user_id=jo%20hn&connection_id=c-1&api_key=k%20y&payload=%7B%22a%22%3A1%7D"
        );
        assert_eq!(
            e.connect("{}", "a.b.c", 0),
            [
                "ws://h/connect?json=%7B%7D&api_key=k%20y&authorization=a.b.c&stream-auth-type=jwt",
                "&X-Stream-Client=",
                CLIENT_NAME
            ]
            .concat()
        );
        assert!(e
            .connect("{}", "a.b.c", 10)
            .ends_with(&[CLIENT_NAME, "&batch_ms=10"].concat()));
    }

    #[test]
    fn channel_paths_encode_their_parts() {
        assert_eq!(
            channel_query_path("messaging", Some("a!b")),
            "/channels/messaging/a!b/query"
        );
        assert_eq!(
            channel_query_path("messaging", None),
            "/channels/messaging/query"
        );
        assert_eq!(
            stop_watching_path("team", "x y"),
            "/channels/team/x%20y/stop-watching"
        );
    }

    #[test]
    fn base_urls_no_browser_could_request_are_refused_naming_the_option() {
        for bad in [
            "not a url",
            "127.0.0.1:7070",
            "ftp://host",
            "http://",
            "http:// host",
            "ws://host",
        ] {
            let error = Endpoints::new("key".into(), Some(bad.into()), None).unwrap_err();
            assert_eq!(
                error.code,
                crate::core::error::client_code::INVALID_ARGUMENT,
                "{bad}"
            );
            assert!(
                error.message.contains("baseURL") && error.message.contains(bad),
                "{}",
                error.message
            );
        }
        let error = Endpoints::new("key".into(), None, Some("http://h".into())).unwrap_err();
        assert!(error.message.contains("wsBaseURL"), "{}", error.message);
        for good in [
            "http://127.0.0.1:7070",
            "HTTPS://api.example/v1",
            "https://h?x=1",
        ] {
            assert!(
                Endpoints::new("key".into(), Some(good.into()), None).is_ok(),
                "{good}"
            );
        }
    }
}
