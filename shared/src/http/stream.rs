//! Answers that stream: server-sent events written as they are produced, or a whole body sent
//! through the same streaming response (API Gateway's streaming integration carries both).

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures_core::Stream;
use lambda_http::{
    http::{header, HeaderValue, StatusCode},
    Response,
};
use serde::Serialize;
use tokio::sync::mpsc;

use super::response::add_common_headers;

/// Events in flight between the producer and the client; a slow client slows the producer.
const EVENTS_IN_FLIGHT: usize = 32;

/// The body of an answer: whole, or server-sent events as they are produced.
pub enum AnswerBody {
    Whole(lambda_http::Body),
    Events(mpsc::Receiver<Bytes>),
}

impl AnswerBody {
    /// The whole body's bytes (empty for events, which are read as a stream).
    pub fn whole(&self) -> &[u8] {
        match self {
            Self::Whole(body) => body.as_ref(),
            Self::Events(_) => &[],
        }
    }
}

impl AsRef<[u8]> for AnswerBody {
    fn as_ref(&self) -> &[u8] {
        self.whole()
    }
}

impl From<lambda_http::Body> for AnswerBody {
    fn from(body: lambda_http::Body) -> Self {
        Self::Whole(body)
    }
}

impl Stream for AnswerBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            Self::Whole(body) => {
                let bytes = match std::mem::replace(body, lambda_http::Body::Empty) {
                    lambda_http::Body::Empty => None,
                    lambda_http::Body::Text(text) => Some(Bytes::from(text)),
                    lambda_http::Body::Binary(bytes) => Some(Bytes::from(bytes)),
                    _ => None,
                };
                Poll::Ready(bytes.filter(|bytes| !bytes.is_empty()).map(Ok))
            }
            Self::Events(receiver) => receiver.poll_recv(cx).map(|event| event.map(Ok)),
        }
    }
}

/// The client is gone: its end of the stream was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the client went away")]
pub struct Gone;

/// Where a producer writes the events of a streamed answer.
#[derive(Debug)]
pub struct EventSink {
    sender: mpsc::Sender<Bytes>,
}

impl EventSink {
    /// Sends one event; [`Gone`] once the client has gone.
    pub async fn send(&self, event: &str, data: &impl Serialize) -> Result<(), Gone> {
        self.send_text(event, json(data)).await
    }

    /// Sends one event whose data is already JSON text.
    pub async fn send_text(&self, event: &str, data: String) -> Result<(), Gone> {
        self.sender
            .send(frame(event, &data))
            .await
            .map_err(|_| Gone)
    }

    /// Queues an event without waiting (a few events written at once, e.g. a replay); an event
    /// that does not fit, or finds the client gone, is dropped.
    pub fn queue(&self, event: &str, data: &impl Serialize) {
        self.queue_text(event, json(data));
    }

    /// [`Self::queue`] for data that is already JSON text.
    pub fn queue_text(&self, event: &str, data: String) {
        let _ = self.sender.try_send(frame(event, &data));
    }

    /// Sends a comment line, which clients ignore: it keeps idle proxies (API Gateway's edge
    /// endpoint closes a connection after 30 s of silence) from closing a stream that waits.
    pub async fn keep_alive(&self) -> Result<(), Gone> {
        self.sender
            .send(Bytes::from_static(b": keep-alive\n\n"))
            .await
            .map_err(|_| Gone)
    }

    /// Resolves when the client has gone.
    pub async fn closed(&self) {
        self.sender.closed().await;
    }

    /// Whether the client has gone (without sending anything).
    pub fn is_gone(&self) -> bool {
        self.sender.is_closed()
    }
}

fn json(data: &impl Serialize) -> String {
    serde_json::to_string(data).unwrap_or_else(|_| "{}".to_owned())
}

/// One server-sent event. Our data is one line of JSON, so it needs no splitting.
fn frame(event: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// A `200 text/event-stream` answer, and the sink its events are written to. The answer ends
/// when the sink is dropped.
pub fn event_stream() -> (EventSink, Response<AnswerBody>) {
    let (sender, receiver) = mpsc::channel(EVENTS_IN_FLIGHT);
    let mut response = Response::new(AnswerBody::Events(receiver));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    // Proxies must pass events on as they come, not buffer them.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    add_common_headers(&mut response);
    (EventSink { sender }, response)
}

/// Whether the request asks for server-sent events (`Accept: text/event-stream`).
pub fn wants_events(req: &lambda_http::Request) -> bool {
    req.headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|media| {
            media
                .split(';')
                .next()
                .is_some_and(|media| media.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(mut body: AnswerBody) -> Vec<Bytes> {
        let mut chunks = Vec::new();
        while let Some(Ok(chunk)) =
            std::future::poll_fn(|cx| Pin::new(&mut body).poll_next(cx)).await
        {
            chunks.push(chunk);
        }
        chunks
    }

    #[tokio::test]
    async fn events_are_framed_and_end_with_the_sink() {
        let (sink, response) = event_stream();
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let producer = tokio::spawn(async move {
            sink.send("delta", &serde_json::json!({"text": "hi"}))
                .await
                .unwrap();
        });
        let chunks = collect(response.into_body()).await;
        producer.await.unwrap();
        assert_eq!(
            chunks,
            [Bytes::from("event: delta\ndata: {\"text\":\"hi\"}\n\n")]
        );
    }

    #[tokio::test]
    async fn a_dropped_client_is_gone() {
        let (sink, response) = event_stream();
        drop(response);
        assert!(sink.is_gone());
        assert_eq!(sink.send("delta", &"x").await, Err(Gone));
    }

    #[tokio::test]
    async fn a_whole_body_is_one_chunk() {
        let chunks = collect(AnswerBody::Whole(lambda_http::Body::Text("{}".into()))).await;
        assert_eq!(chunks, [Bytes::from("{}")]);
    }

    #[test]
    fn the_accept_header_selects_events() {
        let with = |accept: &str| {
            let mut req = lambda_http::Request::default();
            req.headers_mut()
                .insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
            wants_events(&req)
        };
        assert!(with("text/event-stream"));
        assert!(with("application/json, Text/Event-Stream;q=0.9"));
        assert!(!with("application/json"));
        assert!(!wants_events(&lambda_http::Request::default()));
    }
}
