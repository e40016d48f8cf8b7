//! `echo`: an offline, deterministic provider for local runs, smoke tests and load tests.
//! It answers with the last user message; an optional latency stands in for a real LLM.

use std::time::Duration;

use super::{BoxFuture, Call, Completion, Provider, ProviderError, Role};
use crate::domain::TokenUsage;

pub(super) struct Echo {
    latency: Duration,
}

impl Echo {
    pub(super) fn new(latency: Duration) -> Self {
        Self { latency }
    }
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
            let last = call
                .messages
                .iter()
                .rev()
                .find(|message| message.role == Role::User)
                .map_or("", |message| message.content.as_str());
            let words = |text: &str| text.split_whitespace().count() as u64;
            let input_tokens = call.messages.iter().map(|m| words(&m.content)).sum::<u64>()
                + call.system.map_or(0, words);
            Ok(Completion {
                text: format!("echo: {last}"),
                usage: TokenUsage {
                    input_tokens,
                    output_tokens: words(last) + 1,
                },
            })
        })
    }
}
