//! The chat function through its handler: providers stubbed at the HTTP level in their real wire
//! formats (wiremock), DynamoDB and Secrets Manager on the local stack.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chat::{handle, State};
use e2e::{
    chat_request, chat_state, event, json_body, openai_reply, partition_count, private_table,
    rotate_secret, stack, unique, user_items, OPENAI_PATH,
};
use lambda_http::http::StatusCode;
use serde_json::{json, Value};
use wiremock::{
    matchers::{header, method, path},
    Mock, MockServer, Request, ResponseTemplate,
};

struct Harness {
    state: Arc<State>,
    openai: MockServer,
    gemini: MockServer,
    secret: String,
    table: String,
}

const GEMINI_PATH: &str = "/v1beta/models/gemini-test:generateContent";

/// A chat function whose providers are wiremock servers; `overrides` adjust its configuration.
async fn harness(overrides: &[(&str, &str)]) -> Harness {
    harness_in(None, overrides).await
}

async fn harness_in(table: Option<String>, overrides: &[(&str, &str)]) -> Harness {
    let stack = stack().await;
    let e2e::StubbedProviders {
        openai,
        gemini,
        secret,
        anthropic: _,
        config: chat_config,
    } = e2e::stubbed_providers(overrides).await;
    let mut config = stack.config.clone();
    config.secret_id = secret.clone();
    if let Some(table) = table {
        config.table_name = table;
    }
    let table = config.table_name.clone();
    let state = chat_state(&config, chat_config, &stack.clients);
    Harness {
        state: Arc::new(state),
        openai,
        gemini,
        secret,
        table,
    }
}

impl Harness {
    async fn chat(&self, user: &str, body: Value) -> (StatusCode, Value) {
        self.chat_with(user, &[], &body.to_string()).await
    }

    async fn chat_with(
        &self,
        user: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, Value) {
        let response = handle(&self.state, chat_request(Some(user), headers, body)).await;
        (response.status(), json_body(&response))
    }

    async fn stored(&self, user: &str) -> usize {
        partition_count(&self.table, user).await
    }
}

fn openai_error(status: u16, code: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "error": {"message": "stubbed failure", "type": "invalid_request_error", "param": null, "code": code}
    }))
}

fn gemini_reply() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "candidates": [{"content": {"parts": [{"text": "Hi "}, {"text": "there"}], "role": "model"}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 2, "totalTokenCount": 11},
        "modelVersion": "gemini-test"
    }))
}

fn gemini_error(status: u16, code: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(
        json!({"error": {"code": status, "message": "stubbed failure", "status": code}}),
    )
}

async fn bodies(server: &MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|request: &Request| serde_json::from_slice(&request.body).unwrap_or(Value::Null))
        .collect()
}

#[tokio::test]
async fn openai_answers_with_the_exact_request_and_the_turn_is_stored() {
    let h = harness(&[]).await;
    Mock::given(method("POST"))
        .and(path(OPENAI_PATH))
        .and(header("authorization", "Bearer sk-test-1"))
        .respond_with(openai_reply("Hello! How can I help?"))
        .expect(2)
        .mount(&h.openai)
        .await;
    let user = unique("u");

    let (status, first) = h
        .chat(
            &user,
            json!({"message": "  Hello there  ", "provider": "openai", "model": "gpt-test"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["reply"], "Hello! How can I help?");
    assert_eq!(first["provider"], "openai");
    assert_eq!(first["model"], "gpt-test");
    assert_eq!(
        first["usage"],
        json!({"input_tokens": 12, "output_tokens": 3})
    );
    assert_eq!(first["message_id"], "000000000002");
    assert!(first["created_at"].as_str().unwrap().ends_with('Z'));
    let conversation = first["conversation_id"].as_str().unwrap().to_owned();
    assert_eq!(h.stored(&user).await, 3, "head and both messages");

    let (status, second) = h
        .chat(
            &user,
            json!({"message": "And again?", "conversation_id": conversation}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["conversation_id"], conversation.as_str());
    assert_eq!(second["message_id"], "000000000004");

    let sent = bodies(&h.openai).await;
    assert_eq!(
        sent[0],
        json!({"model": "gpt-test", "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Hello there"}
        ], "max_tokens": 300})
    );
    assert_eq!(
        sent[1]["messages"],
        json!([
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Hello there"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "And again?"}
        ]),
        "the second turn carries the first as context"
    );
    assert_eq!(sent[1]["model"], "gpt-test", "the default model");
    assert_eq!(sent[1]["max_tokens"], 300, "every call carries the cap");
}

#[tokio::test]
async fn gemini_answers_with_its_own_roles_and_key_header() {
    let h = harness(&[]).await;
    Mock::given(method("POST"))
        .and(path(GEMINI_PATH))
        .and(header("x-goog-api-key", "g-test-1"))
        .respond_with(gemini_reply())
        .expect(2)
        .mount(&h.gemini)
        .await;
    let user = unique("u");
    let (status, first) = h
        .chat(&user, json!({"message": "Hi", "provider": "gemini"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["reply"], "Hi there");
    assert_eq!(first["model"], "gemini-test");
    assert_eq!(
        first["usage"],
        json!({"input_tokens": 9, "output_tokens": 2})
    );
    let conversation = first["conversation_id"].as_str().unwrap();
    let (status, _) = h
        .chat(
            &user,
            json!({"message": "More", "provider": "gemini", "conversation_id": conversation}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let sent = bodies(&h.gemini).await;
    assert_eq!(
        sent[1],
        json!({
            "contents": [
                {"role": "user", "parts": [{"text": "Hi"}]},
                {"role": "model", "parts": [{"text": "Hi there"}]},
                {"role": "user", "parts": [{"text": "More"}]}
            ],
            "systemInstruction": {"parts": [{"text": "Answer briefly."}]},
            "generationConfig": {"maxOutputTokens": 300}
        })
    );
    let received = h.gemini.received_requests().await.unwrap();
    assert!(
        received[0].headers.get("authorization").is_none(),
        "the key travels only in x-goog-api-key"
    );
}

#[tokio::test]
async fn a_ten_thousand_message_conversation_sends_only_the_last_n() {
    // A private table: the volume would slow every other test's transactions on the emulator.
    let table = private_table().await;
    let h = harness_in(Some(table.clone()), &[("HISTORY_CONTEXT_MESSAGES", "6")]).await;
    Mock::given(method("POST"))
        .and(path(OPENAI_PATH))
        .respond_with(openai_reply("ok"))
        .expect(2)
        .mount(&h.openai)
        .await;
    let user = unique("u");
    let (status, first) = h.chat(&user, json!({"message": "start"})).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let conversation = first["conversation_id"].as_str().unwrap();
    let id = shared::domain::ConversationId::parse(conversation).unwrap();
    e2e::seed_messages(&table, &user, &id, 3, 10_000).await;

    let (status, answer) = h
        .chat(
            &user,
            json!({"message": "latest", "conversation_id": conversation}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["message_id"], "000000010002");
    let sent = bodies(&h.openai).await;
    let contents: Vec<&str> = sent[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        [
            "Answer briefly.",
            "message 9995",
            "message 9996",
            "message 9997",
            "message 9998",
            "message 9999",
            "message 10000",
            "latest"
        ]
    );
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_after_a_401() {
    let h = harness(&[("LLM_PROVIDERS", "openai")]).await;
    rotate_secret(&h.secret, &json!({"openai_api_key": "sk-old"})).await;
    Mock::given(method("POST"))
        .and(header("authorization", "Bearer sk-old"))
        .respond_with(openai_error(401, "invalid_api_key"))
        .mount(&h.openai)
        .await;
    Mock::given(method("POST"))
        .and(header("authorization", "Bearer sk-new"))
        .respond_with(openai_reply("fresh"))
        .mount(&h.openai)
        .await;
    let user = unique("u");

    // The cache still holds the first value; the 401 makes the function read the secret again.
    let (status, _) = h.chat(&user, json!({"message": "warm the cache"})).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "sk-old is refused even after a refresh"
    );
    rotate_secret(&h.secret, &json!({"openai_api_key": "sk-new"})).await;
    let (status, answer) = h.chat(&user, json!({"message": "after rotation"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["reply"], "fresh");
    let keys: Vec<String> = h
        .openai
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            r.headers
                .get("authorization")
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(keys.last().map(String::as_str), Some("Bearer sk-new"));
    assert!(
        keys.iter()
            .filter(|k| k.as_str() == "Bearer sk-old")
            .count()
            >= 2
    );
    assert_eq!(h.stored(&user).await, 3, "only the successful turn");
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after() {
    let h = harness(&[]).await;
    Mock::given(method("POST"))
        .respond_with(openai_error(429, "rate_limit_exceeded").insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .mount(&h.openai)
        .await;
    Mock::given(method("POST"))
        .respond_with(openai_reply("after the wait"))
        .mount(&h.openai)
        .await;
    let started = Instant::now();
    let (status, answer) = h.chat(&unique("u"), json!({"message": "hi"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["reply"], "after the wait");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
    assert_eq!(h.openai.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn server_errors_are_retried_until_success() {
    let h = harness(&[]).await;
    Mock::given(method("POST"))
        .respond_with(openai_error(500, "server_error"))
        .up_to_n_times(2)
        .mount(&h.openai)
        .await;
    Mock::given(method("POST"))
        .respond_with(openai_reply("third time"))
        .mount(&h.openai)
        .await;
    let (status, answer) = h.chat(&unique("u"), json!({"message": "hi"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["reply"], "third time");
    assert_eq!(h.openai.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_timing_out_provider_falls_back_to_the_next() {
    let h = harness(&[
        ("PROVIDER_FALLBACK", "gemini"),
        ("LLM_REQUEST_TIMEOUT_MS", "200"),
        ("LLM_MAX_ATTEMPTS", "2"),
    ])
    .await;
    Mock::given(method("POST"))
        .respond_with(openai_reply("too late").set_delay(Duration::from_secs(3)))
        .mount(&h.openai)
        .await;
    Mock::given(method("POST"))
        .and(path(GEMINI_PATH))
        .respond_with(gemini_reply())
        .mount(&h.gemini)
        .await;
    let user = unique("u");
    let started = Instant::now();
    let (status, answer) = h.chat(&user, json!({"message": "hi"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["provider"], "gemini",
        "the response says who answered"
    );
    assert_eq!(answer["model"], "gemini-test");
    assert_eq!(
        h.openai.received_requests().await.unwrap().len(),
        2,
        "both attempts timed out"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(h.stored(&user).await, 3);
}

#[tokio::test]
async fn a_malformed_answer_is_a_failure_and_stores_nothing() {
    let h = harness(&[("LLM_PROVIDERS", "openai")]).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>proxy error</html>"))
        .mount(&h.openai)
        .await;
    let user = unique("u");
    let (status, problem) = h.chat(&user, json!({"message": "hi"})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert!(
        !problem.to_string().contains("proxy error"),
        "the provider's body is never passed on"
    );
    assert_eq!(h.stored(&user).await, 0);
}

#[tokio::test]
async fn when_every_provider_fails_the_answer_is_503_with_retry_after_and_nothing_is_stored() {
    let h = harness(&[("PROVIDER_FALLBACK", "gemini")]).await;
    Mock::given(method("POST"))
        .respond_with(openai_error(500, "server_error"))
        .mount(&h.openai)
        .await;
    Mock::given(method("POST"))
        .respond_with(gemini_error(503, "UNAVAILABLE"))
        .mount(&h.gemini)
        .await;
    let user = unique("u");
    let response = handle(
        &h.state,
        chat_request(Some(&user), &[], &json!({"message": "hi"}).to_string()),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_eq!(
        json_body(&response)["type"],
        "urn:serverless-chat:problem:unavailable"
    );
    assert_eq!(h.openai.received_requests().await.unwrap().len(), 3);
    assert_eq!(h.gemini.received_requests().await.unwrap().len(), 3);
    assert_eq!(h.stored(&user).await, 0);
}

#[tokio::test]
async fn a_provider_refusing_the_request_is_a_502_without_its_body() {
    let h = harness(&[("LLM_PROVIDERS", "openai")]).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": {"message": "secret internal detail", "type": "invalid_request_error", "code": null}})))
        .mount(&h.openai)
        .await;
    let user = unique("u");
    let (status, problem) = h.chat(&user, json!({"message": "hi"})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(problem["detail"].as_str().unwrap().contains("rejected"));
    assert!(!problem.to_string().contains("secret internal detail"));
    assert!(!problem.to_string().contains("sk-test-1"));
    assert_eq!(
        h.openai.received_requests().await.unwrap().len(),
        1,
        "a refusal is not retried"
    );
    assert_eq!(h.stored(&user).await, 0);
}

#[tokio::test]
async fn the_breaker_opens_after_repeated_failures_and_closes_after_a_good_probe() {
    let h = harness(&[
        ("LLM_PROVIDERS", "openai"),
        ("LLM_MAX_ATTEMPTS", "1"),
        ("BREAKER_FAILURES", "2"),
        ("BREAKER_COOLDOWN_MS", "300"),
    ])
    .await;
    Mock::given(method("POST"))
        .respond_with(openai_error(503, "overloaded"))
        .up_to_n_times(2)
        .mount(&h.openai)
        .await;
    Mock::given(method("POST"))
        .respond_with(openai_reply("recovered"))
        .mount(&h.openai)
        .await;
    let user = unique("u");
    for _ in 0..2 {
        let (status, _) = h.chat(&user, json!({"message": "hi"})).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(h.state.llm().breaker_state("openai"), Some("open"));
    let (status, _) = h.chat(&user, json!({"message": "hi"})).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "refused while open"
    );
    assert_eq!(
        h.openai.received_requests().await.unwrap().len(),
        2,
        "an open breaker sends nothing"
    );

    // The cool-down is the behaviour under test: wait it out, then one probe goes through.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let (status, answer) = h.chat(&user, json!({"message": "hi"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(h.state.llm().breaker_state("openai"), Some("closed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_retries_with_one_key_make_one_call_and_one_turn() {
    let h = harness(&[]).await;
    Mock::given(method("POST"))
        .respond_with(openai_reply("only once").set_delay(Duration::from_millis(300)))
        .expect(1)
        .mount(&h.openai)
        .await;
    let user = unique("u");
    let key = unique("idem");
    let body = json!({"message": "charge me once"}).to_string();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (state, user, key, body) = (
            Arc::clone(&h.state),
            user.clone(),
            key.clone(),
            body.clone(),
        );
        tasks.spawn(async move {
            let response = handle(
                &state,
                chat_request(Some(&user), &[("idempotency-key", &key)], &body),
            )
            .await;
            (response.status(), json_body(&response))
        });
    }
    let mut answers = Vec::new();
    let mut in_progress = 0;
    while let Some(result) = tasks.join_next().await {
        let (status, body) = result.unwrap();
        match status {
            StatusCode::OK => answers.push(body),
            StatusCode::CONFLICT => in_progress += 1,
            other => panic!("unexpected {other}: {body}"),
        }
    }
    // Those that arrived while the first was running retry, and get the first answer.
    for _ in 0..in_progress {
        let (status, body) = h
            .chat_with(&user, &[("idempotency-key", &key)], &body)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        answers.push(body);
    }
    assert_eq!(answers.len(), 50);
    assert!(
        answers.iter().all(|answer| answer == &answers[0]),
        "every answer is the first one"
    );
    assert_eq!(answers[0]["reply"], "only once");
    assert_eq!(
        h.stored(&user).await,
        3 + 1,
        "one turn and its idempotency record"
    );

    let (status, problem) = h
        .chat_with(
            &user,
            &[("idempotency-key", &key)],
            &json!({"message": "something else"}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(h.stored(&user).await, 4);
}

#[tokio::test]
async fn a_failed_request_releases_its_key_for_the_retry() {
    let h = harness(&[("LLM_PROVIDERS", "openai"), ("LLM_MAX_ATTEMPTS", "1")]).await;
    Mock::given(method("POST"))
        .respond_with(openai_error(500, "server_error"))
        .up_to_n_times(1)
        .mount(&h.openai)
        .await;
    Mock::given(method("POST"))
        .respond_with(openai_reply("second try"))
        .mount(&h.openai)
        .await;
    let user = unique("u");
    let key = [("idempotency-key", "retry-me")];
    let body = json!({"message": "hi"}).to_string();
    let (status, _) = h.chat_with(&user, &key, &body).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h.stored(&user).await, 0, "no turn and no record");
    let (status, answer) = h.chat_with(&user, &key, &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["reply"], "second try");
}

#[tokio::test]
async fn bad_requests_are_400s_naming_the_field_and_touch_nothing() {
    let h = harness(&[("MAX_MESSAGE_CHARS", "20")]).await;
    let user = unique("u");
    let cases: Vec<(String, &str)> = vec![
        (json!({}).to_string(), "message"),
        (json!({"message": ""}).to_string(), "message"),
        (json!({"message": "   \n\t "}).to_string(), "message"),
        (json!({"message": "x".repeat(21)}).to_string(), "message"),
        (json!({"message": 5}).to_string(), "message"),
        (json!({"message": ["hi"]}).to_string(), "message"),
        (
            json!({"message": "hi", "conversation_id": 7}).to_string(),
            "conversation_id",
        ),
        (
            json!({"message": "hi", "conversation_id": "nope"}).to_string(),
            "conversation_id",
        ),
        (
            json!({"message": "hi", "user_id": "someone"}).to_string(),
            "user_id",
        ),
        (
            json!({"message": "hi", "provider": "claude"}).to_string(),
            "provider",
        ),
        (
            json!({"message": "hi", "provider": 1}).to_string(),
            "provider",
        ),
        (
            json!({"message": "hi", "provider": "openai", "model": "gpt-9"}).to_string(),
            "model",
        ),
        ("hello".to_owned(), "body"),
        ("[1, 2]".to_owned(), "body"),
        ("{\"message\": \"hi\"} trailing".to_owned(), "body"),
        (String::new(), "body"),
    ];
    for (body, field) in cases {
        let (status, problem) = h.chat_with(&user, &[], &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
        assert_eq!(problem["field"], field, "{body}: {problem}");
    }
    let long_key = "k".repeat(129);
    let (status, problem) = h
        .chat_with(
            &user,
            &[("idempotency-key", &long_key)],
            &json!({"message": "hi"}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem["field"], "Idempotency-Key");

    let (status, problem) = h
        .chat_with(
            &user,
            &[],
            &json!({"message": "x".repeat(40_000)}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{problem}");

    let anonymous = handle(
        &h.state,
        chat_request(None, &[], &json!({"message": "hi"}).to_string()),
    )
    .await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    assert!(
        h.openai.received_requests().await.unwrap().is_empty(),
        "no provider was called"
    );
    assert_eq!(h.stored(&user).await, 0, "nothing was stored");
}

#[tokio::test]
async fn an_unknown_or_foreign_conversation_is_404_before_any_provider_call() {
    let h = harness(&[]).await;
    Mock::given(method("POST"))
        .respond_with(openai_reply("mine"))
        .expect(1)
        .mount(&h.openai)
        .await;
    let (owner, intruder) = (unique("u"), unique("u"));
    let (_, first) = h.chat(&owner, json!({"message": "private"})).await;
    let conversation = first["conversation_id"].as_str().unwrap();
    for id in [
        conversation.to_owned(),
        shared::domain::ConversationId::generate().to_string(),
    ] {
        let (status, _) = h
            .chat(
                &intruder,
                json!({"message": "let me in", "conversation_id": id}),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    assert_eq!(h.stored(&intruder).await, 0);
    assert_eq!(h.stored(&owner).await, 3);
}

#[tokio::test]
async fn the_sample_event_gets_200_from_the_echo_provider() {
    let _sample_user = e2e::hold_sample_user().await;
    let h = harness(&[("LLM_PROVIDERS", "echo")]).await;
    let req = lambda_http::request::from_str(&event("chat-post.json")).expect("a valid event");
    let response = handle(&h.state, req).await;
    let body = json_body(&response);
    assert_eq!(response.status(), StatusCode::OK, "{body}");
    assert_eq!(body["provider"], "echo");
    assert_eq!(
        body["reply"],
        "echo: What is a good name for a sourdough starter?"
    );
    // The event's own Idempotency-Key: sent again, it is a replay.
    let again = handle(
        &h.state,
        lambda_http::request::from_str(&event("chat-post.json")).unwrap(),
    )
    .await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(
        again.body().as_ref(),
        response.body().as_ref(),
        "a replay is the first answer, byte for byte"
    );
}

/// A chat function (echo provider) whose DynamoDB is at `endpoint`, each call bounded by 3 s:
/// short enough for a hung write to time out several times within a test, long enough for the
/// calls that pass through (the budget's admission) on an emulator busy with the other tests.
async fn state_with_table_at(endpoint: std::net::SocketAddr) -> State {
    let stack = stack().await;
    let clients = shared::aws::AwsClients {
        dynamodb: e2e::dynamodb_at(endpoint, Duration::from_secs(3)).await,
        secrets: stack.clients.secrets.clone(),
    };
    chat_state(&stack.config, e2e::echo_chat(), &clients)
}

/// A chat request from `user` in an invocation with `left` before Lambda's deadline.
fn request_with_time_left(
    user: &str,
    headers: &[(&str, &str)],
    left: Duration,
) -> lambda_http::Request {
    let mut context = lambda_runtime::Context::default();
    context.deadline = u64::try_from(
        (std::time::SystemTime::now() + left)
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    lambda_http::RequestExt::with_lambda_context(
        chat_request(Some(user), headers, r#"{"message":"hello"}"#),
        context,
    )
}

#[tokio::test]
async fn a_turn_whose_write_cannot_finish_answers_before_the_lambda_deadline() {
    // A table whose turn transactions never get an answer (the budget's admission before them
    // does): every write attempt times out, and append_turn retries timed-out writes (it cannot
    // know whether they landed) eight times.
    let (address, hold) = e2e::proxy("TransactWriteItems", e2e::Fault::Hang).await;
    let state = state_with_table_at(address).await;
    // The invocation has 8 s left; answering takes 0.5 s of it, so the work (the budget's
    // admission, the provider) and the write attempts share 7.5 s.
    let left = Duration::from_millis(8_000);
    let request = request_with_time_left(&unique("late"), &[], left);
    let started = Instant::now();
    let response = handle(&state, request).await;
    let took = started.elapsed();
    hold.abort();

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let body = json_body(&response);
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("may have been stored")),
        "{body}"
    );
    // Bounded by the deadline, not by eight one-second attempts and their backoff.
    assert!(took < left, "answered after {took:?}");
}

#[tokio::test]
async fn an_unconfirmed_turn_keeps_its_idempotency_key_claimed() {
    // Reads and the key's claim reach the table; the turn's transaction never gets an answer.
    let (address, proxy) = e2e::proxy("TransactWriteItems", e2e::Fault::Hang).await;
    let state = state_with_table_at(address).await;
    let user = unique("unconfirmed");
    let key = [("idempotency-key", "turn-1")];
    let response = handle(
        &state,
        // Room for the budget's admission on a busy emulator, before the write.
        request_with_time_left(&user, &key, Duration::from_millis(8_000)),
    )
    .await;
    proxy.abort();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);

    // The turn may have landed, so its key must not be free for a second run: the record is
    // still there, claimed, until its lease ends.
    let items = user_items(&user).await;
    let record = items
        .iter()
        .find(|item| {
            item["SK"].as_s().is_ok_and(|sk| {
                let key = shared::store::IdempotencyKey::parse("turn-1").unwrap();
                *sk == shared::store::keys::idempotency(&key)
            })
        })
        .expect("the idempotency record is kept");
    assert_eq!(
        record["status"].as_s().ok().map(String::as_str),
        Some("in_progress")
    );
}

#[tokio::test]
async fn a_retry_after_beyond_any_deadline_ends_the_provider_not_the_process() {
    // Without a fallback: the one provider asks for a pause of 2^64 - 1 seconds.
    let h = harness(&[("LLM_PROVIDERS", "openai")]).await;
    Mock::given(method("POST"))
        .respond_with(
            openai_error(429, "rate_limit_exceeded")
                .insert_header("retry-after", "18446744073709551615"),
        )
        .mount(&h.openai)
        .await;
    let user = unique("u");
    let started = Instant::now();
    let (status, problem) = h.chat(&user, json!({"message": "hi"})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert!(started.elapsed() < Duration::from_secs(5), "no pause taken");
    assert_eq!(h.openai.received_requests().await.unwrap().len(), 1);
    assert_eq!(h.stored(&user).await, 0);
}

#[tokio::test]
async fn a_deleted_conversations_reply_is_not_replayed() {
    let h = harness(&[("LLM_PROVIDERS", "echo")]).await;
    let user = unique("u");
    let (_, first) = h.chat(&user, json!({"message": "start"})).await;
    let conversation = first["conversation_id"].as_str().unwrap().to_owned();
    let body = json!({"message": "again", "conversation_id": conversation}).to_string();
    let key = [("idempotency-key", "deleted-1")];
    let (status, _) = h.chat_with(&user, &key, &body).await;
    assert_eq!(status, StatusCode::OK);

    let owner = shared::domain::UserId::parse(&user).unwrap();
    let id = shared::domain::ConversationId::parse(&conversation).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    e2e::store()
        .await
        .delete_conversation(&owner, &id, deadline)
        .await
        .unwrap();
    // The same key and body: the conversation is gone, and so is its stored answer.
    let (status, problem) = h.chat_with(&user, &key, &body).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    assert_eq!(h.stored(&user).await, 0, "nothing of it is kept");
}

#[tokio::test]
async fn a_turn_whose_answer_was_lost_is_replayed_after_the_lease_never_stored_twice() {
    // The turn's transaction reaches the table and lands; its answer never comes back.
    let (address, proxy) = e2e::proxy("TransactWriteItems", e2e::Fault::LoseAnswer).await;
    let lossy = state_with_table_at(address).await;
    let user = unique("lost");
    let key = [("idempotency-key", "lost-1")];
    let left = Duration::from_millis(8_000);
    let response = handle(&lossy, request_with_time_left(&user, &key, left)).await;
    proxy.abort();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);

    // The client retries after the first request's lease (its invocation's time) has run out.
    tokio::time::sleep(left).await;
    let healthy = e2e::echo_chat_state().await;
    let retry = handle(&healthy, request_with_time_left(&user, &key, left)).await;
    let body = json_body(&retry);
    assert_eq!(retry.status(), StatusCode::OK, "{body}");
    assert_eq!(retry.headers()["idempotent-replayed"], "true", "{body}");
    assert_eq!(body["message_id"], "000000000002");
    let items = user_items(&user).await;
    let messages = items
        .iter()
        .filter(|item| item.contains_key("role"))
        .count();
    assert_eq!(messages, 2, "one turn, stored once");
}

#[tokio::test]
async fn a_write_that_may_have_landed_stays_maybe_stored_whatever_the_next_attempt_says() {
    // The first transaction lands and its answer is lost; the retry of the same write is
    // refused with an error that proves nothing about the first.
    let calls = std::sync::Arc::default();
    let (address, proxy) = e2e::proxy(
        "TransactWriteItems",
        e2e::Fault::LoseAnswerThenRefuse(calls),
    )
    .await;
    let lossy = state_with_table_at(address).await;
    let user = unique("maybe");
    let key = [("idempotency-key", "maybe-1")];
    let left = Duration::from_millis(8_000);
    let response = handle(&lossy, request_with_time_left(&user, &key, left)).await;
    proxy.abort();
    let body = json_body(&response);
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{body}");

    // The key stayed claimed: after the lease, the retry is answered from the stored turn.
    tokio::time::sleep(left).await;
    let healthy = e2e::echo_chat_state().await;
    let retry = handle(&healthy, request_with_time_left(&user, &key, left)).await;
    let body = json_body(&retry);
    assert_eq!(retry.status(), StatusCode::OK, "{body}");
    assert_eq!(retry.headers()["idempotent-replayed"], "true", "{body}");
    let items = e2e::partition_items(&stack().await.config.table_name, &user).await;
    let messages = items
        .iter()
        .filter(|item| item.contains_key("role"))
        .count();
    assert_eq!(messages, 2, "one turn, stored once");
}

#[tokio::test]
async fn an_admission_that_meets_a_turn_in_flight_is_retried_and_charged_once() {
    // The user's day is open; the next admission's update on the budget item meets the previous
    // turn's transaction, which settles that item (DynamoDB: TransactionConflictException).
    let user = unique("conflict");
    let healthy = e2e::echo_chat_state().await;
    let first = handle(
        &healthy,
        chat_request(Some(&user), &[], r#"{"message":"one"}"#),
    )
    .await;
    assert_eq!(first.status(), StatusCode::OK);
    let answered = Arc::default();
    let fault = e2e::Fault::ConflictOnce {
        on: format!(r#""S":"{}""#, shared::store::keys::usage()),
        answered: Arc::clone(&answered),
    };
    let (address, proxy) = e2e::proxy("UpdateItem", fault).await;
    let state = state_with_table_at(address).await;
    let response = handle(
        &state,
        chat_request(Some(&user), &[], r#"{"message":"two"}"#),
    )
    .await;
    proxy.abort();
    let body = json_body(&response);
    assert_eq!(response.status(), StatusCode::OK, "{body}");
    assert_eq!(answered.load(std::sync::atomic::Ordering::SeqCst), 1);

    let items = user_items(&user).await;
    let replies = items.iter().filter(|item| e2e::is_reply(item)).count();
    let budget = items.iter().find(|item| e2e::is_budget_item(item)).unwrap();
    assert_eq!(replies, 2);
    assert_eq!(
        budget["turns"].as_n().map(String::as_str),
        Ok("2"),
        "charged once"
    );
}

/// `GET /models` as `user`.
async fn models(harness: &Harness, user: Option<&str>) -> (StatusCode, Value, Option<String>) {
    let req = e2e::api_request("GET", "/models", &[], None, user);
    let response = handle(&harness.state, req).await;
    let cache = response
        .headers()
        .get("cache-control")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    (response.status(), json_body(&response), cache)
}

#[tokio::test]
async fn models_lists_the_providers_with_keys_and_the_default_first() {
    let harness = harness(&[("LLM_DEFAULT_PROVIDER", "gemini")]).await;
    let (status, body, cache) = models(&harness, Some("models-user")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({
            "default": {"provider": "gemini", "model": "gemini-test"},
            "providers": [
                {"name": "gemini", "models": ["gemini-test"]},
                {"name": "openai", "models": ["gpt-test", "gpt-other"]},
                {"name": "echo", "models": ["echo-1"]},
            ]
        })
    );
    assert_eq!(cache.as_deref(), Some("private, max-age=300"));
    assert!(
        !body.to_string().contains("sk-test"),
        "a key leaked: {body}"
    );

    let (status, problem, _) = models(&harness, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
}

#[tokio::test]
async fn models_leaves_out_a_provider_without_a_key() {
    let harness = harness(&[]).await;
    let only_gemini = e2e::secret_with(&json!({"gemini_api_key": "g-test-1"})).await;
    let stack = stack().await;
    let mut config = stack.config.clone();
    config.secret_id = only_gemini;
    let chat_config = e2e::stubbed_providers(&[]).await.config;
    let state = chat_state(&config, chat_config, &stack.clients);
    let harness = Harness {
        state: Arc::new(state),
        ..harness
    };
    let (status, body, _) = models(&harness, Some("models-user")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let names: Vec<&str> = body["providers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|provider| provider["name"].as_str())
        .collect();
    assert_eq!(names, ["gemini", "echo"]);
    // The configured default (openai) has no key: the first offered one is preselected.
    assert_eq!(
        body["default"],
        json!({"provider": "gemini", "model": "gemini-test"})
    );
}

/// The contents of the messages a provider request carried, system prompt left out.
fn sent_contents(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] != "system")
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn an_edit_and_a_regeneration_send_their_branch_and_replay_by_key() {
    let h = harness(&[]).await;
    Mock::given(method("POST"))
        .and(path(OPENAI_PATH))
        .respond_with(openai_reply("r"))
        .mount(&h.openai)
        .await;
    let user = unique("u");
    let (_, first) = h.chat(&user, json!({"message": "q1"})).await;
    let conversation = first["conversation_id"].as_str().unwrap().to_owned();
    assert_eq!(first["user_message_id"], "000000000001");
    let (status, second) = h
        .chat(
            &user,
            json!({"message": "q2", "conversation_id": conversation}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["message_id"], "000000000004");

    // Edit q2: a turn under the first reply. The provider sees q1, r, and the edit only.
    let edit = json!({"message": "q2 edited", "conversation_id": conversation, "parent_id": "000000000002"});
    let key = [("idempotency-key", "edit-1")];
    let (status, edited) = h.chat_with(&user, &key, &edit.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert_eq!(edited["user_message_id"], "000000000005");
    assert_eq!(edited["message_id"], "000000000006");
    let sent = bodies(&h.openai).await;
    assert_eq!(sent_contents(&sent[2]), ["q1", "r", "q2 edited"]);
    // The same request with the same key is the same answer, not a second turn.
    let stored = h.stored(&user).await;
    let (status, replayed) = h.chat_with(&user, &key, &edit.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replayed, edited);
    assert_eq!(h.stored(&user).await, stored);
    assert_eq!(
        bodies(&h.openai).await.len(),
        3,
        "no provider call for the replay"
    );
    // The same key with another parent is another request.
    let other = json!({"message": "q2 edited", "conversation_id": conversation, "parent_id": null});
    let (status, _) = h.chat_with(&user, &key, &other.to_string()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // Regenerate the first reply: no new user message, the context ends with q1.
    let again = json!({"regenerate": "000000000002", "conversation_id": conversation});
    let key = [("idempotency-key", "regen-1")];
    let (status, regenerated) = h.chat_with(&user, &key, &again.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{regenerated}");
    assert_eq!(regenerated["user_message_id"], "000000000001");
    assert_eq!(regenerated["message_id"], "000000000007");
    let sent = bodies(&h.openai).await;
    assert_eq!(sent_contents(&sent[3]), ["q1"]);
    let (status, replayed) = h.chat_with(&user, &key, &again.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replayed, regenerated);
    assert_eq!(bodies(&h.openai).await.len(), 4);

    // The next plain turn answers from the active leaf: the regenerated reply.
    let (status, next) = h
        .chat(
            &user,
            json!({"message": "q3", "conversation_id": conversation}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{next}");
    let sent = bodies(&h.openai).await;
    assert_eq!(sent_contents(&sent[4]), ["q1", "r", "q3"]);
    let store = e2e::store().await;
    let user_id = shared::domain::UserId::parse(&user).unwrap();
    let id = shared::domain::ConversationId::parse(&conversation).unwrap();
    let branch = store
        .recent_messages(&user_id, &id, shared::store::BranchEnd::Newest, 10)
        .await
        .unwrap();
    let seqs: Vec<u64> = branch.iter().map(|m| m.id.seq()).collect();
    assert_eq!(seqs, [1, 7, 8, 9]);
    assert_eq!(
        branch[1]
            .siblings
            .iter()
            .map(|s| s.seq())
            .collect::<Vec<_>>(),
        [2, 7]
    );
}

#[tokio::test]
async fn a_turn_that_names_what_it_may_not_is_a_400_and_stores_nothing() {
    let h = harness(&[]).await;
    Mock::given(method("POST"))
        .respond_with(openai_reply("r"))
        .mount(&h.openai)
        .await;
    let user = unique("u");
    let (_, first) = h.chat(&user, json!({"message": "q1"})).await;
    let conversation = first["conversation_id"].as_str().unwrap().to_owned();
    let stored = h.stored(&user).await;
    let cases = [
        (
            json!({"message": "x", "parent_id": "000000000002"}),
            StatusCode::BAD_REQUEST,
            "conversation_id",
        ),
        (
            json!({"message": "x", "conversation_id": conversation, "parent_id": "000000000001"}),
            StatusCode::BAD_REQUEST,
            "parent_id",
        ),
        (
            json!({"message": "x", "conversation_id": conversation, "parent_id": "two"}),
            StatusCode::BAD_REQUEST,
            "parent_id",
        ),
        (
            json!({"message": "x", "conversation_id": conversation, "parent_id": 2}),
            StatusCode::BAD_REQUEST,
            "parent_id",
        ),
        (
            json!({"regenerate": "000000000001", "conversation_id": conversation}),
            StatusCode::BAD_REQUEST,
            "regenerate",
        ),
        (
            json!({"regenerate": "000000000002"}),
            StatusCode::BAD_REQUEST,
            "conversation_id",
        ),
        (
            json!({"regenerate": "000000000002", "conversation_id": conversation, "message": "x"}),
            StatusCode::BAD_REQUEST,
            "message",
        ),
        (
            json!({"regenerate": "000000000002", "conversation_id": conversation, "parent_id": null}),
            StatusCode::BAD_REQUEST,
            "parent_id",
        ),
        (
            json!({"conversation_id": conversation}),
            StatusCode::BAD_REQUEST,
            "message",
        ),
    ];
    for (body, expected, field) in cases {
        let (status, problem) = h.chat(&user, body.clone()).await;
        assert_eq!(status, expected, "{body}: {problem}");
        assert_eq!(problem["field"], field, "{body}: {problem}");
    }
    for body in [
        json!({"message": "x", "conversation_id": conversation, "parent_id": "000000000099"}),
        json!({"regenerate": "000000000099", "conversation_id": conversation}),
    ] {
        let (status, problem) = h.chat(&user, body.clone()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains("message"),
            "{problem}"
        );
    }
    assert_eq!(h.stored(&user).await, stored, "nothing stored");
    assert_eq!(bodies(&h.openai).await.len(), 1, "no provider call");
    // The refused turns gave their ids back: the next turn takes 3 and 4.
    let (status, next) = h
        .chat(
            &user,
            json!({"message": "q2", "conversation_id": conversation}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{next}");
    assert_eq!(next["message_id"], "000000000004");
}
