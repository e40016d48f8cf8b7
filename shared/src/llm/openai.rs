//! OpenAI chat completions, or any server that speaks the same API (Ollama, vLLM, llama.cpp).

use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use super::{post_json, BoxFuture, Call, Completion, Provider, ProviderError, Role};
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

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

impl Provider for OpenAi {
    fn name(&self) -> &str {
        "openai"
    }

    fn key_name(&self) -> Option<&str> {
        Some("openai_api_key")
    }

    fn complete<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<Completion, ProviderError>> {
        Box::pin(async move {
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
                });
            if let Some(key) = call.key {
                request = request.bearer_auth(key.expose_secret());
            }
            let response: Response = post_json(request, call.timeout).await?;
            let text = response
                .choices
                .into_iter()
                .next()
                .and_then(|choice| choice.message.content)
                .ok_or_else(|| ProviderError::Malformed("no choice with content".to_owned()))?;
            let usage = response
                .usage
                .map_or_else(TokenUsage::default, |usage| TokenUsage {
                    input_tokens: usage.prompt_tokens,
                    output_tokens: usage.completion_tokens,
                });
            Ok(Completion { text, usage })
        })
    }
}
