//! Anthropic's Messages API, stubbed at the HTTP level in its wire format (wiremock): whole and
//! streamed answers with their usage (prompt caching's input too), the request's headers and
//! body, the roles made to alternate, its failures (529 and 429 retried, 400 refused, an `error`
//! event midway), and a streamed turn through the local API server, stored and settled.

use std::time::{Duration, Instant};

use crate::provider_turns::{assert_fell_back_to_echo, local_streamed_turn};
use e2e::{drain, stack};
use serde_json::{json, Value};
use shared::{
    domain::{Role, TokenUsage},
    llm::{Choice, ContextMessage, Llm, LlmError, ReplyStream, StreamError, Unmetered},
    secrets::ProviderKeys,
};
use wiremock::{
    matchers::{body_partial_json, header, method, path, query_param},
    Mock, MockServer, ResponseTemplate,
};

const MESSAGES: &str = "/v1/messages";

struct Harness {
    llm: Llm,
    anthropic: MockServer,
}

/// An `Llm` as the chat function builds it, Anthropic first (then echo for fallbacks).
async fn harness(overrides: &[(&str, &str)]) -> Harness {
    let stack = stack().await;
    let mut settings = vec![("LLM_PROVIDERS", "anthropic,echo")];
    settings.extend_from_slice(overrides);
    let stubs = e2e::stubbed_providers(&settings).await;
    let keys = ProviderKeys::new(
        stack.clients.secrets.clone(),
        stubs.secret,
        stubs.config.secret_ttl,
    );
    Harness {
        llm: Llm::from_config(&stubs.config, keys).expect("the LLM client"),
        anthropic: stubs.anthropic,
    }
}

impl Harness {
    async fn choice(&self) -> (Choice, Instant) {
        let choice = self
            .llm
            .choose(Some("anthropic"), None)
            .await
            .expect("anthropic enabled");
        (choice, Instant::now() + Duration::from_secs(5))
    }

    async fn stream(&self, messages: &[ContextMessage]) -> Result<ReplyStream, LlmError> {
        let (choice, deadline) = self.choice().await;
        self.llm
            .stream(&choice, messages, deadline, &Unmetered)
            .await
    }
}

fn user(text: &str) -> Vec<ContextMessage> {
    vec![ContextMessage {
        role: Role::User,
        content: text.to_owned(),
    }]
}

/// One server-sent event as Anthropic writes it: its type named twice, as `event:` and in the data.
fn event(data: Value) -> String {
    format!(
        "event: {}\ndata: {data}\n\n",
        data["type"].as_str().unwrap()
    )
}

fn message_start() -> String {
    message_start_with(25, 100, 2_000)
}

/// `message_start` with its input's usage: uncached, written to the cache, read from it.
fn message_start_with(input: u64, cache_write: u64, cache_read: u64) -> String {
    event(json!({"type": "message_start", "message": {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
        "content": [], "model": "claude-test", "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": input, "cache_creation_input_tokens": cache_write,
                  "cache_read_input_tokens": cache_read, "output_tokens": 1}}}))
}

fn text_delta(text: &str) -> String {
    event(json!({"type": "content_block_delta", "index": 0,
                 "delta": {"type": "text_delta", "text": text}}))
}

/// A whole stream: start, a text block of `pieces` with a ping inside, the stop and its usage
/// (2,125 input tokens, 15 output).
fn anthropic_stream(pieces: &[&str]) -> String {
    anthropic_stream_after(message_start(), pieces)
}

fn anthropic_stream_after(start: String, pieces: &[&str]) -> String {
    let mut body = start;
    body.push_str(&event(json!({"type": "content_block_start", "index": 0,
                                "content_block": {"type": "text", "text": ""}})));
    body.push_str(&event(json!({"type": "ping"})));
    for piece in pieces {
        body.push_str(&text_delta(piece));
    }
    body.push_str(&event(json!({"type": "content_block_stop", "index": 0})));
    body.push_str(&event(json!({"type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": null},
        "usage": {"output_tokens": 15}})));
    body.push_str(&event(json!({"type": "message_stop"})));
    body
}

fn sse(body: String) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body, "text/event-stream")
}

/// Anthropic's error body for `kind` (`overloaded_error`, `invalid_request_error`, ...).
fn error(status: u16, kind: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "type": "error", "error": {"type": kind, "message": "from the stub"},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}))
}

#[tokio::test]
async fn anthropic_streams_its_text_deltas_and_reports_every_input_token_cached_or_not() {
    let h = harness(&[]).await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .and(header("x-api-key", "sk-ant-test-1"))
        .and(header("anthropic-version", "2023-06-01"))
        .and(body_partial_json(json!({
            "model": "claude-test", "max_tokens": 300, "system": "Answer briefly.",
            "stream": true, "messages": [{"role": "user", "content": "Say hi there"}],
        })))
        .respond_with(sse(anthropic_stream(&["Hi", " there", ", friend"])))
        .expect(1)
        .mount(&h.anthropic)
        .await;

    let mut stream = h.stream(&user("Say hi there")).await.unwrap();
    assert_eq!(
        (stream.provider(), stream.model()),
        ("anthropic", "claude-test")
    );
    let (pieces, error) = drain(&mut stream).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(pieces, ["Hi", " there", ", friend"]);
    assert_eq!(
        stream.usage(),
        TokenUsage {
            input_tokens: 25 + 100 + 2_000,
            output_tokens: 15
        },
        "uncached, cache-written and cache-read input; the output's final count"
    );
}

#[tokio::test]
async fn anthropic_answers_whole_with_its_usage() {
    let h = harness(&[]).await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .and(header("x-api-key", "sk-ant-test-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "type": "message", "role": "assistant",
            "model": "claude-test", "stop_reason": "end_turn", "stop_sequence": null,
            "content": [{"type": "text", "text": "Hi there, "}, {"type": "text", "text": "friend"}],
            "usage": {"input_tokens": 12, "cache_read_input_tokens": 30, "output_tokens": 4}})))
        .expect(1)
        .mount(&h.anthropic)
        .await;
    let (choice, deadline) = h.choice().await;
    let answer = h
        .llm
        .complete(&choice, &user("Say hi there"), deadline, &Unmetered)
        .await
        .unwrap();
    assert_eq!(answer.text, "Hi there, friend");
    assert_eq!(
        answer.usage,
        TokenUsage {
            input_tokens: 42,
            output_tokens: 4
        }
    );
}

#[tokio::test]
async fn the_roles_sent_alternate_and_start_with_the_user() {
    let h = harness(&[]).await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .and(body_partial_json(json!({"messages": [
            {"role": "user", "content": "first\n\nsecond"},
            {"role": "assistant", "content": "a reply"},
            {"role": "user", "content": "the new message"},
        ]})))
        .respond_with(sse(anthropic_stream(&["ok"])))
        .expect(1)
        .mount(&h.anthropic)
        .await;
    let context = e2e::cut_history();
    let mut stream = h.stream(&context).await.unwrap();
    let (pieces, error) = drain(&mut stream).await;
    assert_eq!((pieces.concat(), error.is_none()), ("ok".to_owned(), true));
}

#[tokio::test]
async fn overloaded_and_rate_limited_before_the_first_piece_are_retried() {
    let h = harness(&[]).await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(error(529, "overloaded_error"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&h.anthropic)
        .await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(error(429, "rate_limit_error").insert_header("retry-after", "0"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&h.anthropic)
        .await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(sse(anthropic_stream(&["at last"])))
        .expect(1)
        .mount(&h.anthropic)
        .await;
    let mut stream = h.stream(&user("hi")).await.unwrap();
    assert_eq!(stream.provider(), "anthropic", "no fallback was needed");
    let (pieces, error) = drain(&mut stream).await;
    assert_eq!(
        (pieces.concat(), error.is_none()),
        ("at last".to_owned(), true)
    );
}

#[tokio::test]
async fn a_request_anthropic_refuses_is_not_retried_and_names_it() {
    let h = harness(&[("LLM_PROVIDERS", "anthropic")]).await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(error(400, "invalid_request_error"))
        .expect(1)
        .mount(&h.anthropic)
        .await;
    let err = h.stream(&user("hi")).await.unwrap_err();
    assert!(
        matches!(&err, LlmError::Rejected { provider } if provider == "anthropic"),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_error_event_midway_ends_the_stream_after_the_good_pieces_charged_its_bounds() {
    let h = harness(&[]).await;
    let mut body = message_start();
    body.push_str(&text_delta("Hi"));
    body.push_str(&text_delta(" there"));
    body.push_str(&event(json!({"type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"}})));
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(sse(body))
        .expect(1)
        .mount(&h.anthropic)
        .await;
    let mut stream = h.stream(&user("Say hi there")).await.unwrap();
    let (pieces, error) = drain(&mut stream).await;
    assert_eq!(pieces, ["Hi", " there"]);
    assert!(matches!(error, Some(StreamError::Failed(_))), "{error:?}");
    let usage = stream.usage();
    assert!(
        usage.input_tokens >= 25 && usage.output_tokens >= 8,
        "charged no less than the bounds (the input's bytes, the text's): {usage:?}, not \
         message_start's one output token"
    );
}

#[tokio::test]
async fn connecting_ahead_lists_one_model_with_the_key() {
    let h = harness(&[]).await;
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .and(query_param("limit", "1"))
        .and(header("x-api-key", "sk-ant-test-1"))
        .and(header("anthropic-version", "2023-06-01"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [{"type": "model", "id": "claude-test", "display_name": "Claude Test",
                      "created_at": "2026-02-19T00:00:00Z"}],
            "has_more": true, "first_id": "claude-test", "last_id": "claude-test"})))
        .expect(1)
        .mount(&h.anthropic)
        .await;
    h.llm.connect().await;
}

#[tokio::test]
async fn a_streamed_turn_through_the_local_server_is_stored_and_settled_and_listed() {
    let stubs = e2e::stubbed_providers(&[("LLM_PROVIDERS", "anthropic,echo")]).await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        // Usage within what the prompt can be (the budget caps a charge at twice the turn's
        // reservation): 12 uncached and 8 cached input tokens.
        .respond_with(sse(anthropic_stream_after(
            message_start_with(12, 0, 8),
            &["Clint", " Yeastwood"],
        )))
        .expect(1)
        .mount(&stubs.anthropic)
        .await;
    let turn = local_streamed_turn(stubs.config, &stubs.secret, "anthropic").await;
    assert_eq!(turn.models, json!(["claude-test"]));
    let (last, done) = turn.events.last().unwrap();
    assert_eq!(last, "done", "{:?}", turn.events);
    assert_eq!(done["reply"], "Clint Yeastwood");
    assert_eq!(
        done["usage"],
        json!({"input_tokens": 20, "output_tokens": 15})
    );
    assert_eq!(turn.stored, ["Clint Yeastwood"]);
    assert_eq!(
        turn.usage["tokens"]["used"],
        json!(35),
        "settled: {}",
        turn.usage
    );
}

#[tokio::test]
async fn a_stall_before_the_first_piece_falls_back_within_the_deadline() {
    let h = harness(&[
        ("PROVIDER_FALLBACK", "echo"),
        ("LLM_REQUEST_TIMEOUT_MS", "300"),
        ("LLM_MAX_ATTEMPTS", "1"),
    ])
    .await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(sse(anthropic_stream(&["Too late"])).set_delay(Duration::from_secs(10)))
        .mount(&h.anthropic)
        .await;
    let started = Instant::now();
    let mut stream = h.stream(&user("in time")).await.unwrap();
    assert_fell_back_to_echo(&mut stream, started).await;
}
