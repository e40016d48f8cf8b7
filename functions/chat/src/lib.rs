//! The chat function: `POST /chat`, one turn with an LLM that remembers the conversation, within
//! the user's budgets (`shared::store::budget`: admitted before the provider is called, settled
//! in the turn's write); `GET /models`, the providers and models a client may choose; and
//! `GET /usage`, the caller's budgets and what is used of them today.
//!
//! The turn is stored only after the provider answered, whole or not at all. With an
//! `Idempotency-Key`, a retried request is answered from its first run: no second provider call,
//! no second turn (the lifecycle is `shared::store`'s: admit, complete with the turn, abandon).
//!
//! With `Accept: text/event-stream` the reply streams as server-sent events (`stream.rs`); the
//! function always answers in Lambda's streaming format, since its integration streams.

mod stream;

use std::sync::Arc;

use lambda_http::{http::StatusCode, Request, Response};
use serde::{Deserialize, Serialize};
use shared::{
    aws::AwsClients,
    config::{BudgetPolicy, ChatConfig, Config, ConfigError},
    domain::{ConversationId, MessageId, MessageText, Role, TokenUsage, UserId},
    http::{self, AnswerBody, ApiError, Invocation},
    llm::{Choice, ContextMessage, Llm, Offer},
    secrets::ProviderKeys,
    store::{
        Admission, ConversationStore, Counter, Ending, Grant, Lease, Message, Reply, StoreError,
        StoredTurn, TurnTarget,
    },
};

/// What the function builds once per execution environment. The store and the LLM client are
/// shared with the task that produces a streamed reply.
pub struct State {
    config: ChatConfig,
    budget: std::time::Duration,
    limits: BudgetPolicy,
    store: Arc<ConversationStore>,
    llm: Arc<Llm>,
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
            llm: Arc::new(Llm::from_config(&chat, keys)?),
            store: Arc::new(ConversationStore::from_config(config, clients)),
            budget: config.work_budget,
            limits: config.budget,
            config: chat,
        })
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

/// The answer (also what an idempotent replay sends, and the `done` event of a stream).
#[derive(Serialize)]
struct ChatAnswer<'a> {
    conversation_id: &'a ConversationId,
    message_id: MessageId,
    reply: &'a str,
    provider: &'a str,
    model: &'a str,
    usage: TokenUsage,
    created_at: &'a str,
    /// How the reply ended, when it did not end normally (`stopped`, `incomplete`).
    #[serde(skip_serializing_if = "Ending::is_complete")]
    ending: Ending,
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
            ending: reply.ending,
        }
    }

    fn text(stored: &StoredTurn, reply: &Reply) -> String {
        serde_json::to_string(&ChatAnswer::of(stored, reply)).unwrap_or_default()
    }
}

/// The function's HTTP route; the Lambda runtime and the local API server both call this.
pub async fn handle(state: &State, req: Request) -> Response<AnswerBody> {
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
) -> Result<Response<AnswerBody>, ApiError> {
    let route = http::route(
        &req,
        &[("POST", "/chat"), ("GET", "/models"), ("GET", "/usage")],
    )?;
    let user = http::caller(&req)?;
    http::query_params(&req, &[])?;
    match route {
        "/models" => return models(state).await,
        "/usage" => return usage(state, &user).await,
        _ => {}
    }
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

    let streaming = http::wants_events(&req);
    let limits = if streaming {
        Limits::streamed(&invocation, state.config.stream_budget)
    } else {
        Limits {
            work: invocation.deadline,
            write_by: invocation.hard_deadline,
        }
    };
    // The whole request, its write included, runs inside the lease.
    let lease_until = std::time::SystemTime::now()
        + limits
            .write_by
            .saturating_duration_since(std::time::Instant::now());
    let lease = match state
        .store
        .admit(&turn.user, key.as_ref(), &fingerprint(&turn), lease_until)
        .await?
    {
        Admission::Replay(answer) if streaming => return Ok(stream::replay(&answer)),
        Admission::Replay(answer) => return Ok(http::replay(answer).map(AnswerBody::from)),
        Admission::Run(lease) => lease,
    };
    if streaming {
        return stream::start(state, turn, lease, &limits, &invocation.request_id).await;
    }
    match run(state, &turn, lease.as_ref(), &limits).await {
        Ok((answer, grant)) => {
            let mut response = http::json_text(StatusCode::OK, answer);
            budget_headers(response.headers_mut(), &grant);
            Ok(response.map(AnswerBody::from))
        }
        Err(err) => {
            state
                .store
                .abandon(&turn.user, lease, err.may_have_been_stored())
                .await;
            Err(err.into())
        }
    }
}

/// `GET /models`: what the deployment offers, the default first.
#[derive(Serialize)]
struct Models<'a> {
    /// The provider and model a request that names none gets; `null` if none is offered.
    default: Option<ModelChoice<'a>>,
    providers: Vec<ProviderView<'a>>,
}

#[derive(Serialize)]
struct ModelChoice<'a> {
    provider: &'a str,
    model: &'a str,
}

#[derive(Serialize)]
struct ProviderView<'a> {
    name: &'a str,
    models: &'a [String],
}

async fn models(state: &State) -> Result<Response<AnswerBody>, ApiError> {
    let offers: Vec<Offer> = state.llm.offered().await?;
    let default = offers.first().and_then(|offer| {
        offer.models.first().map(|model| ModelChoice {
            provider: &offer.provider,
            model,
        })
    });
    let mut response = http::json(
        StatusCode::OK,
        &Models {
            default,
            providers: offers
                .iter()
                .map(|offer| ProviderView {
                    name: &offer.provider,
                    models: &offer.models,
                })
                .collect(),
        },
    );
    // The same for every caller until the next deployment (or key change).
    response.headers_mut().insert(
        lambda_http::http::header::CACHE_CONTROL,
        lambda_http::http::HeaderValue::from_static("private, max-age=300"),
    );
    Ok(response.map(AnswerBody::from))
}

/// `GET /usage`: the caller's day so far, and their budgets.
#[derive(Serialize)]
struct UsageView {
    day: String,
    turns: CounterView,
    tokens: CounterView,
    minute: CounterView,
    custom_budget: bool,
    resets_in_seconds: u64,
}

/// One budget's counter; `limit` and `remaining` are `null` when it is unlimited.
#[derive(Serialize)]
struct CounterView {
    used: u64,
    limit: Option<u64>,
    remaining: Option<u64>,
}

impl From<Counter> for CounterView {
    fn from(counter: Counter) -> Self {
        Self {
            used: counter.used,
            limit: counter.limit,
            remaining: counter.remaining,
        }
    }
}

async fn usage(state: &State, user: &UserId) -> Result<Response<AnswerBody>, ApiError> {
    let usage = state.store.usage(user, &state.limits).await?;
    let view = UsageView {
        day: usage.day.to_string(),
        turns: usage.turns.into(),
        tokens: usage.tokens.into(),
        minute: usage.minute.into(),
        custom_budget: usage.overridden,
        resets_in_seconds: usage.day_resets_in,
    };
    Ok(http::json(StatusCode::OK, &view).map(AnswerBody::from))
}

/// When a turn's work must be done.
struct Limits {
    /// For the context and the provider.
    work: std::time::Instant,
    /// For the turn's write, which may also use the invocation's time beyond the work deadline:
    /// its retries (a timed-out write is retried until it is stored or found ours) must end
    /// while an answer can still be sent.
    write_by: std::time::Instant,
}

impl Limits {
    /// A streamed answer is not bound by API Gateway's 29 s, only by the Lambda deadline: its
    /// work gets `budget` (`STREAM_WORK_BUDGET_MS`), its write the rest of the invocation (10 s
    /// outside Lambda).
    fn streamed(invocation: &Invocation, budget: std::time::Duration) -> Self {
        let now = std::time::Instant::now();
        let work = now + budget;
        match invocation.lambda_deadline {
            Some(end) => Self {
                work: work.min(end),
                write_by: end,
            },
            None => Self {
                work,
                write_by: work + std::time::Duration::from_secs(10),
            },
        }
    }
}

/// Why a turn failed: the store's errors are kept apart, since one of them means "maybe stored".
enum Failure {
    Store(StoreError),
    Other(ApiError),
}

impl Failure {
    /// Whether the turn may nevertheless have been stored (then its key stays claimed).
    fn may_have_been_stored(&self) -> bool {
        matches!(self, Self::Store(err) if err.may_have_been_stored())
    }
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
    limits: &Limits,
) -> Result<(String, Grant), Failure> {
    let (target, context) = prepare(state, turn).await?;
    let grant = admit(state, turn, &context).await?;
    let result = answer_and_store(state, turn, lease, limits, target, &context, &grant).await;
    if let Err(failure) = &result {
        if !failure.may_have_been_stored() {
            state.store.refund(&grant).await;
        }
    }
    result.map(|answer| (answer, grant))
}

/// Takes the turn's worst case from the user's budgets (after the context is known, before the
/// provider is called): a refusal stores nothing and calls no provider.
async fn admit(
    state: &State,
    turn: &Turn,
    context: &[ContextMessage],
) -> Result<Grant, StoreError> {
    let cost = input_token_bound(context, state.config.system_prompt.as_deref())
        + u64::from(state.llm.output_cap());
    state
        .store
        .admit_turn(&turn.user, cost, &state.limits)
        .await
}

/// At least as many tokens as any provider counts for this input: a token is at least one byte
/// of UTF-8 in the byte-level tokenizers of OpenAI's and Gemini's models, and each message costs
/// a few tokens of framing. Far above the usual count (about four bytes a token in English), which
/// the settlement gives back; the price of never overdrawing.
fn input_token_bound(context: &[ContextMessage], system: Option<&str>) -> u64 {
    const FRAMING: u64 = 8;
    let bytes = |text: &str| u64::try_from(text.len()).unwrap_or(u64::MAX);
    let system = system.map_or(0, |text| bytes(text) + FRAMING);
    context
        .iter()
        .map(|message| bytes(&message.content) + FRAMING)
        .fold(system + FRAMING, u64::saturating_add)
}

/// The `RateLimit-*` headers of the budget closest to refusing: this minute's turns or today's.
fn budget_headers(headers: &mut lambda_http::http::HeaderMap, grant: &Grant) {
    let usage = &grant.usage;
    let candidates = [
        (usage.minute, usage.minute_resets_in),
        (usage.turns, usage.day_resets_in),
    ];
    let closest = candidates
        .iter()
        .filter_map(|(counter, reset)| Some((counter.limit?, counter.remaining?, *reset)))
        .min_by_key(|(_, remaining, _)| *remaining);
    if let Some((limit, remaining, reset)) = closest {
        http::rate_limit_headers(headers, limit, remaining, reset);
    }
}

/// The provider's answer, then the turn's write (with the idempotency completion and the
/// budget's settlement in its transaction).
async fn answer_and_store(
    state: &State,
    turn: &Turn,
    lease: Option<&Lease>,
    limits: &Limits,
    target: TurnTarget,
    context: &[ContextMessage],
    grant: &Grant,
) -> Result<String, Failure> {
    let answer = state
        .llm
        .complete(&turn.choice, context, limits.work)
        .await?;
    let reply = Reply {
        content: answer.text,
        provider: answer.provider,
        model: answer.model,
        usage: answer.usage,
        ending: Ending::Complete,
    };
    let to_text = |stored: &StoredTurn| ChatAnswer::text(stored, &reply);
    // The write may also use the invocation's time beyond the work deadline: its retries (a
    // timed-out write is retried until it is stored or found ours) must end while an answer can
    // still be sent, or the caller gets the gateway's bare timeout.
    let completion = lease.map(|lease| (lease, &to_text as &shared::store::Answer<'_>));
    let write = state.store.append_turn_completing(
        &turn.user,
        &target,
        &turn.message,
        &reply,
        completion,
        Some(grant),
    );
    let stored = tokio::time::timeout_at(limits.write_by.into(), write)
        .await
        .map_err(|_| StoreError::Unconfirmed)??;
    Ok(to_text(&stored))
}

/// Where a turn goes, and the context sent to the provider: the conversation's recent messages
/// (404 for an unknown conversation) and the new message.
async fn prepare(
    state: &State,
    turn: &Turn,
) -> Result<(TurnTarget, Vec<ContextMessage>), StoreError> {
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
    Ok((target, context))
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
            ending: Ending::Complete,
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
