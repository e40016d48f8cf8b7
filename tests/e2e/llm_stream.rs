//! Streamed answers through `Llm::stream`: providers stubbed in their real streaming wire formats
//! (server-sent events from wiremock, or a hand-written loopback server where the test needs to
//! hold a connection open or see it close), the keys secret on the local stack.

use std::time::{Duration, Instant};

use e2e::{drain, stack, OPENAI_PATH};
use serde_json::{json, Value};
use shared::{
    domain::{Role, TokenUsage},
    llm::{Choice, Completion, ContextMessage, Llm, LlmError, ReplyStream, StreamError, Unmetered},
    secrets::ProviderKeys,
};
use tokio::{net::TcpListener, sync::oneshot};
use wiremock::{
    matchers::{header, method, path, query_param},
    Mock, MockServer, ResponseTemplate,
};

const GEMINI_PATH: &str = "/v1beta/models/gemini-test:streamGenerateContent";

struct Harness {
    llm: Llm,
    openai: MockServer,
    gemini: MockServer,
}

/// An `Llm` built as the chat function builds it, its providers wiremock servers;
/// `overrides` adjust its configuration.
async fn harness(overrides: &[(&str, &str)]) -> Harness {
    let stack = stack().await;
    let e2e::StubbedProviders {
        openai,
        gemini,
        secret,
        anthropic: _,
        config,
    } = e2e::stubbed_providers(overrides).await;
    let keys = ProviderKeys::new(stack.clients.secrets.clone(), secret, config.secret_ttl);
    let llm = Llm::from_config(&config, keys).expect("the LLM client");
    Harness {
        llm,
        openai,
        gemini,
    }
}

impl Harness {
    /// `provider` with its default model, and the deadline `budget` from now.
    async fn choice(&self, provider: &str, budget: Duration) -> (Choice, Instant) {
        let choice = self
            .llm
            .choose(Some(provider), None)
            .await
            .expect("an enabled provider");
        (choice, Instant::now() + budget)
    }

    /// Streams an answer to "Say hi there" from `provider`, within `budget`.
    async fn stream(&self, provider: &str, budget: Duration) -> Result<ReplyStream, LlmError> {
        let (choice, deadline) = self.choice(provider, budget).await;
        sendable(
            self.llm
                .stream(&choice, &messages("Say hi there"), deadline, &Unmetered),
        )
        .await
    }

    /// Answers "Say hi there" whole from `provider`, within `budget`.
    async fn complete(&self, provider: &str, budget: Duration) -> Result<Completion, LlmError> {
        let (choice, deadline) = self.choice(provider, budget).await;
        self.llm
            .complete(&choice, &messages("Say hi there"), deadline, &Unmetered)
            .await
    }
}

/// A handler may hold the stream across awaits in a task that moves between threads.
fn sendable<T: Send>(value: T) -> T {
    value
}

fn messages(text: &str) -> Vec<ContextMessage> {
    vec![ContextMessage {
        role: Role::User,
        content: text.to_owned(),
    }]
}

/// A server-sent events body: one `data:` event per item, `separator` after each line.
fn sse(data: &[String], separator: &str) -> String {
    data.iter()
        .map(|data| format!("data: {data}{separator}{separator}"))
        .collect()
}

fn sse_response(body: String) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body, "text/event-stream")
}

/// A `chat.completion.chunk` as OpenAI streams it.
fn openai_chunk(delta: Value, finish_reason: Option<&str>) -> String {
    json!({
        "id": "chatcmpl-9f2c", "object": "chat.completion.chunk", "created": 1_795_761_612,
        "model": "gpt-test", "system_fingerprint": "fp_3b956da36b", "service_tier": "default",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        "usage": null
    })
    .to_string()
}

/// OpenAI's events for `pieces`: the role chunk, the content chunks, the finish chunk, the usage
/// chunk (`stream_options.include_usage`) and `[DONE]`.
fn openai_events(pieces: &[&str]) -> Vec<String> {
    let mut events = vec![openai_chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        None,
    )];
    events.extend(
        pieces
            .iter()
            .map(|piece| openai_chunk(json!({"content": piece}), None)),
    );
    events.push(openai_chunk(json!({}), Some("stop")));
    events.push(
        json!({
            "id": "chatcmpl-9f2c", "object": "chat.completion.chunk", "created": 1_795_761_612,
            "model": "gpt-test", "system_fingerprint": "fp_3b956da36b", "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
                      "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}}
        })
        .to_string(),
    );
    events.push("[DONE]".to_owned());
    events
}

/// Gemini's `streamGenerateContent?alt=sse` events for `pieces`: each a `GenerateContentResponse`,
/// the last with `finishReason` and the full `usageMetadata`.
fn gemini_events(pieces: &[&str]) -> Vec<String> {
    let last = pieces.len() - 1;
    pieces
        .iter()
        .enumerate()
        .map(|(index, piece)| {
            let mut candidate = json!({"content": {"parts": [{"text": piece}], "role": "model"}, "index": 0});
            let mut usage = json!({"promptTokenCount": 9, "totalTokenCount": 9});
            if index == last {
                candidate["finishReason"] = json!("STOP");
                usage = json!({"promptTokenCount": 9, "candidatesTokenCount": 4, "totalTokenCount": 13,
                               "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 9}]});
            }
            json!({"candidates": [candidate], "usageMetadata": usage,
                   "modelVersion": "gemini-test", "responseId": "mJ4qaM2lKq"})
            .to_string()
        })
        .collect()
}

#[tokio::test]
async fn openai_streams_pieces_that_concatenate_to_the_reply_and_reports_usage() {
    let h = harness(&[]).await;
    Mock::given(method("POST"))
        .and(path(OPENAI_PATH))
        .and(header("authorization", "Bearer sk-test-1"))
        .respond_with(sse_response(sse(
            &openai_events(&["Hi", " there", ", friend"]),
            "\n",
        )))
        .expect(1)
        .mount(&h.openai)
        .await;

    let mut stream = h.stream("openai", Duration::from_secs(5)).await.unwrap();
    assert_eq!((stream.provider(), stream.model()), ("openai", "gpt-test"));
    assert_eq!(
        stream.usage(),
        TokenUsage {
            input_tokens: 51,
            output_tokens: 2
        },
        "a bound until the provider reports: the prompt's bytes and framing (system prompt too), \
         the reply's bytes so far"
    );
    let (pieces, error) = drain(&mut stream).await;

    assert!(error.is_none(), "{error:?}");
    assert_eq!(pieces, ["Hi", " there", ", friend"]);
    assert_eq!(pieces.concat(), "Hi there, friend");
    assert_eq!(
        stream.usage(),
        TokenUsage {
            input_tokens: 12,
            output_tokens: 3
        }
    );
    assert!(
        stream.next().await.unwrap().is_none(),
        "the end stays the end"
    );
    let requests = h.openai.received_requests().await.unwrap();
    let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(body["max_tokens"], 300, "the output cap");
    assert_eq!(
        body["messages"][0],
        json!({"role": "system", "content": "Answer briefly."})
    );
    assert_eq!(
        body["messages"][1],
        json!({"role": "user", "content": "Say hi there"})
    );
}

#[tokio::test]
async fn gemini_streams_pieces_and_its_usage_metadata() {
    let h = harness(&[]).await;
    Mock::given(method("POST"))
        .and(path(GEMINI_PATH))
        .and(query_param("alt", "sse"))
        .and(header("x-goog-api-key", "g-test-1"))
        // Gemini separates its lines with CRLF.
        .respond_with(sse_response(sse(
            &gemini_events(&["Hi", " there,", " friend"]),
            "\r\n",
        )))
        .expect(1)
        .mount(&h.gemini)
        .await;

    let mut stream = h.stream("gemini", Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        (stream.provider(), stream.model()),
        ("gemini", "gemini-test")
    );
    let (pieces, error) = drain(&mut stream).await;

    assert!(error.is_none(), "{error:?}");
    assert_eq!(pieces.concat(), "Hi there, friend");
    assert_eq!(pieces.len(), 3);
    assert_eq!(
        stream.usage(),
        TokenUsage {
            input_tokens: 9,
            output_tokens: 4
        }
    );
    let requests = h.gemini.received_requests().await.unwrap();
    let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(
        body["contents"],
        json!([{"role": "user", "parts": [{"text": "Say hi there"}]}])
    );
    assert_eq!(
        body["systemInstruction"],
        json!({"parts": [{"text": "Answer briefly."}]})
    );
    assert_eq!(
        body["generationConfig"],
        json!({"maxOutputTokens": 300}),
        "the output cap"
    );
}

#[tokio::test]
async fn echo_streams_word_by_word_after_its_token_delay() {
    let delay = Duration::from_millis(120);
    let h = harness(&[("ECHO_TOKEN_DELAY_MS", "120")]).await;
    let choice = h.llm.choose(Some("echo"), None).await.unwrap();
    let prompt = messages("hello  there\nworld");
    let deadline = Instant::now() + Duration::from_secs(10);

    let started = Instant::now();
    let mut stream = h
        .llm
        .stream(&choice, &prompt, deadline, &Unmetered)
        .await
        .unwrap();
    let mut arrivals = vec![started.elapsed()];
    let mut pieces = vec![];
    while let Some(piece) = stream.next().await.unwrap() {
        pieces.push(piece);
        arrivals.push(started.elapsed());
    }

    assert_eq!(pieces, ["echo:", " hello", "  there", "\nworld"]);
    assert!(arrivals[0] >= delay, "a delay before the first word too");
    // The first piece was in hand when `stream` resolved; each later one took its own delay.
    for gap in arrivals[1..].windows(2).map(|pair| pair[1] - pair[0]) {
        assert!(gap >= delay, "pieces arrive one by one: gap {gap:?}");
    }
    let answer = h
        .llm
        .complete(&choice, &prompt, deadline, &Unmetered)
        .await
        .unwrap();
    assert_eq!(pieces.concat(), answer.text);
    assert_eq!(stream.usage(), answer.usage);
}

#[tokio::test]
async fn echo_stops_at_the_output_cap_streamed_or_not() {
    let h = harness(&[("MAX_OUTPUT_TOKENS", "3")]).await;
    assert_eq!(h.llm.output_cap(), 3);
    let choice = h.llm.choose(Some("echo"), None).await.unwrap();
    let prompt = messages("one two  three four");
    let deadline = Instant::now() + Duration::from_secs(10);

    let answer = h
        .llm
        .complete(&choice, &prompt, deadline, &Unmetered)
        .await
        .unwrap();
    let mut stream = h
        .llm
        .stream(&choice, &prompt, deadline, &Unmetered)
        .await
        .unwrap();
    let (pieces, error) = drain(&mut stream).await;

    assert_eq!(answer.text, "echo: one two");
    assert_eq!(answer.usage.output_tokens, 3, "the cap, in words");
    assert!(error.is_none(), "{error:?}");
    assert_eq!(pieces, ["echo:", " one", " two"]);
    assert_eq!(stream.usage(), answer.usage);
}

#[tokio::test]
async fn a_failure_before_the_first_piece_falls_back_and_never_reaches_the_caller() {
    let h = harness(&[("PROVIDER_FALLBACK", "gemini"), ("BREAKER_FAILURES", "1")]).await;
    Mock::given(method("POST"))
        .and(path(OPENAI_PATH))
        .respond_with(ResponseTemplate::new(500).set_body_json(
            json!({"error": {"message": "The server had an error", "type": "server_error", "param": null, "code": null}}),
        ))
        .mount(&h.openai)
        .await;
    Mock::given(method("POST"))
        .and(path(GEMINI_PATH))
        .respond_with(sse_response(sse(
            &gemini_events(&["From", " Gemini"]),
            "\r\n",
        )))
        .mount(&h.gemini)
        .await;

    let mut stream = h.stream("openai", Duration::from_secs(5)).await.unwrap();
    let (pieces, error) = drain(&mut stream).await;

    assert!(error.is_none(), "{error:?}");
    assert_eq!(stream.provider(), "gemini");
    assert_eq!(stream.model(), "gemini-test");
    assert_eq!(pieces.concat(), "From Gemini");
    assert_eq!(
        h.openai.received_requests().await.unwrap().len(),
        3,
        "retried first"
    );
    assert_eq!(h.llm.breaker_state("openai"), Some("open"));
    assert_eq!(h.llm.breaker_state("gemini"), Some("closed"));
}

#[tokio::test]
async fn a_429_before_the_first_piece_is_retried_after_its_retry_after() {
    let h = harness(&[]).await;
    Mock::given(method("POST"))
        .and(path(OPENAI_PATH))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "1")
                .set_body_json(json!({"error": {"message": "Rate limit reached", "type": "requests", "param": null, "code": "rate_limit_exceeded"}})),
        )
        .up_to_n_times(1)
        .mount(&h.openai)
        .await;
    Mock::given(method("POST"))
        .and(path(OPENAI_PATH))
        .respond_with(sse_response(sse(&openai_events(&["Later"]), "\n")))
        .mount(&h.openai)
        .await;

    let started = Instant::now();
    let mut stream = h.stream("openai", Duration::from_secs(5)).await.unwrap();

    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    assert_eq!(stream.provider(), "openai");
    assert_eq!(drain(&mut stream).await.0.concat(), "Later");
}

#[tokio::test]
async fn a_malformed_chunk_mid_stream_fails_after_the_good_pieces() {
    let h = harness(&[("PROVIDER_FALLBACK", "gemini"), ("BREAKER_FAILURES", "1")]).await;
    let mut events = openai_events(&["Hi", " there"]);
    events.truncate(3);
    events.push(
        r#"{"id": "chatcmpl-9f2c", "choices": [{"delta": {"content": "secret-ish provider text"#
            .to_owned(),
    );
    events.push(openai_chunk(json!({"content": " never read"}), None));
    Mock::given(method("POST"))
        .and(path(OPENAI_PATH))
        .respond_with(sse_response(sse(&events, "\n")))
        .mount(&h.openai)
        .await;

    let mut stream = h.stream("openai", Duration::from_secs(5)).await.unwrap();
    let (pieces, error) = drain(&mut stream).await;

    assert_eq!(pieces, ["Hi", " there"]);
    let Some(StreamError::Failed(reason)) = error else {
        panic!("expected Failed, got {error:?}");
    };
    assert!(
        !reason.contains("provider text"),
        "ours, not the provider's: {reason}"
    );
    assert!(
        stream.next().await.unwrap().is_none(),
        "nothing after a failure"
    );
    assert!(
        h.gemini.received_requests().await.unwrap().is_empty(),
        "no fallback mid-stream"
    );
    assert_eq!(
        h.openai.received_requests().await.unwrap().len(),
        1,
        "no retry mid-stream"
    );
    assert_eq!(
        h.llm.breaker_state("openai"),
        Some("open"),
        "counted against the breaker"
    );
}

#[tokio::test]
async fn an_error_event_mid_stream_fails_after_the_good_pieces() {
    let h = harness(&[]).await;
    let mut events = gemini_events(&["Hi", " there", "!"]);
    events.truncate(2);
    events.push(
        json!({"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}})
            .to_string(),
    );
    Mock::given(method("POST"))
        .and(path(GEMINI_PATH))
        .respond_with(sse_response(sse(&events, "\r\n")))
        .mount(&h.gemini)
        .await;

    let mut stream = h.stream("gemini", Duration::from_secs(5)).await.unwrap();
    let (pieces, error) = drain(&mut stream).await;

    assert_eq!(pieces.concat(), "Hi there");
    let Some(StreamError::Failed(reason)) = error else {
        panic!("expected Failed, got {error:?}");
    };
    assert!(
        !reason.contains("overloaded"),
        "ours, not the provider's: {reason}"
    );
    // No usage reported: the bound admission uses, every byte of the input (system prompt
    // "Answer briefly." and "Say hi there", with their framing) and of the text generated.
    let bound = shared::llm::input_token_bound(&messages("Say hi there"), Some("Answer briefly."));
    assert_eq!(bound, 8 + (15 + 8) + (12 + 8));
    assert_eq!(
        stream.usage(),
        TokenUsage {
            input_tokens: bound,
            output_tokens: "Hi there".len() as u64
        },
        "no usage reported: the bound"
    );
}

#[tokio::test]
async fn a_stream_that_ends_without_its_end_marker_has_failed_and_is_charged_every_byte() {
    let h = harness(&[]).await;
    // 1,998 CJK characters without a space: one "word", 5,994 bytes.
    let reply = "日本語".repeat(666);
    let mut events = openai_events(&[&reply[..3000], &reply[3000..]]);
    events.truncate(3);
    Mock::given(method("POST"))
        .and(path(OPENAI_PATH))
        .respond_with(sse_response(sse(&events, "\n")))
        .mount(&h.openai)
        .await;

    let mut stream = h.stream("openai", Duration::from_secs(5)).await.unwrap();
    let (pieces, error) = drain(&mut stream).await;

    assert_eq!(pieces.concat(), reply);
    assert!(matches!(error, Some(StreamError::Failed(_))), "{error:?}");
    // No usage reported: every byte generated, not its one word.
    assert_eq!(stream.usage().output_tokens, 5_994);
}

#[tokio::test]
async fn a_stall_before_the_first_piece_fails_like_complete_by_the_deadline() {
    let h = harness(&[("LLM_REQUEST_TIMEOUT_MS", "5000")]).await;
    Mock::given(method("POST"))
        .and(path(OPENAI_PATH))
        .respond_with(
            sse_response(sse(&openai_events(&["Too late"]), "\n"))
                .set_delay(Duration::from_secs(10)),
        )
        .mount(&h.openai)
        .await;

    let started = Instant::now();
    let result = h.stream("openai", Duration::from_millis(700)).await;

    assert!(
        matches!(result, Err(LlmError::Unavailable { .. })),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_stall_before_the_first_piece_falls_back_within_the_deadline() {
    let h = harness(&[
        ("PROVIDER_FALLBACK", "gemini"),
        ("LLM_REQUEST_TIMEOUT_MS", "300"),
        ("LLM_MAX_ATTEMPTS", "1"),
        ("BREAKER_FAILURES", "1"),
    ])
    .await;
    Mock::given(method("POST"))
        .and(path(OPENAI_PATH))
        .respond_with(
            sse_response(sse(&openai_events(&["Too late"]), "\n"))
                .set_delay(Duration::from_secs(10)),
        )
        .mount(&h.openai)
        .await;
    Mock::given(method("POST"))
        .and(path(GEMINI_PATH))
        .respond_with(sse_response(sse(&gemini_events(&["In", " time"]), "\r\n")))
        .mount(&h.gemini)
        .await;

    Mock::given(method("POST"))
        .and(path("/v1beta/models/gemini-test:generateContent"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "candidates": [{"content": {"parts": [{"text": "In time"}], "role": "model"},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5}
        })))
        .mount(&h.gemini)
        .await;

    let mut stream = h.stream("openai", Duration::from_secs(5)).await.unwrap();

    assert_eq!(stream.provider(), "gemini");
    assert_eq!(drain(&mut stream).await.0.concat(), "In time");
    // A slow request (a long answer, a thinking model) is no sign the provider is failing: with
    // a breaker that opens at the first failure, it is still closed for everyone else.
    assert_eq!(h.llm.breaker_state("openai"), Some("closed"));
    let answer = h.complete("openai", Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        (answer.provider.as_str(), answer.text.as_str()),
        ("gemini", "In time")
    );
    assert_eq!(h.llm.breaker_state("openai"), Some("closed"));
}

/// A loopback OpenAI-compatible server that answers one request with `events` and then holds the
/// connection open; the receiver learns when the client closes it.
async fn holding_server(events: &str) -> (String, oneshot::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";
    let response = format!("{head}{:x}\r\n{events}\r\n", events.len());
    let (closed_tx, closed_rx) = oneshot::channel();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        while !request_complete(&request) {
            socket.readable().await.unwrap();
            let mut buffer = [0u8; 4096];
            match socket.try_read(&mut buffer) {
                Ok(0) => return,
                Ok(n) => request.extend_from_slice(&buffer[..n]),
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
        let mut written = 0;
        while written < response.len() {
            socket.writable().await.unwrap();
            match socket.try_write(&response.as_bytes()[written..]) {
                Ok(n) => written += n,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
        // Hold the connection; the client closing it reads as the end of the input.
        let mut buffer = [0u8; 1024];
        while socket.readable().await.is_ok() {
            match socket.try_read(&mut buffer) {
                Ok(0) => break,
                Err(err) if err.kind() != std::io::ErrorKind::WouldBlock => break,
                Ok(_) | Err(_) => {}
            }
        }
        let _ = closed_tx.send(());
    });
    (format!("http://{address}/v1"), closed_rx)
}

/// Whether `bytes` hold a whole HTTP request: the head and a body of its `content-length`.
fn request_complete(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some(end) = text.find("\r\n\r\n") else {
        return false;
    };
    let length = text[..end]
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    bytes.len() >= end + 4 + length
}

#[tokio::test]
async fn a_stall_after_the_first_piece_is_stalled_at_the_deadline() {
    let events = sse(&openai_events(&["Hi"])[..2], "\n");
    let (base_url, _closed) = holding_server(&events).await;
    let h = harness(&[("OPENAI_BASE_URL", &base_url)]).await;

    let started = Instant::now();
    let budget = Duration::from_millis(800);
    let mut stream = h.stream("openai", budget).await.unwrap();
    let (pieces, error) = drain(&mut stream).await;

    assert_eq!(pieces, ["Hi"]);
    assert!(matches!(error, Some(StreamError::Stalled)), "{error:?}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= budget && elapsed < budget + Duration::from_millis(700),
        "{elapsed:?}"
    );
    assert_eq!(
        h.llm.breaker_state("openai"),
        Some("closed"),
        "a long answer is no failure"
    );
}

#[tokio::test]
async fn dropping_the_stream_closes_the_provider_connection() {
    let events = sse(&openai_events(&["Hi"])[..2], "\n");
    let (base_url, mut closed) = holding_server(&events).await;
    let h = harness(&[("OPENAI_BASE_URL", &base_url)]).await;

    let mut stream = h.stream("openai", Duration::from_secs(30)).await.unwrap();
    assert_eq!(stream.next().await.unwrap().as_deref(), Some("Hi"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        closed.try_recv().is_err(),
        "the connection is open while the stream lives"
    );
    drop(stream);

    tokio::time::timeout(Duration::from_secs(2), closed)
        .await
        .expect("the provider saw the connection close")
        .expect("the server reported");
}

#[tokio::test]
async fn every_billed_token_counts_thinking_included_whole_or_streamed() {
    let h = harness(&[]).await;
    // Gemini bills a thinking model's thoughts as output, though they are not in the answer.
    Mock::given(method("POST"))
        .and(path("/v1beta/models/gemini-test:generateContent"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "candidates": [{"content": {"parts": [{"text": "Hi."}], "role": "model"},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 11,
                              "thoughtsTokenCount": 1500, "totalTokenCount": 1518},
            "modelVersion": "gemini-test"
        })))
        .mount(&h.gemini)
        .await;
    let mut events = gemini_events(&["Hi", "."]);
    let last: &mut String = events.last_mut().unwrap();
    let mut event: Value = serde_json::from_str(last).unwrap();
    event["usageMetadata"] = json!({"promptTokenCount": 7, "candidatesTokenCount": 2,
        "thoughtsTokenCount": 900, "totalTokenCount": 909});
    *last = event.to_string();
    Mock::given(method("POST"))
        .and(path(GEMINI_PATH))
        .respond_with(sse_response(sse(&events, "\r\n")))
        .mount(&h.gemini)
        .await;
    // OpenAI counts a reasoning model's reasoning tokens in `completion_tokens` already.
    Mock::given(method("POST"))
        .and(path(OPENAI_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-9f2d", "object": "chat.completion", "created": 1_795_761_612,
            "model": "o-test",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi."},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 1200, "total_tokens": 1207,
                      "prompt_tokens_details": {"cached_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 1190}}
        })))
        .mount(&h.openai)
        .await;
    let whole = h.complete("gemini", Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        whole.usage,
        TokenUsage {
            input_tokens: 7,
            output_tokens: 1_511
        }
    );
    let mut stream = h.stream("gemini", Duration::from_secs(5)).await.unwrap();
    let (_, error) = drain(&mut stream).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        stream.usage(),
        TokenUsage {
            input_tokens: 7,
            output_tokens: 902
        }
    );
    let whole = h.complete("openai", Duration::from_secs(5)).await.unwrap();
    assert_eq!(whole.usage.output_tokens, 1_200);
}

#[tokio::test]
async fn a_provider_answer_is_read_up_to_a_bound_whole_or_streamed() {
    let h = harness(&[("LLM_MAX_ATTEMPTS", "1")]).await;
    // 5 MiB of reply, past the 4 MiB that is read of any answer.
    let piece = "x".repeat(512 * 1024);
    let pieces = [piece.as_str(); 10];
    Mock::given(method("POST"))
        .and(path(OPENAI_PATH))
        .and(wiremock::matchers::body_partial_json(
            json!({"stream": true}),
        ))
        .respond_with(sse_response(sse(&openai_events(&pieces), "\n")))
        .mount(&h.openai)
        .await;
    Mock::given(method("POST"))
        .and(path(OPENAI_PATH))
        .respond_with(e2e::openai_reply(&pieces.concat()))
        .mount(&h.openai)
        .await;

    let whole = h.complete("openai", Duration::from_secs(10)).await;
    assert!(
        matches!(whole, Err(LlmError::Unavailable { .. })),
        "{whole:?}"
    );
    let mut stream = h.stream("openai", Duration::from_secs(10)).await.unwrap();
    let (pieces, error) = drain(&mut stream).await;
    assert!(matches!(error, Some(StreamError::Failed(_))), "{error:?}");
    let read: usize = pieces.iter().map(String::len).sum();
    assert!(read <= 4 * 1024 * 1024 + 600 * 1024, "{read}");
}
