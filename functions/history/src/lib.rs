//! The history function: a user's conversations and messages, and erasure.
//!
//! - `GET /conversations?limit&cursor`: the caller's conversations, newest first.
//! - `GET /conversations/{id}/messages?limit&cursor&order`: one conversation's messages.
//! - `DELETE /conversations/{id}`: one conversation, with its messages and feedback.
//! - `DELETE /history`: everything the caller has stored.
//!
//! Another user's conversation is answered exactly like one that does not exist.

use lambda_http::{http::StatusCode, Body, Request, RequestExt, Response};
use serde::Serialize;
use shared::{
    aws::AwsClients,
    config::{Config, ConfigError},
    http::{self, ApiError, Invocation},
    identity::{self, UserId},
    store::{Conversation, ConversationId, ConversationStore, Message, Order, Page, PageRequest},
};

/// What the function builds once per execution environment.
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

/// The function's HTTP routes; the Lambda runtime and the local API server both call this.
pub async fn handle(state: &State, req: Request) -> Response<Body> {
    http::serve(req, |req, invocation| route(state, req, invocation)).await
}

async fn route(
    state: &State,
    req: Request,
    invocation: Invocation,
) -> Result<Response<Body>, ApiError> {
    let route = http::route(
        &req,
        &[
            ("GET", "/conversations"),
            ("GET", "/conversations/{id}/messages"),
            ("DELETE", "/conversations/{id}"),
            ("DELETE", "/history"),
        ],
    )?;
    let user = identity::caller(&req)?;
    match route {
        "/conversations" => list_conversations(state, &req, &user).await,
        "/conversations/{id}/messages" => list_messages(state, &req, &user).await,
        "/conversations/{id}" => {
            http::query_params(&req, &[])?;
            let id = conversation_id(&req)?;
            state
                .store
                .delete_conversation(&user, &id, invocation.deadline.into())
                .await?;
            Ok(http::no_content())
        }
        _ => {
            http::query_params(&req, &[])?;
            let deleted = state
                .store
                .erase_user(&user, invocation.deadline.into())
                .await?;
            tracing::info!(
                request_id = invocation.request_id,
                deleted,
                "erased the caller's data"
            );
            Ok(http::no_content())
        }
    }
}

#[derive(Serialize)]
struct Conversations {
    conversations: Vec<Conversation>,
    next_cursor: Option<String>,
}

#[derive(Serialize)]
struct Messages {
    messages: Vec<Message>,
    next_cursor: Option<String>,
}

async fn list_conversations(
    state: &State,
    req: &Request,
    user: &UserId,
) -> Result<Response<Body>, ApiError> {
    let params = http::query_params(req, &["limit", "cursor"])?;
    let page =
        PageRequest::from_params(params.get("limit").copied(), params.get("cursor").copied())?;
    let Page { items, next } = state.store.list_conversations(user, &page).await?;
    Ok(http::json(
        StatusCode::OK,
        &Conversations {
            conversations: items,
            next_cursor: next.map(|cursor| cursor.encode()),
        },
    ))
}

async fn list_messages(
    state: &State,
    req: &Request,
    user: &UserId,
) -> Result<Response<Body>, ApiError> {
    let params = http::query_params(req, &["limit", "cursor", "order"])?;
    let page =
        PageRequest::from_params(params.get("limit").copied(), params.get("cursor").copied())?;
    let order = match params.get("order").copied() {
        None | Some("asc") => Order::Oldest,
        Some("desc") => Order::Newest,
        Some(_) => return Err(ApiError::bad_request("order", "must be asc or desc")),
    };
    let id = conversation_id(req)?;
    let Page { items, next } = state.store.list_messages(user, &id, &page, order).await?;
    Ok(http::json(
        StatusCode::OK,
        &Messages {
            messages: items,
            next_cursor: next.map(|cursor| cursor.encode()),
        },
    ))
}

fn conversation_id(req: &Request) -> Result<ConversationId, ApiError> {
    let id = req
        .path_parameters_ref()
        .and_then(|params| params.first("id"));
    ConversationId::from_input(id.unwrap_or_default(), "id")
}
