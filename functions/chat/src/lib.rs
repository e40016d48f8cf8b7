//! The chat function: `POST /chat`, one turn with an LLM that remembers the conversation, within
//! the user's budgets; `GET /models`, the providers and models a client may choose; and
//! `GET /usage`, the caller's budgets and what is used of them today.
//!
//! This file routes and validates. A turn's lifecycle (claim its key, admit its budget, call the
//! provider, store, answer, and what a failure leaves behind) is `turn.rs`'s, for the JSON
//! answer and, with `Accept: text/event-stream`, the streamed one (`stream.rs`). The function
//! always answers in Lambda's streaming format, since its integration streams.

mod answer;
mod charge;
mod context;
mod models;
mod stream;
mod turn;
mod usage;

use std::{sync::Arc, time::Duration};

use lambda_http::{http::StatusCode, Request, Response};
use serde::Deserialize;
use shared::{
    aws::AwsClients,
    config::{BudgetPolicy, ChatConfig, Config, ConfigError},
    domain::MessageText,
    http::{self, AnswerBody, ApiError, Invocation},
    llm::Llm,
    secrets::ProviderKeys,
    store::ConversationStore,
};

use turn::{Claimed, Deadlines, Turn};

/// The function's routes, `(method, resource)` as API Gateway names them.
pub const ROUTES: &[(&str, &str)] = &[("POST", "/chat"), ("GET", "/models"), ("GET", "/usage")];

/// What the function builds once per execution environment. The store and the LLM client are
/// shared with the task that produces a streamed reply.
pub struct State {
    config: ChatConfig,
    /// How long an invocation's work may take (`WORK_BUDGET_MS`).
    work_time: Duration,
    /// `CONNECT_AT_INIT_MS`.
    connect_at_init: Duration,
    /// Every user's budgets, unless an operator set others.
    budgets: BudgetPolicy,
    store: Arc<ConversationStore>,
    llm: Arc<Llm>,
}

impl State {
    pub async fn from_env() -> Result<Self, ConfigError> {
        let config = Config::from_env()?;
        shared::startup::apply(&config);
        let chat = ChatConfig::from_env()?;
        let clients = AwsClients::load(&config).await;
        Self::new(&config, chat, &clients)
    }

    pub fn new(
        config: &Config,
        chat: ChatConfig,
        clients: &AwsClients,
    ) -> Result<Self, ConfigError> {
        let keys = ProviderKeys::new(clients.secrets.clone(), &config.secret_id, chat.secret_ttl);
        Ok(Self {
            llm: Arc::new(Llm::from_config(&chat, keys)?),
            store: Arc::new(ConversationStore::from_config(config, clients)),
            work_time: config.work_budget,
            connect_at_init: config.connect_at_init,
            budgets: config.budget,
            config: chat,
        })
    }

    /// Opens, before the first `next`, what the first turn would otherwise open itself
    /// (`shared::startup::connect_at_init`): two connections to DynamoDB (a turn ends with two
    /// writes side by side, its messages and the close of its budget account, each on a
    /// connection of its own), and the provider keys then a connection to the default provider.
    pub async fn connect_at_init(&self) {
        shared::startup::connect_at_init(self.connect_at_init, async {
            tokio::join!(
                self.store.connect(),
                self.store.connect(),
                self.llm.connect()
            );
        })
        .await;
    }

    /// The same function over another store (tests give it a clock of their own).
    pub fn with_store(mut self, store: ConversationStore) -> Self {
        self.store = Arc::new(store);
        self
    }

    /// The LLM client (its breakers are visible to tests and tools).
    pub fn llm(&self) -> &Llm {
        &self.llm
    }
}

/// The function's HTTP route; the Lambda runtime and the local API server both call this.
pub async fn handle(state: &State, req: Request) -> Response<AnswerBody> {
    http::serve(req, state.work_time, |req, invocation| {
        route(state, req, invocation)
    })
    .await
}

async fn route(
    state: &State,
    req: Request,
    invocation: Invocation,
) -> Result<Response<AnswerBody>, ApiError> {
    let route = http::route(&req, ROUTES)?;
    let user = http::caller(&req)?;
    http::query_params(&req, &[])?;
    match route {
        "/models" => models::list(state).await,
        "/usage" => usage::show(state, &user).await,
        _ => chat(state, req, invocation, user).await,
    }
}

/// The request body of `POST /chat`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatRequest {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    conversation_id: Option<String>,
    /// The reply the new message answers (`null`: a new first message); absent: the active
    /// leaf.
    #[serde(default, deserialize_with = "present")]
    parent_id: Option<Option<String>>,
    /// A reply to answer again, as its sibling.
    #[serde(default)]
    regenerate: Option<String>,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    model: Option<String>,
}

/// A field that may be given as `null`, which is not the same as leaving it out.
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(Some)
}

/// What a valid body asks for: the turn's action, checked field by field.
fn action(state: &State, body: &ChatRequest) -> Result<turn::Action, ApiError> {
    let text = |raw: &str| {
        MessageText::parse(raw, state.config.max_message_chars).map_err(http::invalid("message"))
    };
    if let Some(reply) = &body.regenerate {
        let reply = http::message_id(reply, "regenerate")?;
        if body.message.is_some() {
            return Err(ApiError::bad_request(
                "message",
                "must be absent when regenerating a reply (the reply answers its own message)",
            ));
        }
        if body.parent_id.is_some() {
            return Err(ApiError::bad_request(
                "parent_id",
                "must be absent when regenerating a reply (the new reply is its sibling)",
            ));
        }
        if body.conversation_id.is_none() {
            return Err(ApiError::bad_request(
                "conversation_id",
                "is required to regenerate a reply",
            ));
        }
        return Ok(turn::Action::Regenerate(reply));
    }
    let Some(message) = body.message.as_deref() else {
        return Err(ApiError::bad_request(
            "message",
            "is required (or regenerate, to answer a message again)",
        ));
    };
    let message = text(message)?;
    match &body.parent_id {
        None => Ok(turn::Action::Continue(message)),
        Some(_) if body.conversation_id.is_none() => Err(ApiError::bad_request(
            "conversation_id",
            "is required with parent_id",
        )),
        Some(None) => Ok(turn::Action::Under(message, None)),
        Some(Some(parent)) => Ok(turn::Action::Under(
            message,
            Some(http::message_id(parent, "parent_id")?),
        )),
    }
}

/// `POST /chat`: validates the request, claims the turn, then answers it whole or streamed.
async fn chat(
    state: &State,
    req: Request,
    invocation: Invocation,
    user: shared::domain::UserId,
) -> Result<Response<AnswerBody>, ApiError> {
    let body: ChatRequest = http::json_body(&req, state.config.max_body_bytes)?;
    let action = action(state, &body)?;
    let conversation = body
        .conversation_id
        .as_deref()
        .map(|id| http::conversation_id(id, "conversation_id"))
        .transpose()?;
    let key = http::idempotency_key(&req)?;
    let choice = state
        .llm
        .choose(body.provider.as_deref(), body.model.as_deref())
        .await?;
    let request = turn::Request {
        user,
        conversation,
        choice,
        action,
    };
    let streaming = http::wants_events(&req);
    let deadlines = if streaming {
        Deadlines::streamed(&invocation, state.config.stream_budget)
    } else {
        Deadlines::whole(&invocation)
    };
    let turn = match Turn::claim(state, request, key.as_ref(), deadlines).await? {
        Claimed::Replay(answer) if streaming => return Ok(stream::replay(&answer)),
        Claimed::Replay(answer) => return Ok(http::replay(answer).map(AnswerBody::from)),
        Claimed::Run(turn) => *turn,
    };
    if streaming {
        return stream::start(state, turn, &invocation.request_id).await;
    }
    let (answer, usage) = turn.answer(state).await?;
    let mut response = http::json_text(StatusCode::OK, answer);
    usage::rate_limit_headers(response.headers_mut(), usage.as_ref());
    Ok(response.map(AnswerBody::from))
}
