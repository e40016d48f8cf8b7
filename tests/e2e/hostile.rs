//! What a hostile client sends: header values from which `lambda_http` cannot build a request URI
//! (it would panic, and with `panic = "abort"` kill the execution environment), through each
//! function's Lambda entry point and through the local API server; and header bytes beyond ASCII.

use e2e::{event, stack};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Value};

/// The headers that made every function panic.
const HOSTILE: [(&str, &str); 2] = [("X-Forwarded-Proto", "1"), ("Host", "[")];

/// Sample event `name` with the hostile headers, single- and multi-valued, and without its
/// Idempotency-Key (tests run concurrently; this one must not wait for another's key).
fn hostile(name: &str) -> LambdaEvent<Value> {
    let mut event: Value = serde_json::from_str(&event(name)).expect("valid JSON");
    for field in ["headers", "multiValueHeaders"] {
        if let Some(headers) = event[field].as_object_mut() {
            headers.remove("Idempotency-Key");
        }
    }
    for (name, value) in HOSTILE {
        event["headers"][name] = json!(value);
        event["multiValueHeaders"][name] = json!([value]);
    }
    LambdaEvent::new(event, Context::default())
}

/// The status of an API Gateway response document.
fn status(answer: &Value) -> u64 {
    answer["statusCode"].as_u64().unwrap_or_default()
}

#[tokio::test]
async fn chat_answers_an_event_with_hostile_headers() {
    let _sample_user = e2e::hold_sample_user().await;
    let state = e2e::echo_chat_state().await;
    let handler = |req| chat::handle(&state, req);
    // Chat answers in Lambda's streaming format: the metadata prelude, then the body.
    let answer = shared::http::event::invoke_streaming(&handler, hostile("chat-post.json")).await;
    let lambda_runtime::FunctionResponse::StreamingResponse(answer) = answer else {
        panic!("a streamed answer");
    };
    assert_eq!(answer.metadata_prelude.status_code, 200);
    assert!(std::str::from_utf8(answer.stream.whole())
        .unwrap()
        .contains("echo: "));
}

#[tokio::test]
async fn chat_answers_an_invocation_that_is_not_a_request_quietly() {
    // API Gateway may follow a streamed answer with an invocation of its own.
    let state = e2e::echo_chat_state().await;
    let handler = |req| chat::handle(&state, req);
    let event = LambdaEvent::new(json!({"status": "completed"}), Context::default());
    let answer = shared::http::event::invoke_streaming(&handler, event).await;
    assert!(matches!(
        answer,
        lambda_runtime::FunctionResponse::BufferedResponse(Value::Null)
    ));
}

#[tokio::test]
async fn history_answers_an_event_with_hostile_headers() {
    let state = e2e::history_state(&stack().await.clients).await;
    let handler = |req| history::handle(&state, req);
    let answer = shared::http::event::invoke(&handler, hostile("history-list-conversations.json"))
        .await
        .expect("served");
    assert_eq!(status(&answer), 200, "{answer}");
}

#[tokio::test]
async fn feedback_answers_an_event_with_hostile_headers() {
    let state = e2e::feedback_state(&stack().await.clients).await;
    let handler = |req| feedback::handle(&state, req);
    let answer = shared::http::event::invoke(&handler, hostile("feedback-get.json"))
        .await
        .expect("served");
    assert_eq!(status(&answer), 200, "{answer}");
}

#[tokio::test]
async fn health_answers_an_event_with_hostile_headers() {
    let stack = stack().await;
    let state = health::State::new(stack.config, stack.clients);
    let answer = health::handle_event(&state, hostile("health-get.json"))
        .await
        .expect("served");
    assert_eq!(status(&answer), 200, "{answer}");
}

/// Starts the local API server on a free port; returns its address.
async fn local_server() -> std::net::SocketAddr {
    e2e::local_server(e2e::local_functions().await).await
}

#[tokio::test]
async fn the_local_server_answers_hostile_headers_and_keeps_serving() {
    let address = local_server().await;
    // A Host that is no host name is refused (only loopback names are served) ...
    let request = "GET /conversations HTTP/1.1\r\nHost: [\r\nX-Forwarded-Proto: 1\r\n\
                   X-Dev-User: hostile-1\r\nConnection: close\r\n\r\n";
    let answer = e2e::raw_exchange(address, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    // ... and hostile forwarding headers beside a loopback Host reach the function, which answers.
    let request = "GET /conversations HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-Proto: 1\r\n\
                   X-Forwarded-Host: [\r\nX-Dev-User: hostile-1\r\nConnection: close\r\n\r\n";
    let answer = e2e::raw_exchange(address, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Still alive for the next caller.
    let next = reqwest::get(format!("http://{address}/health"))
        .await
        .unwrap();
    assert_eq!(next.status(), 200);
}

#[tokio::test]
async fn a_non_ascii_idempotency_key_is_refused_naming_the_header() {
    let address = local_server().await;
    let body = r#"{"message":"hello"}"#;
    let mut request = format!(
        "POST /chat HTTP/1.1\r\nHost: localhost\r\nX-Dev-User: hostile-2\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\
         Idempotency-Key: ",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice("ключ".as_bytes());
    request.extend_from_slice(b"\r\n\r\n");
    request.extend_from_slice(body.as_bytes());
    let answer = e2e::raw_exchange(address, &request).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // Chat answers through the streaming path: the body may come in chunked framing.
    let json = &answer[answer.find('{').unwrap()..=answer.rfind('}').unwrap()];
    let problem: Value = serde_json::from_str(json).unwrap();
    assert_eq!(problem["field"], "Idempotency-Key", "{problem}");
}
