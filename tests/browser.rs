//! Browser tests of the JS API in headless Chromium, against the real server started by
//! `scripts/test-browser.sh` (its address arrives at compile time in `PRESENCE_TEST_SERVER`, the restart/token
//! supervisor's in `PRESENCE_TEST_CONTROL`).
#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Array, Function, Promise, Reflect};
use presence_client::web::channel::Channel;
use presence_client::web::client::{Client, EventSubscription};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const SERVER: &str = match option_env!("PRESENCE_TEST_SERVER") {
    Some(url) => url,
    None => "http://127.0.0.1:7070",
};
const CONTROL: &str = match option_env!("PRESENCE_TEST_CONTROL") {
    Some(url) => url,
    None => "http://127.0.0.1:7071",
};
const API_KEY: &str = match option_env!("PRESENCE_TEST_API_KEY") {
    Some(key) => key,
    None => "test-key",
};

fn json(text: &str) -> JsValue {
    js_sys::JSON::parse(text).expect("valid JSON in a test")
}

fn get(value: &JsValue, path: &str) -> JsValue {
    path.split('.').fold(value.clone(), |v, key| {
        if v.is_object() || v.is_function() {
            Reflect::get(&v, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
        } else {
            JsValue::UNDEFINED
        }
    })
}

/// A user id no other test (or earlier run against the same database) uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", (js_sys::Math::random() * 1e12) as u64)
}

fn new_client(extra_options: &str) -> Client {
    let options = format!(r#"{{"baseURL":"{SERVER}"{extra_options}}}"#);
    Client::new(JsValue::from_str(API_KEY), json(&options)).expect("client")
}

async fn settle(promise: Promise) -> Result<JsValue, JsValue> {
    JsFuture::from(promise).await
}

async fn sleep(ms: u32) {
    gloo_timers::future::TimeoutFuture::new(ms).await;
}

async fn fetch_text(url: &str, method: &str) -> String {
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    let request = web_sys::Request::new_with_str_and_init(url, &init).unwrap();
    let window = web_sys::window().unwrap();
    let response: web_sys::Response = JsFuture::from(window.fetch_with_request(&request))
        .await
        .expect("the supervisor answers")
        .unchecked_into();
    assert!(response.ok(), "{method} {url}: HTTP {}", response.status());
    JsFuture::from(response.text().unwrap())
        .await
        .unwrap()
        .as_string()
        .unwrap()
}

/// A JWT for `user_id`, signed with the app secret (or with `secret`).
async fn jwt(user_id: &str, secret: Option<&str>) -> String {
    let mut url = format!("{CONTROL}/token?user_id={user_id}");
    if let Some(secret) = secret {
        url.push_str("&secret=");
        url.push_str(secret);
    }
    fetch_text(&url, "GET").await
}

/// Connects a new client as `user` (a JSON object) with a JWT; returns it and the connectUser result.
async fn connect(user: &str, extra_options: &str) -> (Client, JsValue) {
    let user = json(user);
    let id = get(&user, "id").as_string().unwrap();
    let client = new_client(extra_options);
    let token = jwt(&id, None).await;
    let open = settle(client.connect_user(user, JsValue::from_str(&token)))
        .await
        .expect("connectUser resolves");
    (client, open)
}

/// Records the events a listener receives.
struct Recorder {
    events: Rc<RefCell<Vec<JsValue>>>,
    closure: Closure<dyn FnMut(JsValue)>,
}

impl Recorder {
    fn new() -> Self {
        let events = Rc::new(RefCell::new(Vec::new()));
        let sink = events.clone();
        let closure =
            Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| sink.borrow_mut().push(event));
        Recorder { events, closure }
    }

    fn function(&self) -> Function {
        self.closure.as_ref().unchecked_ref::<Function>().clone()
    }

    fn listen(&self, client: &Client, event_type: &str) -> EventSubscription {
        client
            .on(JsValue::from_str(event_type), Some(self.function()))
            .expect("on()")
    }

    fn count(&self, pred: impl Fn(&JsValue) -> bool) -> usize {
        self.events.borrow().iter().filter(|e| pred(e)).count()
    }

    /// Waits until an event matching `pred` arrives; panics after `timeout_ms`.
    async fn wait_for(
        &self,
        what: &str,
        timeout_ms: u32,
        pred: impl Fn(&JsValue) -> bool,
    ) -> JsValue {
        let mut waited = 0;
        loop {
            if let Some(event) = self.events.borrow().iter().find(|e| pred(e)).cloned() {
                return event;
            }
            assert!(waited < timeout_ms, "no {what} within {timeout_ms} ms");
            sleep(50).await;
            waited += 50;
        }
    }
}

/// Connects `peer_id` and waits until `presence` (listening on a client that follows the peer) hears it come
/// online; then disconnects the peer again.
async fn peer_online_is_heard(presence: &Recorder, peer_id: &str) {
    let (peer, _) = connect(&format!(r#"{{"id":"{peer_id}"}}"#), "").await;
    presence
        .wait_for(
            "the peer's online event",
            10_000,
            presence_of(peer_id, true),
        )
        .await;
    disconnect(&peer).await;
}

fn presence_of(user_id: &str, online: bool) -> impl Fn(&JsValue) -> bool + '_ {
    move |event| {
        get(event, "type").as_string().as_deref() == Some("user.presence.changed")
            && get(event, "user.id").as_string().as_deref() == Some(user_id)
            && get(event, "user.online").as_bool() == Some(online)
    }
}

/// Makes sure the user exists on the server (channels accept only existing members, and presence queries only
/// subscribe to users they return): connect once and leave.
async fn ensure_user(id: &str) {
    let (client, _) = connect(&format!(r#"{{"id":"{id}"}}"#), "").await;
    disconnect(&client).await;
}

async fn disconnect(client: &Client) {
    settle(client.disconnect_user(None))
        .await
        .expect("disconnectUser resolves");
}

async fn watch_users(client: &Client, ids: &[&str]) -> JsValue {
    let filter = json(&format!(
        r#"{{"id":{{"$in":{}}}}}"#,
        serde_json::to_string(ids).unwrap()
    ));
    settle(client.query_users(filter, JsValue::UNDEFINED, json(r#"{"presence":true}"#)))
        .await
        .expect("queryUsers resolves")
}

#[wasm_bindgen_test]
async fn connects_with_a_jwt_and_resolves_to_the_first_health_check() {
    let id = unique("jwt");
    let (client, open) = connect(&format!(r#"{{"id":"{id}","name":"Jay"}}"#), "").await;
    assert_eq!(
        get(&open, "type").as_string().as_deref(),
        Some("health.check")
    );
    assert!(get(&open, "connection_id")
        .as_string()
        .is_some_and(|c| !c.is_empty()));
    assert_eq!(get(&open, "me.id").as_string(), Some(id.clone()));
    assert_eq!(get(&client.user(), "id").as_string(), Some(id.clone()));
    assert_eq!(get(&client.user(), "online").as_bool(), Some(true));
    assert!(get(&client.user(), "last_active").is_string());
    assert_eq!(
        get(&client.state(), &format!("users.{id}.name"))
            .as_string()
            .as_deref(),
        Some("Jay")
    );
    assert_eq!(client.user_id().as_string(), Some(id));
    disconnect(&client).await;
    assert!(client.user().is_undefined());
    assert!(client.user_id().is_undefined());
}

#[wasm_bindgen_test]
async fn connects_with_a_dev_token() {
    let id = unique("dev");
    let client = new_client("");
    let token = client
        .dev_token(JsValue::from_str(&id))
        .unwrap()
        .as_string()
        .unwrap();
    assert!(token.ends_with(".devtoken"));
    let open = settle(client.connect_user(
        json(&format!(r#"{{"id":"{id}"}}"#)),
        JsValue::from_str(&token),
    ))
    .await
    .expect("dev token accepted");
    assert_eq!(get(&open, "me.id").as_string(), Some(id));
    disconnect(&client).await;
}

#[wasm_bindgen_test]
async fn dev_tokens_match_the_reference_encoding() {
    let client = new_client("");
    assert_eq!(
        client
            .dev_token(JsValue::from_str("john"))
            .unwrap()
            .as_string()
            .unwrap(),
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VyX2lkIjoiam9obiJ9.devtoken"
    );
    assert_eq!(
        client
            .dev_token(JsValue::from_str("ab"))
            .unwrap()
            .as_string()
            .unwrap(),
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VyX2lkIjoiYWIifQ==.devtoken"
    );
}

#[wasm_bindgen_test]
async fn a_token_provider_is_called_for_the_token() {
    let id = unique("provider");
    let token = jwt(&id, None).await;
    let calls = Rc::new(RefCell::new(0));
    let counter = calls.clone();
    let provider = Closure::<dyn FnMut() -> Promise>::new(move || {
        *counter.borrow_mut() += 1;
        Promise::resolve(&JsValue::from_str(&token))
    });
    let client = new_client("");
    settle(client.connect_user(
        json(&format!(r#"{{"id":"{id}"}}"#)),
        provider.as_ref().clone(),
    ))
    .await
    .expect("connects with a provider");
    assert_eq!(*calls.borrow(), 1);
    disconnect(&client).await;
}

#[wasm_bindgen_test]
async fn a_throwing_token_provider_fails_connect_with_code_1006_and_its_message() {
    let id = unique("provider");
    let client = new_client("");
    for provider in [
        Function::new_no_args("throw new Error('backend down')"),
        Function::new_no_args("return Promise.reject(new Error('backend down'))"),
    ] {
        let error =
            settle(client.connect_user(json(&format!(r#"{{"id":"{id}"}}"#)), provider.into()))
                .await
                .expect_err("connectUser rejects");
        assert!(error.is_instance_of::<js_sys::Error>(), "a real Error");
        assert_eq!(get(&error, "code").as_f64(), Some(1006.0));
        let message = get(&error, "message").as_string().unwrap_or_default();
        assert!(message.contains("backend down"), "{message}");
        assert!(client.user().is_undefined());
    }
}

#[wasm_bindgen_test]
async fn connects_invisible_with_a_status() {
    let id = unique("ghost");
    let (client, open) = connect(
        &format!(r#"{{"id":"{id}","invisible":true,"status":"Eating a veggie burger..."}}"#),
        "",
    )
    .await;
    assert_eq!(get(&open, "me.invisible").as_bool(), Some(true));
    assert_eq!(
        get(&open, "me.status").as_string().as_deref(),
        Some("Eating a veggie burger...")
    );
    // Others see the user offline, with the status.
    let (peer, _) = connect(&format!(r#"{{"id":"{}"}}"#, unique("peer")), "").await;
    let answer = watch_users(&peer, &[&id]).await;
    let seen = Array::from(&get(&answer, "users")).get(0);
    assert_eq!(get(&seen, "online").as_bool(), Some(false));
    assert_eq!(
        get(&seen, "status").as_string().as_deref(),
        Some("Eating a veggie burger...")
    );
    disconnect(&client).await;
    disconnect(&peer).await;
}

#[wasm_bindgen_test]
async fn going_invisible_and_back_is_seen_by_peers() {
    let id = unique("shy");
    let (client, _) = connect(&format!(r#"{{"id":"{id}"}}"#), "").await;
    let (peer, _) = connect(&format!(r#"{{"id":"{}"}}"#, unique("peer")), "").await;
    let events = Recorder::new();
    let _sub = events.listen(&peer, "user.presence.changed");
    let answer = watch_users(&peer, &[&id]).await;
    assert_eq!(
        get(&Array::from(&get(&answer, "users")).get(0), "online").as_bool(),
        Some(true)
    );

    let update = json(&format!(r#"{{"id":"{id}","invisible":true}}"#));
    let answer = settle(client.upsert_user(update))
        .await
        .expect("upsertUser resolves");
    assert_eq!(
        get(&answer, &format!("users.{id}.invisible")).as_bool(),
        Some(true)
    );
    events
        .wait_for("the offline event", 5_000, presence_of(&id, false))
        .await;
    assert_eq!(
        get(&peer.state(), &format!("users.{id}.online")).as_bool(),
        Some(false)
    );

    let update = json(&format!(r#"{{"id":"{id}","set":{{"invisible":false}}}}"#));
    settle(client.partial_update_user(update))
        .await
        .expect("partialUpdateUser resolves");
    events
        .wait_for("the online event", 5_000, presence_of(&id, true))
        .await;
    assert_eq!(
        get(&peer.state(), &format!("users.{id}.online")).as_bool(),
        Some(true)
    );
    disconnect(&client).await;
    disconnect(&peer).await;
}

#[wasm_bindgen_test]
async fn watching_with_presence_delivers_peer_connects_and_disconnects() {
    let me = unique("watcher");
    let other = unique("member");
    ensure_user(&other).await;
    let (client, _) = connect(&format!(r#"{{"id":"{me}"}}"#), "").await;
    let events = Recorder::new();
    let _sub = events.listen(&client, "user.presence.changed");
    let channel: Channel = client
        .channel(
            JsValue::from_str("messaging"),
            JsValue::from_str(&unique("room")),
            json(&format!(r#"{{"members":["{me}","{other}"]}}"#)),
        )
        .unwrap();
    let state = settle(channel.watch(json(r#"{"presence":true}"#)))
        .await
        .expect("watch resolves");
    assert_eq!(Array::from(&get(&state, "members")).length(), 2);
    assert_eq!(
        get(&channel.state(), &format!("members.{other}.user.online")).as_bool(),
        Some(false)
    );

    let (peer, _) = connect(&format!(r#"{{"id":"{other}","status":"here"}}"#), "").await;
    let event = events
        .wait_for("the online event", 5_000, presence_of(&other, true))
        .await;
    assert_eq!(
        get(&event, "user.status").as_string().as_deref(),
        Some("here")
    );
    assert_eq!(
        get(&client.state(), &format!("users.{other}.online")).as_bool(),
        Some(true)
    );
    assert_eq!(
        get(&channel.state(), &format!("members.{other}.user.online")).as_bool(),
        Some(true)
    );

    disconnect(&peer).await;
    events
        .wait_for("the offline event", 5_000, presence_of(&other, false))
        .await;
    assert_eq!(
        get(&channel.state(), &format!("members.{other}.user.online")).as_bool(),
        Some(false)
    );

    settle(channel.stop_watching())
        .await
        .expect("stopWatching resolves");
    disconnect(&client).await;
}

#[wasm_bindgen_test]
async fn query_channels_returns_channels_with_presence() {
    let me = unique("lister");
    let other = unique("listed");
    ensure_user(&other).await;
    let (client, _) = connect(&format!(r#"{{"id":"{me}"}}"#), "").await;
    let room = unique("room");
    let channel = client
        .channel(
            JsValue::from_str("messaging"),
            JsValue::from_str(&room),
            json(&format!(r#"{{"members":["{me}","{other}"]}}"#)),
        )
        .unwrap();
    settle(channel.query(JsValue::UNDEFINED))
        .await
        .expect("channel created");
    let channels = settle(client.query_channels(
        json(&format!(
            r#"{{"type":"messaging","members":{{"$in":["{me}"]}}}}"#
        )),
        json("[]"),
        json(r#"{"presence":true,"limit":10,"offset":0}"#),
    ))
    .await
    .expect("queryChannels resolves");
    let channels = Array::from(&channels);
    assert_eq!(channels.length(), 1);
    let found = channels.get(0);
    assert_eq!(
        get(&found, "cid").as_string(),
        Some(format!("messaging:{room}"))
    );
    assert_eq!(
        get(&found, &format!("state.members.{other}.user.online")).as_bool(),
        Some(false)
    );

    let events = Recorder::new();
    let _sub = events.listen(&client, "user.presence.changed");
    let (peer, _) = connect(&format!(r#"{{"id":"{other}"}}"#), "").await;
    events
        .wait_for("the online event", 5_000, presence_of(&other, true))
        .await;
    disconnect(&peer).await;
    disconnect(&client).await;
}

#[wasm_bindgen_test]
async fn unsubscribe_stops_delivery() {
    let other = unique("chatty");
    ensure_user(&other).await;
    let (client, _) = connect(&format!(r#"{{"id":"{}"}}"#, unique("listener")), "").await;
    watch_users(&client, &[&other]).await;
    let kept = Recorder::new();
    let dropped = Recorder::new();
    let removed_with_off = Recorder::new();
    let _kept = kept.listen(&client, "user.presence.changed");
    let sub = dropped.listen(&client, "user.presence.changed");
    client.on(removed_with_off.function().into(), None).unwrap();
    sub.unsubscribe();
    client.off(removed_with_off.function().into(), None);

    let (peer, _) = connect(&format!(r#"{{"id":"{other}"}}"#), "").await;
    kept.wait_for("the online event", 5_000, presence_of(&other, true))
        .await;
    sleep(200).await;
    assert_eq!(dropped.count(|_| true), 0);
    assert_eq!(removed_with_off.count(|_| true), 0);
    disconnect(&peer).await;
    disconnect(&client).await;
}

#[wasm_bindgen_test]
async fn a_throwing_listener_does_not_stop_the_others() {
    let other = unique("loud");
    ensure_user(&other).await;
    let (client, _) = connect(&format!(r#"{{"id":"{}"}}"#, unique("listener")), "").await;
    watch_users(&client, &[&other]).await;
    let thrown = Rc::new(RefCell::new(Vec::new()));
    let sink = thrown.clone();
    let thrower = Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
        sink.borrow_mut().push(event);
        wasm_bindgen::throw_str("listener failure");
    });
    client
        .on(
            JsValue::from_str("user.presence.changed"),
            Some(thrower.as_ref().clone().unchecked_into()),
        )
        .unwrap();
    let events = Recorder::new();
    let _sub = events.listen(&client, "user.presence.changed");
    let (peer, _) = connect(&format!(r#"{{"id":"{other}"}}"#), "").await;
    events
        .wait_for("the online event", 5_000, presence_of(&other, true))
        .await;
    disconnect(&peer).await;
    events
        .wait_for("the offline event", 5_000, presence_of(&other, false))
        .await;
    // The throwing listener, registered first, was called with each event before the others got them.
    let count =
        |pred: &dyn Fn(&JsValue) -> bool| thrown.borrow().iter().filter(|e| pred(e)).count();
    assert_eq!(
        count(&presence_of(&other, true)),
        1,
        "online events the thrower got"
    );
    assert_eq!(
        count(&presence_of(&other, false)),
        1,
        "offline events the thrower got"
    );
    disconnect(&client).await;
}

#[wasm_bindgen_test]
async fn a_wrong_token_rejects_with_code_43() {
    let id = unique("intruder");
    let client = new_client("");
    let token = jwt(&id, Some("not-the-secret")).await;
    let error = settle(client.connect_user(
        json(&format!(r#"{{"id":"{id}"}}"#)),
        JsValue::from_str(&token),
    ))
    .await
    .expect_err("connectUser rejects");
    assert!(error.is_instance_of::<js_sys::Error>(), "a real Error");
    assert_eq!(get(&error, "code").as_f64(), Some(43.0));
    assert_eq!(get(&error, "StatusCode").as_f64(), Some(401.0));
    assert!(client.user().is_undefined());
}

#[wasm_bindgen_test]
fn a_base_url_no_browser_could_request_is_refused_at_construction() {
    for (options, named) in [
        (r#"{"baseURL":"not a url"}"#, "baseURL"),
        (r#"{"baseURL":"127.0.0.1:7070"}"#, "baseURL"),
        (r#"{"baseURL":42}"#, "baseURL"),
        (r#"{"wsBaseURL":"http://127.0.0.1:7070"}"#, "wsBaseURL"),
    ] {
        let Err(error) = Client::new(JsValue::from_str("key"), json(options)) else {
            panic!("new Client() accepted {options}");
        };
        assert!(error.is_instance_of::<js_sys::Error>(), "a real Error");
        assert_eq!(get(&error, "code").as_f64(), Some(1000.0));
        let message = get(&error, "message").as_string().unwrap_or_default();
        assert!(message.contains(named), "{message}");
    }
}

#[wasm_bindgen_test]
async fn bad_arguments_reject_at_once() {
    let client = new_client("");
    let error = settle(client.query_users(
        json(r#"{"id":"x"}"#),
        JsValue::UNDEFINED,
        JsValue::UNDEFINED,
    ))
    .await
    .expect_err("queryUsers before connectUser rejects");
    assert_eq!(get(&error, "code").as_f64(), Some(1001.0));
    let error = settle(client.query_users(
        JsValue::from_str("nope"),
        JsValue::UNDEFINED,
        JsValue::UNDEFINED,
    ))
    .await
    .expect_err("a string filter rejects");
    assert_eq!(get(&error, "code").as_f64(), Some(1000.0));
    assert!(get(&error, "message")
        .as_string()
        .unwrap()
        .contains("filter"));
    let error = settle(client.connect_user(json(r#"{"name":"no id"}"#), JsValue::from_str("t")))
        .await
        .expect_err("a user without id rejects");
    assert_eq!(get(&error, "code").as_f64(), Some(1000.0));
    let error = settle(client.upsert_user(json(r#"{"name":"no id"}"#)))
        .await
        .expect_err("upsert without id rejects");
    assert_eq!(get(&error, "code").as_f64(), Some(1000.0));
    // A static token must name the user.
    let token = jwt("someone-else", None).await;
    let error = settle(client.connect_user(json(r#"{"id":"me"}"#), JsValue::from_str(&token)))
        .await
        .expect_err("a token for another user rejects");
    assert_eq!(get(&error, "code").as_f64(), Some(1000.0));
}

#[wasm_bindgen_test]
async fn last_active_is_refreshed_on_the_configured_interval() {
    let id = unique("active");
    let (client, open) = connect(
        &format!(r#"{{"id":"{id}"}}"#),
        r#","lastActiveRefreshInterval":1100"#,
    )
    .await;
    let first = get(&open, "me.last_active").as_string().unwrap();
    let connection = client.connection_id();
    assert!(connection.is_string());
    let mut waited = 0;
    loop {
        let now = get(&client.user(), "last_active")
            .as_string()
            .unwrap_or_default();
        if now > first {
            break;
        }
        assert!(
            waited < 6_000,
            "client.user.last_active never moved past {first}"
        );
        sleep(100).await;
        waited += 100;
    }
    // The refresh is a ping the server answered on the same connection (a frame it refused would have closed it).
    assert_eq!(client.connection_id(), connection);
    disconnect(&client).await;
}

#[wasm_bindgen_test]
async fn after_a_server_restart_the_client_reconnects_and_events_flow_again() {
    let me = unique("survivor");
    let peer_id = unique("peer");
    let late_id = unique("late");
    ensure_user(&late_id).await;
    let (client, _) = connect(&format!(r#"{{"id":"{me}"}}"#), "").await;
    let (peer, _) = connect(&format!(r#"{{"id":"{peer_id}"}}"#), "").await;
    let presence = Recorder::new();
    let recovered = Recorder::new();
    let changed = Recorder::new();
    let _p = presence.listen(&client, "user.presence.changed");
    let _r = recovered.listen(&client, "connection.recovered");
    let _c = changed.listen(&client, "connection.changed");
    watch_users(&client, &[&peer_id, &late_id]).await;
    let before = client.connection_id();
    // Users created by connecting are stored asynchronously; a REST write is answered only once everything queued
    // before it is committed, so the restart (a kill) cannot lose them.
    server_side_partial_update(&format!(
        r#"{{"users":[{{"id":"{late_id}","set":{{"name":"Late"}}}}]}}"#
    ))
    .await;

    fetch_text(&format!("{CONTROL}/restart"), "POST").await;

    recovered
        .wait_for("connection.recovered", 20_000, |_| true)
        .await;
    assert_ne!(client.connection_id(), before, "a new connection");
    assert!(changed.count(|e| get(e, "online").as_bool() == Some(true)) >= 1);
    // The presence query was made again on the new connection: events flow without the app doing anything.
    let (late, _) = connect(&format!(r#"{{"id":"{late_id}"}}"#), "").await;
    presence
        .wait_for(
            "the late user's online event",
            10_000,
            presence_of(&late_id, true),
        )
        .await;
    // The peer reconnected by itself too; its disconnect is seen.
    let mut waited = 0;
    while peer.connection_id().is_undefined() {
        assert!(waited < 20_000, "the peer never reconnected");
        sleep(100).await;
        waited += 100;
    }
    disconnect(&peer).await;
    presence
        .wait_for(
            "the peer's offline event",
            10_000,
            presence_of(&peer_id, false),
        )
        .await;
    disconnect(&late).await;
    disconnect(&client).await;
}

#[wasm_bindgen_test]
async fn the_browser_going_offline_drops_the_socket_and_online_reconnects_with_subscriptions() {
    let me = unique("roamer");
    let peer_id = unique("peer");
    ensure_user(&peer_id).await;
    let (client, _) = connect(&format!(r#"{{"id":"{me}"}}"#), "").await;
    let presence = Recorder::new();
    let recovered = Recorder::new();
    let _p = presence.listen(&client, "user.presence.changed");
    let _r = recovered.listen(&client, "connection.recovered");
    watch_users(&client, &[&peer_id]).await;
    let before = client.connection_id();

    let window = web_sys::window().expect("a window");
    let offline = web_sys::Event::new("offline").expect("an event");
    window.dispatch_event(&offline).expect("dispatch offline");
    let online = web_sys::Event::new("online").expect("an event");
    window.dispatch_event(&online).expect("dispatch online");

    recovered
        .wait_for("connection.recovered", 10_000, |_| true)
        .await;
    assert_ne!(
        client.connection_id(),
        before,
        "the old socket was dropped for a new one"
    );
    // The presence query was made again on the new connection.
    peer_online_is_heard(&presence, &peer_id).await;
    disconnect(&client).await;
}

#[wasm_bindgen_test]
async fn a_reconnect_watches_every_channel_again_and_reports_what_changed_meanwhile() {
    let me = unique("lurker");
    let others: Vec<String> = (0..3).map(|i| unique(&format!("member{i}"))).collect();
    for other in &others {
        ensure_user(other).await;
    }
    let (client, _) = connect(&format!(r#"{{"id":"{me}"}}"#), "").await;
    let presence = Recorder::new();
    let recovered = Recorder::new();
    let _p = presence.listen(&client, "user.presence.changed");
    let _r = recovered.listen(&client, "connection.recovered");
    // Three channels watched with presence, each with one other member.
    let mut channels = Vec::new();
    for other in &others {
        let channel = client
            .channel(
                JsValue::from_str("messaging"),
                JsValue::from_str(&unique("room")),
                json(&format!(r#"{{"members":["{me}","{other}"]}}"#)),
            )
            .unwrap();
        settle(channel.watch(json(r#"{"presence":true}"#)))
            .await
            .expect("watch resolves");
        channels.push(channel);
    }
    let before = client.connection_id();
    let window = web_sys::window().expect("a window");
    window
        .dispatch_event(&web_sys::Event::new("offline").unwrap())
        .unwrap();
    // While the socket is down, the first member comes online.
    let (early, _) = connect(&format!(r#"{{"id":"{}"}}"#, others[0]), "").await;
    window
        .dispatch_event(&web_sys::Event::new("online").unwrap())
        .unwrap();
    recovered
        .wait_for("connection.recovered", 10_000, |_| true)
        .await;
    assert_ne!(client.connection_id(), before, "a new connection");
    // What changed while down was reported before connection.recovered, and the channel's state follows.
    assert_eq!(presence.count(presence_of(&others[0], true)), 1);
    assert_eq!(
        get(
            &channels[0].state(),
            &format!("members.{}.user.online", others[0])
        )
        .as_bool(),
        Some(true)
    );
    // Every channel is watched again with presence: the last member's arrival is heard live.
    peer_online_is_heard(&presence, &others[2]).await;
    disconnect(&early).await;
    disconnect(&client).await;
}

#[wasm_bindgen(inline_js = r#"
// Counts the WebSockets the page opens from now on, their close events, and the codes the page closes them
// with; the sockets stay real ones.
export function watchSockets() {
  const Original = globalThis.WebSocket;
  const asked = [];
  let opened = 0;
  let closed = 0;
  globalThis.WebSocket = class extends Original {
    constructor(...args) {
      super(...args);
      opened += 1;
      this.addEventListener('close', () => { closed += 1; });
    }
    close(...args) {
      asked.push(args.length ? args[0] : null);
      super.close(...args);
    }
  };
  return {
    opened: () => opened,
    closed: () => closed,
    askedCodes: () => asked.slice(),
    restore: () => { globalThis.WebSocket = Original; },
  };
}

// Headless Chromium is always visible: the state is overridden on the document, then the event dispatched.
export function setVisibility(state) {
  Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => state });
  Object.defineProperty(document, 'hidden', { configurable: true, get: () => state !== 'visible' });
  document.dispatchEvent(new Event('visibilitychange'));
}

export function resetVisibility() {
  delete document.visibilityState;
  delete document.hidden;
}

export function dispatchPageTransition(type, persisted) {
  window.dispatchEvent(new PageTransitionEvent(type, { persisted }));
}

// A network that can be cut for the clients connected while it records (`stopRecording()` ends that, so that
// others in the same page keep theirs): `cut()` closes their sockets and makes every socket opened from then on go
// to a closed loopback port (outside Linux's ephemeral range, so no test server holds it) and fail, until
// `restore()`.
export function cuttableNetwork() {
  const Original = globalThis.WebSocket;
  const recorded = [];
  let recording = true;
  let cut = false;
  globalThis.WebSocket = class extends Original {
    constructor(url, ...rest) {
      super(cut ? 'ws://127.0.0.1:65534/connect' : url, ...rest);
      if (recording) recorded.push(this);
    }
  };
  return {
    stopRecording: () => { recording = false; },
    cut: () => {
      cut = true;
      for (const socket of recorded) socket.close();
    },
    restore: () => { globalThis.WebSocket = Original; },
  };
}

// A token provider that answers with `token` after `ms`.
export function slowProvider(token, ms) {
  return () => new Promise((resolve) => setTimeout(() => resolve(token), ms));
}
"#)]
extern "C" {
    type SocketWatch;
    #[wasm_bindgen(js_name = watchSockets)]
    fn watch_sockets() -> SocketWatch;
    #[wasm_bindgen(method)]
    fn opened(this: &SocketWatch) -> u32;
    #[wasm_bindgen(method)]
    fn closed(this: &SocketWatch) -> u32;
    #[wasm_bindgen(method, js_name = askedCodes)]
    fn asked_codes(this: &SocketWatch) -> Vec<JsValue>;
    #[wasm_bindgen(method)]
    fn restore(this: &SocketWatch);
    #[wasm_bindgen(js_name = setVisibility)]
    fn set_visibility(state: &str);
    #[wasm_bindgen(js_name = resetVisibility)]
    fn reset_visibility();
    #[wasm_bindgen(js_name = dispatchPageTransition)]
    fn dispatch_page_transition(kind: &str, persisted: bool);
    type Network;
    #[wasm_bindgen(js_name = cuttableNetwork)]
    fn cuttable_network() -> Network;
    #[wasm_bindgen(method, js_name = stopRecording)]
    fn stop_recording(this: &Network);
    #[wasm_bindgen(method)]
    fn cut(this: &Network);
    #[wasm_bindgen(method, js_name = restore)]
    fn restore_network(this: &Network);
    #[wasm_bindgen(js_name = slowProvider)]
    fn slow_provider(token: &str, ms: u32) -> Function;
}

/// Waits until `done` holds; an error naming `what` after `timeout_ms`.
async fn until(what: &str, timeout_ms: u32, done: impl Fn() -> bool) -> Result<(), String> {
    let mut waited = 0;
    while !done() {
        if waited >= timeout_ms {
            return Err(format!("no {what} within {timeout_ms} ms"));
        }
        sleep(10).await;
        waited += 10;
    }
    Ok(())
}

#[wasm_bindgen_test]
async fn leaving_for_the_back_forward_cache_and_returning_reconnects_with_subscriptions() {
    let me = unique("traveller");
    let peer_id = unique("peer");
    ensure_user(&peer_id).await;
    let sockets = watch_sockets();
    let (client, _) = connect(&format!(r#"{{"id":"{me}"}}"#), "").await;
    let presence = Recorder::new();
    let recovered = Recorder::new();
    let _p = presence.listen(&client, "user.presence.changed");
    let _r = recovered.listen(&client, "connection.recovered");
    watch_users(&client, &[&peer_id]).await;
    let before = client.connection_id();
    assert_eq!(sockets.opened(), 1);

    dispatch_page_transition("pagehide", true);
    // The socket closes like a navigation (4001), and the page in the cache stays quiet: no attempt at all.
    let closed = until("close of the socket", 2_000, || sockets.closed() == 1).await;
    sleep(1_500).await;
    let opened_while_cached = sockets.opened();
    let asked: Vec<_> = sockets
        .asked_codes()
        .iter()
        .map(|code| code.as_f64())
        .collect();
    dispatch_page_transition("pageshow", true);
    let woke = until("new socket after pageshow", 500, || sockets.opened() == 2).await;
    sockets.restore();
    closed.unwrap();
    assert_eq!(
        asked,
        [Some(4001.0)],
        "the close codes the client asked for"
    );
    assert!(client.connection_id().is_undefined() || client.connection_id() != before);
    assert_eq!(
        opened_while_cached, 1,
        "attempts while in the back/forward cache"
    );
    woke.unwrap();

    recovered
        .wait_for("connection.recovered", 5_000, |_| true)
        .await;
    assert!(client.connection_id().is_string());
    assert_ne!(client.connection_id(), before, "a new connection");
    // The presence query was made again on the new connection.
    peer_online_is_heard(&presence, &peer_id).await;
    disconnect(&client).await;
}

#[wasm_bindgen_test]
async fn a_socket_dropped_while_hidden_reconnects_as_soon_as_the_page_is_visible() {
    let me = unique("sleeper");
    let peer_id = unique("peer");
    ensure_user(&peer_id).await;
    let (client, _) = connect(&format!(r#"{{"id":"{me}"}}"#), "").await;
    let presence = Recorder::new();
    let recovered = Recorder::new();
    let _p = presence.listen(&client, "user.presence.changed");
    let _r = recovered.listen(&client, "connection.recovered");
    watch_users(&client, &[&peer_id]).await;
    let before = client.connection_id();

    let sockets = watch_sockets();
    set_visibility("hidden");
    // The server goes away while the page is hidden: the client keeps retrying with a growing backoff (after two
    // failures the next delay is drawn from [0.25, 10] s).
    fetch_text(&format!("{CONTROL}/stop?for_ms=30000"), "POST").await;
    let failed = until("2 failed attempts", 10_000, || {
        sockets.closed() >= 2 && sockets.opened() == sockets.closed()
    })
    .await;
    // Back up, the return to visible reconnects at once instead of at the end of the backoff delay.
    fetch_text(&format!("{CONTROL}/start"), "POST").await;
    let opened = sockets.opened();
    set_visibility("visible");
    let reconnected = until("attempt after the page became visible", 300, || {
        sockets.opened() > opened
    })
    .await;
    sockets.restore();
    reset_visibility();
    failed.unwrap();
    reconnected.unwrap();

    recovered
        .wait_for("connection.recovered", 5_000, |_| true)
        .await;
    assert_ne!(client.connection_id(), before, "a new connection");
    // The presence query was made again on the new connection.
    peer_online_is_heard(&presence, &peer_id).await;
    disconnect(&client).await;
}

/// `PATCH /users` with the server-side token: a change made from another connection than the client's.
async fn server_side_partial_update(body: &str) {
    let token = fetch_text(&format!("{CONTROL}/token?server=1"), "GET").await;
    let headers = web_sys::Headers::new().unwrap();
    headers.set("Authorization", &token).unwrap();
    headers.set("stream-auth-type", "jwt").unwrap();
    headers.set("Content-Type", "application/json").unwrap();
    let init = web_sys::RequestInit::new();
    init.set_method("PATCH");
    init.set_headers(&headers);
    init.set_body(&JsValue::from_str(body));
    let url = format!("{SERVER}/users?api_key={API_KEY}");
    let request = web_sys::Request::new_with_str_and_init(&url, &init).unwrap();
    let response: web_sys::Response =
        JsFuture::from(web_sys::window().unwrap().fetch_with_request(&request))
            .await
            .expect("the server answers")
            .unchecked_into();
    assert!(response.ok(), "PATCH /users: HTTP {}", response.status());
}

#[wasm_bindgen_test]
async fn a_reconnect_keeps_her_invisible_when_she_went_invisible_elsewhere_while_cut_off() {
    let me = unique("hider");
    let network = cuttable_network();
    // The app connects with explicit presence choices, as the reference SDK's examples do.
    let (client, _) = connect(
        &format!(r#"{{"id":"{me}","name":"Hedy","invisible":false,"status":"around"}}"#),
        "",
    )
    .await;
    network.stop_recording();
    let (peer, _) = connect(&format!(r#"{{"id":"{}"}}"#, unique("peer")), "").await;
    let seen = Recorder::new();
    let _s = seen.listen(&peer, "user.presence.changed");
    let answer = watch_users(&peer, &[&me]).await;
    assert_eq!(
        get(&Array::from(&get(&answer, "users")).get(0), "online").as_bool(),
        Some(true)
    );
    let recovered = Recorder::new();
    let _r = recovered.listen(&client, "connection.recovered");

    // Her network goes: her socket is dropped and every new one fails.
    network.cut();
    seen.wait_for("her offline event", 5_000, presence_of(&me, false))
        .await;
    // Meanwhile she goes invisible, with another status, from elsewhere.
    server_side_partial_update(&format!(
        r#"{{"users":[{{"id":"{me}","set":{{"invisible":true,"status":"gone fishing"}}}}]}}"#
    ))
    .await;
    // Let an attempt or two fail, then the network comes back.
    sleep(1_000).await;
    network.restore_network();
    let window = web_sys::window().expect("a window");
    window
        .dispatch_event(&web_sys::Event::new("online").unwrap())
        .unwrap();
    recovered
        .wait_for("connection.recovered", 10_000, |_| true)
        .await;

    // She knows she is invisible; the peer still sees her offline, with the status set elsewhere.
    assert_eq!(get(&client.user(), "invisible").as_bool(), Some(true));
    assert_eq!(
        get(&client.user(), "name").as_string().as_deref(),
        Some("Hedy")
    );
    sleep(500).await;
    let answer = watch_users(&peer, &[&me]).await;
    let user = Array::from(&get(&answer, "users")).get(0);
    assert_eq!(
        get(&user, "online").as_bool(),
        Some(false),
        "the reconnect made her visible"
    );
    assert_eq!(
        get(&user, "status").as_string().as_deref(),
        Some("gone fishing")
    );
    assert_eq!(
        seen.count(presence_of(&me, true)),
        0,
        "the peer saw her come back online"
    );
    disconnect(&client).await;
    disconnect(&peer).await;
}

#[wasm_bindgen_test]
async fn an_answer_to_a_call_made_before_disconnect_never_lands_in_the_next_session() {
    let followed = unique("followed");
    ensure_user(&followed).await;
    let (client, _) = connect(&format!(r#"{{"id":"{}"}}"#, unique("first")), "").await;
    let second = unique("second");
    let second_token = jwt(&second, None).await;
    let pending = client.query_users(
        json(&format!(r#"{{"id":"{followed}"}}"#)),
        JsValue::UNDEFINED,
        json(r#"{"presence":true}"#),
    );
    // disconnectUser() runs while the request is on the wire; then the next user connects.
    disconnect(&client).await;
    settle(client.connect_user(
        json(&format!(r#"{{"id":"{second}"}}"#)),
        JsValue::from_str(&second_token),
    ))
    .await
    .expect("the next user connects");
    let error = settle(pending)
        .await
        .expect_err("the call of the ended session fails");
    assert_eq!(get(&error, "code").as_f64(), Some(1003.0));
    assert!(
        get(&client.state(), &format!("users.{followed}")).is_undefined(),
        "the answer of the ended session landed in the next one"
    );
    disconnect(&client).await;
}

#[wasm_bindgen_test]
async fn a_token_the_provider_gives_after_disconnect_never_serves_the_next_user() {
    let first = unique("slow");
    let second = unique("next");
    let first_token = jwt(&first, None).await;
    let second_token = jwt(&second, None).await;
    let client = new_client("");
    // The first user's provider answers after 500 ms; she is disconnected before that.
    let pending = client.connect_user(
        json(&format!(r#"{{"id":"{first}"}}"#)),
        slow_provider(&first_token, 500).into(),
    );
    disconnect(&client).await;
    settle(pending)
        .await
        .expect_err("the cancelled connectUser rejects");
    settle(client.connect_user(
        json(&format!(r#"{{"id":"{second}"}}"#)),
        slow_provider(&second_token, 0).into(),
    ))
    .await
    .expect("the next user connects");
    // The first provider answers now; the next user's calls still carry her own token.
    sleep(800).await;
    let update = json(&format!(r#"{{"id":"{second}","set":{{"name":"Next"}}}}"#));
    let answer = settle(client.partial_update_user(update))
        .await
        .expect("the next user's own write is accepted");
    assert_eq!(
        get(&answer, &format!("users.{second}.name"))
            .as_string()
            .as_deref(),
        Some("Next")
    );
    disconnect(&client).await;
}

#[wasm_bindgen_test]
async fn a_timeout_longer_than_a_timer_holds_does_not_abort_requests() {
    let id = unique("patient");
    let (client, _) = connect(&format!(r#"{{"id":"{id}"}}"#), r#","timeout":1e12"#).await;
    let answer = settle(client.query_users(
        json(&format!(r#"{{"id":"{id}"}}"#)),
        JsValue::UNDEFINED,
        JsValue::UNDEFINED,
    ))
    .await
    .expect("queryUsers resolves");
    assert_eq!(Array::from(&get(&answer, "users")).length(), 1);
    disconnect(&client).await;
}

fn member_count(channel: &Channel) -> u32 {
    let members: js_sys::Object = get(&channel.state(), "members").unchecked_into();
    js_sys::Object::keys(&members).length()
}

#[wasm_bindgen_test]
async fn the_registry_forgets_a_channel_on_stop_watching_and_disconnect() {
    let me = unique("forgetful");
    let other = unique("member");
    ensure_user(&other).await;
    let (client, _) = connect(&format!(r#"{{"id":"{me}"}}"#), "").await;
    let room = JsValue::from_str(&unique("room"));
    let messaging = JsValue::from_str("messaging");
    let members = json(&format!(r#"{{"members":["{me}","{other}"]}}"#));
    let channel = client
        .channel(messaging.clone(), room.clone(), members)
        .unwrap();
    settle(channel.watch(json(r#"{"presence":true}"#)))
        .await
        .expect("watch resolves");
    assert_eq!(member_count(&channel), 2);
    settle(channel.stop_watching())
        .await
        .expect("stopWatching resolves");
    let again = client
        .channel(messaging.clone(), room.clone(), JsValue::UNDEFINED)
        .unwrap();
    assert_eq!(member_count(&again), 0, "stopWatching kept the channel");
    settle(again.watch(JsValue::UNDEFINED))
        .await
        .expect("watch resolves");
    assert_eq!(member_count(&again), 2);
    // disconnectUser() forgets every channel: the same client, connected again, starts afresh.
    disconnect(&client).await;
    let token = jwt(&me, None).await;
    settle(client.connect_user(
        json(&format!(r#"{{"id":"{me}"}}"#)),
        JsValue::from_str(&token),
    ))
    .await
    .expect("connects again");
    let fresh = client.channel(messaging, room, JsValue::UNDEFINED).unwrap();
    assert_eq!(member_count(&fresh), 0, "disconnectUser() kept the channel");
    disconnect(&client).await;
}
