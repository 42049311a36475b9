//! The token source of the connected user: none, a static token, or the app's token provider (a function,
//! possibly async) whose last token is kept until the core's token rule asks for a fresh one. A token that arrives
//! after the source was replaced (`disconnectUser()`, then another `connectUser()`) is dropped, never kept for the
//! next user.

use std::cell::{Cell, RefCell};

use js_sys::{Function, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::core::{client_code, ClientError};
use crate::web::js;

pub enum Token {
    None,
    Static(String),
    Provider {
        provider: Function,
        current: Option<String>,
    },
}

pub struct Credentials {
    token: RefCell<Token>,
    /// Counts the sources set: a provider's answer is kept only if its source is still the current one.
    generation: Cell<u64>,
}

impl Credentials {
    pub fn new() -> Self {
        Credentials {
            token: RefCell::new(Token::None),
            generation: Cell::new(0),
        }
    }

    pub fn set(&self, token: Token) {
        *self.token.borrow_mut() = token;
        self.generation.set(self.generation.get().wrapping_add(1));
    }

    pub fn clear(&self) {
        self.set(Token::None);
    }

    /// Whether the token comes from a provider (and so can be renewed).
    pub fn has_provider(&self) -> bool {
        matches!(&*self.token.borrow(), Token::Provider { .. })
    }

    /// The token to send; `reload` asks the provider again. Fails (code `DISCONNECTED`) when the source was
    /// replaced while the provider was being waited for.
    pub async fn current(&self, reload: bool) -> Result<Option<String>, ClientError> {
        let generation = self.generation.get();
        let provider = {
            let token = self.token.borrow();
            match &*token {
                Token::None => return Ok(None),
                Token::Static(token) => return Ok(Some(token.clone())),
                Token::Provider { provider, current } => match current {
                    Some(current) if !reload => return Ok(Some(current.clone())),
                    _ => provider.clone(),
                },
            }
        };
        let failed = |detail: String| {
            ClientError::new(
                client_code::TOKEN_PROVIDER,
                ["the token provider failed: ", &detail].concat(),
            )
        };
        let returned = provider
            .call0(&JsValue::UNDEFINED)
            .map_err(|e| failed(js::describe(&e)))?;
        let value = match returned.dyn_into::<Promise>() {
            Ok(promise) => JsFuture::from(promise)
                .await
                .map_err(|e| failed(js::describe(&e)))?,
            Err(value) => value,
        };
        if self.generation.get() != generation {
            return Err(ClientError::new(
                client_code::DISCONNECTED,
                "the token was asked for by a user who has disconnected since",
            ));
        }
        let token = value
            .as_string()
            .ok_or_else(|| failed("it did not return a string".to_string()))?;
        if let Token::Provider { current, .. } = &mut *self.token.borrow_mut() {
            *current = Some(token.clone());
        }
        Ok(Some(token))
    }
}
