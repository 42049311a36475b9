//! Why the first socket of a `connectUser` failed. A browser tells a page nothing about a failed WebSocket, so
//! after the first failure the client asks over REST (`GET {baseURL}/users`, no token): a presence server answers
//! with the API's JSON error envelope, and then the socket is retried for the rest of the connect budget. When
//! nothing answers, or something that is not the API does, no retry can succeed and `connectUser` fails at once,
//! naming the URL and the cause the browser lets the client tell.

use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortController, Request, RequestInit, Response};

use crate::core::{client_code, decimal, ClientError};
use crate::web::js;
use crate::web::runtime::timeout;
use crate::web::state::ClientState;

/// How long the probe waits for an answer: a server that takes longer fails the connect as unreachable.
const PROBE_TIMEOUT_MS: u32 = 5_000;

/// What the probe found when no presence server answers; `None` when one does.
async fn probe(client: &ClientState) -> Option<String> {
    let url = client.endpoints().rest("/users", None, None, &[]);
    let controller = AbortController::new().ok();
    let init = RequestInit::new();
    init.set_method("GET");
    if let Some(controller) = &controller {
        init.set_signal(Some(&controller.signal()));
    }
    let request = Request::new_with_str_and_init(&url, &init).ok()?;
    let waited = client.timeout_ms().min(PROBE_TIMEOUT_MS);
    let _deadline =
        controller.map(|controller| timeout(waited, Box::new(move || controller.abort())));
    let response: Response = match JsFuture::from(js::fetch_request(&request)).await {
        Ok(response) => response.dyn_into().ok()?,
        Err(thrown) => {
            let aborted = js::get(&thrown, "name").as_string().as_deref() == Some("AbortError");
            return Some(if aborted {
                ["no answer within ", &decimal(i64::from(waited)), " ms"].concat()
            } else {
                [
                    "nothing answers there (connection refused, unknown host, TLS failure, or a server without \
                     CORS headers; the browser does not tell which): ",
                    &js::describe(&thrown),
                ]
                .concat()
            });
        }
    };
    let body = match response.json() {
        Ok(promise) => JsFuture::from(promise).await.ok(),
        Err(_) => None,
    };
    let speaks_the_api = body.is_some_and(|body| js::get(&body, "code").as_f64().is_some());
    (!speaks_the_api).then(|| {
        [
            "it answers HTTP ",
            &decimal(i64::from(response.status())),
            ", but not as a presence server (no API error envelope)",
        ]
        .concat()
    })
}

/// The error that ends a `connectUser` whose first socket failed, when no presence server answers at the base
/// URL; `None` when one does (the socket is then retried for the rest of the connect budget).
pub async fn connect_failure(client: &ClientState) -> Option<ClientError> {
    let cause = probe(client).await?;
    Some(ClientError::new(
        client_code::CONNECTION_FAILED,
        [
            "connectUser() failed: cannot reach a presence server at ",
            client.endpoints().base_url(),
            ": ",
            &cause,
        ]
        .concat(),
    ))
}
