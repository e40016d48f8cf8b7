//! `echo`: an offline, deterministic provider for local runs, smoke tests and load tests.
//! It answers with the last user message; an optional latency stands in for a real LLM, and when
//! streaming, a delay before each word for its generation time.

use std::time::Duration;

use super::{
    stream::{word_pieces, Source},
    BoxFuture, Call, Completion, Provider, ProviderError, Role,
};
use crate::domain::TokenUsage;

pub(super) struct Echo {
    latency: Duration,
    token_delay: Duration,
}

impl Echo {
    pub(super) fn new(latency: Duration, token_delay: Duration) -> Self {
        Self {
            latency,
            token_delay,
        }
    }
}

/// The echo's answer: `echo: ` and the last user message.
fn answer(call: &Call<'_>) -> String {
    let last = call
        .messages
        .iter()
        .rev()
        .find(|message| message.role == Role::User)
        .map_or("", |message| message.content.as_str());
    format!("echo: {last}")
}

impl Provider for Echo {
    fn name(&self) -> &str {
        "echo"
    }

    fn key_name(&self) -> Option<&str> {
        None
    }

    fn complete<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<Completion, ProviderError>> {
        Box::pin(async move {
            if !self.latency.is_zero() {
                tokio::time::sleep(self.latency.min(call.timeout)).await;
            }
            let text = answer(&call);
            Ok(Completion {
                usage: TokenUsage {
                    input_tokens: super::prompt_words(call.messages, call.system),
                    output_tokens: super::words(&text),
                },
                text,
            })
        })
    }

    /// The same text as `complete`, word by word: `ECHO_LATENCY_MS` before the first word, then
    /// `ECHO_TOKEN_DELAY_MS` before each.
    fn stream<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<Source, ProviderError>> {
        Box::pin(async move {
            if !self.latency.is_zero() {
                tokio::time::sleep(self.latency.min(call.timeout)).await;
            }
            Ok(Source::Words {
                words: word_pieces(&answer(&call)),
                delay: self.token_delay,
            })
        })
    }
}
