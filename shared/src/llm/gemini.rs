//! Google Gemini `generateContent`; the key travels in the `x-goog-api-key` header.

use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use super::{post_json, BoxFuture, Call, Completion, Provider, ProviderError, Role};
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
}

#[derive(Deserialize)]
struct Candidate {
    #[serde(default)]
    content: Option<CandidateContent>,
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
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
}

impl Provider for Gemini {
    fn name(&self) -> &str {
        "gemini"
    }

    fn key_name(&self) -> Option<&str> {
        Some("gemini_api_key")
    }

    fn complete<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<Completion, ProviderError>> {
        Box::pin(async move {
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
                .post(format!(
                    "{}/models/{}:generateContent",
                    self.base_url, call.model
                ))
                .json(&Request {
                    contents,
                    system_instruction,
                });
            if let Some(key) = call.key {
                request = request.header("x-goog-api-key", key.expose_secret());
            }
            let response: Response = post_json(request, call.timeout).await?;
            let text: String = response
                .candidates
                .into_iter()
                .next()
                .and_then(|candidate| candidate.content)
                .map(|content| {
                    content
                        .parts
                        .into_iter()
                        .filter_map(|part| part.text)
                        .collect()
                })
                .filter(|text: &String| !text.is_empty())
                .ok_or_else(|| ProviderError::Malformed("no candidate with text".to_owned()))?;
            let usage = response
                .usage_metadata
                .map_or_else(TokenUsage::default, |usage| TokenUsage {
                    input_tokens: usage.prompt_token_count,
                    output_tokens: usage.candidates_token_count,
                });
            Ok(Completion { text, usage })
        })
    }
}
