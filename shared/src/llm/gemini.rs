//! Google Gemini `generateContent` and `streamGenerateContent`; the key travels in the
//! `x-goog-api-key` header.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{de::IgnoredAny, Deserialize, Serialize};

use super::{
    open_with, post_json, send,
    stream::{malformed_chunk, reported_error, Parsed, Piece, Source, SseSource},
    BoxFuture, Call, Provider, ProviderError, Role, WholeReply,
};
use crate::domain::TokenUsage;

pub(super) struct Gemini {
    http: reqwest::Client,
    /// E.g. `https://generativelanguage.googleapis.com/v1beta`.
    base_url: String,
}

impl Gemini {
    pub(super) fn new(http: reqwest::Client, base_url: &str) -> Self {
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Request<'a> {
    contents: Vec<Content<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<Content<'a>>,
    generation_config: GenerationConfig,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig {
    /// The reply's token cap.
    max_output_tokens: u32,
}

#[derive(Serialize)]
struct Content<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    parts: Vec<Part<'a>>,
}

#[derive(Serialize)]
struct Part<'a> {
    text: &'a str,
}

/// A `GenerateContentResponse`: the whole answer, or one event of a stream.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    /// Set when the prompt was blocked: no candidate will come.
    #[serde(default)]
    prompt_feedback: Option<PromptFeedback>,
    /// An error event in a stream.
    #[serde(default)]
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<CandidateContent>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

#[derive(Deserialize)]
struct CandidateContent {
    #[serde(default)]
    parts: Vec<CandidatePart>,
}

#[derive(Deserialize)]
struct CandidatePart {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    /// The prompt, cached parts included.
    #[serde(default)]
    prompt_token_count: u64,
    /// The answer's visible tokens; absent until the model has produced something.
    #[serde(default)]
    candidates_token_count: Option<u64>,
    /// A thinking model's thoughts: billed as output, though not in the answer.
    #[serde(default)]
    thoughts_token_count: u64,
    /// The prompt of a tool call the model made: billed as input.
    #[serde(default)]
    tool_use_prompt_token_count: u64,
}

impl UsageMetadata {
    /// What Gemini bills, once the report counts the answer's tokens: the prompt and tool-use
    /// prompt as input, the candidates and the thoughts as output.
    fn billed(&self) -> Option<TokenUsage> {
        Some(TokenUsage {
            input_tokens: self
                .prompt_token_count
                .saturating_add(self.tool_use_prompt_token_count),
            output_tokens: self
                .candidates_token_count?
                .saturating_add(self.thoughts_token_count),
        })
    }
}

impl Response {
    /// The text of the first candidate's parts.
    fn text(&mut self) -> Option<String> {
        let candidate = self.candidates.first_mut()?;
        let content = candidate.content.take()?;
        Some(
            content
                .parts
                .into_iter()
                .filter_map(|part| part.text)
                .collect(),
        )
    }
}

/// Reads one event of a stream: a `GenerateContentResponse`.
fn parse_event(data: &str) -> Result<Parsed, ProviderError> {
    let mut response: Response = serde_json::from_str(data).map_err(|_| malformed_chunk())?;
    if response.error.is_some() {
        return Err(reported_error());
    }
    let finished = response
        .candidates
        .first()
        .is_some_and(|candidate| candidate.finish_reason.is_some())
        || response
            .prompt_feedback
            .as_ref()
            .is_some_and(|feedback| feedback.block_reason.is_some());
    // Usage counts as reported once it counts the answer's tokens.
    let usage = response
        .usage_metadata
        .as_ref()
        .and_then(UsageMetadata::billed);
    Ok(Parsed::Piece(Piece {
        text: response.text().unwrap_or_default(),
        usage,
        finished,
    }))
}

impl Gemini {
    /// The request of `call` to `method` (`generateContent` or `streamGenerateContent?alt=sse`).
    fn request(&self, call: &Call<'_>, method: &str) -> reqwest::RequestBuilder {
        let contents = call
            .messages
            .iter()
            .map(|message| Content {
                role: Some(match message.role {
                    Role::User => "user",
                    Role::Assistant => "model",
                }),
                parts: vec![Part {
                    text: &message.content,
                }],
            })
            .collect();
        let system_instruction = call.system.map(|text| Content {
            role: None,
            parts: vec![Part { text }],
        });
        let mut request = self
            .http
            .post(format!("{}/models/{}:{method}", self.base_url, call.model))
            .json(&Request {
                contents,
                system_instruction,
                generation_config: GenerationConfig {
                    max_output_tokens: call.max_output_tokens,
                },
            });
        if let Some(key) = call.key {
            request = request.header("x-goog-api-key", key.expose_secret());
        }
        request
    }
}

impl Provider for Gemini {
    fn name(&self) -> &str {
        "gemini"
    }

    fn key_name(&self) -> Option<&str> {
        Some("gemini_api_key")
    }

    fn complete<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<WholeReply, ProviderError>> {
        Box::pin(async move {
            let request = self.request(&call, "generateContent");
            let mut response: Response = post_json(request, call.timeout).await?;
            let text = response
                .text()
                .filter(|text| !text.is_empty())
                .ok_or_else(|| ProviderError::Malformed("no candidate with text".to_owned()))?;
            let usage = response
                .usage_metadata
                .as_ref()
                .and_then(UsageMetadata::billed);
            Ok(WholeReply { text, usage })
        })
    }

    /// `streamGenerateContent?alt=sse`: `data: {GenerateContentResponse}` events, each with some
    /// of `candidates[0].content.parts[].text`, and `usageMetadata` (complete on the last).
    fn stream<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<Source, ProviderError>> {
        Box::pin(async move {
            let response = send(self.request(&call, "streamGenerateContent?alt=sse")).await?;
            Ok(Source::Sse(SseSource::new(response, parse_event)?))
        })
    }

    /// `GET /models`, one model's worth (`pageSize=1`).
    fn connect<'a>(
        &'a self,
        key: Option<&'a SecretString>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        let mut request = self
            .http
            .get(format!("{}/models?pageSize=1", self.base_url));
        if let Some(key) = key {
            request = request.header("x-goog-api-key", key.expose_secret());
        }
        Box::pin(open_with(request, timeout))
    }
}
