//! [`Llm`]: chooses a provider and model, then calls providers with retries, breakers and
//! fallback, never past the request's deadline.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    breaker::{Breaker, BreakerConfig},
    Call, ContextMessage, Provider, ProviderError,
};
use crate::{
    backoff::full_jitter,
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
    pub(super) backoff_base: Duration,
    pub(super) backoff_cap: Duration,
    /// The longest a single provider request may take.
    pub(super) request_timeout: Duration,
    pub(super) breaker: BreakerConfig,
}

/// A provider's answer, and who gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
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
    breaker: Breaker,
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
                breaker: Breaker::new(config.breaker),
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
    ) -> Result<Answer, LlmError> {
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
            match self.call(slot, &model, messages, &mut keys, deadline).await {
                Ok(completion) => {
                    slot.breaker.success();
                    return Ok(Answer {
                        text: completion.text,
                        usage: completion.usage,
                        provider: name.to_owned(),
                        model,
                    });
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
    async fn call(
        &self,
        slot: &Slot,
        model: &str,
        messages: &[ContextMessage],
        keys: &mut Keys,
        deadline: Instant,
    ) -> Result<super::Completion, ProviderError> {
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
            let result = provider
                .complete(Call {
                    model,
                    system: self.config.system_prompt.as_deref(),
                    messages,
                    key,
                    timeout: remaining.min(self.config.request_timeout),
                })
                .await;
            let latency_ms = started.elapsed().as_secs_f64() * 1_000.0;
            tracing::info!(
                provider = provider.name(),
                model,
                attempt,
                ok = result.is_ok(),
                latency_ms,
                "provider call"
            );
            let (input, output) = result
                .as_ref()
                .map_or((0, 0), |c| (c.usage.input_tokens, c.usage.output_tokens));
            crate::telemetry::emit_metrics(
                &[("Provider", provider.name()), ("Model", model)],
                &[
                    ("ProviderLatency", latency_ms, "Milliseconds"),
                    (
                        "ProviderErrors",
                        f64::from(u8::from(result.is_err())),
                        "Count",
                    ),
                    ("InputTokens", input as f64, "Count"),
                    ("OutputTokens", output as f64, "Count"),
                ],
            );
            match result {
                Ok(completion) => return Ok(completion),
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
                    let pause = retry_after.unwrap_or_else(|| {
                        full_jitter(self.config.backoff_base, self.config.backoff_cap, attempt)
                    });
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
