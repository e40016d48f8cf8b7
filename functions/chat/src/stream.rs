//! A streamed turn: server-sent events `start`, `delta`… and `done`, or `error`.
//!
//! Until the provider's first piece of text is in hand, a failure is an ordinary problem answer
//! (retries, breakers and the fallback list act there, in `shared::llm`). Then the answer is a
//! `200 text/event-stream`, produced by a task that owns what it needs:
//!
//! - the provider finishes: the turn is stored (one write, with the idempotency record's
//!   completion) and `done` carries the JSON answer;
//! - the client goes away (a Stop button, a lost connection): the provider's stream is dropped at
//!   once, which closes its connection and stops the generation, and the turn is stored with what
//!   was generated, marked `stopped` (a retry with the same key replays it);
//! - the provider fails or stalls midway: the turn is stored with what was generated, marked
//!   `incomplete`, so the conversation has no hole and the user sees what they saw; the
//!   idempotency key is given back, so a retry generates anew; the stream ends with `error`.

use lambda_http::Response;
use serde::Serialize;
use shared::{
    domain::{ConversationId, MessageId},
    http::{self, AnswerBody, ApiError, EventSink},
    llm::{ReplyStream, StreamError},
    store::{Ending, Reply, StoredTurn},
};

use crate::{
    answer::ChatAnswer,
    turn::{Failure, Turn, Written},
    usage, State,
};

/// The longest silence on a stream: API Gateway's edge endpoint closes an idle connection after
/// 30 s, so a provider that thinks for long is covered by comment lines.
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(10);

/// The first event: where the reply goes and who writes it.
#[derive(Serialize)]
struct Start<'a> {
    conversation_id: &'a ConversationId,
    user_message_id: MessageId,
    message_id: MessageId,
    provider: &'a str,
    model: &'a str,
}

/// The event of one piece of the reply's text.
#[derive(Serialize)]
struct DeltaEvent<'a> {
    text: &'a str,
}

/// Answers a claimed turn as a stream of events.
pub(super) async fn start(
    state: &State,
    mut turn: Turn,
    request_id: &str,
) -> Result<Response<AnswerBody>, ApiError> {
    let reply = match open(state, &mut turn).await {
        Ok(opened) => opened,
        Err(failure) => return Err(turn.fail(failure).await),
    };
    let (sink, mut response) = http::event_stream();
    usage::rate_limit_headers(response.headers_mut(), turn.usage().as_ref());
    let producer = Producer {
        turn,
        sink,
        request_id: request_id.to_owned(),
    };
    tokio::spawn(producer.run(reply));
    Ok(response)
}

/// The ids, the context and the budget, then the provider's first piece.
async fn open(state: &State, turn: &mut Turn) -> Result<ReplyStream, Failure> {
    let context = turn.prepare(state).await?;
    Ok(state
        .llm
        .stream(
            &turn.request.choice,
            &context,
            turn.deadlines.work,
            turn.tab(),
        )
        .await?)
}

/// Everything the producing task owns.
struct Producer {
    turn: Turn,
    sink: EventSink,
    request_id: String,
}

impl Producer {
    async fn run(self, mut stream: ReplyStream) {
        let mut content = String::new();
        let sent = match self.turn.ids() {
            Some((conversation_id, user_message_id, message_id)) => {
                let start = Start {
                    conversation_id,
                    user_message_id,
                    message_id,
                    provider: stream.provider(),
                    model: stream.model(),
                };
                self.sink.send("start", &start).await.is_ok()
            }
            None => false,
        };
        let (ending, failure) = if !sent {
            (Ending::Stopped, None)
        } else {
            self.relay(&mut stream, &mut content).await
        };
        let reply = Reply {
            content,
            provider: stream.provider().to_owned(),
            model: stream.model().to_owned(),
            usage: stream.usage(),
            ending,
        };
        // Dropping the provider's stream closes its connection: the generation stops.
        drop(stream);
        tracing::info!(
            request_id = self.request_id,
            ending = ?ending,
            chars = reply.content.chars().count(),
            "stream ended"
        );
        self.finish(reply, failure).await;
    }

    /// Passes the provider's pieces on until it ends, fails, or the client leaves.
    async fn relay(
        &self,
        stream: &mut ReplyStream,
        content: &mut String,
    ) -> (Ending, Option<StreamError>) {
        loop {
            let piece = tokio::select! {
                piece = stream.next() => piece,
                () = self.sink.closed() => return (Ending::Stopped, None),
                () = tokio::time::sleep(KEEP_ALIVE) => {
                    if self.sink.keep_alive().await.is_err() {
                        return (Ending::Stopped, None);
                    }
                    continue;
                }
            };
            match piece {
                Ok(Some(text)) => {
                    // A reply too long to store ends here, cut, and its generation is stopped.
                    let (before, cut) = Reply::extend(content, &text);
                    let event = DeltaEvent {
                        text: &content[before..],
                    };
                    if self.sink.send("delta", &event).await.is_err() {
                        return (Ending::Stopped, None);
                    }
                    if cut {
                        return (Ending::Incomplete, None);
                    }
                }
                Ok(None) => return (Ending::Complete, None),
                Err(err) => return (Ending::Incomplete, Some(err)),
            }
        }
    }

    /// Stores the turn, ends it, and sends the last event.
    async fn finish(self, reply: Reply, failure: Option<StreamError>) {
        let Self {
            mut turn,
            sink,
            request_id,
        } = self;
        // An incomplete reply does not complete the key: a retry generates anew.
        let completes_key = matches!(reply.ending, Ending::Complete | Ending::Stopped);
        let replay = |stored: &StoredTurn| ChatAnswer::text(stored, &reply);
        turn.answered(reply.usage);
        let stored = turn
            .store(&reply, completes_key.then_some(&replay as _))
            .await;
        let error = match stored {
            Ok(stored) => {
                turn.end(Written::Yes {
                    key_completed: completes_key,
                })
                .await;
                match failure {
                    None => {
                        let _ = sink.send("done", &ChatAnswer::of(&stored, &reply)).await;
                        return;
                    }
                    Some(failure) => provider_failure(&failure),
                }
            }
            Err(err) => turn.fail(err.into()).await,
        };
        error.log(&request_id);
        let _ = sink
            .send_text("error", error.problem_json(&request_id))
            .await;
    }
}

/// A provider that failed after it had begun: a 502 (it broke its stream) or a 503 (it stalled).
fn provider_failure(failure: &StreamError) -> ApiError {
    match failure {
        StreamError::Stalled => ApiError::Unavailable {
            detail: "the LLM provider stopped answering before the deadline; the partial reply \
                     is kept, marked incomplete"
                .to_owned(),
            retry_after_secs: 1,
            cause: None,
        },
        StreamError::Failed(reason) => ApiError::BadGateway {
            detail: format!(
                "the LLM provider's stream broke ({reason}); the partial reply is kept, marked \
                 incomplete"
            ),
        },
    }
}

/// A stored answer replayed as the events of a finished stream.
pub(super) fn replay(stored: &str) -> Response<AnswerBody> {
    let (sink, mut response) = http::event_stream();
    http::mark_replayed(&mut response);
    let answer: serde_json::Value = serde_json::from_str(stored).unwrap_or_default();
    // Answers stored before regenerations did not carry the user's message id: it was the one
    // before the reply's.
    let user_message_id = match answer["user_message_id"].as_str() {
        Some(id) => MessageId::parse(id),
        None => answer["message_id"]
            .as_str()
            .and_then(MessageId::parse)
            .and_then(MessageId::previous),
    };
    let start = serde_json::json!({
        "conversation_id": answer["conversation_id"],
        "user_message_id": user_message_id,
        "message_id": answer["message_id"],
        "provider": answer["provider"],
        "model": answer["model"],
    });
    let delta = serde_json::json!({"text": answer["reply"]});
    // Three events fit the channel: they are queued now, and the stream ends with the sink.
    sink.queue("start", &start);
    sink.queue("delta", &delta);
    sink.queue_text("done", stored.to_owned());
    response
}
