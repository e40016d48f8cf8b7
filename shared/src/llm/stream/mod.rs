//! Streamed answers: [`Llm::stream`] and the [`ReplyStream`] it hands out, and where their pieces
//! come from (a provider's server-sent events, `sse.rs`, or the echo provider's words).
//!
//! Retries, breakers and the fallback list act until a provider's first piece of text is in hand
//! (the same loop as `complete`, in `resilient/fallback.rs`); after that the stream belongs to the caller,
//! and every read is bounded by the request's deadline.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

mod converse;
mod sse;

pub(super) use converse::{failure, usage, ConverseSource};
pub(super) use sse::{malformed_chunk, reported_error, Parsed, SseSource};

use super::{
    resilient::{Ask, Served},
    BoxFuture, Call, Choice, ContextMessage, Llm, LlmError, Provider, ProviderError, Tab,
};
use crate::domain::TokenUsage;

/// A piece of a provider's stream: text (possibly empty), and usage when the provider reports it.
#[derive(Debug, Default)]
pub(super) struct Piece {
    pub(super) text: String,
    pub(super) usage: Option<TokenUsage>,
    /// The provider said the reply is complete (a finish reason).
    pub(super) finished: bool,
}

/// Where a stream's pieces come from.
pub(super) enum Source {
    /// A provider's server-sent events.
    Sse(SseSource),
    /// Bedrock's `ConverseStream` events, read by the AWS SDK.
    Bedrock(ConverseSource),
    /// Words handed out one by one after a delay each (the echo provider), its usage reported
    /// with the last, as providers report theirs at the end.
    Words {
        words: VecDeque<String>,
        delay: Duration,
        usage: TokenUsage,
    },
}

impl Source {
    /// The next piece; `Ok(None)` at the normal end. Unbounded: callers bound it.
    async fn next(&mut self) -> Result<Option<Piece>, ProviderError> {
        match self {
            Self::Sse(source) => source.next().await,
            Self::Bedrock(source) => source.next().await,
            Self::Words {
                words,
                delay,
                usage,
            } => {
                if words.is_empty() {
                    return Ok(None);
                }
                if !delay.is_zero() {
                    tokio::time::sleep(*delay).await;
                }
                Ok(words.pop_front().map(|text| Piece {
                    text,
                    usage: words.is_empty().then_some(*usage),
                    finished: words.is_empty(),
                }))
            }
        }
    }
}

/// A stream whose first piece of text is in hand.
pub(super) struct Started {
    source: Source,
    first: String,
    usage: Option<TokenUsage>,
}

/// Asks for a stream, and waits (within the call's timeout) for its first piece of text: until
/// then a failure is the provider's, to be retried or passed on to the fallback.
struct Streaming;

impl Ask for Streaming {
    type Reply = Started;
    const KIND: &'static str = "stream";
    const LATENCY_METRIC: &'static str = "ProviderFirstTokenLatency";

    fn ask<'a>(
        &self,
        provider: &'a dyn Provider,
        call: Call<'a>,
    ) -> BoxFuture<'a, Result<Started, ProviderError>> {
        Box::pin(async move {
            let timeout = call.timeout;
            let first = async {
                let mut source = provider.stream(call).await?;
                let mut usage = None;
                loop {
                    let piece = source.next().await?.ok_or_else(|| {
                        ProviderError::Malformed("the provider streamed no text".to_owned())
                    })?;
                    usage = piece.usage.or(usage);
                    if !piece.text.is_empty() {
                        return Ok(Started {
                            source,
                            first: piece.text,
                            usage,
                        });
                    }
                }
            };
            tokio::time::timeout(timeout, first)
                .await
                .unwrap_or(Err(ProviderError::TimedOut))
        })
    }

    fn usage(_: &Started) -> Option<TokenUsage> {
        None
    }
}

impl Llm {
    /// Starts a streamed answer with the chosen provider, or a fallback. Retries, the breakers
    /// and the fallback list act only until the first piece of text is available: this resolves
    /// with a stream whose first piece is already in hand (so a failure before the first token
    /// never reaches the client), or fails like [`Llm::complete`] does ([`LlmError`]).
    ///
    /// Each attempt may take `LLM_REQUEST_TIMEOUT_MS` to produce its first piece; the stream as a
    /// whole is bounded by `deadline` only. Dropping the stream closes the provider's connection.
    pub async fn stream(
        &self,
        choice: &Choice,
        messages: &[ContextMessage],
        deadline: Instant,
        tab: &dyn Tab,
    ) -> Result<ReplyStream, LlmError> {
        let (started, served) = self
            .ask(&Streaming, choice, messages, deadline, tab)
            .await?;
        Ok(ReplyStream {
            source: Some(started.source),
            input_bound: super::input_token_bound(messages, self.system_prompt()),
            output_bound: super::output_token_bound(&started.first),
            first: Some(started.first),
            deadline,
            served,
            reported: started.usage,
        })
    }
}

/// A streamed answer, its first piece already received. Dropping it drops the provider's
/// response and so closes its connection; it runs nothing in the background.
pub struct ReplyStream {
    /// `None` once the stream ended or failed.
    source: Option<Source>,
    first: Option<String>,
    deadline: Instant,
    served: Served,
    /// The usage the provider reported, once it has.
    reported: Option<TokenUsage>,
    /// Until it has: the bounds of the input and of the text generated so far.
    input_bound: u64,
    output_bound: u64,
}

/// Why a started stream did not end normally. Its text is ours, safe to show a client.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The provider sent nothing more before the request's deadline.
    #[error("the provider sent nothing more before the deadline")]
    Stalled,
    /// A malformed chunk, an error event from the provider, or a broken connection.
    #[error("{0}")]
    Failed(String),
}

impl ReplyStream {
    /// The provider that answers (the chosen one, or a fallback).
    pub fn provider(&self) -> &str {
        &self.served.provider
    }

    /// The model that answers.
    pub fn model(&self) -> &str {
        &self.served.model
    }

    /// The next piece of the reply; `Ok(None)` at the normal end. Each call is bounded by the
    /// deadline given to [`Llm::stream`]: a provider that stalls past it yields
    /// `Err(StreamError::Stalled)`. A malformed chunk, a provider error event or a broken
    /// connection mid-stream is `Err(StreamError::Failed(_))` (its text is ours, never the
    /// provider's body or a key), and counts against the provider's breaker. After the end or
    /// an error the connection is closed, and further calls return `Ok(None)`.
    ///
    /// Cancel-safe: a call abandoned while it waits loses no text.
    pub async fn next(&mut self) -> Result<Option<String>, StreamError> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first));
        }
        let Some(source) = self.source.as_mut() else {
            return Ok(None);
        };
        let deadline = tokio::time::Instant::from_std(self.deadline);
        loop {
            let Ok(result) = tokio::time::timeout_at(deadline, source.next()).await else {
                // Not the provider's fault for sure (the answer may just be long): no breaker.
                tracing::warn!(
                    provider = self.served.provider,
                    "provider stream stalled past the deadline"
                );
                self.close(false);
                return Err(StreamError::Stalled);
            };
            match result {
                Ok(Some(piece)) => {
                    self.reported = piece.usage.or(self.reported);
                    if piece.text.is_empty() {
                        continue;
                    }
                    self.output_bound = self
                        .output_bound
                        .saturating_add(super::output_token_bound(&piece.text));
                    return Ok(Some(piece.text));
                }
                Ok(None) => {
                    self.close(false);
                    return Ok(None);
                }
                Err(err) => {
                    // A slow read says nothing of the provider's health.
                    if !matches!(err, ProviderError::TimedOut) {
                        self.served.breaker.failure();
                    }
                    tracing::warn!(provider = self.served.provider, error = %err, "provider stream failed");
                    self.close(true);
                    return Err(StreamError::Failed(failure_text(&err)));
                }
            }
        }
    }

    /// Tokens used: the provider's reported usage once it has been seen (OpenAI: the final
    /// chunk's `usage`; Gemini: `usageMetadata` with a candidates count), otherwise the
    /// conservative **bound** that admission uses ([`super::input_token_bound`] for the prompt,
    /// system prompt included) and the bytes of the reply streamed so far: a stopped or broken
    /// stream is never charged less than the provider may bill.
    pub fn usage(&self) -> TokenUsage {
        self.reported.unwrap_or(TokenUsage {
            input_tokens: self.input_bound,
            output_tokens: self.output_bound,
        })
    }

    /// Drops the provider's response (closing its connection unless it was read to the end) and
    /// records the stream's tokens, once.
    fn close(&mut self, failed: bool) {
        if self.source.take().is_none() {
            return;
        }
        let usage = self.usage();
        let mut metrics = vec![
            ("InputTokens", usage.input_tokens as f64, "Count"),
            ("OutputTokens", usage.output_tokens as f64, "Count"),
        ];
        if failed {
            metrics.push(("ProviderErrors", 1.0, "Count"));
        }
        crate::telemetry::emit_metrics(
            &[
                ("Provider", &self.served.provider),
                ("Model", &self.served.model),
            ],
            &metrics,
        );
    }
}

impl Drop for ReplyStream {
    /// A stream the caller stops reading (the client went away) still counts its tokens.
    fn drop(&mut self) {
        self.close(false);
    }
}

impl std::fmt::Debug for ReplyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyStream")
            .field("provider", &self.served.provider)
            .field("model", &self.served.model)
            .field("open", &self.source.is_some())
            .finish_non_exhaustive()
    }
}

/// The client-safe text of a mid-stream failure: built from our own words only.
fn failure_text(err: &ProviderError) -> String {
    match err {
        ProviderError::Transient { reason, .. } => {
            format!("the provider's stream broke off: {reason}")
        }
        ProviderError::Malformed(what) => format!("the provider's stream was malformed: {what}"),
        ProviderError::TimedOut => "the provider's stream broke off: timeout".to_owned(),
        ProviderError::Unauthorized
        | ProviderError::Rejected { .. }
        | ProviderError::NotAdmitted => "the provider refused to go on".to_owned(),
    }
}

/// Splits `text` into pieces that each start with the whitespace before a word, so that they
/// concatenate to `text` exactly (`"echo: a b"` → `"echo:"`, `" a"`, `" b"`).
pub(super) fn word_pieces(text: &str) -> VecDeque<String> {
    let mut pieces = VecDeque::new();
    let mut start = 0;
    let mut previous_space = true;
    for (index, c) in text.char_indices() {
        let space = c.is_whitespace();
        // A word ended here: its piece ends, unless only whitespace follows.
        if space && !previous_space && !text[index..].trim_start().is_empty() {
            pieces.push_back(text[start..index].to_owned());
            start = index;
        }
        previous_space = space;
    }
    if start < text.len() || pieces.is_empty() {
        pieces.push_back(text[start..].to_owned());
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_pieces_concatenate_to_the_text() {
        for text in [
            "echo: hello there",
            "echo: ",
            "echo:  a\n b  ",
            "echo: ünï cödé  x",
        ] {
            let pieces = word_pieces(text);
            assert_eq!(pieces.iter().map(String::as_str).collect::<String>(), text);
            assert!(pieces
                .iter()
                .all(|piece| !piece.trim().is_empty() || pieces.len() == 1));
        }
        assert_eq!(
            word_pieces("echo: hello there"),
            ["echo:", " hello", " there"]
        );
    }

    #[test]
    fn streams_can_move_between_tasks() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<ReplyStream>();
        shareable::<StreamError>();
    }
}
