//! Anthropic's Messages API (`POST /v1/messages`): the key in `x-api-key`, the API version in
//! `anthropic-version`, whole or streamed as its server-sent events.

use std::{borrow::Cow, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{
    alternating, open_with, post_json, send,
    stream::{malformed_chunk, reported_error, Parsed, Piece, Source, SseSource},
    BoxFuture, Call, Provider, ProviderError, Role, WholeReply,
};
use crate::domain::TokenUsage;

/// The API version every request names; its wire format is what this module reads.
const API_VERSION: &str = "2023-06-01";

pub(super) struct Anthropic {
    http: reqwest::Client,
    /// Up to and including `/v1`, e.g. `https://api.anthropic.com/v1`.
    base_url: String,
}

impl Anthropic {
    pub(super) fn new(http: reqwest::Client, base_url: &str) -> Self {
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
        }
    }
}

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    /// Required by the API: the reply's token cap.
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<&'a str>,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: Cow<'a, str>,
}

/// A whole answer: a `message` whose `content` is a list of blocks.
#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    content: Vec<Block>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Block {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

/// What Anthropic bills. Input is split three ways when prompt caching is on: uncached input,
/// input written to the cache, and input read from it; all three are the request's input.
#[derive(Deserialize, Default, Clone, Copy)]
struct Usage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: u64,
}

impl Usage {
    fn input(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_creation_input_tokens.unwrap_or(0))
            .saturating_add(self.cache_read_input_tokens.unwrap_or(0))
    }
}

impl From<Usage> for TokenUsage {
    fn from(usage: Usage) -> Self {
        TokenUsage {
            input_tokens: usage.input(),
            output_tokens: usage.output_tokens,
        }
    }
}

/// One event's data; its `type` says which (`message_start`, `content_block_delta`,
/// `message_delta`, `message_stop`, `ping`, `error`, and any the API adds later).
#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    message: Option<StartedMessage>,
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct StartedMessage {
    #[serde(default)]
    usage: Option<Usage>,
}

/// A `content_block_delta`'s delta (`text_delta` carries `text`) or a `message_delta`'s
/// (`stop_reason`).
#[derive(Deserialize)]
struct Delta {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    stop_reason: Option<String>,
}

/// Reads a stream's events in order. The input tokens come with `message_start`, the output's
/// (cumulative) with `message_delta` at the end: usage is reported once both are in hand, so a
/// stream that breaks off earlier is charged its bounds, never the one output token that
/// `message_start` counts.
#[derive(Default)]
struct StreamParser {
    started: Option<Usage>,
}

impl StreamParser {
    fn parse(&mut self, data: &str) -> Result<Parsed, ProviderError> {
        let event: Event = serde_json::from_str(data).map_err(|_| malformed_chunk())?;
        let mut piece = Piece::default();
        match event.kind.as_str() {
            "message_start" => {
                self.started = event.message.and_then(|message| message.usage);
            }
            "content_block_delta" => {
                piece.text = event
                    .delta
                    .filter(|delta| delta.kind.as_deref() == Some("text_delta"))
                    .and_then(|delta| delta.text)
                    .unwrap_or_default();
            }
            "message_delta" => {
                piece.finished = event.delta.is_some_and(|delta| delta.stop_reason.is_some());
                if let Some(delta) = event.usage {
                    let started = self.started.unwrap_or_default();
                    // Cumulative counts; newer API versions repeat the input's here too.
                    piece.usage = Some(TokenUsage {
                        input_tokens: started.input().max(delta.input()),
                        output_tokens: delta.output_tokens.max(started.output_tokens),
                    });
                }
            }
            "message_stop" => return Ok(Parsed::Done),
            "error" => return Err(reported_error()),
            // `ping`, `content_block_start`, `content_block_stop`, and event types to come.
            _ => {}
        }
        Ok(Parsed::Piece(piece))
    }
}

impl Anthropic {
    /// The Messages request of `call`, streamed or not.
    fn request(&self, call: &Call<'_>, stream: bool) -> reqwest::RequestBuilder {
        let messages = alternating(call.messages)
            .into_iter()
            .map(|(role, content)| WireMessage {
                role: match role {
                    Role::User => "user",
                    Role::Assistant => "assistant",
                },
                content,
            })
            .collect();
        let request = self
            .http
            .post(format!("{}/messages", self.base_url))
            .header("anthropic-version", API_VERSION)
            .json(&Request {
                model: call.model,
                max_tokens: call.max_output_tokens,
                system: call.system,
                messages,
                stream,
            });
        with_key(request, call.key)
    }
}

fn with_key(
    request: reqwest::RequestBuilder,
    key: Option<&SecretString>,
) -> reqwest::RequestBuilder {
    match key {
        Some(key) => request.header("x-api-key", key.expose_secret()),
        None => request,
    }
}

impl Provider for Anthropic {
    fn name(&self) -> &str {
        "anthropic"
    }

    fn key_name(&self) -> Option<&str> {
        Some("anthropic_api_key")
    }

    fn complete<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<WholeReply, ProviderError>> {
        Box::pin(async move {
            let request = self.request(&call, false);
            let response: Response = post_json(request, call.timeout).await?;
            let text: String = response
                .content
                .into_iter()
                .filter(|block| block.kind == "text")
                .filter_map(|block| block.text)
                .collect();
            if text.is_empty() {
                return Err(ProviderError::Malformed("no text content".to_owned()));
            }
            Ok(WholeReply {
                text,
                usage: response.usage.map(TokenUsage::from),
            })
        })
    }

    /// `"stream": true`: `message_start` (with the input's usage), `content_block_start`,
    /// `content_block_delta` events with `text_delta`s, `content_block_stop`, `message_delta`
    /// (the stop reason and the output's usage), `message_stop`; `ping`s anywhere, and an
    /// `error` event instead of the rest when the API fails midway.
    fn stream<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<Source, ProviderError>> {
        Box::pin(async move {
            let response = send(self.request(&call, true)).await?;
            let mut parser = StreamParser::default();
            Ok(Source::Sse(SseSource::new(response, move |data| {
                parser.parse(data)
            })?))
        })
    }

    /// `GET /models`, one model's worth (`limit=1`).
    fn connect<'a>(
        &'a self,
        key: Option<&'a SecretString>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        let request = self
            .http
            .get(format!("{}/models?limit=1", self.base_url))
            .header("anthropic-version", API_VERSION);
        Box::pin(open_with(with_key(request, key), timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(parser: &mut StreamParser, data: &str) -> Piece {
        match parser.parse(data) {
            Ok(Parsed::Piece(piece)) => piece,
            Ok(Parsed::Done) => panic!("{data}: the end, not a piece"),
            Err(err) => panic!("{data}: {err}"),
        }
    }

    #[test]
    fn a_stream_reports_its_usage_once_the_output_is_counted() {
        let mut parser = StreamParser::default();
        let start = piece(
            &mut parser,
            r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-test","stop_reason":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":100,"cache_read_input_tokens":2000,"output_tokens":1}}}"#,
        );
        assert!(start.usage.is_none(), "usage before the output is counted");
        let text = piece(
            &mut parser,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#,
        );
        assert_eq!(text.text, "Hello");
        let thinking = piece(
            &mut parser,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hm"}}"#,
        );
        assert_eq!(thinking.text, "", "only text deltas are the reply");
        let end = piece(
            &mut parser,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}"#,
        );
        assert!(end.finished);
        assert_eq!(
            end.usage,
            Some(TokenUsage {
                input_tokens: 2_125,
                output_tokens: 15
            })
        );
        assert!(matches!(
            parser.parse(r#"{"type":"message_stop"}"#),
            Ok(Parsed::Done)
        ));
        assert!(parser
            .parse(r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#)
            .is_err());
    }
}
