//! The chat function: `POST /chat`, one turn with an LLM that remembers the conversation.
//!
//! The turn is stored only after the provider answered, whole or not at all. With an
//! `Idempotency-Key`, a retried request is answered from its first run: no second provider call,
//! no second turn (the lifecycle is `shared::store`'s: admit, complete with the turn, abandon).

use lambda_http::{http::StatusCode, Body, Request, Response};
use serde::{Deserialize, Serialize};
use shared::{
    aws::AwsClients,
    config::{ChatConfig, Config, ConfigError},
    domain::{ConversationId, MessageId, MessageText, Role, TokenUsage, UserId},
    http::{self, ApiError, Invocation},
    llm::{Choice, ContextMessage, Llm},
    secrets::ProviderKeys,
    store::{
        Admission, ConversationStore, Lease, Message, Reply, StoreError, StoredTurn, TurnTarget,
    },
};

/// What the function builds once per execution environment.
pub struct State {
    config: ChatConfig,
    budget: std::time::Duration,
    store: ConversationStore,
    llm: Llm,
}

impl State {
    pub async fn from_env() -> Result<Self, ConfigError> {
        let config = Config::from_env()?;
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
            llm: Llm::from_config(&chat, keys)?,
            store: ConversationStore::from_config(config, clients),
            budget: config.work_budget,
            config: chat,
        })
    }

    /// The LLM client (its breakers are visible to tests and tools).
    pub fn llm(&self) -> &Llm {
        &self.llm
    }
}

/// The request body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatRequest {
    message: String,
    #[serde(default)]
    conversation_id: Option<String>,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    model: Option<String>,
}

/// The answer (also what an idempotent replay sends).
#[derive(Serialize)]
struct ChatAnswer<'a> {
    conversation_id: &'a ConversationId,
    message_id: MessageId,
    reply: &'a str,
    provider: &'a str,
    model: &'a str,
    usage: TokenUsage,
    created_at: &'a str,
}

impl<'a> ChatAnswer<'a> {
    fn of(stored: &'a StoredTurn, reply: &'a Reply) -> Self {
        Self {
            conversation_id: &stored.conversation_id,
            message_id: stored.reply_message,
            reply: &reply.content,
            provider: &reply.provider,
            model: &reply.model,
            usage: reply.usage,
            created_at: &stored.created_at,
        }
    }
}

/// The function's HTTP route; the Lambda runtime and the local API server both call this.
pub async fn handle(state: &State, req: Request) -> Response<Body> {
    http::serve(req, state.budget, |req, invocation| {
        route(state, req, invocation)
    })
    .await
}

/// A validated chat request.
struct Turn {
    user: UserId,
    message: MessageText,
    conversation: Option<ConversationId>,
    choice: Choice,
}

async fn route(
    state: &State,
    req: Request,
    invocation: Invocation,
) -> Result<Response<Body>, ApiError> {
    http::route(&req, &[("POST", "/chat")])?;
    let user = http::caller(&req)?;
    http::query_params(&req, &[])?;
    let body: ChatRequest = http::json_body(&req, state.config.max_body_bytes)?;
    let message = MessageText::parse(&body.message, state.config.max_message_chars)
        .map_err(http::invalid("message"))?;
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
    let turn = Turn {
        user,
        message,
        conversation,
        choice,
    };

    // The whole request, its write included, runs inside the lease.
    let lease_until = std::time::SystemTime::now()
        + invocation
            .hard_deadline
            .saturating_duration_since(std::time::Instant::now());
    let lease = match state
        .store
        .admit(&turn.user, key.as_ref(), &fingerprint(&turn), lease_until)
        .await?
    {
        Admission::Replay(answer) => return Ok(http::replay(answer)),
        Admission::Run(lease) => lease,
    };
    match run(state, &turn, lease.as_ref(), &invocation).await {
        Ok(answer) => Ok(http::json_text(StatusCode::OK, answer)),
        Err(err) => {
            let may_have_been_stored =
                matches!(&err, Failure::Store(err) if err.may_have_been_stored());
            state
                .store
                .abandon(&turn.user, lease, may_have_been_stored)
                .await;
            Err(err.into())
        }
    }
}

/// Why a turn failed: the store's errors are kept apart, since one of them means "maybe stored".
enum Failure {
    Store(StoreError),
    Other(ApiError),
}

impl From<StoreError> for Failure {
    fn from(err: StoreError) -> Self {
        Self::Store(err)
    }
}

impl From<shared::llm::LlmError> for Failure {
    fn from(err: shared::llm::LlmError) -> Self {
        Self::Other(err.into())
    }
}

impl From<Failure> for ApiError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Store(err) => err.into(),
            Failure::Other(err) => err,
        }
    }
}

/// One turn: context, provider, then the store (with the idempotency record's completion, when
/// there is a lease). Nothing is stored unless everything succeeded.
async fn run(
    state: &State,
    turn: &Turn,
    lease: Option<&Lease>,
    invocation: &Invocation,
) -> Result<String, Failure> {
    let (target, history) = match &turn.conversation {
        Some(id) => {
            let history = state
                .store
                .recent_messages(&turn.user, id, state.config.context_messages)
                .await?;
            (TurnTarget::Existing(id.clone()), history)
        }
        None => (TurnTarget::new_for(&turn.message), Vec::new()),
    };
    let mut context = context_of(&history, state.config.context_chars);
    context.push(ContextMessage {
        role: Role::User,
        content: turn.message.as_str().to_owned(),
    });
    let answer = state
        .llm
        .complete(&turn.choice, &context, invocation.deadline)
        .await?;
    let reply = Reply {
        content: answer.text,
        provider: answer.provider,
        model: answer.model,
        usage: answer.usage,
    };
    let to_text = |stored: &StoredTurn| {
        serde_json::to_string(&ChatAnswer::of(stored, &reply)).unwrap_or_default()
    };
    // The write may also use the invocation's time beyond the work deadline: its retries (a
    // timed-out write is retried until it is stored or found ours) must end while an answer can
    // still be sent, or the caller gets the gateway's bare timeout.
    let write = async {
        match lease {
            Some(lease) => {
                state
                    .store
                    .append_turn_completing(
                        &turn.user,
                        &target,
                        &turn.message,
                        &reply,
                        lease,
                        &to_text,
                    )
                    .await
            }
            None => {
                state
                    .store
                    .append_turn(&turn.user, &target, &turn.message, &reply)
                    .await
            }
        }
    };
    let stored = tokio::time::timeout_at(invocation.hard_deadline.into(), write)
        .await
        .map_err(|_| StoreError::Unconfirmed)??;
    Ok(to_text(&stored))
}

/// What makes two requests "the same" for idempotency.
fn fingerprint(turn: &Turn) -> String {
    let canonical = serde_json::json!({
        "message": turn.message.as_str(),
        "conversation_id": turn.conversation.as_ref().map(ConversationId::as_str),
        "provider": turn.choice.provider,
        "model": turn.choice.model,
    });
    shared::tokens::sha256_hex(canonical.to_string().as_bytes())
}

/// The earlier messages sent to the LLM: the newest ones, oldest first, within `max_chars`.
fn context_of(history: &[Message], max_chars: usize) -> Vec<ContextMessage> {
    let mut budget = max_chars;
    let mut context: Vec<ContextMessage> = history
        .iter()
        .rev()
        .map_while(|message| {
            let size = message.content.chars().count();
            budget = budget.checked_sub(size)?;
            Some(ContextMessage {
                role: message.role,
                content: message.content.clone(),
            })
        })
        .collect();
    context.reverse();
    // Start with a user message, as providers expect alternating turns from the user's side.
    let first_user = context
        .iter()
        .position(|message| message.role == Role::User)
        .unwrap_or(context.len());
    context.drain(..first_user);
    context
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64, role: Role, content: &str) -> Message {
        Message {
            id: MessageId::new(seq).unwrap(),
            role,
            content: content.to_owned(),
            created_at: String::new(),
            provider: None,
            model: None,
            usage: None,
        }
    }

    #[test]
    fn the_context_keeps_the_newest_messages_within_budget_and_starts_with_the_user() {
        let history = [
            message(1, Role::User, "aaaa"),
            message(2, Role::Assistant, "bbbb"),
            message(3, Role::User, "cc"),
            message(4, Role::Assistant, "dd"),
        ];
        fn roles(context: &[ContextMessage]) -> Vec<&str> {
            context.iter().map(|m| m.content.as_str()).collect()
        }
        assert_eq!(
            roles(&context_of(&history, 100)),
            ["aaaa", "bbbb", "cc", "dd"]
        );
        // 8 characters: "dd", "cc", then "bbbb" fits but starts with the assistant: dropped.
        assert_eq!(roles(&context_of(&history, 8)), ["cc", "dd"]);
        assert!(context_of(&history, 1).is_empty());
    }
}
