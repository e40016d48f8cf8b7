//! The chat function: `POST /chat`, one turn with an LLM that remembers the conversation.
//!
//! The turn is stored only after the provider answered, whole or not at all. With an
//! `Idempotency-Key`, a retried request is answered from its first run: no second provider call,
//! no second turn.

use std::time::{Instant, SystemTime};

use lambda_http::{http::StatusCode, Body, Request, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shared::{
    aws::AwsClients,
    config::{ChatConfig, Config, ConfigError},
    http::{self, ApiError, Invocation},
    identity::{self, UserId},
    llm::{ContextMessage, Llm, LlmError, Speaker},
    secrets::ProviderKeys,
    store::{
        Claim, ConversationId, ConversationStore, IdempotencyKey, Lease, Message, Reply, Role,
        StoreError, TokenUsage, TurnTarget,
    },
};

/// What the function builds once per execution environment.
pub struct State {
    config: ChatConfig,
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

/// The answer.
#[derive(Serialize)]
struct ChatResponse {
    conversation_id: String,
    message_id: String,
    reply: String,
    provider: String,
    model: String,
    usage: TokenUsage,
    created_at: String,
}

/// The function's HTTP route; the Lambda runtime and the local API server both call this.
pub async fn handle(state: &State, req: Request) -> Response<Body> {
    http::serve(req, |req, invocation| route(state, req, invocation)).await
}

async fn route(
    state: &State,
    req: Request,
    invocation: Invocation,
) -> Result<Response<Body>, ApiError> {
    http::route(&req, &[("POST", "/chat")])?;
    let user = identity::caller(&req)?;
    http::query_params(&req, &[])?;
    let body: ChatRequest = http::json_body(&req, state.config.max_body_bytes)?;
    let message = validate_message(&body.message, state.config.max_message_chars)?;
    let conversation = body
        .conversation_id
        .as_deref()
        .map(|id| ConversationId::from_input(id, "conversation_id"))
        .transpose()?;
    let idempotency_key = idempotency_key(&req)?;
    let choice = state
        .llm
        .choose(body.provider.as_deref(), body.model.as_deref())
        .await?;

    // The same key with the same request is answered from its first run.
    let deadline = invocation
        .deadline
        .min(Instant::now() + state.config.deadline);
    let lease =
        match idempotency_key {
            None => None,
            Some(key) => {
                let hash = payload_hash(
                    message,
                    conversation.as_ref(),
                    &choice.provider,
                    &choice.model,
                );
                // The whole request, its write included, runs inside the lease.
                let lease_until = SystemTime::now()
                    + invocation
                        .hard_deadline
                        .saturating_duration_since(Instant::now());
                match state
                    .store
                    .claim_idempotency_key(&user, &key, &hash, lease_until)
                    .await?
                {
                    Claim::Started(lease) => Some(lease),
                    Claim::Replay(response) => return replay(response),
                    Claim::InProgress => return Err(ApiError::Conflict(
                        "a request with this Idempotency-Key is still in progress; retry shortly"
                            .to_owned(),
                    )),
                    Claim::Mismatch => {
                        return Err(ApiError::Unprocessable(
                            "this Idempotency-Key was used with a different request".to_owned(),
                        ))
                    }
                }
            }
        };

    let limits = Limits {
        deadline,
        write_by: invocation.hard_deadline,
    };
    let outcome = turn(state, &user, message, conversation, &choice, limits).await;
    match (outcome, lease) {
        (Ok(answer), Some(lease)) => {
            let text = serde_json::to_string(&answer).unwrap_or_default();
            if let Err(err) = state
                .store
                .complete_idempotency_key(&user, &lease, &text)
                .await
            {
                // The turn is stored; a retry will find the record in progress until its lease ends.
                tracing::error!(request_id = invocation.request_id, error = %err, "could not complete the idempotency record");
            }
            Ok(http::json(StatusCode::OK, &answer))
        }
        (Ok(answer), None) => Ok(http::json(StatusCode::OK, &answer)),
        (Err(failure), lease) => {
            match lease {
                // The turn may be stored: a retry must not run it again, so the key stays
                // claimed until its lease ends (a retry meanwhile is a 409).
                Some(_) if failure.unconfirmed => {
                    tracing::warn!(request_id = invocation.request_id, "the turn's write was not confirmed; its Idempotency-Key stays claimed until the lease ends");
                }
                Some(lease) => release(state, &user, &lease).await,
                None => {}
            }
            Err(failure.error)
        }
    }
}

/// Why a turn failed, and whether it may nevertheless have been stored.
struct Failure {
    error: ApiError,
    unconfirmed: bool,
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            unconfirmed: false,
        }
    }
}

impl From<StoreError> for Failure {
    fn from(err: StoreError) -> Self {
        Self {
            unconfirmed: matches!(err, StoreError::Unconfirmed),
            error: err.into(),
        }
    }
}

impl From<LlmError> for Failure {
    fn from(err: LlmError) -> Self {
        ApiError::from(err).into()
    }
}

/// When a turn's work must be done.
struct Limits {
    /// For the context and the provider (`CHAT_DEADLINE_MS`, within the invocation's).
    deadline: Instant,
    /// For the turn's write, which may also use the invocation's time beyond the work deadline:
    /// its retries (a timed-out write is retried until it is stored or found ours) must end
    /// while an answer can still be sent, or the caller gets the gateway's bare timeout.
    write_by: Instant,
}

/// One turn: context, provider, then the store. Nothing is stored unless everything succeeded.
async fn turn(
    state: &State,
    user: &UserId,
    message: &str,
    conversation: Option<ConversationId>,
    choice: &shared::llm::Choice,
    limits: Limits,
) -> Result<ChatResponse, Failure> {
    let deadline = limits.deadline;
    let (target, history) = match conversation {
        Some(id) => {
            let history = state
                .store
                .recent_messages(user, &id, state.config.context_messages)
                .await?;
            (TurnTarget::Existing(id), history)
        }
        None => (
            TurnTarget::New {
                id: ConversationId::generate(),
                title: title_of(message),
            },
            Vec::new(),
        ),
    };
    let mut context = context_of(&history, state.config.context_chars);
    context.push(ContextMessage {
        speaker: Speaker::User,
        content: message.to_owned(),
    });
    let answer = state.llm.complete(choice, &context, deadline).await?;
    let reply = Reply {
        content: answer.text,
        provider: answer.provider,
        model: answer.model,
        usage: answer.usage,
    };
    let write = state.store.append_turn(user, &target, message, &reply);
    let stored = tokio::time::timeout_at(limits.write_by.into(), write)
        .await
        .map_err(|_| StoreError::Unconfirmed)??;
    Ok(ChatResponse {
        conversation_id: stored.conversation_id.to_string(),
        message_id: shared::store::keys::message_id(stored.assistant_seq),
        reply: reply.content,
        provider: reply.provider,
        model: reply.model,
        usage: reply.usage,
        created_at: stored.created_at,
    })
}

async fn release(state: &State, user: &UserId, lease: &Lease) {
    if let Err(err) = state.store.release_idempotency_key(user, lease).await {
        tracing::error!(error = %err, "could not release the idempotency record; it frees itself when its lease ends");
    }
}

/// The stored answer of the request's first run, marked as a replay.
fn replay(stored: String) -> Result<Response<Body>, ApiError> {
    let body = serde_json::value::RawValue::from_string(stored).map_err(ApiError::internal)?;
    let mut response = http::json(StatusCode::OK, &body);
    response.headers_mut().insert(
        "idempotent-replayed",
        lambda_http::http::HeaderValue::from_static("true"),
    );
    Ok(response)
}

fn validate_message(raw: &str, max_chars: usize) -> Result<&str, ApiError> {
    let message = raw.trim();
    if message.is_empty() {
        return Err(ApiError::bad_request("message", "must not be empty"));
    }
    let chars = message.chars().count();
    if chars > max_chars {
        return Err(ApiError::bad_request(
            "message",
            format!("is {chars} characters long; the limit is {max_chars}"),
        ));
    }
    Ok(message)
}

fn idempotency_key(req: &Request) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(IdempotencyKey::parse)
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(
                "Idempotency-Key",
                "must be 1 to 128 printable ASCII characters",
            )
        })
}

/// What makes two requests "the same" for idempotency.
fn payload_hash(
    message: &str,
    conversation: Option<&ConversationId>,
    provider: &str,
    model: &str,
) -> String {
    let canonical = serde_json::json!({
        "message": message,
        "conversation_id": conversation.map(ConversationId::as_str),
        "provider": provider,
        "model": model,
    });
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A conversation's title: the first words of its first message.
fn title_of(message: &str) -> String {
    const MAX: usize = 60;
    let mut title = String::new();
    for word in message.split_whitespace() {
        if title.chars().count() + word.chars().count() + 1 > MAX {
            break;
        }
        if !title.is_empty() {
            title.push(' ');
        }
        title.push_str(word);
    }
    if title.is_empty() {
        title = message.chars().take(MAX).collect();
    }
    title
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
                speaker: match message.role {
                    Role::User => Speaker::User,
                    Role::Assistant => Speaker::Assistant,
                },
                content: message.content.clone(),
            })
        })
        .collect();
    context.reverse();
    // Start with a user message, as providers expect alternating turns from the user's side.
    while context
        .first()
        .is_some_and(|message| message.speaker == Speaker::Assistant)
    {
        context.remove(0);
    }
    context
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_the_first_words() {
        assert_eq!(title_of("How do I bake bread?"), "How do I bake bread?");
        let long = "word ".repeat(40);
        let title = title_of(&long);
        assert!(title.chars().count() <= 60 && title.starts_with("word word"));
        assert_eq!(title_of(&"x".repeat(100)).chars().count(), 60);
    }

    #[test]
    fn the_payload_hash_depends_on_every_part() {
        let id = ConversationId::generate();
        let base = payload_hash("hi", Some(&id), "openai", "m");
        assert_eq!(base, payload_hash("hi", Some(&id), "openai", "m"));
        assert_ne!(base, payload_hash("hi!", Some(&id), "openai", "m"));
        assert_ne!(base, payload_hash("hi", None, "openai", "m"));
        assert_ne!(base, payload_hash("hi", Some(&id), "gemini", "m"));
        assert_ne!(base, payload_hash("hi", Some(&id), "openai", "n"));
    }
}
