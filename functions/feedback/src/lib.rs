//! The feedback function: a rating (and an optional comment) on one assistant reply.
//!
//! - `POST /feedback {conversation_id, message_id, rating, comment?}`: 201 the first time, 200
//!   when it replaces the caller's earlier feedback on that message.
//! - `GET /feedback?conversation_id&limit&cursor`: the caller's feedback.

use lambda_http::{http::StatusCode, Body, Request, Response};
use serde::{Deserialize, Serialize};
use shared::{
    aws::AwsClients,
    config::{Config, ConfigError, FeedbackConfig},
    domain::{Comment, ConversationId, MessageId, Rating, UserId},
    http::{self, ApiError, Invocation},
    store::{ConversationStore, Feedback, Page, Written},
    telemetry,
};

pub struct State {
    config: FeedbackConfig,
    budget: std::time::Duration,
    /// `CONNECT_AT_INIT_MS`.
    connect_at_init: std::time::Duration,
    store: ConversationStore,
}

impl State {
    pub async fn from_env() -> Result<Self, ConfigError> {
        let config = Config::from_env()?;
        shared::startup::apply(&config);
        let clients = AwsClients::load(&config).await;
        Ok(Self::new(&config, FeedbackConfig::from_env()?, &clients))
    }

    pub fn new(config: &Config, feedback: FeedbackConfig, clients: &AwsClients) -> Self {
        Self {
            config: feedback,
            budget: config.work_budget,
            connect_at_init: config.connect_at_init,
            store: ConversationStore::from_config(config, clients),
        }
    }

    /// Opens DynamoDB's connection before the first `next` (`shared::startup::connect_at_init`).
    pub async fn connect_at_init(&self) {
        shared::startup::connect_at_init(self.connect_at_init, self.store.connect()).await;
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackRequest {
    conversation_id: String,
    message_id: String,
    rating: u64,
    #[serde(default)]
    comment: Option<String>,
}

/// Feedback as the API shows it.
#[derive(Serialize)]
struct FeedbackView<'a> {
    conversation_id: &'a ConversationId,
    message_id: MessageId,
    rating: Rating,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<&'a str>,
    created_at: &'a str,
    updated_at: &'a str,
}

impl<'a> From<&'a Feedback> for FeedbackView<'a> {
    fn from(feedback: &'a Feedback) -> Self {
        Self {
            conversation_id: &feedback.conversation_id,
            message_id: feedback.message_id,
            rating: feedback.rating,
            comment: feedback.comment.as_deref(),
            created_at: &feedback.created_at,
            updated_at: &feedback.updated_at,
        }
    }
}

#[derive(Serialize)]
struct FeedbackList<'a> {
    feedback: Vec<FeedbackView<'a>>,
    next_cursor: Option<String>,
}

pub async fn handle(state: &State, req: Request) -> Response<Body> {
    http::serve(req, state.budget, |req, invocation| {
        route(state, req, invocation)
    })
    .await
}

/// The function's routes, `(method, resource)` as API Gateway names them.
pub const ROUTES: &[(&str, &str)] = &[("POST", "/feedback"), ("GET", "/feedback")];

async fn route(
    state: &State,
    req: Request,
    _invocation: Invocation,
) -> Result<Response<Body>, ApiError> {
    http::route(&req, ROUTES)?;
    let user = http::caller(&req)?;
    if req.method().as_str() == "POST" {
        rate(state, &req, &user).await
    } else {
        list(state, &req, &user).await
    }
}

async fn rate(state: &State, req: &Request, user: &UserId) -> Result<Response<Body>, ApiError> {
    http::query_params(req, &[])?;
    let body: FeedbackRequest = http::json_body(req, state.config.max_body_bytes)?;
    let conversation = http::conversation_id(&body.conversation_id, "conversation_id")?;
    let message = http::message_id(&body.message_id, "message_id")?;
    let rating = Rating::new(body.rating).map_err(http::invalid("rating"))?;
    let comment = body
        .comment
        .as_deref()
        .map(|raw| Comment::parse(raw, state.config.max_comment_chars))
        .transpose()
        .map_err(http::invalid("comment"))?
        .flatten();
    let (written, feedback) = state
        .store
        .rate_message(user, &conversation, message, rating, comment.as_ref())
        .await?;
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
    Ok(http::json(status, &FeedbackView::from(&feedback)))
}

async fn list(state: &State, req: &Request, user: &UserId) -> Result<Response<Body>, ApiError> {
    let params = http::query_params(req, &["conversation_id", "limit", "cursor"])?;
    let page = http::page_request(&params)?;
    let conversation = params
        .get("conversation_id")
        .map(|id| http::conversation_id(id, "conversation_id"))
        .transpose()?;
    let Page { items, next } = state
        .store
        .list_feedback(user, conversation.as_ref(), &page)
        .await?;
    Ok(http::json(
        StatusCode::OK,
        &FeedbackList {
            feedback: items.iter().map(FeedbackView::from).collect(),
            next_cursor: next.map(|cursor| cursor.encode()),
        },
    ))
}
