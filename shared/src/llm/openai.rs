//! OpenAI chat completions, or any server that speaks the same API (Ollama, vLLM, llama.cpp).

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{de::IgnoredAny, Deserialize, Serialize};

use super::{
    open_with, post_json, send,
    stream::{malformed_chunk, reported_error, Parsed, Piece, Source, SseSource},
    BoxFuture, Call, Provider, ProviderError, Role, WholeReply,
};
use crate::domain::TokenUsage;

pub(super) struct OpenAi {
    http: reqwest::Client,
    /// Up to and including `/v1`, e.g. `https://api.openai.com/v1`.
    base_url: String,
}

impl OpenAi {
    pub(super) fn new(http: reqwest::Client, base_url: &str) -> Self {
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
        }
    }
}

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    /// The reply's token cap. `max_tokens`, not OpenAI's newer `max_completion_tokens`: every
    /// OpenAI-compatible server reads `max_tokens` (Ollama reads nothing else and would ignore
    /// the newer name, so the cap would silently not apply), and OpenAI still accepts it for its
    /// chat models. OpenAI's reasoning models (o-series, gpt-5) refuse it with a 400.
    max_tokens: u32,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct StreamOptions {
    /// Asks for a last chunk with the usage of the whole request.
    include_usage: bool,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Deserialize)]
struct Response {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: AnswerMessage,
}

#[derive(Deserialize)]
struct AnswerMessage {
    #[serde(default)]
    content: Option<String>,
}

/// What OpenAI bills: `prompt_tokens` counts cached input too, and `completion_tokens` the
/// reasoning tokens of a reasoning model (`completion_tokens_details` only breaks them down).
#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

impl From<Usage> for TokenUsage {
    fn from(usage: Usage) -> Self {
        TokenUsage {
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
        }
    }
}

/// One `chat.completion.chunk` of a stream.
#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Option<ChunkDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChunkDelta {
    #[serde(default)]
    content: Option<String>,
}

/// Reads one event's data: a chunk, or `[DONE]`.
fn parse_chunk(data: &str) -> Result<Parsed, ProviderError> {
    if data.trim() == "[DONE]" {
        return Ok(Parsed::Done);
    }
    let chunk: Chunk = serde_json::from_str(data).map_err(|_| malformed_chunk())?;
    if chunk.error.is_some() {
        return Err(reported_error());
    }
    let choice = chunk.choices.into_iter().next();
    let finished = choice
        .as_ref()
        .is_some_and(|choice| choice.finish_reason.is_some());
    let text = choice
        .and_then(|choice| choice.delta)
        .and_then(|delta| delta.content)
        .unwrap_or_default();
    Ok(Parsed::Piece(Piece {
        text,
        usage: chunk.usage.map(TokenUsage::from),
        finished,
    }))
}

impl OpenAi {
    /// The chat completions request of `call`, streamed or not.
    fn request(&self, call: &Call<'_>, stream: bool) -> reqwest::RequestBuilder {
        let mut messages = Vec::with_capacity(call.messages.len() + 1);
        if let Some(system) = call.system {
            messages.push(WireMessage {
                role: "system",
                content: system,
            });
        }
        messages.extend(call.messages.iter().map(|message| WireMessage {
            role: match message.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            },
            content: &message.content,
        }));
        let mut request = self
            .http
            .post(format!("{}/chat/completions", self.base_url))
            .json(&Request {
                model: call.model,
                messages,
                max_tokens: call.max_output_tokens,
                stream,
                stream_options: stream.then_some(StreamOptions {
                    include_usage: true,
                }),
            });
        if let Some(key) = call.key {
            request = request.bearer_auth(key.expose_secret());
        }
        request
    }
}

impl Provider for OpenAi {
    fn name(&self) -> &str {
        "openai"
    }

    fn key_name(&self) -> Option<&str> {
        Some("openai_api_key")
    }

    fn complete<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<WholeReply, ProviderError>> {
        Box::pin(async move {
            let request = self.request(&call, false);
            let response: Response = post_json(request, call.timeout).await?;
            let text = response
                .choices
                .into_iter()
                .next()
                .and_then(|choice| choice.message.content)
                .ok_or_else(|| ProviderError::Malformed("no choice with content".to_owned()))?;
            let usage = response.usage.map(TokenUsage::from);
            Ok(WholeReply { text, usage })
        })
    }

    /// `"stream": true` with `stream_options.include_usage`: `data: {chunk}` events with
    /// `choices[0].delta.content`, a last chunk with empty `choices` and the `usage`, then
    /// `data: [DONE]`.
    fn stream<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<Source, ProviderError>> {
        Box::pin(async move {
            let response = send(self.request(&call, true)).await?;
            Ok(Source::Sse(SseSource::new(response, parse_chunk)?))
        })
    }

    /// `GET /models`.
    fn connect<'a>(
        &'a self,
        key: Option<&'a SecretString>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        let mut request = self.http.get(format!("{}/models", self.base_url));
        if let Some(key) = key {
            request = request.bearer_auth(key.expose_secret());
        }
        Box::pin(open_with(request, timeout))
    }
}
