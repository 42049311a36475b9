//! What the answer of a REST call the app made changes: a channel answer folds into the channel registry (and the
//! handles the app gets back), the watch is recorded for recovery, and the users of every answer go to the
//! session (`Session::handle_users_answer`), whose decisions the driver carries out on the user cache.

use std::rc::Rc;

use js_sys::{Array, Object, Promise};
use wasm_bindgen::prelude::*;

use crate::core::{ClientError, UserPresence, UsersAnswer};
use crate::web::driver;
use crate::web::js::{self, wire};
use crate::web::registry::ChannelState;
use crate::web::requests::{After, RestCall};
use crate::web::rest;
use crate::web::runtime::promise;
use crate::web::state::ClientState;

/// Runs a prepared call as a Promise (a preparation error rejects at once, with no network call).
pub fn run_call(client: &Rc<ClientState>, call: Result<RestCall, ClientError>) -> Promise {
    match call {
        Ok(call) => {
            let epoch = client.session.borrow().epoch();
            promise(Box::pin(rest::call(
                client.clone(),
                call,
                epoch,
                fold_answer,
            )))
        }
        Err(error) => Promise::reject(&js::to_js_error(&error)),
    }
}

fn fold_answer(client: &Rc<ClientState>, after: After, watch: bool, answer: JsValue) -> JsValue {
    match after {
        After::Nothing | After::Recovered => answer,
        After::Written => {
            // `{users: {id: user}}`: only the connected user's entry matters here.
            let me = client.session.borrow().user_id().map(str::to_string);
            if let Some(me) = me {
                let user = js::get(&js::get(&answer, "users"), &me);
                if let Some(presence) = wire(&user).and_then(UserPresence::decode) {
                    driver::hand_over(client, UsersAnswer::OwnWrite, vec![(presence, user)]);
                }
            }
            answer
        }
        After::Users { presence } => {
            let users = rest::answer_users(&js::get(&answer, "users"));
            driver::hand_over(client, UsersAnswer::Listed { follow: presence }, users);
            answer
        }
        After::Channels { presence, handle } => {
            let list = js::get(&answer, "channels");
            let result = Array::new();
            if Array::is_array(&list) {
                for state in Array::from(&list).iter() {
                    let channel = js::get(&state, "channel");
                    let channel_type = js::get(&channel, "type").as_string();
                    let id = js::get(&channel, "id").as_string();
                    let (Some(channel_type), Some(id)) = (channel_type, id) else {
                        continue;
                    };
                    let channel =
                        client
                            .channels
                            .get_or_create(channel_type, Some(id), Object::new().into());
                    fold_channel(client, &channel, &state, watch, presence);
                    result.push(&handle(channel, client));
                }
            }
            result.into()
        }
        After::Channel { channel, presence } => {
            fold_channel(client, &channel, &answer, watch, presence);
            answer
        }
    }
}

fn fold_channel(
    client: &Rc<ClientState>,
    channel: &Rc<ChannelState>,
    state: &JsValue,
    watch: bool,
    presence: bool,
) {
    let members = channel.apply_answer(state);
    client.channels.register(channel);
    driver::hand_over(client, UsersAnswer::Listed { follow: false }, members);
    if let (true, Some(id)) = (watch, channel.id()) {
        let mut session = client.session.borrow_mut();
        session.watch_channel(&channel.channel_type, &id, presence);
    }
}
