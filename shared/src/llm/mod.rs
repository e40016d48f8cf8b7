//! LLM providers behind one trait, and [`Llm`], which calls them with retries, a circuit breaker
//! per provider and an ordered fallback list, all inside the request's deadline.

mod breaker;
mod echo;
mod gemini;
mod openai;
mod resilient;
mod stream;

use std::{future::Future, pin::Pin, time::Duration};

use secrecy::SecretString;

use breaker::BreakerConfig;
use echo::Echo;
use gemini::Gemini;
use openai::OpenAi;
pub use resilient::{Choice, Completion, Llm, LlmError, Offer};
use resilient::{LlmConfig, ProviderSettings};
use stream::Source;
pub use stream::{ReplyStream, StreamError};

use crate::domain::{Role, TokenUsage};

/// A boxed future, so that providers can live behind `dyn Provider`.
type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One message of the context sent to a provider, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextMessage {
    pub role: Role,
    pub content: String,
}

/// Whitespace-separated words: the token estimate of the echo provider and of a stream whose
/// provider has not reported its usage.
fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The words of a prompt: the system prompt and every message.
fn prompt_words(messages: &[ContextMessage], system: Option<&str>) -> u64 {
    messages
        .iter()
        .map(|message| words(&message.content))
        .sum::<u64>()
        + system.map_or(0, words)
}

/// One call to a provider.
struct Call<'a> {
    pub model: &'a str,
    pub system: Option<&'a str>,
    /// The conversation so far and the new user message, oldest first.
    pub messages: &'a [ContextMessage],
    /// The provider's key; `None` for providers that need none.
    pub key: Option<&'a SecretString>,
    /// The longest this call may take.
    pub timeout: Duration,
    /// The most tokens the reply may have (`MAX_OUTPUT_TOKENS`).
    pub max_output_tokens: u32,
}

/// A provider's whole reply to one call (not streamed), before [`Llm`] says who gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WholeReply {
    pub text: String,
    pub usage: TokenUsage,
}

/// How a provider call failed.
#[derive(Debug, thiserror::Error)]
enum ProviderError {
    /// The provider refused our key (HTTP 401).
    #[error("the provider rejected the API key")]
    Unauthorized,
    /// Worth trying again: connect errors, timeouts, 408, 429 and 5xx.
    #[error("the provider failed transiently ({reason})")]
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The provider refused the request itself (a 4xx other than 401, 408 and 429).
    #[error("the provider rejected the request with HTTP {status}")]
    Rejected { status: u16 },
    /// The provider answered something that is not its documented response.
    #[error("the provider's response was malformed: {0}")]
    Malformed(String),
}

impl ProviderError {
    /// Sorts an HTTP failure status; `retry_after` comes from the response's header.
    fn from_status(status: reqwest::StatusCode, retry_after: Option<Duration>) -> Self {
        match status.as_u16() {
            401 => Self::Unauthorized,
            408 | 429 | 500 | 502 | 503 | 504 => Self::Transient {
                reason: format!("HTTP {status}"),
                retry_after,
            },
            status => Self::Rejected { status },
        }
    }

    fn from_reqwest(err: &reqwest::Error) -> Self {
        let reason = if err.is_timeout() {
            "timeout"
        } else if err.is_connect() {
            "connect error"
        } else if err.is_decode() {
            return Self::Malformed("the body is not the expected JSON".to_owned());
        } else {
            "transport error"
        };
        Self::Transient {
            reason: reason.to_owned(),
            retry_after: None,
        }
    }
}

/// An LLM provider.
trait Provider: Send + Sync {
    /// The name clients use (`openai`, `gemini`, `echo`).
    fn name(&self) -> &str;
    /// The name of this provider's key in the keys secret; `None` if it needs no key.
    fn key_name(&self) -> Option<&str>;
    fn complete<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<WholeReply, ProviderError>>;
    /// Starts a streamed answer: the request is sent and its status checked, and the pieces are
    /// read from the returned source. `call.timeout` is for the caller to enforce: it bounds the
    /// wait for the first piece, not the whole stream.
    fn stream<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<Source, ProviderError>>;
}

/// Sends a JSON request and reads a JSON answer, sorting failures into [`ProviderError`]s.
async fn post_json<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<T, ProviderError> {
    let response = send(request.timeout(timeout)).await?;
    let bytes = response
        .bytes()
        .await
        .map_err(|err| ProviderError::from_reqwest(&err))?;
    serde_json::from_slice(&bytes).map_err(|err| ProviderError::Malformed(err.to_string()))
}

/// Sends a request; a failure status becomes a [`ProviderError`] (with its `Retry-After`).
async fn send(request: reqwest::RequestBuilder) -> Result<reqwest::Response, ProviderError> {
    let response = request
        .send()
        .await
        .map_err(|err| ProviderError::from_reqwest(&err))?;
    let status = response.status();
    if !status.is_success() {
        let retry_after = retry_after(response.headers());
        return Err(ProviderError::from_status(status, retry_after));
    }
    Ok(response)
}

/// `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    // Any number of seconds, however large: callers cap every pause at their deadline.
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

impl Llm {
    /// The LLM client for a chat configuration: one pooled HTTP client shared by every provider.
    pub fn from_config(
        config: &crate::config::ChatConfig,
        keys: crate::secrets::ProviderKeys,
    ) -> Result<Self, crate::config::ConfigError> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("serverless-chat/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| crate::config::ConfigError::Init {
                what: "the HTTP client",
                reason: err.to_string(),
            })?;
        let providers = config
            .providers
            .iter()
            .map(|name| {
                let (provider, models): (std::sync::Arc<dyn Provider>, &Vec<String>) =
                    match name.as_str() {
                        "openai" => (
                            std::sync::Arc::new(OpenAi::new(http.clone(), &config.openai_base_url)),
                            &config.openai_models,
                        ),
                        "gemini" => (
                            std::sync::Arc::new(Gemini::new(http.clone(), &config.gemini_base_url)),
                            &config.gemini_models,
                        ),
                        _ => (
                            std::sync::Arc::new(Echo::new(
                                config.echo_latency,
                                config.echo_token_delay,
                            )),
                            &config.echo_models,
                        ),
                    };
                ProviderSettings {
                    provider,
                    models: models.clone(),
                }
            })
            .collect();
        let llm_config = LlmConfig {
            default_provider: config.default_provider.clone(),
            fallback: config.fallback.clone(),
            system_prompt: config.system_prompt.clone(),
            max_attempts: config.max_attempts,
            backoff: crate::backoff::Backoff {
                base: config.backoff_base,
                cap: config.backoff_cap,
            },
            request_timeout: config.request_timeout,
            max_output_tokens: config.max_output_tokens,
            breaker: BreakerConfig {
                failures: config.breaker_failures,
                cool_down: config.breaker_cool_down,
            },
        };
        Ok(Llm::new(providers, llm_config, keys))
    }
}
