//! The HTTP side: from an API Gateway event to a domain call and back. Request input becomes
//! domain values here (`input`, `identity`), every layer's error becomes an answer here (`error`),
//! and every route runs through [`serve`].

mod error;
pub mod event;
mod identity;
mod input;
mod response;
pub mod runtime;
mod serve;
mod stream;

pub use error::{ApiError, Refusal};
pub use identity::caller;
pub use input::{
    conversation_id, idempotency_key, invalid, json_body, message_id, page_request,
    path_conversation_id, query_params,
};
pub use response::allowed_origin;
pub(crate) use response::set_allowed_origin;
pub use response::{
    json, json_text, mark_replayed, no_content, rate_limit_headers, replay, EXPOSED_HEADERS,
};
pub use serve::{route, route_of, serve, Invocation};
pub use stream::{event_stream, wants_events, AnswerBody, EventSink, Gone};
