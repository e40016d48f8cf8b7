//! Amazon Bedrock's Converse API through the AWS SDK, against a stub that speaks its wire format
//! (wiremock): `ConverseStream`'s `application/vnd.amazon.eventstream` body written frame by frame
//! with the SDK's own frame writer (checksums included), `Converse`'s JSON, its errors as the
//! service sends them (`x-amzn-errortype`), and requests checked for a SigV4 signature for the
//! `bedrock` service and the body the API reference describes.

use std::time::{Duration, Instant};

use crate::provider_turns::{assert_fell_back_to_echo, local_streamed_turn};
use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use e2e::{drain, stack};
use serde_json::{json, Value};
use shared::{
    domain::{Role, TokenUsage},
    llm::{ContextMessage, Llm, LlmError, ReplyStream, StreamError, Unmetered},
    secrets::ProviderKeys,
};
use wiremock::{
    matchers::{body_partial_json, method, path_regex},
    Mock, MockServer, Request, ResponseTemplate,
};

const STREAM_PATH: &str = "^/model/[^/]+/converse-stream$";
const MODEL: &str = "us.anthropic.claude-test-v1:0";

struct Harness {
    llm: Llm,
    bedrock: MockServer,
}

/// An `Llm` as chat builds it with `providers`, Bedrock's endpoint the stub.
async fn harness(providers: &str) -> Harness {
    harness_with(providers, &[]).await
}

async fn harness_with(providers: &str, overrides: &[(&str, &str)]) -> Harness {
    let stack = stack().await;
    let bedrock = MockServer::start().await;
    let uri = bedrock.uri();
    let mut settings = vec![
        ("LLM_PROVIDERS", providers),
        ("BEDROCK_MODELS", MODEL),
        ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", uri.as_str()),
    ];
    settings.extend_from_slice(overrides);
    let stubs = e2e::stubbed_providers(&settings).await;
    let keys = ProviderKeys::new(
        stack.clients.secrets.clone(),
        stubs.secret,
        stubs.config.secret_ttl,
    );
    Harness {
        llm: Llm::from_config(&stubs.config, keys).expect("the LLM client"),
        bedrock,
    }
}

impl Harness {
    async fn stream(&self, messages: &[ContextMessage]) -> Result<ReplyStream, LlmError> {
        let choice = self.llm.choose(Some("bedrock"), None).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
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

/// One event-stream frame: an event (`:event-type`) or an exception (`:exception-type`).
fn frame(message_type: &str, name: &str, payload: Value) -> Vec<u8> {
    let kind = if message_type == "event" {
        ":event-type"
    } else {
        ":exception-type"
    };
    let message = Message::new(payload.to_string().into_bytes())
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String(message_type.to_owned().into()),
        ))
        .add_header(Header::new(
            kind,
            HeaderValue::String(name.to_owned().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".to_owned().into()),
        ));
    let mut bytes = Vec::new();
    write_message_to(&message, &mut bytes).expect("a frame");
    bytes
}

fn event(name: &str, payload: Value) -> Vec<u8> {
    frame("event", name, payload)
}

fn text(piece: &str) -> Vec<u8> {
    event(
        "contentBlockDelta",
        json!({"contentBlockIndex": 0, "delta": {"text": piece}}),
    )
}

/// A whole `ConverseStream` answer of `pieces`, its usage in the last (`metadata`) event.
fn converse_stream(pieces: &[&str]) -> ResponseTemplate {
    let mut body = event("messageStart", json!({"role": "assistant"}));
    for piece in pieces {
        body.extend(text(piece));
    }
    body.extend(event("contentBlockStop", json!({"contentBlockIndex": 0})));
    body.extend(event("messageStop", json!({"stopReason": "end_turn"})));
    body.extend(event(
        "metadata",
        json!({"usage": {"inputTokens": 12, "outputTokens": 3, "totalTokens": 40,
                         "cacheReadInputTokens": 20, "cacheWriteInputTokens": 5},
               "metrics": {"latencyMs": 212}}),
    ));
    eventstream(body)
}

fn eventstream(body: Vec<u8>) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body, "application/vnd.amazon.eventstream")
}

/// An error as Bedrock answers one before any event: its type in `x-amzn-errortype`.
fn bedrock_error(status: u16, kind: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header(
            "x-amzn-errortype",
            format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"),
        )
        .set_body_json(json!({"message": "from the stub"}))
}

/// Signed with SigV4 for the `bedrock` service.
fn signed_for_bedrock(request: &Request) -> bool {
    request
        .headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value.starts_with("AWS4-HMAC-SHA256 ") && value.contains("/bedrock/aws4_request")
        })
}

#[tokio::test]
async fn bedrock_streams_converse_events_signed_for_bedrock_with_usage_cache_included() {
    let h = harness("bedrock,echo").await;
    Mock::given(method("POST"))
        .and(path_regex(STREAM_PATH))
        .and(signed_for_bedrock)
        .and(body_partial_json(json!({
            "messages": [{"role": "user", "content": [{"text": "Say hi there"}]}],
            "system": [{"text": "Answer briefly."}],
            "inferenceConfig": {"maxTokens": 300},
        })))
        .respond_with(converse_stream(&["Hi", " there", ", friend"]))
        .expect(1)
        .mount(&h.bedrock)
        .await;
    let mut stream = h.stream(&user("Say hi there")).await.unwrap();
    assert_eq!((stream.provider(), stream.model()), ("bedrock", MODEL));
    let (pieces, error) = drain(&mut stream).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(pieces, ["Hi", " there", ", friend"]);
    assert_eq!(
        stream.usage(),
        TokenUsage {
            input_tokens: 12 + 20 + 5,
            output_tokens: 3
        }
    );
}

#[tokio::test]
async fn bedrock_answers_whole_through_converse() {
    let h = harness("bedrock").await;
    Mock::given(method("POST"))
        .and(path_regex("^/model/[^/]+/converse$"))
        .and(signed_for_bedrock)
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "output": {"message": {"role": "assistant",
                                   "content": [{"text": "Hi there, "}, {"text": "friend"}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 9, "outputTokens": 4, "totalTokens": 13},
            "metrics": {"latencyMs": 300}})))
        .expect(1)
        .mount(&h.bedrock)
        .await;
    let choice = h.llm.choose(Some("bedrock"), None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let answer = h
        .llm
        .complete(&choice, &user("Say hi there"), deadline, &Unmetered)
        .await
        .unwrap();
    assert_eq!(answer.text, "Hi there, friend");
    assert_eq!(
        answer.usage,
        TokenUsage {
            input_tokens: 9,
            output_tokens: 4
        }
    );
}

#[tokio::test]
async fn throttling_before_the_first_token_is_retried() {
    let h = harness("bedrock").await;
    Mock::given(method("POST"))
        .and(path_regex(STREAM_PATH))
        .respond_with(bedrock_error(429, "ThrottlingException"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&h.bedrock)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(STREAM_PATH))
        .respond_with(converse_stream(&["after a wait"]))
        .expect(1)
        .mount(&h.bedrock)
        .await;
    let mut stream = h.stream(&user("hi")).await.unwrap();
    let (pieces, error) = drain(&mut stream).await;
    assert_eq!(
        (pieces.concat(), error.is_none()),
        ("after a wait".to_owned(), true)
    );
}

#[tokio::test]
async fn a_validation_error_is_bedrock_refusing_not_retried() {
    let h = harness("bedrock").await;
    Mock::given(method("POST"))
        .and(path_regex(STREAM_PATH))
        .respond_with(bedrock_error(400, "ValidationException"))
        .expect(1)
        .mount(&h.bedrock)
        .await;
    let err = h.stream(&user("hi")).await.unwrap_err();
    assert!(
        matches!(&err, LlmError::Rejected { provider } if provider == "bedrock"),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_exception_frame_midway_ends_the_stream_after_the_good_pieces() {
    let h = harness("bedrock").await;
    let mut body = event("messageStart", json!({"role": "assistant"}));
    body.extend(text("Hi"));
    body.extend(text(" there"));
    body.extend(frame(
        "exception",
        "modelStreamErrorException",
        json!({"message": "the model stopped", "originalStatusCode": 500}),
    ));
    Mock::given(method("POST"))
        .and(path_regex(STREAM_PATH))
        .respond_with(eventstream(body))
        .expect(1)
        .mount(&h.bedrock)
        .await;
    let mut stream = h.stream(&user("Say hi there")).await.unwrap();
    let (pieces, error) = drain(&mut stream).await;
    assert_eq!(pieces, ["Hi", " there"]);
    assert!(matches!(error, Some(StreamError::Failed(_))), "{error:?}");
}

#[tokio::test]
async fn the_roles_sent_to_converse_alternate_and_start_with_the_user() {
    let h = harness("bedrock").await;
    Mock::given(method("POST"))
        .and(path_regex(STREAM_PATH))
        .and(body_partial_json(json!({"messages": [
            {"role": "user", "content": [{"text": "first\n\nsecond"}]},
            {"role": "assistant", "content": [{"text": "a reply"}]},
            {"role": "user", "content": [{"text": "the new message"}]},
        ]})))
        .respond_with(converse_stream(&["ok"]))
        .expect(1)
        .mount(&h.bedrock)
        .await;
    let context = e2e::cut_history();
    let mut stream = h.stream(&context).await.unwrap();
    let (pieces, error) = drain(&mut stream).await;
    assert_eq!((pieces.concat(), error.is_none()), ("ok".to_owned(), true));
}

#[tokio::test]
async fn a_stall_before_the_first_token_falls_back_within_the_deadline() {
    let h = harness_with(
        "bedrock,echo",
        &[
            ("PROVIDER_FALLBACK", "echo"),
            ("LLM_REQUEST_TIMEOUT_MS", "300"),
            ("LLM_MAX_ATTEMPTS", "1"),
        ],
    )
    .await;
    Mock::given(method("POST"))
        .and(path_regex(STREAM_PATH))
        .respond_with(converse_stream(&["Too late"]).set_delay(Duration::from_secs(10)))
        .mount(&h.bedrock)
        .await;
    let started = Instant::now();
    let mut stream = h.stream(&user("in time")).await.unwrap();
    assert_fell_back_to_echo(&mut stream, started).await;
}

#[tokio::test]
async fn a_streamed_turn_through_the_local_server_is_stored_and_settled_and_listed() {
    let bedrock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(STREAM_PATH))
        .and(signed_for_bedrock)
        .respond_with(converse_stream(&["Clint", " Yeastwood"]))
        .expect(1)
        .mount(&bedrock)
        .await;
    let uri = bedrock.uri();
    let stubs = e2e::stubbed_providers(&[
        ("LLM_PROVIDERS", "bedrock,echo"),
        ("BEDROCK_MODELS", MODEL),
        ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", uri.as_str()),
    ])
    .await;
    let turn = local_streamed_turn(stubs.config, &stubs.secret, "bedrock").await;
    assert_eq!(turn.models, json!([MODEL]));
    let (last, done) = turn.events.last().unwrap();
    assert_eq!(last, "done", "{:?}", turn.events);
    assert_eq!(done["reply"], "Clint Yeastwood");
    assert_eq!(
        done["usage"],
        json!({"input_tokens": 37, "output_tokens": 3})
    );
    assert_eq!(turn.stored, ["Clint Yeastwood"]);
    assert_eq!(
        turn.usage["tokens"]["used"],
        json!(40),
        "settled: {}",
        turn.usage
    );
}

#[tokio::test]
async fn a_guardrail_is_named_in_every_call_and_its_intervention_is_the_reply() {
    let h = harness_with(
        "bedrock",
        &[
            ("BEDROCK_GUARDRAIL_ID", "gr4x1y2z3abc"),
            ("BEDROCK_GUARDRAIL_VERSION", "2"),
        ],
    )
    .await;
    let blocked = "Sorry, this assistant cannot talk about that.";
    let mut body = event("messageStart", json!({"role": "assistant"}));
    body.extend(text(blocked));
    body.extend(event("contentBlockStop", json!({"contentBlockIndex": 0})));
    body.extend(event(
        "messageStop",
        json!({"stopReason": "guardrail_intervened"}),
    ));
    body.extend(event(
        "metadata",
        json!({"usage": {"inputTokens": 9, "outputTokens": 0, "totalTokens": 9},
               "metrics": {"latencyMs": 80},
               "trace": {"guardrail": {"inputAssessment": {"gr4x1y2z3abc": {
                   "topicPolicy": {"topics": [{"name": "Forbidden", "type": "DENY", "action": "BLOCKED"}]}}}}}}),
    ));
    Mock::given(method("POST"))
        .and(path_regex(STREAM_PATH))
        .and(body_partial_json(json!({"guardrailConfig": {
            "guardrailIdentifier": "gr4x1y2z3abc", "guardrailVersion": "2",
            "streamProcessingMode": "async"}})))
        .respond_with(eventstream(body))
        .expect(1)
        .mount(&h.bedrock)
        .await;
    Mock::given(method("POST"))
        .and(path_regex("^/model/[^/]+/converse$"))
        .and(body_partial_json(json!({"guardrailConfig": {
            "guardrailIdentifier": "gr4x1y2z3abc", "guardrailVersion": "2"}})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "output": {"message": {"role": "assistant", "content": [{"text": blocked}]}},
            "stopReason": "guardrail_intervened",
            "usage": {"inputTokens": 9, "outputTokens": 0, "totalTokens": 9},
            "metrics": {"latencyMs": 80}})))
        .expect(1)
        .mount(&h.bedrock)
        .await;

    let mut stream = h.stream(&user("a forbidden topic")).await.unwrap();
    let (pieces, error) = drain(&mut stream).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(pieces.concat(), blocked);
    let choice = h.llm.choose(Some("bedrock"), None).await.unwrap();
    let whole = h
        .llm
        .complete(
            &choice,
            &user("a forbidden topic"),
            Instant::now() + Duration::from_secs(5),
            &Unmetered,
        )
        .await
        .unwrap();
    assert_eq!(whole.text, blocked);
}

/// The request's body as JSON.
fn body(request: &Request) -> Value {
    serde_json::from_slice(&request.body).unwrap_or(Value::Null)
}

#[tokio::test]
async fn prompt_caching_puts_cache_points_after_the_system_prompt_and_the_older_turns() {
    const LLAMA: &str = "meta.llama3-test-v1:0";
    let models = format!("{MODEL},{LLAMA}");
    let h = harness_with(
        "bedrock",
        &[
            ("BEDROCK_PROMPT_CACHE", "true"),
            ("BEDROCK_MODELS", models.as_str()),
        ],
    )
    .await;
    let point = json!({"cachePoint": {"type": "default"}});
    let cached = {
        let point = point.clone();
        move |request: &Request| {
            let body = body(request);
            body["modelId"].is_null()
                && body["system"] == json!([{"text": "Answer briefly."}, point])
                && body["messages"][1]
                    == json!({"role": "assistant", "content": [{"text": "a reply"}, point]})
                && body["messages"][2]
                    == json!({"role": "user", "content": [{"text": "the new message"}]})
                && body["messages"][0]["content"].as_array().map(Vec::len) == Some(1)
        }
    };
    Mock::given(method("POST"))
        .and(path_regex("^/model/us\\.anthropic[^/]+/converse-stream$"))
        .and(cached)
        .respond_with(converse_stream(&["cached"]))
        .expect(1)
        .mount(&h.bedrock)
        .await;
    // A model without prompt caching would refuse cache points: none are sent to it.
    Mock::given(method("POST"))
        .and(path_regex("^/model/meta\\.llama[^/]+/converse-stream$"))
        .and(|request: &Request| !String::from_utf8_lossy(&request.body).contains("cachePoint"))
        .respond_with(converse_stream(&["plain"]))
        .expect(1)
        .mount(&h.bedrock)
        .await;
    let context = e2e::cut_history();
    for (model, reply) in [(MODEL, "cached"), (LLAMA, "plain")] {
        let choice = h.llm.choose(Some("bedrock"), Some(model)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut stream = h
            .llm
            .stream(&choice, &context, deadline, &Unmetered)
            .await
            .unwrap();
        let (pieces, error) = drain(&mut stream).await;
        assert_eq!(
            (pieces.concat(), error.is_none()),
            (reply.to_owned(), true),
            "{model}"
        );
    }
}
