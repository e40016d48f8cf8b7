//! [`Llm`]: chooses a provider and model, then calls providers with retries, breakers and
//! fallback, never past the request's deadline.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    breaker::{Breaker, BreakerConfig},
    BoxFuture, Call, ContextMessage, Provider, ProviderError, WholeReply,
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
    /// The tokens known once the reply is in hand, for the metrics.
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
        Some(reply.usage)
    }
}

/// A provider clients may choose, and its models (the first is its default).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Offer {
    pub provider: String,
    pub models: Vec<String>,
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

    /// What clients may choose: the enabled providers that have a key, each with its models (the
    /// first is its default), and the default provider first if it is offered. Nothing secret.
    pub async fn offered(&self) -> Result<Vec<Offer>, LlmError> {
        let keys = self.keys_if_needed().await?;
        let mut offers: Vec<Offer> = self
            .slots
            .iter()
            .filter(|slot| self.has_key(slot, &keys))
            .map(|slot| Offer {
                provider: slot.settings.provider.name().to_owned(),
                models: slot.settings.models.clone(),
            })
            .collect();
        if let Some(at) = offers
            .iter()
            .position(|offer| offer.provider == self.config.default_provider)
        {
            offers[..=at].rotate_right(1);
        }
        Ok(offers)
    }

    /// Checks a request's provider and model against what is enabled and has a key.
    pub async fn choose(
        &self,
        provider: Option<&str>,
        model: Option<&str>,
    ) -> Result<Choice, LlmError> {
        let name = provider.unwrap_or(&self.config.default_provider);
        let enabled = || self.providers().collect::<Vec<_>>().join(", ");
        let (index, slot) = self.slot(name).ok_or_else(|| LlmError::Invalid {
            field: "provider",
            detail: format!("unknown or disabled provider; enabled: {}", enabled()),
        })?;
        let models = &slot.settings.models;
        let model = match model {
            None => models.first().cloned().unwrap_or_default(),
            Some(model) if models.iter().any(|allowed| allowed == model) => model.to_owned(),
            Some(_) => {
                return Err(LlmError::Invalid {
                    field: "model",
                    detail: format!("not allowed for {name}; allowed: {}", models.join(", ")),
                })
            }
        };
        let keys = self.keys_if_needed().await?;
        if !self.has_key(slot, &keys) {
            return Err(LlmError::Invalid {
                field: "provider",
                detail: format!("{name} has no API key configured"),
            });
        }
        Ok(Choice {
            index,
            provider: name.to_owned(),
            model,
            keys,
        })
    }

    /// Reads the keys only if some enabled provider needs one.
    async fn keys_if_needed(&self) -> Result<Keys, SecretsError> {
        if self
            .slots
            .iter()
            .any(|slot| slot.settings.provider.key_name().is_some())
        {
            self.keys.get(false).await
        } else {
            Ok(Keys::default())
        }
    }

    fn has_key(&self, slot: &Slot, keys: &Keys) -> bool {
        slot.settings
            .provider
            .key_name()
            .is_none_or(|name| keys.get(name).is_some())
    }

    /// Answers `messages` with the chosen provider, or a fallback, before `deadline`.
    pub async fn complete(
        &self,
        choice: &Choice,
        messages: &[ContextMessage],
        deadline: Instant,
    ) -> Result<Completion, LlmError> {
        let (reply, served) = self.ask(&Completing, choice, messages, deadline).await?;
        Ok(Completion {
            text: reply.text,
            usage: reply.usage,
            provider: served.provider,
            model: served.model,
        })
    }

    /// The most tokens one reply may have: every call asks the provider for no more, so that a
    /// turn's worst case is its input and this.
    pub fn output_cap(&self) -> u32 {
        self.config.max_output_tokens
    }

    /// The system prompt sent with every call.
    pub(super) fn system_prompt(&self) -> Option<&str> {
        self.config.system_prompt.as_deref()
    }

    /// Asks the chosen provider, then the fallback list, each with [`Self::call`]; a provider's
    /// breaker records a success once it has replied.
    pub(super) async fn ask<A: Ask>(
        &self,
        ask: &A,
        choice: &Choice,
        messages: &[ContextMessage],
        deadline: Instant,
    ) -> Result<(A::Reply, Served), LlmError> {
        let fallback = self
            .config
            .fallback
            .iter()
            .filter_map(|name| self.slot(name).map(|(index, _)| index))
            .filter(|&index| index != choice.index);
        let mut keys = choice.keys.clone();
        let mut rejected_by: Option<String> = None;
        let mut last_failure = String::from("no provider was tried");
        let mut retry_at: Option<Instant> = None;
        for index in std::iter::once(choice.index).chain(fallback) {
            let slot = &self.slots[index];
            let name = slot.settings.provider.name();
            if !self.has_key(slot, &keys) {
                continue;
            }
            if !slot.breaker.try_acquire() {
                last_failure = format!("{name}: circuit open");
                retry_at = earliest(retry_at, slot.breaker.refusing_until());
                continue;
            }
            let model = if index == choice.index {
                choice.model.clone()
            } else {
                slot.settings.models.first().cloned().unwrap_or_default()
            };
            match self
                .call(ask, slot, &model, messages, &mut keys, deadline)
                .await
            {
                Ok(reply) => {
                    slot.breaker.success();
                    let served = Served {
                        provider: name.to_owned(),
                        model,
                        breaker: Arc::clone(&slot.breaker),
                    };
                    return Ok((reply, served));
                }
                Err(ProviderError::Rejected { status }) => {
                    // Our request was refused; the provider itself is healthy.
                    slot.breaker.success();
                    tracing::warn!(provider = name, status, "provider rejected the request");
                    rejected_by.get_or_insert_with(|| name.to_owned());
                    last_failure = format!("{name}: rejected with HTTP {status}");
                }
                Err(err) => {
                    slot.breaker.failure();
                    tracing::warn!(provider = name, error = %err, breaker = slot.breaker.state(), "provider failed");
                    last_failure = format!("{name}: {err}");
                    retry_at = earliest(retry_at, slot.breaker.refusing_until());
                }
            }
        }
        match rejected_by {
            Some(provider) if retry_at.is_none() => Err(LlmError::Rejected { provider }),
            _ => Err(LlmError::Unavailable {
                retry_after: retry_at
                    .map(|at| at.saturating_duration_since(Instant::now()))
                    .unwrap_or(Duration::from_secs(2))
                    .max(Duration::from_secs(1)),
                last: last_failure,
            }),
        }
    }

    /// One provider, retried on transient failures with capped exponential backoff and full
    /// jitter (or the provider's `Retry-After`), and once at once with fresh keys after a 401.
    async fn call<A: Ask>(
        &self,
        ask: &A,
        slot: &Slot,
        model: &str,
        messages: &[ContextMessage],
        keys: &mut Keys,
        deadline: Instant,
    ) -> Result<A::Reply, ProviderError> {
        let provider = &slot.settings.provider;
        let mut attempt = 0;
        let mut refreshed = false;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining < Duration::from_millis(50) {
                return Err(ProviderError::Transient {
                    reason: "no time left before the deadline".to_owned(),
                    retry_after: None,
                });
            }
            attempt += 1;
            let key = provider.key_name().and_then(|name| keys.get(name));
            let started = Instant::now();
            let result = ask
                .ask(
                    &**provider,
                    Call {
                        model,
                        system: self.config.system_prompt.as_deref(),
                        messages,
                        key,
                        timeout: remaining.min(self.config.request_timeout),
                        max_output_tokens: self.config.max_output_tokens,
                    },
                )
                .await;
            let latency_ms = started.elapsed().as_secs_f64() * 1_000.0;
            tracing::info!(
                provider = provider.name(),
                model,
                attempt,
                kind = A::KIND,
                ok = result.is_ok(),
                latency_ms,
                "provider call"
            );
            let errors = f64::from(u8::from(result.is_err()));
            let mut metrics = vec![
                (A::LATENCY_METRIC, latency_ms, "Milliseconds"),
                ("ProviderErrors", errors, "Count"),
            ];
            // A stream's tokens are counted when it ends; a failed call used none we know of.
            let usage = result
                .as_ref()
                .map_or(Some(TokenUsage::default()), A::usage);
            if let Some(usage) = usage {
                metrics.push(("InputTokens", usage.input_tokens as f64, "Count"));
                metrics.push(("OutputTokens", usage.output_tokens as f64, "Count"));
            }
            crate::telemetry::emit_metrics(
                &[("Provider", provider.name()), ("Model", model)],
                &metrics,
            );
            match result {
                Ok(reply) => return Ok(reply),
                Err(ProviderError::Unauthorized) if !refreshed => {
                    // The key may have been rotated: read the secret again, once, right away.
                    refreshed = true;
                    attempt -= 1;
                    *keys = self
                        .keys
                        .get(true)
                        .await
                        .map_err(|_| ProviderError::Unauthorized)?;
                }
                Err(ProviderError::Transient {
                    reason,
                    retry_after,
                }) if attempt < self.config.max_attempts => {
                    let pause = retry_after.unwrap_or_else(|| self.config.backoff.pause(attempt));
                    // A provider may ask for any pause (`Retry-After: 18446744073709551615`):
                    // one that would end past the deadline is not taken, and no sum overflows.
                    let resume = Instant::now().checked_add(pause);
                    if resume.is_none_or(|resume| resume >= deadline) {
                        return Err(ProviderError::Transient {
                            reason,
                            retry_after,
                        });
                    }
                    tokio::time::sleep(pause).await;
                }
                Err(err) => return Err(err),
            }
        }
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
