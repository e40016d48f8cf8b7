//! The feedback function: a rating (and an optional comment) on one assistant reply.
//!
//! - `POST /feedback {conversation_id, message_id, rating, comment?}`: 201 the first time, 200
//!   when it replaces the caller's earlier feedback on that message.
//! - `GET /feedback?conversation_id&limit&cursor`: the caller's feedback.

use lambda_http::{http::StatusCode, Body, Request, Response};
use serde::{Deserialize, Serialize};
use shared::{
    aws::AwsClients,
    config::{Config, ConfigError},
    http::{self, ApiError, Invocation},
    identity::{self, UserId},
    store::{ConversationId, ConversationStore, Feedback, Page, PageRequest, Rating, Written},
    telemetry,
};

/// The longest comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 2_000;
/// Feedback bodies are small; anything larger is refused before parsing.
const MAX_BODY_BYTES: usize = 16 * 1024;

pub struct State {
    store: ConversationStore,
}

impl State {
    pub async fn from_env() -> Result<Self, ConfigError> {
        let config = Config::from_env()?;
        let clients = AwsClients::load(&config).await;
        Ok(Self::new(&config, &clients))
    }

    pub fn new(config: &Config, clients: &AwsClients) -> Self {
        Self {
            store: ConversationStore::from_config(config, clients),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackRequest {
    conversation_id: String,
    message_id: String,
    rating: u8,
    #[serde(default)]
    comment: Option<String>,
}

#[derive(Serialize)]
struct FeedbackList {
    feedback: Vec<Feedback>,
    next_cursor: Option<String>,
}

pub async fn handle(state: &State, req: Request) -> Response<Body> {
    http::serve(req, |req, invocation| route(state, req, invocation)).await
}

async fn route(
    state: &State,
    req: Request,
    _invocation: Invocation,
) -> Result<Response<Body>, ApiError> {
    http::route(&req, &[("POST", "/feedback"), ("GET", "/feedback")])?;
    let user = identity::caller(&req)?;
    if req.method().as_str() == "POST" {
        rate(state, &req, &user).await
    } else {
        list(state, &req, &user).await
    }
}

async fn rate(state: &State, req: &Request, user: &UserId) -> Result<Response<Body>, ApiError> {
    http::query_params(req, &[])?;
    let body: FeedbackRequest = http::json_body(req, MAX_BODY_BYTES)?;
    let conversation = ConversationId::from_input(&body.conversation_id, "conversation_id")?;
    let seq = message_seq(&body.message_id)?;
    let rating = Rating::new(body.rating)
        .ok_or_else(|| ApiError::bad_request("rating", "must be a whole number from 1 to 5"))?;
    let comment = body
        .comment
        .as_deref()
        .map(str::trim)
        .filter(|comment| !comment.is_empty());
    if let Some(comment) = comment {
        let chars = comment.chars().count();
        if chars > MAX_COMMENT_CHARS {
            return Err(ApiError::bad_request(
                "comment",
                format!("is {chars} characters long; the limit is {MAX_COMMENT_CHARS}"),
            ));
        }
    }
    let (written, feedback) = state
        .store
        .rate_message(user, &conversation, seq, rating, comment)
        .await
        .map_err(|err| match err {
            shared::store::StoreError::NotFound => {
                ApiError::NotFound("message not found".to_owned())
            }
            other => other.into(),
        })?;
    telemetry::emit_metrics(
        &[
            (
                "Provider",
                feedback.provider.as_deref().unwrap_or("unknown"),
            ),
            ("Model", feedback.model.as_deref().unwrap_or("unknown")),
        ],
        &[("FeedbackRating", f64::from(rating.get()), "None")],
    );
    let status = match written {
        Written::Created => StatusCode::CREATED,
        Written::Replaced => StatusCode::OK,
    };
    Ok(http::json(status, &feedback))
}

async fn list(state: &State, req: &Request, user: &UserId) -> Result<Response<Body>, ApiError> {
    let params = http::query_params(req, &["conversation_id", "limit", "cursor"])?;
    let page =
        PageRequest::from_params(params.get("limit").copied(), params.get("cursor").copied())?;
    let conversation = params
        .get("conversation_id")
        .map(|id| ConversationId::from_input(id, "conversation_id"))
        .transpose()?;
    let Page { items, next } = state
        .store
        .list_feedback(user, conversation.as_ref(), &page)
        .await?;
    Ok(http::json(
        StatusCode::OK,
        &FeedbackList {
            feedback: items,
            next_cursor: next.map(|cursor| cursor.encode()),
        },
    ))
}

/// A message id as the API returns it (its sequence number); leading zeros are optional.
fn message_seq(id: &str) -> Result<u64, ApiError> {
    id.parse::<u64>()
        .ok()
        .filter(|seq| *seq >= 1 && id.len() <= 12 && id.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            ApiError::bad_request("message_id", "must be a message id as returned by the API")
        })
}
