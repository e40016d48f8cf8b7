//! Server-sent events from a provider's streamed response, parsed by `eventsource-stream`; each
//! provider turns an event's data into a [`Piece`].

use std::pin::Pin;

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures_core::Stream;

use super::Piece;
use crate::llm::{Billed, ProviderError};

type Events =
    Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send + Sync>>;

type Bytes = Pin<Box<dyn Stream<Item = Result<bytes::Bytes, reqwest::Error>> + Send + Sync>>;

/// A response body that ends after about `left` bytes (a chunk that crosses the bound is the
/// last): a stream cut so ends before its end marker, and fails like one that broke off.
struct Capped {
    bytes: Bytes,
    left: usize,
}

impl Stream for Capped {
    type Item = Result<bytes::Bytes, reqwest::Error>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let polled = self.bytes.as_mut().poll_next(cx);
        if let std::task::Poll::Ready(Some(Ok(chunk))) = &polled {
            self.left = self.left.saturating_sub(chunk.len().max(1));
        }
        polled
    }
}

/// What one event's data says.
pub(in crate::llm) enum Parsed {
    Piece(Piece),
    /// The end marker (OpenAI's `[DONE]`).
    Done,
}

/// Reads one event's data; it may keep what earlier events said (Anthropic's usage comes in two).
type Parse = Box<dyn FnMut(&str) -> Result<Parsed, ProviderError> + Send + Sync>;

/// Reads a provider's event stream; dropping it drops the response, and so the connection.
pub(in crate::llm) struct SseSource {
    events: Events,
    parse: Parse,
    /// Whether the provider said its reply is complete: only then is the end of the body the
    /// normal end of the stream rather than a reply cut short.
    finished: bool,
    done: bool,
}

impl SseSource {
    /// The events of `response`, whose status was checked; `parse` reads one event's data.
    pub(in crate::llm) fn new(
        response: reqwest::Response,
        parse: impl FnMut(&str) -> Result<Parsed, ProviderError> + Send + Sync + 'static,
    ) -> Result<Self, ProviderError> {
        // A server that ignored the request to stream answers JSON: say so rather than wait for
        // events that never come.
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok());
        if content_type.is_some_and(|value| !value.trim_start().starts_with("text/event-stream")) {
            return Err(ProviderError::Malformed(
                "the answer is not an event stream".to_owned(),
            ));
        }
        Ok(Self {
            events: Box::pin(
                Capped {
                    bytes: Box::pin(response.bytes_stream()),
                    left: crate::llm::MAX_BODY_BYTES,
                }
                .eventsource(),
            ),
            parse: Box::new(parse),
            finished: false,
            done: false,
        })
    }

    /// The next piece; `Ok(None)` at the normal end.
    pub(super) async fn next(&mut self) -> Result<Option<Piece>, ProviderError> {
        loop {
            if self.done {
                return Ok(None);
            }
            let event = std::future::poll_fn(|cx| self.events.as_mut().poll_next(cx)).await;
            let event = match event {
                Some(Ok(event)) => event,
                Some(Err(err)) => return Err(event_error(&err)),
                None if self.finished => {
                    self.done = true;
                    return Ok(None);
                }
                None => {
                    return Err(ProviderError::Transient {
                        reason: "the stream ended before the reply was complete".to_owned(),
                        retry_after: None,
                        billed: Billed::Whole,
                    })
                }
            };
            if event.event == "error" {
                return Err(reported_error());
            }
            if event.data.trim().is_empty() {
                continue;
            }
            match (self.parse)(&event.data)? {
                Parsed::Done => {
                    self.done = true;
                    return Ok(None);
                }
                Parsed::Piece(piece) => {
                    self.finished |= piece.finished;
                    return Ok(Some(piece));
                }
            }
        }
    }
}

/// The provider sent an error event instead of the rest of its reply.
pub(in crate::llm) fn reported_error() -> ProviderError {
    ProviderError::Transient {
        reason: "the provider reported an error in its stream".to_owned(),
        retry_after: None,
        billed: Billed::Whole,
    }
}

/// A chunk whose data is not the JSON the provider documents. Never carries the data itself.
pub(in crate::llm) fn malformed_chunk() -> ProviderError {
    ProviderError::Malformed("a chunk of the stream is not the expected JSON".to_owned())
}

fn event_error(err: &EventStreamError<reqwest::Error>) -> ProviderError {
    match err {
        EventStreamError::Transport(err) => ProviderError::from_reqwest(err),
        EventStreamError::Utf8(_) => ProviderError::Malformed("the stream is not UTF-8".to_owned()),
        EventStreamError::Parser(_) => {
            ProviderError::Malformed("the body is not a stream of server-sent events".to_owned())
        }
    }
}
