//! [`Llm`]: chooses a provider and model, then calls providers with retries, breakers and
//! fallback, never past the request's deadline. What a request may choose is in `choice.rs`; the
//! calls, their retries and the fallback list in `fallback.rs`.

mod choice;
mod fallback;

pub use choice::Offer;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    breaker::{Breaker, BreakerConfig},
    BoxFuture, Call, ContextMessage, Provider, ProviderError, Tab, WholeReply,
};
use crate::{
    backoff::Backoff,
    domain::TokenUsage,
    secrets::{Keys, ProviderKeys, SecretsError},
};

/// A provider with the models clients may ask it for; the first is its default.
pub(super) struct ProviderSettings {
    pub(super) provider: Arc<dyn Provider>,
    pub(super) models: Vec<String>,
}

#[derive(Debug, Clone)]
pub(super) struct LlmConfig {
    /// Used when a request names no provider.
    pub(super) default_provider: String,
    /// Tried in this order when the chosen provider fails or its breaker is open.
    pub(super) fallback: Vec<String>,
    pub(super) system_prompt: Option<String>,
    /// Attempts per provider for transient failures.
    pub(super) max_attempts: u32,
    /// Between attempts, unless the provider says when to come back (`Retry-After`).
    pub(super) backoff: Backoff,
    /// The longest a single provider request may take.
    pub(super) request_timeout: Duration,
    /// The most tokens a reply may have, sent with every call.
    pub(super) max_output_tokens: u32,
    pub(super) breaker: BreakerConfig,
}

/// A completed answer to a conversation: the provider's whole reply, and who gave it (the
/// chosen provider or a fallback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub text: String,
    pub usage: TokenUsage,
    pub provider: String,
    pub model: String,
}

/// Why no answer came.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The request named a provider or model that is not available to it.
    #[error("{field}: {detail}")]
    Invalid { field: &'static str, detail: String },
    #[error(transparent)]
    Keys(#[from] SecretsError),
    /// Every provider tried refused the request itself.
    #[error("the provider {provider} rejected the request")]
    Rejected { provider: String },
    /// No provider could answer in time.
    #[error("no LLM provider could answer: {last}")]
    Unavailable { retry_after: Duration, last: String },
    /// The caller's [`Tab`] refused a retry or a fallback (the turn's budget is spent).
    #[error("the budget admits no further provider request")]
    NotAdmitted,
}

/// The most one request may be billed, by [`Llm::request_bound`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestBound {
    pub input: u64,
    pub output: u64,
}

impl RequestBound {
    pub fn whole(&self) -> u64 {
        self.input.saturating_add(self.output)
    }
}

/// The provider and model a request will use.
#[derive(Debug, Clone)]
pub struct Choice {
    index: usize,
    pub provider: String,
    pub model: String,
    keys: Keys,
}

struct Slot {
    settings: ProviderSettings,
    breaker: Arc<Breaker>,
}

/// One way of asking a provider: for a whole answer, or for the start of a stream.
pub(super) trait Ask {
    type Reply: Send;
    /// `complete` or `stream`, for the logs.
    const KIND: &'static str;
    /// The metric that takes an attempt's latency.
    const LATENCY_METRIC: &'static str;
    fn ask<'a>(
        &self,
        provider: &'a dyn Provider,
        call: Call<'a>,
    ) -> BoxFuture<'a, Result<Self::Reply, ProviderError>>;
    /// The tokens reported once the reply is in hand, for the metrics.
    fn usage(reply: &Self::Reply) -> Option<TokenUsage>;
}

/// Asks for a whole answer.
struct Completing;

impl Ask for Completing {
    type Reply = WholeReply;
    const KIND: &'static str = "complete";
    const LATENCY_METRIC: &'static str = "ProviderLatency";

    fn ask<'a>(
        &self,
        provider: &'a dyn Provider,
        call: Call<'a>,
    ) -> BoxFuture<'a, Result<WholeReply, ProviderError>> {
        provider.complete(call)
    }

    fn usage(reply: &WholeReply) -> Option<TokenUsage> {
        reply.usage
    }
}

/// Who answered: the provider, the model, and the provider's breaker.
pub(super) struct Served {
    pub(super) provider: String,
    pub(super) model: String,
    pub(super) breaker: Arc<Breaker>,
}

/// The LLM client of an execution environment: built once, shared by every invocation.
pub struct Llm {
    slots: Vec<Slot>,
    config: LlmConfig,
    keys: ProviderKeys,
}

impl Llm {
    pub(super) fn new(
        providers: Vec<ProviderSettings>,
        config: LlmConfig,
        keys: ProviderKeys,
    ) -> Self {
        let slots = providers
            .into_iter()
            .map(|settings| Slot {
                settings,
                breaker: Arc::new(Breaker::new(config.breaker)),
            })
            .collect();
        Self {
            slots,
            config,
            keys,
        }
    }

    /// The names of the enabled providers.
    pub fn providers(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().map(|slot| slot.settings.provider.name())
    }

    /// The breaker state of a provider (`closed`, `open`, `half_open`).
    pub fn breaker_state(&self, provider: &str) -> Option<&'static str> {
        self.slot(provider).map(|(_, slot)| slot.breaker.state())
    }

    fn slot(&self, name: &str) -> Option<(usize, &Slot)> {
        self.slots
            .iter()
            .enumerate()
            .find(|(_, slot)| slot.settings.provider.name() == name)
    }

    /// Answers `messages` with the chosen provider, or a fallback, before `deadline`, each
    /// request admitted by `tab`. The completion's usage is the provider's report or, if it
    /// reported none, the bound of [`super::input_token_bound`] and its text's bytes.
    pub async fn complete(
        &self,
        choice: &Choice,
        messages: &[ContextMessage],
        deadline: Instant,
        tab: &dyn Tab,
    ) -> Result<Completion, LlmError> {
        let (reply, served) = self
            .ask(&Completing, choice, messages, deadline, tab)
            .await?;
        let usage = reply
            .usage
            .unwrap_or_else(|| super::bound_usage(messages, self.system_prompt(), &reply.text));
        Ok(Completion {
            text: reply.text,
            usage,
            provider: served.provider,
            model: served.model,
        })
    }

    /// The most tokens one reply may have: every call asks the provider for no more, so that a
    /// turn's worst case is its input and this.
    pub fn output_cap(&self) -> u32 {
        self.config.max_output_tokens
    }

    /// The most tokens one request with these messages may be billed if the provider keeps to
    /// the output cap: [`super::input_token_bound`] (with the system prompt) and the cap.
    pub fn request_bound(&self, messages: &[ContextMessage]) -> RequestBound {
        RequestBound {
            input: super::input_token_bound(messages, self.system_prompt()),
            output: u64::from(self.config.max_output_tokens),
        }
    }

    /// Opens what the first turn would: reads the provider keys, then opens a connection to the
    /// default provider with a request that costs nothing. A failure is logged and left to
    /// the first turn, which tries again.
    pub async fn connect(&self) {
        let keys = match self.keys.get(false).await {
            Ok(keys) => keys,
            Err(err) => {
                tracing::warn!(error = %err, "could not read the provider keys ahead of the first turn");
                return;
            }
        };
        let Some((_, slot)) = self.slot(&self.config.default_provider) else {
            return;
        };
        let provider = &slot.settings.provider;
        let key = provider.key_name().and_then(|name| keys.get(name));
        if provider.key_name().is_some() && key.is_none() {
            return;
        }
        if let Err(err) = provider.connect(key, self.config.request_timeout).await {
            tracing::warn!(
                provider = provider.name(),
                error = %err,
                "could not open a connection to the provider ahead of the first turn"
            );
        }
    }

    /// The system prompt sent with every call.
    pub(super) fn system_prompt(&self) -> Option<&str> {
        self.config.system_prompt.as_deref()
    }
}
