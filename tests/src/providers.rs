//! The chat function's configuration, and its providers stubbed at the HTTP level (wiremock) in
//! their real wire formats.

use serde_json::json;
use wiremock::ResponseTemplate;

use crate::stack::secret_with;

/// Where OpenAI's chat completions are, below the stubs' base URL (`{uri}/v1`).
pub const OPENAI_PATH: &str = "/v1/chat/completions";

/// A chat configuration from `pairs`, every other setting at its default.
pub fn chat_config(pairs: &[(&str, &str)]) -> shared::config::ChatConfig {
    let vars: std::collections::HashMap<&str, &str> = pairs.iter().copied().collect();
    shared::config::ChatConfig::from_lookup(|name| vars.get(name).map(|v| (*v).to_owned()))
        .expect("a valid chat configuration")
}

/// A chat configuration with only the offline `echo` provider.
pub fn echo_chat() -> shared::config::ChatConfig {
    chat_config(&[("LLM_PROVIDERS", "echo")])
}

/// Wiremock servers standing in for OpenAI, Gemini and Anthropic, a secret holding their keys
/// (`sk-test-1`, `g-test-1`, `sk-ant-test-1`), and the chat configuration that points at them
/// (models `gpt-test,gpt-other`, `gemini-test` and `claude-test`; Anthropic configured but not
/// in `LLM_PROVIDERS` unless `overrides` add it; fast backoff, 1 s per provider request),
/// adjusted by `overrides`.
pub struct StubbedProviders {
    pub openai: wiremock::MockServer,
    pub gemini: wiremock::MockServer,
    pub anthropic: wiremock::MockServer,
    pub secret: String,
    pub config: shared::config::ChatConfig,
}

pub async fn stubbed_providers(overrides: &[(&str, &str)]) -> StubbedProviders {
    let (openai, gemini, anthropic) = (
        wiremock::MockServer::start().await,
        wiremock::MockServer::start().await,
        wiremock::MockServer::start().await,
    );
    let secret = secret_with(&json!({
        "openai_api_key": "sk-test-1",
        "gemini_api_key": "g-test-1",
        "anthropic_api_key": "sk-ant-test-1",
    }))
    .await;
    let (openai_url, gemini_url, anthropic_url) = (
        format!("{}/v1", openai.uri()),
        format!("{}/v1beta", gemini.uri()),
        format!("{}/v1", anthropic.uri()),
    );
    let mut pairs = vec![
        ("LLM_PROVIDERS", "openai,gemini,echo"),
        ("OPENAI_BASE_URL", openai_url.as_str()),
        ("OPENAI_MODELS", "gpt-test,gpt-other"),
        ("GEMINI_BASE_URL", gemini_url.as_str()),
        ("GEMINI_MODELS", "gemini-test"),
        ("ANTHROPIC_BASE_URL", anthropic_url.as_str()),
        ("ANTHROPIC_MODELS", "claude-test"),
        ("SYSTEM_PROMPT", "Answer briefly."),
        ("LLM_BACKOFF_BASE_MS", "1"),
        ("LLM_BACKOFF_CAP_MS", "5"),
        ("LLM_REQUEST_TIMEOUT_MS", "1000"),
        ("MAX_OUTPUT_TOKENS", "300"),
    ];
    pairs.retain(|(name, _)| !overrides.iter().any(|(other, _)| other == name));
    pairs.extend_from_slice(overrides);
    StubbedProviders {
        config: chat_config(&pairs),
        openai,
        gemini,
        anthropic,
        secret,
    }
}

/// OpenAI's answer `content`, as its chat completions endpoint sends it, reporting 12 prompt and
/// 3 completion tokens.
pub fn openai_reply(content: &str) -> ResponseTemplate {
    openai_reply_with_usage(content, 12, 3)
}

/// OpenAI's answer `content`, reporting the given token usage.
pub fn openai_reply_with_usage(
    content: &str,
    prompt_tokens: u64,
    completion_tokens: u64,
) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "id": "chatcmpl-9f2c", "object": "chat.completion", "created": 1_795_761_612, "model": "gpt-test",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens}
    }))
}

/// Every piece of a streamed reply until its end, or the error that ended it.
pub async fn drain(
    stream: &mut shared::llm::ReplyStream,
) -> (Vec<String>, Option<shared::llm::StreamError>) {
    let mut pieces = Vec::new();
    loop {
        match stream.next().await {
            Ok(Some(piece)) => pieces.push(piece),
            Ok(None) => return (pieces, None),
            Err(err) => return (pieces, Some(err)),
        }
    }
}

/// A context as a history cut to its last messages can be: beginning with a reply, and with two
/// user messages in a row (a turn whose reply was lost). Sent to a provider whose roles must
/// alternate, it becomes user "first\n\nsecond", assistant "a reply", user "the new message".
pub fn cut_history() -> Vec<shared::llm::ContextMessage> {
    use shared::domain::Role;
    [
        (Role::Assistant, "the end of an older reply"),
        (Role::User, "first"),
        (Role::User, "second"),
        (Role::Assistant, "a reply"),
        (Role::User, "the new message"),
    ]
    .into_iter()
    .map(|(role, content)| shared::llm::ContextMessage {
        role,
        content: content.to_owned(),
    })
    .collect()
}
