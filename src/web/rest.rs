//! The REST pipeline: wait for a pending `connectUser`, send with the common decoration (user, connection, key,
//! token; an expired token from a provider is reloaded by the core's token rule), and give the answer to the
//! caller's fold while the session still exists; and the users an answer lists. A call belongs to the session
//! (epoch) it was made in: once `disconnectUser()` ends that session it fails instead of sending for, or landing
//! in, the next.

use std::rc::Rc;

use js_sys::Array;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::core::{client_code, ClientError, RestAttempts, UserPresence};
use crate::web::http::{self, Call};
use crate::web::js::{self, wire};
use crate::web::requests::{After, RestCall};
use crate::web::state::ClientState;

/// What the caller does with an answer while its session still exists: the call's `After`, whether its body
/// asked to watch, and the answer; returns what the call resolves with.
pub type Fold = fn(&Rc<ClientState>, After, bool, JsValue) -> JsValue;

/// Every REST call of the client, made in session `epoch`: wait for the connection, send, then `fold` the answer
/// while the session still exists. (A function rather than a struct handed back: one future type for every call.)
pub async fn call(
    client: Rc<ClientState>,
    call: RestCall,
    epoch: u64,
    fold: Fold,
) -> Result<JsValue, ClientError> {
    same_session(&client, epoch, call.api)?;
    ready(&client, call.api).await?;
    same_session(&client, epoch, call.api)?;
    let mut watch = false;
    let body = call.body.map(|body| {
        if call.default_watch && js::get(&body, "watch").is_undefined() {
            let connected = client.session.borrow().connection_id().is_some();
            js::set(&body, "watch", &JsValue::from_bool(connected));
        }
        watch = js::get(&body, "watch").as_bool() == Some(true);
        js::to_json(&body)
    });
    let query: Vec<(&str, &str)> = call
        .payload
        .as_deref()
        .map(|p| ("payload", p))
        .into_iter()
        .collect();
    let answer = request(
        &client,
        call.name,
        call.method,
        &call.path,
        &query,
        body.as_deref(),
    )
    .await?;
    same_session(&client, epoch, call.api)?;
    Ok(fold(&client, call.after, watch, answer))
}

/// Fails when `disconnectUser()` was called since the call was made (`epoch`).
fn same_session(client: &ClientState, epoch: u64, call: &str) -> Result<(), ClientError> {
    if client.session.borrow().epoch() == epoch {
        Ok(())
    } else {
        Err(ClientError::new(
            client_code::DISCONNECTED,
            [call, "() was cancelled by disconnectUser()"].concat(),
        ))
    }
}

/// Waits for a pending `connectUser`; fails at once without a user.
async fn ready(client: &ClientState, call: &str) -> Result<(), ClientError> {
    let pending = client.driver.pending_connect();
    if let Some(pending) = pending {
        JsFuture::from(pending).await.map_err(|e| {
            ClientError::new(
                client_code::NOT_CONNECTED,
                [call, "() failed: ", &js::describe(&e)].concat(),
            )
        })?;
    }
    if client.session.borrow().user_id().is_none() {
        return Err(ClientError::not_connected(call));
    }
    Ok(())
}

/// One REST call with the common decoration, repeated with a fresh token as long as the token rule says so.
async fn request(
    client: &ClientState,
    name: &str,
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    body: Option<&str>,
) -> Result<JsValue, ClientError> {
    let mut reload = false;
    let mut attempts = RestAttempts::default();
    loop {
        let token = client.credentials.current(reload).await?;
        let url = {
            let session = client.session.borrow();
            client
                .endpoints()
                .rest(path, session.user_id(), session.connection_id(), query)
        };
        let result = http::fetch_json(Call {
            name,
            method,
            url: &url,
            token: token.as_deref(),
            body,
            timeout_ms: client.timeout_ms(),
        })
        .await;
        match result {
            Err(error) if attempts.reload_after(error.code, client.credentials.has_provider()) => {
                reload = true
            }
            other => return other,
        }
    }
}

/// The users of an answer's list that have an id, with their objects.
pub fn answer_users(list: &JsValue) -> Vec<(UserPresence, JsValue)> {
    let mut users = Vec::new();
    if Array::is_array(list) {
        for user in Array::from(list).iter() {
            if let Some(presence) = wire(&user).and_then(UserPresence::decode) {
                users.push((presence, user));
            }
        }
    }
    users
}

/// The users of a recovery answer (a user query's users, or the members of a channel query's channels, which
/// refresh the registry's channels), each with its JS object.
pub fn recovered_users(client: &ClientState, answer: &JsValue) -> Vec<(UserPresence, JsValue)> {
    let channels = js::get(answer, "channels");
    if !Array::is_array(&channels) {
        return answer_users(&js::get(answer, "users"));
    }
    let mut users = Vec::new();
    for state in Array::from(&channels).iter() {
        let cid = js::get(&js::get(&state, "channel"), "cid").as_string();
        match cid.and_then(|cid| client.channels.find(&cid)) {
            Some(channel) => users.extend(channel.apply_answer(&state)),
            // Watched, but no longer in the registry: its members still count.
            None => {
                let list = js::get(&state, "members");
                if Array::is_array(&list) {
                    for member in Array::from(&list).iter() {
                        let user = js::get(&member, "user");
                        if let Some(presence) = wire(&user).and_then(UserPresence::decode) {
                            users.push((presence, user));
                        }
                    }
                }
            }
        }
    }
    users
}
