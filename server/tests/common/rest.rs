//! REST calls: a request builder over a socket or the in-process router, and the answers' checks.

use std::time::{Duration, Instant};

use presence_protocol::codes::MORE_INFO_URL;
use presence_protocol::ApiError;
use reqwest::header::HeaderMap;
use reqwest::{Method, Url};

use super::*;

impl Server {
    // -- REST -----------------------------------------------------------------------------------------------------

    pub fn call(&self, method: Method, path: &str) -> Call<'_> {
        Call {
            server: self,
            admin: false,
            method,
            path: path.to_string(),
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            api_key: Some(API_KEY.to_string()),
        }
    }

    pub fn get(&self, path: &str) -> Call<'_> {
        self.call(Method::GET, path)
    }

    pub fn post(&self, path: &str) -> Call<'_> {
        self.call(Method::POST, path)
    }

    pub fn patch(&self, path: &str) -> Call<'_> {
        self.call(Method::PATCH, path)
    }

    /// `POST /users` with a server token; asserts 201 and returns the body.
    pub async fn upsert(&self, users: &[Value]) -> Value {
        let r = self.upsert_as(&Auth::Server, users).await;
        r.ok(201).clone()
    }

    pub async fn upsert_as(&self, auth: &Auth, users: &[Value]) -> Resp {
        let mut map = serde_json::Map::new();
        for u in users {
            let id = u["id"].as_str().expect("user id").to_string();
            map.insert(id, u.clone());
        }
        self.post("/users")
            .auth(auth)
            .json(json!({ "users": map }))
            .send()
            .await
    }

    /// `PATCH /users` with one update.
    pub async fn partial_update(&self, auth: &Auth, id: &str, set: Value, unset: &[&str]) -> Resp {
        self.patch("/users")
            .auth(auth)
            .json(json!({ "users": [{ "id": id, "set": set, "unset": unset }] }))
            .send()
            .await
    }

    /// `GET /users?payload=...`, bound to `conn` when given.
    pub async fn query_users(&self, auth: &Auth, conn: Option<&str>, payload: Value) -> Resp {
        self.get("/users")
            .auth(auth)
            .conn(conn)
            .query("payload", &payload.to_string())
            .send()
            .await
    }

    /// Ids of the users a server-token query returns, in order.
    pub async fn user_ids(&self, filter: Value) -> Vec<String> {
        self.user_ids_as(&Auth::Server, json!({ "filter_conditions": filter }))
            .await
    }

    pub async fn user_ids_as(&self, auth: &Auth, payload: Value) -> Vec<String> {
        let r = self.query_users(auth, None, payload).await;
        ids(&r.ok(200)["users"])
    }

    /// One user as `auth` sees it through queryUsers.
    pub async fn user_as(&self, auth: &Auth, id: &str) -> Value {
        let r = self
            .query_users(auth, None, json!({ "filter_conditions": { "id": id } }))
            .await;
        let users = r.ok(200)["users"].as_array().unwrap().clone();
        assert_eq!(users.len(), 1, "queryUsers for {id}: {users:?}");
        users[0].clone()
    }

    /// `POST /channels/{type}/{id}/query` (or the distinct-channel path when `id` is None).
    pub async fn query_channel(
        &self,
        auth: &Auth,
        conn: Option<&str>,
        ctype: &str,
        id: Option<&str>,
        body: Value,
    ) -> Resp {
        let path = match id {
            Some(id) => format!("/channels/{ctype}/{id}/query"),
            None => format!("/channels/{ctype}/query"),
        };
        self.post(&path)
            .auth(auth)
            .conn(conn)
            .json(body)
            .send()
            .await
    }

    /// Create a channel with members (server token), asserting 201.
    pub async fn create_channel(
        &self,
        ctype: &str,
        id: &str,
        members: &[&str],
        extra: Value,
    ) -> Value {
        let mut data = json!({ "members": members });
        if let Value::Object(m) = extra {
            for (k, v) in m {
                data[k] = v;
            }
        }
        self.query_channel(
            &Auth::Server,
            None,
            ctype,
            Some(id),
            json!({ "data": data, "state": true }),
        )
        .await
        .ok(201)
        .clone()
    }

    /// Watch a channel on connection `ws` with `presence`, as its user; asserts 201.
    pub async fn watch(&self, ws: &Ws, ctype: &str, id: &str, presence: bool) -> Value {
        self.query_channel(
            &Auth::user(&ws.user_id),
            Some(&ws.connection_id),
            ctype,
            Some(id),
            json!({ "state": true, "watch": true, "presence": presence }),
        )
        .await
        .ok(201)
        .clone()
    }

    /// queryUsers with presence:true on connection `ws`, subscribing it to the users returned.
    pub async fn subscribe_users(&self, ws: &Ws, ids: &[&str]) -> Value {
        self.query_users(
            &Auth::user(&ws.user_id),
            Some(&ws.connection_id),
            json!({ "filter_conditions": { "id": { "$in": ids } }, "presence": true }),
        )
        .await
        .ok(200)
        .clone()
    }

    /// `POST /channels/{type}/{id}` (what `channel.addMembers` / `removeMembers` send).
    pub async fn update_channel(&self, auth: &Auth, ctype: &str, id: &str, body: Value) -> Resp {
        self.post(&format!("/channels/{ctype}/{id}"))
            .auth(auth)
            .json(body)
            .send()
            .await
    }

    pub async fn query_channels(&self, auth: &Auth, conn: Option<&str>, body: Value) -> Resp {
        self.post("/channels")
            .auth(auth)
            .conn(conn)
            .json(body)
            .send()
            .await
    }

    pub async fn stop_watching(
        &self,
        auth: &Auth,
        conn: Option<&str>,
        ctype: &str,
        id: &str,
    ) -> Resp {
        self.post(&format!("/channels/{ctype}/{id}/stop-watching"))
            .auth(auth)
            .conn(conn)
            .json(json!({}))
            .send()
            .await
    }

    /// A call to the operator endpoints on the admin address (no API key).
    pub fn admin_call(&self, method: Method, path: &str) -> Call<'_> {
        assert!(
            self.admin_base.is_some(),
            "the server was started with --admin-addr off"
        );
        let mut call = self.call(method, path).no_api_key();
        call.admin = true;
        call
    }

    /// `GET /metrics` on the admin address.
    pub async fn metrics(&self) -> String {
        let r = self.admin_call(Method::GET, "/metrics").send().await;
        assert_eq!(r.status, 200, "GET /metrics: {}", r.text);
        r.text
    }

    /// The value of an unlabelled metric (or the sum over its label sets).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.metrics().await;
        metric_value(&text, name).unwrap_or_else(|| panic!("metric {name} missing from:\n{text}"))
    }

    /// Poll a metric until it equals `want` (bounded).
    pub async fn wait_metric(&self, name: &str, want: f64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.metric(name).await;
            if v == want {
                return;
            }
            if Instant::now() > deadline {
                panic!("metric {name} is {v}, expected {want}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// REST calls
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub enum Auth {
    /// A server-side token (`{"server": true}`).
    Server,
    /// A valid user token for this id, plus `user_id=<id>` in the query like the SDK.
    User(String),
    /// This exact `Authorization` header with `stream-auth-type: jwt`.
    Token(String),
    /// No `Authorization` header, `stream-auth-type: jwt`.
    Missing,
}

impl Auth {
    pub fn user(id: &str) -> Auth {
        Auth::User(id.to_string())
    }
}

pub struct Call<'a> {
    server: &'a Server,
    /// Sent to the admin address instead of the public one.
    admin: bool,
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    api_key: Option<String>,
}

impl Call<'_> {
    pub fn auth(mut self, auth: &Auth) -> Self {
        let token = match auth {
            Auth::Server => Some(self.server.server_token()),
            Auth::User(id) => {
                self.query.push(("user_id".into(), id.clone()));
                Some(self.server.user_token(id))
            }
            Auth::Token(t) => Some(t.clone()),
            Auth::Missing => None,
        };
        if let Some(t) = token {
            self.headers.push(("Authorization".into(), t));
        }
        self.headers.push(("stream-auth-type".into(), "jwt".into()));
        self
    }

    pub fn conn(mut self, conn: Option<&str>) -> Self {
        if let Some(c) = conn {
            self.query.push(("connection_id".into(), c.to_string()));
        }
        self
    }

    pub fn query(mut self, k: &str, v: &str) -> Self {
        self.query.push((k.into(), v.into()));
        self
    }

    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn json(mut self, body: Value) -> Self {
        self.body = Some(body.to_string().into_bytes());
        self.headers
            .push(("Content-Type".into(), "application/json".into()));
        self
    }

    /// A raw body sent as `application/json`.
    pub fn raw_json(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self.headers
            .push(("Content-Type".into(), "application/json".into()));
        self
    }

    pub fn no_api_key(mut self) -> Self {
        self.api_key = None;
        self
    }

    pub fn api_key(mut self, key: &str) -> Self {
        self.api_key = Some(key.to_string());
        self
    }

    pub async fn send(self) -> Resp {
        let base = match (self.admin, &self.server.admin_base) {
            (true, Some(admin)) => admin.as_str(),
            _ => self.server.base.as_str(),
        };
        let mut url = Url::parse(&format!("{base}{}", self.path)).unwrap();
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in &self.query {
                q.append_pair(k, v);
            }
            if let Some(key) = &self.api_key {
                q.append_pair("api_key", key);
            }
        }
        let desc = format!("{} {}", self.method, url);
        if let Some(in_process) = &self.server.in_process {
            return self.send_in_process(in_process, url, desc).await;
        }
        let mut req = self.server.http.request(self.method.clone(), url);
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        req = req.header(
            "X-Stream-Client",
            "stream-chat-js-v9.53.0-node|client_bundle=node-cjs",
        );
        req = req.header("x-client-request-id", uuid_like());
        if let Some(b) = self.body {
            req = req.body(b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{desc}: request failed: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp
            .text()
            .await
            .unwrap_or_else(|e| panic!("{desc}: reading body failed: {e}"));
        Resp::new(desc, status, headers, text)
    }
}

impl Call<'_> {
    /// The same request, through the in-process router instead of a socket.
    async fn send_in_process(self, server: &InProcess, url: Url, desc: String) -> Resp {
        use tower::ServiceExt;
        let mut req = axum::http::Request::builder()
            .method(self.method.clone())
            .uri(url.as_str());
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        req = req
            .header(
                "X-Stream-Client",
                "stream-chat-js-v9.53.0-node|client_bundle=node-cjs",
            )
            .header("x-client-request-id", uuid_like());
        let body = match self.body {
            Some(b) => {
                req = req.header("content-length", b.len().to_string());
                axum::body::Body::from(b)
            }
            None => axum::body::Body::empty(),
        };
        let req = req
            .body(body)
            .unwrap_or_else(|e| panic!("{desc}: cannot build the request: {e}"));
        let router = if self.admin {
            server.admin_router.clone()
        } else {
            server.router.clone()
        };
        let resp = tokio::time::timeout(Duration::from_secs(20), router.oneshot(req))
            .await
            .unwrap_or_else(|_| panic!("{desc}: no answer within 20 s"))
            .unwrap_or_else(|e| match e {});
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap_or_else(|e| panic!("{desc}: reading body failed: {e}"));
        let text = String::from_utf8(bytes.to_vec())
            .unwrap_or_else(|e| panic!("{desc}: body is not UTF-8: {e}"));
        Resp::new(desc, status, headers, text)
    }
}

#[derive(Debug)]
pub struct Resp {
    pub desc: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Resp {
    /// An answer, with its body parsed as JSON when it is JSON (else `Value::Null`).
    fn new(desc: String, status: u16, headers: HeaderMap, text: String) -> Resp {
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            desc,
            status,
            headers,
            text,
            json,
        }
    }

    /// Assert the status and a JSON object body with a string `duration`; return the body.
    pub fn ok(&self, status: u16) -> &Value {
        assert_eq!(
            self.status, status,
            "{}: expected HTTP {status}, got {} with body {}",
            self.desc, self.status, self.text
        );
        assert!(
            self.json["duration"].is_string(),
            "{}: success body without string `duration`: {}",
            self.desc,
            self.text
        );
        &self.json
    }

    /// Assert a complete error envelope with this HTTP status and code; return it.
    pub fn err(&self, status: u16, code: i64) -> ApiError {
        assert_eq!(
            (self.status, self.json["code"].as_i64()),
            (status, Some(code)),
            "{}: expected HTTP {status} with code {code}, got HTTP {} with body {}",
            self.desc,
            self.status,
            self.text
        );
        assert_error_envelope(&self.json, status, code, &self.desc);
        serde_json::from_value(self.json.clone()).unwrap()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or_default().to_string())
    }
}

/// Every field the OpenAPI `APIError` requires, with the right types and values.
pub fn assert_error_envelope(v: &Value, status: u16, code: i64, what: &str) {
    assert_eq!(v["code"].as_i64(), Some(code), "{what}: code in {v}");
    assert_eq!(
        v["StatusCode"].as_u64(),
        Some(status as u64),
        "{what}: StatusCode in {v}"
    );
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: message in {v}"
    );
    assert!(v["duration"].is_string(), "{what}: duration in {v}");
    assert_eq!(
        v["more_info"].as_str(),
        Some(MORE_INFO_URL),
        "{what}: more_info in {v}"
    );
    assert!(
        v["details"]
            .as_array()
            .is_some_and(|d| d.iter().all(|x| x.is_i64())),
        "{what}: details must be an array of integers in {v}"
    );
}

pub fn ids(users: &Value) -> Vec<String> {
    users
        .as_array()
        .unwrap_or_else(|| panic!("expected an array of users, got {users}"))
        .iter()
        .map(|u| u["id"].as_str().expect("user id").to_string())
        .collect()
}

pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

pub fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Parse an RFC 3339 time.
pub fn time(v: &Value) -> chrono::DateTime<chrono::Utc> {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("expected an RFC 3339 string, got {v}"));
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("not RFC 3339: {s:?}: {e}"))
        .with_timezone(&chrono::Utc)
}

pub fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}
