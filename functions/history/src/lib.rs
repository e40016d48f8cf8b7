//! The history function: a user's conversations and messages, and erasure.
//!
//! - `GET /conversations?limit&cursor`: the caller's conversations, newest first.
//! - `GET /conversations/{id}/messages?limit&cursor&order`: one conversation's messages.
//! - `PATCH /conversations/{id}` `{"title"}`: renames a conversation (a conditional write: never
//!   brings back a deleted one); `{"leaf"}`: makes the branch through that message the active
//!   one (conditional on the branch not having moved since it was read: a `409` then).
//! - `DELETE /conversations/{id}`: one conversation, with its messages, feedback and idempotency
//!   records.
//! - `DELETE /history`: everything the caller has stored.
//!
//! Another user's conversation is answered exactly like one that does not exist.

use lambda_http::{http::StatusCode, Body, Request, Response};
use serde::{Deserialize, Serialize};
use shared::{
    aws::AwsClients,
    config::{Config, ConfigError},
    domain::{ConversationId, MessageId, Role, Title, TokenUsage, UserId},
    http::{self, ApiError, Invocation},
    store::{Conversation, ConversationStore, Ending, Message, Order, Page},
};

/// What the function builds once per execution environment.
pub struct State {
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
        Ok(Self::new(&config, &clients))
    }

    pub fn new(config: &Config, clients: &AwsClients) -> Self {
        Self {
            budget: config.work_budget,
            connect_at_init: config.connect_at_init,
            store: ConversationStore::from_config(config, clients),
        }
    }

    /// Opens DynamoDB's connections before the first `next` (`shared::startup::connect_at_init`):
    /// two, as a page of messages reads its conversation's head and its messages side by side.
    pub async fn connect_at_init(&self) {
        shared::startup::connect_at_init(self.connect_at_init, async {
            tokio::join!(self.store.connect(), self.store.connect());
        })
        .await;
    }
}

/// The function's HTTP routes; the Lambda runtime and the local API server both call this.
pub async fn handle(state: &State, req: Request) -> Response<Body> {
    http::serve(req, state.budget, |req, invocation| {
        route(state, req, invocation)
    })
    .await
}

/// The function's routes, `(method, resource)` as API Gateway names them.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/conversations"),
    ("GET", "/conversations/{id}/messages"),
    ("PATCH", "/conversations/{id}"),
    ("DELETE", "/conversations/{id}"),
    ("DELETE", "/history"),
];

async fn route(
    state: &State,
    req: Request,
    invocation: Invocation,
) -> Result<Response<Body>, ApiError> {
    let route = http::route(&req, ROUTES)?;
    let user = http::caller(&req)?;
    match route {
        "/conversations" => list_conversations(state, &req, &user).await,
        "/conversations/{id}/messages" => list_messages(state, &req, &user).await,
        "/conversations/{id}" if req.method() == "PATCH" => {
            rename_conversation(state, &req, &user).await
        }
        "/conversations/{id}" => {
            http::query_params(&req, &[])?;
            let id = http::path_conversation_id(&req)?;
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

/// A conversation as the API shows it.
#[derive(Serialize)]
struct ConversationView<'a> {
    id: &'a ConversationId,
    title: &'a str,
    created_at: &'a str,
    updated_at: &'a str,
    message_count: u64,
    /// The end of the active branch (absent on conversations stored before branches: their
    /// newest message).
    #[serde(skip_serializing_if = "Option::is_none")]
    leaf: Option<MessageId>,
}

impl<'a> From<&'a Conversation> for ConversationView<'a> {
    fn from(conversation: &'a Conversation) -> Self {
        Self {
            id: &conversation.id,
            title: &conversation.title,
            created_at: &conversation.created_at,
            updated_at: &conversation.updated_at,
            message_count: conversation.message_count,
            leaf: conversation.leaf,
        }
    }
}

/// A message as the API shows it.
#[derive(Serialize)]
struct MessageView<'a> {
    id: MessageId,
    seq: u64,
    /// The message this one follows (`null`: a first message).
    parent_id: Option<MessageId>,
    /// Its parent's children, this one among them, oldest first, and its place among them.
    siblings: Siblings<'a>,
    role: Role,
    content: &'a str,
    created_at: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    provider: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<TokenUsage>,
    /// How a reply ended when it did not end normally: `stopped` (the client left) or
    /// `incomplete` (the provider failed midway).
    #[serde(skip_serializing_if = "Ending::is_complete")]
    ending: Ending,
}

/// A message's alternatives: `ids` oldest first, `index` its own place (0-based).
#[derive(Serialize)]
struct Siblings<'a> {
    ids: &'a [MessageId],
    index: usize,
}

impl<'a> From<&'a Message> for MessageView<'a> {
    fn from(message: &'a Message) -> Self {
        Self {
            id: message.id,
            seq: message.id.seq(),
            parent_id: message.parent,
            siblings: Siblings {
                ids: &message.siblings,
                index: message
                    .siblings
                    .iter()
                    .position(|id| *id == message.id)
                    .unwrap_or(0),
            },
            role: message.role,
            content: &message.content,
            created_at: &message.created_at,
            provider: message.provider.as_deref(),
            model: message.model.as_deref(),
            usage: message.usage,
            ending: message.ending,
        }
    }
}

#[derive(Serialize)]
struct Conversations<'a> {
    conversations: Vec<ConversationView<'a>>,
    next_cursor: Option<String>,
}

#[derive(Serialize)]
struct Messages<'a> {
    messages: Vec<MessageView<'a>>,
    next_cursor: Option<String>,
}

async fn list_conversations(
    state: &State,
    req: &Request,
    user: &UserId,
) -> Result<Response<Body>, ApiError> {
    let params = http::query_params(req, &["limit", "cursor"])?;
    let page = http::page_request(&params)?;
    let Page { items, next } = state.store.list_conversations(user, &page).await?;
    Ok(http::json(
        StatusCode::OK,
        &Conversations {
            conversations: items.iter().map(ConversationView::from).collect(),
            next_cursor: next.map(|cursor| cursor.encode()),
        },
    ))
}

/// The body of `PATCH /conversations/{id}`: one of the two.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    #[serde(default)]
    title: Option<String>,
    /// A message of the conversation: its branch becomes the active one.
    #[serde(default)]
    leaf: Option<String>,
}

/// The largest rename body: a title of the longest length in 4-byte characters, escaped, fits.
const MAX_RENAME_BODY_BYTES: usize = 4 * 1024;

async fn rename_conversation(
    state: &State,
    req: &Request,
    user: &UserId,
) -> Result<Response<Body>, ApiError> {
    http::query_params(req, &[])?;
    let id = http::path_conversation_id(req)?;
    let change: Change = http::json_body(req, MAX_RENAME_BODY_BYTES)?;
    let conversation = match (&change.title, &change.leaf) {
        (Some(title), None) => {
            let title = Title::parse(title).map_err(http::invalid("title"))?;
            state.store.rename_conversation(user, &id, &title).await?
        }
        (None, Some(leaf)) => {
            let leaf = http::message_id(leaf, "leaf")?;
            state.store.switch_branch(user, &id, leaf).await?
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "leaf",
                "send title or leaf, not both in one request",
            ))
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "title",
                "is required (or leaf, to switch the active branch)",
            ))
        }
    };
    Ok(http::json(
        StatusCode::OK,
        &ConversationView::from(&conversation),
    ))
}

async fn list_messages(
    state: &State,
    req: &Request,
    user: &UserId,
) -> Result<Response<Body>, ApiError> {
    let params = http::query_params(req, &["limit", "cursor", "order"])?;
    let page = http::page_request(&params)?;
    let order = match params.get("order").copied() {
        None | Some("asc") => Order::Oldest,
        Some("desc") => Order::Newest,
        Some(_) => return Err(ApiError::bad_request("order", "must be asc or desc")),
    };
    let id = http::path_conversation_id(req)?;
    let Page { items, next } = state.store.list_messages(user, &id, &page, order).await?;
    Ok(http::json(
        StatusCode::OK,
        &Messages {
            messages: items.iter().map(MessageView::from).collect(),
            next_cursor: next.map(|cursor| cursor.encode()),
        },
    ))
}
