//! The calls: the chosen provider, then the fallback list, each provider retried on transient
//! failures within the deadline.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::{Ask, Choice, Llm, LlmError, Served, Slot};
use crate::{
    domain::TokenUsage,
    llm::{Billed, Call, ContextMessage, ProviderError, Tab},
    secrets::Keys,
};

impl Llm {
    /// Asks the chosen provider, then the fallback list, each with [`Self::call`]; a provider's
    /// breaker records a success once it has replied.
    pub(in crate::llm) async fn ask<A: Ask>(
        &self,
        ask: &A,
        choice: &Choice,
        messages: &[ContextMessage],
        deadline: Instant,
        tab: &dyn Tab,
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
                .call(ask, slot, &model, messages, &mut keys, deadline, tab)
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
                // The budget ends the turn: no further provider is tried.
                Err(ProviderError::NotAdmitted) => return Err(LlmError::NotAdmitted),
                Err(ProviderError::Rejected { status }) => {
                    // Our request was refused; the provider itself is healthy.
                    slot.breaker.success();
                    tracing::warn!(provider = name, status, "provider rejected the request");
                    rejected_by.get_or_insert_with(|| name.to_owned());
                    last_failure = format!("{name}: rejected with HTTP {status}");
                }
                // This request was slow (a long answer, a thinking model): that says nothing of
                // the provider's health, so the breaker does not count it.
                Err(err @ ProviderError::TimedOut) => {
                    tracing::warn!(provider = name, "provider did not answer in time");
                    last_failure = format!("{name}: {err}");
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
    /// Each request is admitted by `tab` before it is sent, and each failure reported to it.
    #[allow(clippy::too_many_arguments)]
    async fn call<A: Ask>(
        &self,
        ask: &A,
        slot: &Slot,
        model: &str,
        messages: &[ContextMessage],
        keys: &mut Keys,
        deadline: Instant,
        tab: &dyn Tab,
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
                    billed: Billed::Nothing,
                });
            }
            if !tab.admit().await {
                return Err(ProviderError::NotAdmitted);
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
            if let Err(err) = &result {
                tab.failed(err.billed());
            }
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
                Err(err @ (ProviderError::Transient { .. } | ProviderError::TimedOut))
                    if attempt < self.config.max_attempts =>
                {
                    let asked = match &err {
                        ProviderError::Transient { retry_after, .. } => *retry_after,
                        _ => None,
                    };
                    let pause = asked.unwrap_or_else(|| self.config.backoff.pause(attempt));
                    // A provider may ask for any pause (`Retry-After: 18446744073709551615`):
                    // one that would end past the deadline is not taken, and no sum overflows.
                    let resume = Instant::now().checked_add(pause);
                    if resume.is_none_or(|resume| resume >= deadline) {
                        return Err(err);
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
