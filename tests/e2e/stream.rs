//! Streamed chat turns (`Accept: text/event-stream`): the events, what is stored when the reply
//! ends, is stopped by the client, or breaks midway, replays, and a real SSE client through the
//! local API server.

use std::time::{Duration, Instant};

use chat::{handle, State};
use e2e::{chat_request, json_body, secret_with, stack, unique, user_items};
use futures_util::StreamExt;
use lambda_http::http::StatusCode;
use serde_json::{json, Value};
use shared::http::AnswerBody;
use wiremock::{matchers::method, Mock, MockServer, ResponseTemplate};

const SSE: (&str, &str) = ("accept", "text/event-stream");

/// A chat function with `overrides`; OpenAI-compatible provider stubbed by `openai`.
async fn state(openai: Option<&MockServer>, overrides: &[(&str, &str)]) -> State {
    let stack = stack().await;
    let mut config = stack.config.clone();
    let url = openai.map(|openai| format!("{}/v1", openai.uri()));
    // Later settings win over earlier ones.
    let mut vars = vec![("LLM_PROVIDERS", "echo"), ("LLM_MAX_ATTEMPTS", "1")];
    if let Some(url) = &url {
        vars.extend([
            ("LLM_PROVIDERS", "openai"),
            ("OPENAI_BASE_URL", url.as_str()),
        ]);
        config.secret_id = secret_with(&json!({"openai_api_key": "sk-stream"})).await;
    }
    vars.extend_from_slice(overrides);
    e2e::chat_state(&config, e2e::chat_config(&vars), &stack.clients)
}

/// The events of a streamed answer, as (event, data) pairs, read to its end.
async fn events(body: AnswerBody) -> Vec<(String, Value)> {
    use eventsource_stream::Eventsource;
    let mut stream = body.eventsource();
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        let event = event.expect("well-formed events");
        events.push((
            event.event,
            serde_json::from_str(&event.data).expect("JSON data"),
        ));
    }
    events
}

/// The names of `events`, in order.
fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(name, _)| name.as_str()).collect()
}

/// OpenAI's streaming wire format: chunks of `delta.content`, a usage chunk, `[DONE]`.
fn openai_stream(pieces: &[&str], end: &str) -> ResponseTemplate {
    let mut body = String::new();
    for piece in pieces {
        let chunk = json!({"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]});
        body.push_str(&format!("data: {chunk}\n\n"));
    }
    body.push_str(end);
    ResponseTemplate::new(200).set_body_raw(body, "text/event-stream")
}

fn usage_and_done() -> String {
    let usage = json!({"id": "c1", "object": "chat.completion.chunk", "choices": [],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}});
    format!("data: {usage}\n\ndata: [DONE]\n\n")
}

/// The assistant messages stored for `user`, as (content, ending).
async fn stored_replies(user: &str) -> Vec<(String, Option<String>)> {
    user_items(user)
        .await
        .iter()
        .filter(|item| e2e::is_reply(item))
        .map(|item| {
            let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
            (text("content").unwrap_or_default(), text("ending"))
        })
        .collect()
}

#[tokio::test]
async fn a_streamed_turn_sends_start_deltas_and_done_and_is_stored_whole() {
    let openai = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(openai_stream(&["Hel", "lo ", "there"], &usage_and_done()))
        .expect(1)
        .mount(&openai)
        .await;
    let state = state(Some(&openai), &[]).await;
    let user = unique("s");
    let response = handle(
        &state,
        chat_request(Some(&user), &[SSE], r#"{"message":"hi"}"#),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = events(response.into_body()).await;
    let names = names(&events);
    assert_eq!(names, ["start", "delta", "delta", "delta", "done"]);
    let start = &events[0].1;
    assert_eq!(start["user_message_id"], "000000000001");
    assert_eq!(start["message_id"], "000000000002");
    assert_eq!(start["provider"], "openai");
    let text: String = events[1..4]
        .iter()
        .map(|(_, data)| data["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Hello there");
    let done = &events[4].1;
    assert_eq!(done["reply"], "Hello there");
    assert_eq!(done["conversation_id"], start["conversation_id"]);
    assert_eq!(done["message_id"], "000000000002");
    assert_eq!(
        done["usage"],
        json!({"input_tokens": 7, "output_tokens": 3})
    );
    assert!(done.get("ending").is_none(), "a complete reply: {done}");
    assert_eq!(
        stored_replies(&user).await,
        [("Hello there".to_owned(), None)]
    );
}

#[tokio::test]
async fn without_the_accept_header_the_answer_is_json_as_before() {
    let state = state(None, &[]).await;
    let response = handle(
        &state,
        chat_request(Some(&unique("s")), &[], r#"{"message":"hi"}"#),
    )
    .await;
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(json_body(&response)["reply"], "echo: hi");
}

#[tokio::test]
async fn a_client_that_leaves_stops_the_reply_and_the_partial_is_stored_as_stopped() {
    // Echo streams word by word, a word every 300 ms: 2 s for the whole reply.
    let state = state(None, &[("ECHO_TOKEN_DELAY_MS", "300")]).await;
    let user = unique("stop");
    let words = "one two three four five six seven";
    let body = json!({"message": words}).to_string();
    let key = [SSE, ("idempotency-key", "stop-1")];
    let response = handle(&state, chat_request(Some(&user), &key, &body)).await;
    let mut stream = eventsource_stream::Eventsource::eventsource(response.into_body());
    let started = Instant::now();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.event, "start");
    let delta = stream.next().await.unwrap().unwrap();
    assert_eq!(delta.event, "delta");
    drop(stream); // the Stop button

    // The producer notices at once and stores what was generated, marked stopped.
    let stored = loop {
        let stored = stored_replies(&user).await;
        if !stored.is_empty() || started.elapsed() > Duration::from_secs(10) {
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(stored.len(), 1, "{stored:?}");
    let (content, ending) = &stored[0];
    assert_eq!(ending.as_deref(), Some("stopped"));
    // Had the generation gone on, the whole reply would have been stored: it stopped.
    assert!(
        content.starts_with("echo:") && content.len() < format!("echo: {words}").len(),
        "a partial reply: {content:?}"
    );
    // The same key replays the stopped reply.
    let again = handle(
        &state,
        chat_request(Some(&user), &[("idempotency-key", "stop-1")], &body),
    )
    .await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let answer = json_body(&again);
    assert_eq!(answer["ending"], "stopped");
    assert_eq!(answer["reply"].as_str(), Some(content.as_str()));
}

#[tokio::test]
async fn a_stream_that_breaks_midway_ends_with_error_and_keeps_the_partial_as_incomplete() {
    let openai = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(openai_stream(&["Part", "ial"], "data: {not json\n\n"))
        .mount(&openai)
        .await;
    let state = state(Some(&openai), &[]).await;
    let user = unique("broken");
    let key = [SSE, ("idempotency-key", "broken-1")];
    let response = handle(
        &state,
        chat_request(Some(&user), &key, r#"{"message":"hi"}"#),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let first = events(response.into_body()).await;
    let names = names(&first);
    assert_eq!(names, ["start", "delta", "delta", "error"]);
    let problem = &first[3].1;
    assert_eq!(problem["status"], 502, "{problem}");
    assert!(problem["request_id"].is_string());
    assert_eq!(
        stored_replies(&user).await,
        [("Partial".to_owned(), Some("incomplete".to_owned()))]
    );
    // The key was given back: a retry generates anew (and the stub breaks again).
    let retry = handle(
        &state,
        chat_request(Some(&user), &key, r#"{"message":"hi"}"#),
    )
    .await;
    assert!(retry.headers().get("idempotent-replayed").is_none());
    assert_eq!(events(retry.into_body()).await.len(), 4);
}

#[tokio::test]
async fn a_failure_before_the_first_token_is_an_ordinary_problem_answer_that_changes_nothing() {
    let openai = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&openai)
        .await;
    let state = state(Some(&openai), &[]).await;
    let user = unique("none");
    let response = handle(
        &state,
        chat_request(Some(&user), &[SSE], r#"{"message":"hi"}"#),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(response.headers().contains_key("retry-after"));
    assert!(stored_replies(&user).await.is_empty());

    // On an existing conversation, the failed turn leaves it as it was.
    let owner = e2e::user();
    let id = e2e::start_conversation(&e2e::store().await, &owner, "Kept", "q", "a").await;
    let items = || async { user_items(&owner).await };
    let before = items().await;

    let body = json!({"message": "hi", "conversation_id": id.as_str()}).to_string();
    let response = handle(&state, chat_request(Some(owner.as_str()), &[SSE], &body)).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);

    // The head's count, `updated_at` and expiry are as they were (its change counter may move),
    // and nothing else was written but the budget's counters.
    let without_counters = |items: Vec<e2e::Item>| -> Vec<e2e::Item> {
        items
            .into_iter()
            .filter(|item| !e2e::is_budget_item(item))
            .map(|mut item| {
                item.remove("version");
                item
            })
            .collect()
    };
    assert_eq!(without_counters(items().await), without_counters(before));
}

#[tokio::test]
async fn a_finished_stream_is_replayed_as_events() {
    let state = state(None, &[]).await;
    let user = unique("replay");
    let key = [SSE, ("idempotency-key", "replay-1")];
    let first = handle(
        &state,
        chat_request(Some(&user), &key, r#"{"message":"hi there"}"#),
    )
    .await;
    let first = events(first.into_body()).await;
    let again = handle(
        &state,
        chat_request(Some(&user), &key, r#"{"message":"hi there"}"#),
    )
    .await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again = events(again.into_body()).await;
    let names = names(&again);
    assert_eq!(names, ["start", "delta", "done"]);
    assert_eq!(again[0].1, first[0].1, "the same start");
    assert_eq!(again[1].1["text"], "echo: hi there");
    assert_eq!(again[2].1, first.last().unwrap().1, "the same done");
    assert_eq!(stored_replies(&user).await.len(), 1, "one turn");
}

#[tokio::test]
async fn the_local_server_streams_events_to_a_real_sse_client_as_they_come() {
    use eventsource_stream::Eventsource;
    let stack = stack().await;
    let chat = e2e::echo_chat();
    let functions =
        local_api::Functions::new(stack.config, chat, e2e::feedback_config(), stack.clients)
            .expect("states");
    let address = e2e::local_server(functions).await;
    let response = reqwest::Client::new()
        .post(format!("http://{address}/chat"))
        .header("x-dev-user", unique("curl"))
        .header("accept", "text/event-stream")
        .header("content-type", "application/json")
        .body(r#"{"message":"a b c d","provider":"echo"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut stream = response.bytes_stream().eventsource();
    let mut names = Vec::new();
    while let Some(event) = stream.next().await {
        names.push(event.unwrap().event);
    }
    assert_eq!(names.first().map(String::as_str), Some("start"));
    assert_eq!(names.last().map(String::as_str), Some("done"));
    assert_eq!(
        names.iter().filter(|name| *name == "delta").count(),
        5,
        "{names:?}"
    );
}

#[tokio::test]
async fn a_reply_too_long_to_store_is_stored_cut_and_says_so_whole_or_streamed() {
    use shared::store::Reply;
    // A provider that ignores the output cap: 450 KB of reply (over DynamoDB's 400 KB item), in
    // 50 KB pieces.
    let piece = "word ".repeat(10_000);
    let pieces = [piece.as_str(); 9];
    let openai = MockServer::start().await;
    Mock::given(method("POST"))
        .and(wiremock::matchers::body_partial_json(
            json!({"stream": true}),
        ))
        .respond_with(openai_stream(&pieces, &usage_and_done()))
        .mount(&openai)
        .await;
    Mock::given(method("POST"))
        .respond_with(e2e::openai_reply(&pieces.concat()))
        .mount(&openai)
        .await;
    let state = state(Some(&openai), &[]).await;

    let user = unique("long");
    let whole = handle(
        &state,
        chat_request(Some(&user), &[], r#"{"message":"hi"}"#),
    )
    .await;
    assert_eq!(whole.status(), StatusCode::OK);
    let reply = json_body(&whole)["reply"].as_str().unwrap().to_owned();
    assert!(reply.len() <= Reply::MAX_CONTENT_BYTES, "{}", reply.len());
    assert!(reply.ends_with(Reply::CUT_NOTICE));
    assert_eq!(
        stored_replies(&user).await,
        [(reply, Some("incomplete".to_owned()))]
    );

    let user = unique("long");
    let response = handle(
        &state,
        chat_request(Some(&user), &[SSE], r#"{"message":"hi"}"#),
    )
    .await;
    let events = events(response.into_body()).await;
    assert_eq!(names(&events).last(), Some(&"done"), "{:?}", names(&events));
    let streamed: String = events
        .iter()
        .filter(|(name, _)| name == "delta")
        .map(|(_, data)| data["text"].as_str().unwrap())
        .collect();
    assert!(streamed.ends_with(Reply::CUT_NOTICE));
    assert!(streamed.len() <= Reply::MAX_CONTENT_BYTES);
    assert_eq!(
        stored_replies(&user).await,
        [(streamed, Some("incomplete".to_owned()))],
        "stored as the client saw it"
    );
}

#[tokio::test]
async fn a_streamed_regeneration_announces_the_message_it_answers_and_replays_by_key() {
    let state = state(None, &[]).await;
    let user = unique("regen");
    let first = handle(
        &state,
        chat_request(Some(&user), &[], r#"{"message":"q1"}"#),
    )
    .await;
    let first = json_body(&first);
    let conversation = first["conversation_id"].as_str().unwrap().to_owned();
    let body = json!({"regenerate": "000000000002", "conversation_id": conversation}).to_string();
    let headers = [SSE, ("idempotency-key", "regen-stream")];
    let mut seen = Vec::new();
    for _ in 0..2 {
        let response = handle(&state, chat_request(Some(&user), &headers, &body)).await;
        assert_eq!(response.status(), StatusCode::OK);
        let events = events(response.into_body()).await;
        assert_eq!(names(&events).first(), Some(&"start"));
        assert_eq!(names(&events).last(), Some(&"done"));
        let start = &events[0].1;
        assert_eq!(start["user_message_id"], "000000000001", "{start}");
        assert_eq!(start["message_id"], "000000000003", "{start}");
        seen.push(events.last().unwrap().1.clone());
    }
    assert_eq!(seen[0], seen[1], "the retry replays the stored answer");
    assert_eq!(seen[0]["user_message_id"], "000000000001");
    // The first turn's two messages, the regenerated reply and its parent's children item,
    // besides the head, one idempotency record and the budget's day.
    let mut kinds: Vec<String> = user_items(&user)
        .await
        .iter()
        .map(|item| {
            let key = item["SK"].as_s().unwrap();
            let kind = key.split('#').next().unwrap().to_owned();
            if key.ends_with("#children") {
                "children".to_owned()
            } else {
                kind
            }
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        ["CONV", "IDEM", "MSG", "MSG", "MSG", "USAGE", "children"]
    );
}
