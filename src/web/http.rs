//! REST calls over the global `fetch`: JSON in, JSON out, the API error envelope turned into a `ClientError`,
//! and a timeout through `AbortController`.

use wasm_bindgen::JsCast;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortController, Headers, Request, RequestInit, Response};

use crate::core::urls::CLIENT_NAME;
use crate::core::{client_code, decimal, ClientError, Rejection};
use crate::web::js;
use crate::web::runtime::timeout;

pub struct Call<'a> {
    /// Names the operation in error messages.
    pub name: &'a str,
    pub method: &'a str,
    pub url: &'a str,
    pub token: Option<&'a str>,
    pub body: Option<&'a str>,
    pub timeout_ms: u32,
}

fn network(call: &Call<'_>, detail: &str) -> ClientError {
    ClientError::new(
        client_code::NETWORK,
        [
            call.name,
            " failed: no answer from the server (",
            detail,
            ")",
        ]
        .concat(),
    )
}

pub async fn fetch_json(call: Call<'_>) -> Result<JsValue, ClientError> {
    let build = || -> Result<Request, JsValue> {
        let headers = Headers::new()?;
        match call.token {
            Some(token) => {
                headers.set("Authorization", token)?;
                headers.set("stream-auth-type", "jwt")?;
            }
            None => headers.set("stream-auth-type", "anonymous")?,
        }
        headers.set("X-Stream-Client", CLIENT_NAME)?;
        let init = RequestInit::new();
        init.set_method(call.method);
        if let Some(body) = call.body {
            headers.set("Content-Type", "application/json")?;
            init.set_body(&JsValue::from_str(body));
        }
        init.set_headers(&headers);
        Request::new_with_str_and_init(call.url, &init)
    };
    let controller = AbortController::new().ok();
    let request = match &controller {
        Some(controller) => {
            let request = build().map_err(|e| network(&call, &js::describe(&e)))?;
            // A request carrying the signal; `Request::new_with_request_and_init` keeps everything else.
            let init = RequestInit::new();
            init.set_signal(Some(&controller.signal()));
            Request::new_with_request_and_init(&request, &init)
                .map_err(|e| network(&call, &js::describe(&e)))?
        }
        None => build().map_err(|e| network(&call, &js::describe(&e)))?,
    };
    let _deadline =
        controller.map(|controller| timeout(call.timeout_ms, Box::new(move || controller.abort())));
    let response = JsFuture::from(js::fetch_request(&request))
        .await
        .map_err(|e| network(&call, &js::describe(&e)))?;
    let response: Response = response.dyn_into().map_err(|_| {
        ClientError::new(
            client_code::BAD_RESPONSE,
            [call.name, " failed: not a response"].concat(),
        )
    })?;
    let status = response.status();
    let body = match response.json() {
        Ok(promise) => JsFuture::from(promise).await.ok(),
        Err(_) => None,
    };
    if response.ok() {
        return body.filter(JsValue::is_object).ok_or_else(|| {
            ClientError::new(
                client_code::BAD_RESPONSE,
                [call.name, " failed: the answer is not a JSON object"].concat(),
            )
        });
    }
    let error = Rejection::decode(&body.unwrap_or(JsValue::UNDEFINED), status);
    Err(ClientError {
        code: error.code,
        status: Some(error.status),
        message: [
            call.name,
            " failed with error code ",
            &decimal(error.code),
            ": ",
            &error.message,
        ]
        .concat(),
    })
}
