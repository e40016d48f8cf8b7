//! LLM providers behind one trait, and [`Llm`], which calls them with retries, a circuit breaker
//! per provider and an ordered fallback list, all inside the request's deadline.

mod anthropic;
mod bedrock;
mod breaker;
mod echo;
mod gemini;
mod openai;
mod resilient;
mod stream;
mod tab;

use std::{borrow::Cow, future::Future, pin::Pin, time::Duration};

use secrecy::SecretString;

use anthropic::Anthropic;
use bedrock::{Bedrock, BedrockSettings};
use breaker::BreakerConfig;
use echo::Echo;
use gemini::Gemini;
use openai::OpenAi;
pub use resilient::{Choice, Completion, Llm, LlmError, Offer, RequestBound};
use resilient::{LlmConfig, ProviderSettings};
use stream::Source;
pub use stream::{ReplyStream, StreamError};
pub use tab::{Billed, Tab, Unmetered};

use crate::domain::{Role, TokenUsage};

/// A boxed future, so that providers (and a turn's [`Tab`]) can live behind `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One message of the context sent to a provider, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextMessage {
    pub role: Role,
    pub content: String,
}

/// Whitespace-separated words: the echo provider's token count.
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

/// The context as APIs that want roles to alternate take it (Anthropic's Messages, Bedrock's
/// Converse): starting with the user (an assistant message before the first user message, as a
/// cut history can begin, is left out) and never the same role twice in a row (consecutive
/// messages of one role are joined by a blank line).
fn alternating(messages: &[ContextMessage]) -> Vec<(Role, Cow<'_, str>)> {
    let mut turns: Vec<(Role, Cow<'_, str>)> = Vec::with_capacity(messages.len());
    for message in messages {
        match turns.last_mut() {
            None if message.role == Role::Assistant => {}
            Some((role, content)) if *role == message.role => {
                let joined = content.to_mut();
                joined.push_str("\n\n");
                joined.push_str(&message.content);
            }
            _ => turns.push((message.role, Cow::Borrowed(&message.content))),
        }
    }
    turns
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
    /// `None` when the provider did not report it.
    pub usage: Option<TokenUsage>,
}

/// At least as many tokens as any provider counts for this input: a token is at least one byte
/// of UTF-8 in the byte-level tokenizers of OpenAI's and Gemini's models, and each message costs
/// a few tokens of framing. Far above the usual count (about four bytes a token in English): the
/// price of never overdrawing, paid back when the provider reports its usage.
pub fn input_token_bound(messages: &[ContextMessage], system: Option<&str>) -> u64 {
    let system = system.map_or(0, |text| bytes(text) + FRAMING);
    messages
        .iter()
        .map(|message| bytes(&message.content) + FRAMING)
        .fold(system + FRAMING, u64::saturating_add)
}

/// The same bound for generated text.
pub fn output_token_bound(text: &str) -> u64 {
    bytes(text)
}

/// The tokens of framing counted for each message (and for the reply).
const FRAMING: u64 = 8;

fn bytes(text: &str) -> u64 {
    u64::try_from(text.len()).unwrap_or(u64::MAX)
}

/// What a provider bills, at most, for the given input and generated text, by the bounds above.
fn bound_usage(messages: &[ContextMessage], system: Option<&str>, reply: &str) -> TokenUsage {
    TokenUsage {
        input_tokens: input_token_bound(messages, system),
        output_tokens: output_token_bound(reply),
    }
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
        /// What the failed request may be billed.
        billed: Billed,
    },
    /// The provider refused the request itself (a 4xx other than 401, 408 and 429).
    #[error("the provider rejected the request with HTTP {status}")]
    Rejected { status: u16 },
    /// The provider answered something that is not its documented response.
    #[error("the provider's response was malformed: {0}")]
    Malformed(String),
    /// No answer (or, streamed, no text) within the request's timeout: this request was slow,
    /// which says nothing of the provider's health. Retried like a transient failure, but not
    /// counted by the breaker.
    #[error("the provider did not answer within the request's timeout")]
    TimedOut,
    /// The turn's [`Tab`] refused another request: nothing was sent.
    #[error("the budget admits no further request")]
    NotAdmitted,
}

impl ProviderError {
    /// Sorts an HTTP failure status; `retry_after` comes from the response's header.
    fn from_status(status: reqwest::StatusCode, retry_after: Option<Duration>) -> Self {
        match status.as_u16() {
            401 => Self::Unauthorized,
            // 529: Anthropic's "overloaded".
            408 | 429 | 500 | 502 | 503 | 504 | 529 => Self::Transient {
                reason: format!("HTTP {status}"),
                retry_after,
                billed: Billed::Input,
            },
            status => Self::Rejected { status },
        }
    }

    fn from_reqwest(err: &reqwest::Error) -> Self {
        // A request that never connected reached no provider; one that did may have been
        // answered in full before the answer was lost.
        let (reason, billed) = if err.is_connect() {
            ("connect error", Billed::Nothing)
        } else if err.is_timeout() {
            return Self::TimedOut;
        } else if err.is_decode() {
            return Self::Malformed("the body is not the expected JSON".to_owned());
        } else {
            ("transport error", Billed::Whole)
        };
        Self::Transient {
            reason: reason.to_owned(),
            retry_after: None,
            billed,
        }
    }

    /// What the provider may bill for the request that failed so: nothing for one it never
    /// received or could not authenticate (no account to bill), the input for one it refused
    /// with a status, and the whole reply's worth for one it may have answered.
    fn billed(&self) -> Billed {
        match self {
            Self::Unauthorized | Self::NotAdmitted => Billed::Nothing,
            Self::Rejected { .. } => Billed::Input,
            Self::Transient { billed, .. } => *billed,
            Self::Malformed(_) | Self::TimedOut => Billed::Whole,
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
    /// Opens a connection ahead of the first call with a request that costs nothing (the
    /// provider's model list); nothing for a provider without a network.
    fn connect<'a>(
        &'a self,
        _key: Option<&'a SecretString>,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The most of a provider's answer that is read, whole or streamed: far above any reply a
/// message can hold (`store::Reply::MAX_CONTENT_BYTES`), so that a provider that ignores the
/// output cap cannot fill the function's 128 MB.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Sends a JSON request and reads a JSON answer, sorting failures into [`ProviderError`]s.
async fn post_json<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<T, ProviderError> {
    let mut response = send(request.timeout(timeout)).await?;
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| ProviderError::from_reqwest(&err))?
    {
        if bytes.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ProviderError::Malformed(format!(
                "the body is larger than {MAX_BODY_BYTES} bytes"
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&bytes).map_err(|err| ProviderError::Malformed(err.to_string()))
}

/// Sends a request that costs nothing and reads its answer whole, so that its connection goes
/// back to the pool open ([`Provider::connect`]).
async fn open_with(
    request: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<(), ProviderError> {
    let response = send(request.timeout(timeout)).await?;
    response
        .bytes()
        .await
        .map(drop)
        .map_err(|err| ProviderError::from_reqwest(&err))
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

/// The roots the providers' certificates are checked against (`LLM_TLS_ROOTS`). By default
/// Mozilla's, compiled in (`webpki-root-certs`): the providers' hosts are public, and loading the
/// system's store instead reads and parses every file of its certificate folder, about 4 ms of
/// every chat cold start (`docs/PERFORMANCE.md`). `system` uses the platform's verifier, which
/// reads the store (and `SSL_CERT_FILE`, `SSL_CERT_DIR`) when the client is built.
fn with_tls_roots(builder: reqwest::ClientBuilder, platform: bool) -> reqwest::ClientBuilder {
    if platform {
        return builder;
    }
    builder.tls_certs_only(
        webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .filter_map(|der| reqwest::Certificate::from_der(der).ok()),
    )
}

impl Llm {
    /// The LLM client for a chat configuration: one pooled HTTP client shared by every provider.
    pub fn from_config(
        config: &crate::config::ChatConfig,
        keys: crate::secrets::ProviderKeys,
    ) -> Result<Self, crate::config::ConfigError> {
        let http = with_tls_roots(reqwest::Client::builder(), config.system_tls_roots)
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
                        "bedrock" => (
                            std::sync::Arc::new(Bedrock::new(BedrockSettings {
                                region: config.bedrock_region.clone(),
                                endpoint: config.bedrock_endpoint.clone(),
                                connect_timeout: config.connect_timeout,
                                guardrail: config.bedrock_guardrail.clone(),
                                prompt_cache: config.bedrock_prompt_cache,
                            })),
                            &config.bedrock_models,
                        ),
                        "anthropic" => (
                            std::sync::Arc::new(Anthropic::new(
                                http.clone(),
                                &config.anthropic_base_url,
                            )),
                            &config.anthropic_models,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternating_roles_start_with_the_user_and_never_repeat_one() {
        let message = |role, content: &str| ContextMessage {
            role,
            content: content.to_owned(),
        };
        let context = [
            message(Role::Assistant, "cut from an earlier turn"),
            message(Role::User, "a"),
            message(Role::User, "b"),
            message(Role::Assistant, "c"),
            message(Role::Assistant, "d"),
            message(Role::User, "e"),
        ];
        let turns: Vec<(Role, String)> = alternating(&context)
            .into_iter()
            .map(|(role, content)| (role, content.into_owned()))
            .collect();
        assert_eq!(
            turns,
            [
                (Role::User, "a\n\nb".to_owned()),
                (Role::Assistant, "c\n\nd".to_owned()),
                (Role::User, "e".to_owned()),
            ]
        );
        assert!(alternating(&context[..1]).is_empty());
    }

    #[test]
    fn the_providers_client_trusts_the_compiled_in_roots_unless_a_store_is_named() {
        let parsed = webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .filter(|der| reqwest::Certificate::from_der(der).is_ok())
            .count();
        assert!(parsed > 100, "only {parsed} roots parse");
        assert_eq!(parsed, webpki_root_certs::TLS_SERVER_ROOT_CERTS.len());
        for platform in [false, true] {
            assert!(with_tls_roots(reqwest::Client::builder(), platform)
                .build()
                .is_ok());
        }
    }

    #[test]
    fn the_token_bound_counts_every_byte_and_the_framing_of_each_message() {
        let context = [
            ContextMessage {
                role: Role::User,
                content: "héllo".to_owned(), // 6 bytes
            },
            ContextMessage {
                role: Role::Assistant,
                content: String::new(),
            },
        ];
        // 8 for the reply's framing, 6 + 8, 0 + 8.
        assert_eq!(input_token_bound(&context, None), 30);
        // The system prompt: its bytes and framing.
        assert_eq!(input_token_bound(&context, Some("be brief")), 30 + 8 + 8);
        assert_eq!(input_token_bound(&[], None), 8);
        // Generated text: its bytes (a CJK character is three).
        assert_eq!(output_token_bound("日本"), 6);
    }
}
