//! Start-up settings the server refuses: an API secret too short to keep tokens unforgeable.

mod common;

use common::*;
use serde_json::json;

fn serve_args(secret: &str) -> Vec<&str> {
    vec![
        "--addr",
        "127.0.0.1:0",
        "--db",
        ":memory:",
        "--api-key",
        API_KEY,
        "--api-secret",
        secret,
    ]
}

/// The process ended with a failure status, before listening, and said which setting is wrong.
fn assert_refused(run: &Exited, what: &str) {
    assert!(
        !run.status.success(),
        "{what}: the server must exit with a failure status, got {:?}; stderr:\n{}",
        run.status,
        run.stderr
    );
    assert!(
        !run.stdout.contains("listening on"),
        "{what}: the server must refuse before it listens; stdout:\n{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("--api-secret") && run.stderr.contains("PRESENCE_API_SECRET"),
        "{what}: the message must name --api-secret and PRESENCE_API_SECRET; stderr:\n{}",
        run.stderr
    );
}

#[tokio::test]
async fn an_empty_api_secret_is_refused() {
    let run = run_to_exit(&serve_args(""), &[]).await;
    assert_refused(&run, "--api-secret \"\"");

    let mut args = serve_args("");
    args.truncate(6);
    let run = run_to_exit(&args, &[("PRESENCE_API_SECRET", "")]).await;
    assert_refused(&run, "PRESENCE_API_SECRET=\"\"");
}

#[tokio::test]
async fn a_15_byte_api_secret_is_refused() {
    let secret = "0123456789abcde";
    assert_eq!(secret.len(), 15);
    let run = run_to_exit(&serve_args(secret), &[]).await;
    assert_refused(&run, "a 15-byte --api-secret");
    assert!(
        run.stderr.contains("16 bytes"),
        "the message must say how long the secret must be; stderr:\n{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains(secret),
        "the message must not echo the secret; stderr:\n{}",
        run.stderr
    );

    let mut args = serve_args("");
    args.truncate(6);
    let run = run_to_exit(&args, &[("PRESENCE_API_SECRET", secret)]).await;
    assert_refused(&run, "a 15-byte PRESENCE_API_SECRET");
}

#[tokio::test]
async fn a_16_byte_api_secret_serves_tokens_signed_with_it() {
    let secret = "0123456789abcdef";
    assert_eq!(secret.len(), 16);
    let s = Server::start_with(ServerOpts::default().api_secret(secret)).await;
    let r = s
        .post("/users")
        .auth(&Auth::Server)
        .json(json!({ "users": { "ann": { "id": "ann" } } }))
        .send()
        .await;
    assert_eq!(r.status, 201, "{}: {}", r.desc, r.text);
    let r = s
        .get("/users")
        .auth(&Auth::User("ann".into()))
        .query("payload", r#"{"filter_conditions":{"id":"ann"}}"#)
        .send()
        .await;
    assert_eq!(r.status, 200, "{}: {}", r.desc, r.text);
    assert_eq!(r.json["users"][0]["id"], "ann", "{}", r.text);
}
