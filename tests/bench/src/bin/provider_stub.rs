//! `provider-stub`: an LLM provider on loopback for `make bench-stream`, streaming `TOKENS`
//! pieces, each after `TOKEN_DELAY_MS`, in each provider's wire format: OpenAI's chat
//! completions (`POST /v1/chat/completions`), Anthropic's Messages (`POST /v1/messages`) and
//! Bedrock's `ConverseStream` (`POST /model/{id}/converse-stream`, event-stream frames).
//!
//! ```text
//! provider-stub TOKENS TOKEN_DELAY_MS
//! ```
//! Prints its base URL on the first line of its output, then serves until killed.
//!
//! Its Bedrock models a prompt cache as Claude's works on Bedrock, so that `make bench-cache` can
//! report what caching saves: each `cachePoint` of a request whose prefix (the system prompt and
//! the messages before the point) holds at least [`MIN_CACHED_TOKENS`] writes that prefix to the
//! cache; a request reads the longest prefix, ending at a block boundary before its last cache
//! point, that an earlier request wrote; the usage in its `metadata` event says so
//! (`cacheReadInputTokens`, `cacheWriteInputTokens`, the rest in `inputTokens`; tokens estimated
//! as 4 characters each). Entries never expire (Bedrock keeps them 5 minutes after their last
//! use, longer than a benchmark's pauses). `GET /usage` answers the usage of every Bedrock request
//! so far, in order.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use axum::{
    body::{Body, Bytes},
    http::header,
    response::Response,
    routing::{get, post},
    Json, Router,
};
use futures_util::StreamExt;
use serde_json::{json, Value};

#[derive(Clone, Copy)]
struct Plan {
    tokens: usize,
    delay: Duration,
}

/// The answer's body: `first`, the pieces (each after the delay), then `last`.
fn streamed(
    plan: Plan,
    content_type: &'static str,
    first: Vec<u8>,
    piece: fn(usize) -> Vec<u8>,
    last: Vec<u8>,
) -> Response {
    let pieces = futures_util::stream::iter(0..plan.tokens).then(move |index| async move {
        tokio::time::sleep(plan.delay).await;
        piece(index)
    });
    let body = futures_util::stream::iter([first])
        .chain(pieces)
        .chain(futures_util::stream::iter([last]))
        .map(Ok::<_, std::convert::Infallible>);
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from_stream(body))
        .unwrap_or_default()
}

fn sse(data: Value) -> Vec<u8> {
    format!("data: {data}\n\n").into_bytes()
}

fn anthropic_event(data: Value) -> Vec<u8> {
    format!(
        "event: {}\ndata: {data}\n\n",
        data["type"].as_str().unwrap_or("")
    )
    .into_bytes()
}

fn frame(name: &str, payload: Value) -> Vec<u8> {
    let message = Message::new(payload.to_string().into_bytes())
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("event".to_owned().into()),
        ))
        .add_header(Header::new(
            ":event-type",
            HeaderValue::String(name.to_owned().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".to_owned().into()),
        ));
    let mut bytes = Vec::new();
    // A message this small always fits a frame.
    let _ = write_message_to(&message, &mut bytes);
    bytes
}

fn openai(plan: Plan) -> Response {
    let usage = json!({"id": "c", "object": "chat.completion.chunk", "choices": [],
        "usage": {"prompt_tokens": 10, "completion_tokens": plan.tokens, "total_tokens": 10 + plan.tokens}});
    let mut last = sse(json!({"id": "c", "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}));
    last.extend(sse(usage));
    last.extend(b"data: [DONE]\n\n");
    streamed(
        plan,
        "text/event-stream",
        sse(json!({"id": "c", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]})),
        |index| {
            sse(json!({"id": "c", "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": format!(" w{index}")}, "finish_reason": null}]}))
        },
        last,
    )
}

fn anthropic(plan: Plan) -> Response {
    let mut first = anthropic_event(json!({"type": "message_start", "message": {"id": "m",
        "type": "message", "role": "assistant", "content": [], "model": "claude-bench",
        "usage": {"input_tokens": 10, "output_tokens": 1}}}));
    first.extend(anthropic_event(
        json!({"type": "content_block_start", "index": 0,
        "content_block": {"type": "text", "text": ""}}),
    ));
    let mut last = anthropic_event(json!({"type": "content_block_stop", "index": 0}));
    last.extend(anthropic_event(json!({"type": "message_delta",
        "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": plan.tokens}})));
    last.extend(anthropic_event(json!({"type": "message_stop"})));
    streamed(
        plan,
        "text/event-stream",
        first,
        |index| {
            anthropic_event(json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": format!(" w{index}")}}))
        },
        last,
    )
}

/// Claude's smallest cacheable prefix on Bedrock (Sonnet and Opus; Haiku's is 2,048).
const MIN_CACHED_TOKENS: u64 = 1_024;

/// The stub's estimate of a text's tokens.
fn tokens_of(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// What the Bedrock stub has cached, and the usage it reported.
#[derive(Default)]
struct Cache {
    /// The prefixes written, each as its blocks' JSON.
    prefixes: HashSet<String>,
    usage: Vec<Value>,
}

/// The request's content blocks in order (the system prompt's, then each message's), each with
/// whether a cache point follows it.
fn blocks(request: &Value) -> Vec<(Value, bool)> {
    let mut blocks: Vec<(Value, bool)> = Vec::new();
    let system = request["system"].as_array().cloned().unwrap_or_default();
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let contents = std::iter::once((Value::Null, system)).chain(messages.into_iter().map(|m| {
        let content = m["content"].as_array().cloned().unwrap_or_default();
        (m["role"].clone(), content)
    }));
    for (role, content) in contents {
        for block in content {
            if block.get("cachePoint").is_some() {
                if let Some(last) = blocks.last_mut() {
                    last.1 = true;
                }
            } else {
                blocks.push((json!({"role": role, "block": block}), false));
            }
        }
    }
    blocks
}

/// The usage of one request against the cache, which it updates.
fn cached_usage(cache: &mut Cache, request: &Value, output: usize) -> Value {
    let blocks = blocks(request);
    let sizes: Vec<u64> = blocks
        .iter()
        .map(|(block, _)| tokens_of(block["block"]["text"].as_str().unwrap_or("")))
        .collect();
    let total: u64 = sizes.iter().sum();
    let key = |end: usize| {
        serde_json::to_string(&blocks[..end].iter().map(|b| &b.0).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let last_point = blocks
        .iter()
        .rposition(|(_, point)| *point)
        .map(|at| at + 1);
    let (mut read, mut written) = (0, 0);
    if let Some(last_point) = last_point {
        let hit = (1..=last_point)
            .rev()
            .find(|&end| cache.prefixes.contains(&key(end)));
        let read_end = hit.unwrap_or(0);
        read = sizes[..read_end].iter().sum();
        for end in (read_end + 1)..=last_point {
            let prefix: u64 = sizes[..end].iter().sum();
            if blocks[end - 1].1 && prefix >= MIN_CACHED_TOKENS {
                cache.prefixes.insert(key(end));
                written = prefix - read;
            }
        }
    }
    let input = total - read - written;
    let usage = json!({"inputTokens": input, "outputTokens": output,
        "cacheReadInputTokens": read, "cacheWriteInputTokens": written,
        "totalTokens": total + output as u64});
    cache.usage.push(usage.clone());
    usage
}

fn bedrock(plan: Plan, cache: &Mutex<Cache>, request: &[u8]) -> Response {
    let request: Value = serde_json::from_slice(request).unwrap_or_default();
    let usage = match cache.lock() {
        Ok(mut cache) => cached_usage(&mut cache, &request, plan.tokens),
        Err(_) => {
            json!({"inputTokens": 10, "outputTokens": plan.tokens, "totalTokens": 10 + plan.tokens})
        }
    };
    let mut last = frame("contentBlockStop", json!({"contentBlockIndex": 0}));
    last.extend(frame("messageStop", json!({"stopReason": "end_turn"})));
    last.extend(frame(
        "metadata",
        json!({"usage": usage, "metrics": {"latencyMs": 1}}),
    ));
    streamed(
        plan,
        "application/vnd.amazon.eventstream",
        frame("messageStart", json!({"role": "assistant"})),
        |index| {
            frame(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0,
                "delta": {"text": format!(" w{index}")}}),
            )
        },
        last,
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, tokens, delay] = args.as_slice() else {
        return Err("usage: provider-stub TOKENS TOKEN_DELAY_MS".into());
    };
    let plan = Plan {
        tokens: tokens.parse()?,
        delay: Duration::from_millis(delay.parse()?),
    };
    let cache = Arc::new(Mutex::new(Cache::default()));
    let usage = {
        let cache = cache.clone();
        move || async move {
            Json(
                cache
                    .lock()
                    .map(|cache| cache.usage.clone())
                    .unwrap_or_default(),
            )
        }
    };
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(move || async move { openai(plan) }),
        )
        .route("/v1/messages", post(move || async move { anthropic(plan) }))
        .route(
            "/model/{id}/converse-stream",
            post(move |body: Bytes| async move { bedrock(plan, &cache, &body) }),
        )
        .route("/usage", get(usage));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
