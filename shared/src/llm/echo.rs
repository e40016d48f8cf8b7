//! `echo`: an offline, deterministic provider for local runs, smoke tests and load tests.
//! It answers with the last user message; an optional latency stands in for a real LLM, and when
//! streaming, a delay before each word for its generation time.

use std::time::Duration;

use super::{
    stream::{word_pieces, Source},
    BoxFuture, Call, Provider, ProviderError, Role, WholeReply,
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

/// The echo's answer: `echo: ` and the last user message, cut after `call.max_output_tokens`
/// words as a real provider stops at its token cap.
fn answer(call: &Call<'_>) -> String {
    let last = call
        .messages
        .iter()
        .rev()
        .find(|message| message.role == Role::User)
        .map_or("", |message| message.content.as_str());
    let mut text = format!("echo: {last}");
    text.truncate(end_of_word(&text, call.max_output_tokens));
    text
}

/// Where `text` is cut to keep its first `count` whitespace-separated words: the end of the
/// last word kept, or the end of the text if no further word follows.
fn end_of_word(text: &str, count: u32) -> usize {
    let (mut words, mut end, mut in_word) = (0, 0, false);
    for (index, c) in text.char_indices() {
        if c.is_whitespace() {
            if in_word {
                end = index;
            }
            in_word = false;
        } else if !in_word {
            if words == count {
                return end;
            }
            words += 1;
            in_word = true;
        }
    }
    text.len()
}

impl Provider for Echo {
    fn name(&self) -> &str {
        "echo"
    }

    fn key_name(&self) -> Option<&str> {
        None
    }

    fn complete<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<WholeReply, ProviderError>> {
        Box::pin(async move {
            if !self.latency.is_zero() {
                tokio::time::sleep(self.latency.min(call.timeout)).await;
            }
            let text = answer(&call);
            Ok(WholeReply {
                usage: Some(usage(&call, &text)),
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
            let text = answer(&call);
            Ok(Source::Words {
                words: word_pieces(&text),
                delay: self.token_delay,
                usage: usage(&call, &text),
            })
        })
    }
}

/// The echo provider's token count: whitespace-separated words of the prompt and of the reply.
fn usage(call: &Call<'_>, text: &str) -> TokenUsage {
    TokenUsage {
        input_tokens: super::prompt_words(call.messages, call.system),
        output_tokens: super::words(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cut_falls_after_the_last_word_kept() {
        assert_eq!(end_of_word("echo: a  b\nc", 2), "echo: a".len());
        assert_eq!(end_of_word("echo: a  b\nc", 3), "echo: a  b".len());
        assert_eq!(
            end_of_word("echo: a b ", 3),
            "echo: a b ".len(),
            "nothing to cut"
        );
        assert_eq!(end_of_word("echo: ünï cödé", 2), "echo: ünï".len());
        assert_eq!(end_of_word("echo: a", 1), "echo:".len());
    }
}
