//! One turn, from its claim to its end: claim the idempotency key, admit the budget, call the
//! provider (whole here, streamed in `stream.rs`), store, answer.
//!
//! A [`Turn`] holds what the turn has taken so far (the key's lease, the budget's [`Account`]),
//! and [`Turn::end`] alone decides what it leaves behind: the account is settled by what the
//! turn's provider requests were billed (`charge.rs`), whatever became of its write, and the key
//! by one fact, whether the turn's messages are in the table ([`Written`]). The JSON and the
//! streamed path both end through it.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use shared::{
    domain::{ConversationId, MessageId, MessageText, Role, TokenUsage, UserId},
    http::{ApiError, Invocation},
    llm::{Choice, ContextMessage, LlmError, Tab, Unmetered},
    store::{
        BranchEnd, Claim, ConversationStore, Ending, IdempotencyKey, Lease, Message, ReplayText,
        Reply, Reservation, Shape, StoreError, StoredTurn, TurnKind, TurnTarget, TurnWrite, Usage,
    },
};

use crate::{answer::ChatAnswer, charge::Account, context, State};

/// A validated chat request.
pub(crate) struct Request {
    pub(crate) user: UserId,
    pub(crate) conversation: Option<ConversationId>,
    pub(crate) choice: Choice,
    pub(crate) action: Action,
}

/// What a turn adds, and where.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// The user's message under the conversation's active leaf (a new conversation's first).
    Continue(MessageText),
    /// The user's message under this reply, or as a new root (`None`): an edit of the message
    /// that followed it, as a sibling.
    Under(MessageText, Option<MessageId>),
    /// Another reply to the user's message this reply answers, as its sibling.
    Regenerate(MessageId),
}

impl Action {
    pub(crate) fn text(&self) -> Option<&MessageText> {
        match self {
            Self::Continue(text) | Self::Under(text, _) => Some(text),
            Self::Regenerate(_) => None,
        }
    }
}

/// Where a prepared turn's messages go.
#[derive(Debug, Clone, Copy)]
enum Placed {
    /// The user's message under this parent (`None`: a root).
    Exchange(Option<MessageId>),
    /// A reply to this user message.
    Regeneration(MessageId),
}

/// When a turn's work must be done.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    /// For the context and the provider.
    pub(crate) work: Instant,
    /// For the turn's write, which may also use the invocation's time beyond the work deadline:
    /// its retries (a timed-out write is retried until it is stored or found ours) must end
    /// while an answer can still be sent, or the caller gets the gateway's bare timeout.
    pub(crate) write_by: Instant,
}

impl Deadlines {
    /// A whole answer: the invocation's work deadline, then its hard one.
    pub(crate) fn whole(invocation: &Invocation) -> Self {
        Self {
            work: invocation.deadline,
            write_by: invocation.hard_deadline,
        }
    }

    /// A streamed answer is not bound by API Gateway's 29 s, only by the Lambda deadline: its
    /// work gets `work_time` (`STREAM_WORK_BUDGET_MS`), its write the rest of the invocation
    /// (10 s outside Lambda).
    pub(crate) fn streamed(invocation: &Invocation, work_time: Duration) -> Self {
        let work = Instant::now() + work_time;
        match invocation.lambda_deadline {
            Some(end) => Self {
                work: work.min(end),
                write_by: end,
            },
            None => Self {
                work,
                write_by: work + Duration::from_secs(10),
            },
        }
    }
}

/// Whether a turn's messages are in the table: what its end depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// Nothing of the turn was stored.
    No,
    /// The turn is stored; `key_completed` when its write also completed the idempotency record.
    Yes { key_completed: bool },
    /// The write was sent but never confirmed: it may have landed.
    Maybe,
}

/// Whether a turn's end gives its idempotency key back, so that a retry runs anew: a turn that
/// stored nothing does; a stored turn does only if its write did not complete the key (an
/// incomplete streamed reply); a turn that may have been stored keeps it claimed until its lease
/// ends, when the record itself tells a retry what happened.
fn releases_key(written: Written) -> bool {
    match written {
        Written::No => true,
        Written::Yes { key_completed } => !key_completed,
        Written::Maybe => false,
    }
}

/// Why a turn failed.
pub(crate) enum Failure {
    Store(StoreError),
    Provider(LlmError),
    /// The request names something it may not (a user's message as the parent of a turn).
    Invalid(ApiError),
}

impl Failure {
    fn written(&self) -> Written {
        match self {
            Self::Store(err) if err.may_have_been_stored() => Written::Maybe,
            _ => Written::No,
        }
    }
}

impl From<StoreError> for Failure {
    fn from(err: StoreError) -> Self {
        Self::Store(err)
    }
}

impl From<LlmError> for Failure {
    fn from(err: LlmError) -> Self {
        Self::Provider(err)
    }
}

impl From<Failure> for ApiError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Store(err) => err.into(),
            Failure::Provider(err) => err.into(),
            Failure::Invalid(err) => err,
        }
    }
}

/// What claiming a turn's key found.
pub(crate) enum Claimed {
    /// The same request completed before: its answer, to send again.
    Replay(String),
    Run(Box<Turn>),
}

/// A claimed turn: what it has taken so far, and where it goes.
pub(crate) struct Turn {
    store: Arc<ConversationStore>,
    pub(crate) request: Request,
    pub(crate) deadlines: Deadlines,
    lease: Option<Lease>,
    /// Once admitted.
    account: Option<Account>,
    /// The turn's ids, once prepared, until they are written or given back.
    reservation: Option<Reservation>,
    placed: Option<Placed>,
}

impl Turn {
    /// Claims the request's idempotency key (if it has one) for the whole request, its write
    /// included.
    pub(crate) async fn claim(
        state: &State,
        request: Request,
        key: Option<&IdempotencyKey>,
        deadlines: Deadlines,
    ) -> Result<Claimed, ApiError> {
        let lease_until =
            SystemTime::now() + deadlines.write_by.saturating_duration_since(Instant::now());
        let claim = state
            .store
            .claim(&request.user, key, &fingerprint(&request), lease_until)
            .await?;
        Ok(match claim {
            Claim::Replay(answer) => Claimed::Replay(answer),
            Claim::Run(lease) => Claimed::Run(Box::new(Self {
                store: state.store.clone(),
                request,
                deadlines,
                lease,
                account: None,
                reservation: None,
                placed: None,
            })),
        })
    }

    /// The user's day after this turn's admission (once admitted).
    pub(crate) fn usage(&self) -> Option<Usage> {
        self.account.as_ref().map(Account::usage)
    }

    /// What the LLM client asks before each provider request: the turn's account.
    pub(crate) fn tab(&self) -> &dyn Tab {
        match &self.account {
            Some(account) => account,
            None => &Unmetered,
        }
    }

    /// Records what the answering provider request was billed.
    pub(crate) fn answered(&self, usage: TokenUsage) {
        if let Some(account) = &self.account {
            account.answered(usage);
        }
    }

    /// The turn's ids and the context sent to the provider, then the budget's admission of the
    /// turn's worst case: after the context is known, before the provider is called (a refusal
    /// stores nothing and calls no provider). An existing conversation's ids are reserved beside
    /// the read of the context, which is the branch the new message answers: by default the
    /// head's active leaf (a second read only when it is not the newest message), or the reply
    /// named (`parent_id`, `regenerate`).
    pub(crate) async fn prepare(&mut self, state: &State) -> Result<Vec<ContextMessage>, Failure> {
        let (reservation, placed, history) = self.place(state).await?;
        self.reservation = Some(reservation);
        self.placed = Some(placed);
        let mut context = context::window(&history, state.config.context_chars);
        if let Some(text) = self.request.action.text() {
            context.push(ContextMessage {
                role: Role::User,
                content: text.as_str().to_owned(),
            });
        }
        let bound = state.llm.request_bound(&context);
        let grant = self
            .store
            .admit_turn(&self.request.user, bound.whole(), &state.budgets)
            .await?;
        self.account = Some(Account::new(self.store.clone(), grant, bound));
        Ok(context)
    }

    /// Reserves the turn's ids and reads the branch it answers, oldest first (for a
    /// regeneration, up to the user's message it answers).
    async fn place(&self, state: &State) -> Result<(Reservation, Placed, Vec<Message>), Failure> {
        let request = &self.request;
        let user = &request.user;
        let Some(id) = &request.conversation else {
            let text = request.action.text().ok_or_else(|| {
                Failure::Invalid(ApiError::bad_request(
                    "conversation_id",
                    "is required to regenerate a reply",
                ))
            })?;
            let target = TurnTarget::new_for(text);
            let reservation = self
                .store
                .reserve_turn(user, &target, TurnKind::Exchange)
                .await?;
            return Ok((reservation, Placed::Exchange(None), Vec::new()));
        };
        let target = TurnTarget::Existing(id.clone());
        let n = state.config.context_messages;
        let store = &self.store;
        let kind = match request.action {
            Action::Regenerate(_) => TurnKind::Regeneration,
            _ => TurnKind::Exchange,
        };
        let end = match request.action {
            Action::Continue(_) => Some(BranchEnd::Newest),
            Action::Under(_, parent) => parent.map(BranchEnd::At),
            Action::Regenerate(reply) => Some(BranchEnd::At(reply)),
        };
        let extra = u16::from(matches!(request.action, Action::Regenerate(_)));
        let read = async {
            match end {
                Some(end) => store
                    .recent_messages(user, id, end, n + extra)
                    .await
                    .map(Some),
                None => Ok(None),
            }
        };
        let (reservation, history) = tokio::join!(store.reserve_turn(user, &target, kind), read);
        let reservation = reservation?;
        let checked = async {
            let mut history = match history {
                Ok(history) => history.unwrap_or_default(),
                Err(err) => return Err(Failure::from(err)),
            };
            let newest = history.last().map(|message| (message.id, message.role));
            let placed = match (&request.action, newest) {
                (Action::Continue(_), Some((newest, _))) => match reservation.leaf() {
                    Some(leaf) if leaf != newest => {
                        history = store
                            .recent_messages(user, id, BranchEnd::At(leaf), n)
                            .await?;
                        Placed::Exchange(Some(leaf))
                    }
                    _ => Placed::Exchange(Some(newest)),
                },
                (Action::Under(_, None), _) => Placed::Exchange(None),
                (Action::Under(_, Some(_)), Some((parent, Role::Assistant))) => {
                    Placed::Exchange(Some(parent))
                }
                (Action::Under(..), _) => {
                    return Err(Failure::Invalid(ApiError::bad_request(
                        "parent_id",
                        "names a message of the user; a turn answers from a reply (or from null, \
                         to send a new first message)",
                    )))
                }
                (Action::Regenerate(_), Some((_, Role::Assistant))) => {
                    history.pop();
                    match history.last() {
                        Some(question) if question.role == Role::User => {
                            Placed::Regeneration(question.id)
                        }
                        _ => {
                            return Err(Failure::Store(StoreError::Corrupt(
                                "a reply without the user's message it answers".to_owned(),
                            )))
                        }
                    }
                }
                (Action::Regenerate(_), _) => {
                    return Err(Failure::Invalid(ApiError::bad_request(
                        "regenerate",
                        "names a message of the user; only a reply can be regenerated",
                    )))
                }
                (Action::Continue(_), None) => return Err(Failure::Store(StoreError::NotFound)),
            };
            Ok((placed, history))
        };
        match checked.await {
            Ok((placed, history)) => Ok((reservation, placed, history)),
            Err(failure) => {
                store.cancel_reservation(reservation).await;
                Err(failure)
            }
        }
    }

    /// The ids the turn announces: its conversation, the user's message its reply answers, and
    /// the reply (once prepared).
    pub(crate) fn ids(&self) -> Option<(&ConversationId, MessageId, MessageId)> {
        let reservation = self.reservation.as_ref()?;
        let question = match self.placed? {
            Placed::Exchange(_) => reservation.first(),
            Placed::Regeneration(question) => question,
        };
        Some((
            reservation.target().id(),
            question,
            reservation.reply_message(),
        ))
    }

    /// A whole turn: the context, the provider's answer, the write. The answer's text, as
    /// stored for replays.
    pub(crate) async fn answer(
        mut self,
        state: &State,
    ) -> Result<(String, Option<Usage>), ApiError> {
        match self.answer_and_store(state).await {
            Ok(text) => {
                let usage = self.usage();
                self.end(Written::Yes {
                    key_completed: true,
                })
                .await;
                Ok((text, usage))
            }
            Err(failure) => Err(self.fail(failure).await),
        }
    }

    async fn answer_and_store(&mut self, state: &State) -> Result<String, Failure> {
        let context = self.prepare(state).await?;
        let answer = state
            .llm
            .complete(
                &self.request.choice,
                &context,
                self.deadlines.work,
                self.tab(),
            )
            .await?;
        self.answered(answer.usage);
        let mut content = String::new();
        // A reply too long to store is kept cut, never lost (the provider billed it whole).
        let ending = if Reply::extend(&mut content, &answer.text).1 {
            Ending::Incomplete
        } else {
            Ending::Complete
        };
        let reply = Reply {
            content,
            provider: answer.provider,
            model: answer.model,
            usage: answer.usage,
            ending,
        };
        let replay = |stored: &StoredTurn| ChatAnswer::text(stored, &reply);
        let stored = self.store(&reply, Some(&replay)).await?;
        Ok(replay(&stored))
    }

    /// Writes the reserved turn, with `replay` completing its key with that answer, bounded by
    /// the write deadline ([`StoreError::Unconfirmed`] past it); the account is settled at the
    /// same time, since what the turn is charged does not depend on the write.
    pub(crate) async fn store(
        &mut self,
        reply: &Reply,
        replay: Option<&ReplayText<'_>>,
    ) -> Result<StoredTurn, StoreError> {
        let (Some(reservation), Some(placed)) = (self.reservation.take(), self.placed) else {
            return Err(StoreError::Corrupt(
                "a turn stored before it was prepared".to_owned(),
            ));
        };
        let shape = match (placed, self.request.action.text()) {
            (Placed::Exchange(parent), Some(text)) => Shape::Exchange { text, parent },
            (Placed::Regeneration(answering), _) => Shape::Regeneration { answering },
            (Placed::Exchange(_), None) => {
                return Err(StoreError::Corrupt(
                    "an exchange without the user's message".to_owned(),
                ))
            }
        };
        let write = TurnWrite {
            shape,
            reply,
            completes: self.lease.as_ref().zip(replay),
            admitted: self.account.as_ref().map(Account::erasures),
        };
        let (stored, ()) = tokio::join!(
            self.within_write_deadline(self.store.write_turn(reservation, &write)),
            self.close_account(),
        );
        stored
    }

    async fn close_account(&self) {
        if let Some(account) = &self.account {
            account.close().await;
        }
    }

    async fn within_write_deadline<T>(
        &self,
        write: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout_at(self.deadlines.write_by.into(), write)
            .await
            .unwrap_or(Err(StoreError::Unconfirmed))
    }

    /// Ends a failed turn (see [`Self::end`]) and gives its error: for a retry or fallback the
    /// budget refused, that refusal (a 429).
    pub(crate) async fn fail(self, failure: Failure) -> ApiError {
        let refusal = match &failure {
            Failure::Provider(LlmError::NotAdmitted) => {
                self.account.as_ref().and_then(Account::take_refusal)
            }
            _ => None,
        };
        let failure = refusal.map_or(failure, Failure::Store);
        self.end(failure.written()).await;
        failure.into()
    }

    /// The one place that decides what a turn leaves behind: its account closed by the charge
    /// rule (`charge.rs`), its key by [`releases_key`].
    pub(crate) async fn end(mut self, written: Written) {
        if let Some(reservation) = self.reservation.take() {
            // Nothing will be written: the head is put back as it was.
            self.store.cancel_reservation(reservation).await;
        }
        self.close_account().await;
        match self.lease {
            Some(lease) if releases_key(written) => {
                self.store.release(&self.request.user, lease).await;
            }
            Some(_) if written == Written::Maybe => {
                tracing::warn!("the turn's write was not confirmed; its Idempotency-Key stays claimed until the lease ends");
            }
            _ => {}
        }
    }
}

/// What makes two requests "the same" for idempotency.
fn fingerprint(request: &Request) -> String {
    let mut canonical = serde_json::json!({
        "message": request.action.text().map(MessageText::as_str),
        "conversation_id": request.conversation.as_ref().map(ConversationId::as_str),
        "provider": request.choice.provider,
        "model": request.choice.model,
    });
    // Only where a request names them, so that a plain turn's fingerprint is what it was before
    // branches (a retry across the upgrade is still recognised).
    match &request.action {
        Action::Continue(_) => {}
        Action::Under(_, parent) => {
            canonical["parent_id"] = parent.map_or(0, MessageId::seq).into();
        }
        Action::Regenerate(reply) => canonical["regenerate"] = reply.seq().into(),
    }
    shared::tokens::sha256_hex(canonical.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_stored_and_completed_or_possibly_stored_turn_keeps_its_key() {
        assert!(releases_key(Written::No));
        assert!(!releases_key(Written::Yes {
            key_completed: true
        }));
        // An incomplete streamed reply is stored but does not complete its key: a retry runs anew.
        assert!(releases_key(Written::Yes {
            key_completed: false
        }));
        assert!(!releases_key(Written::Maybe));
    }

    #[test]
    fn only_an_unconfirmed_write_may_have_been_stored() {
        assert_eq!(
            Failure::from(StoreError::Unconfirmed).written(),
            Written::Maybe
        );
        for err in [
            StoreError::NotFound,
            StoreError::LeaseLost,
            StoreError::Conflict { attempts: 8 },
        ] {
            assert_eq!(Failure::from(err).written(), Written::No);
        }
        let provider = Failure::Provider(LlmError::Rejected {
            provider: "openai".into(),
        });
        assert_eq!(provider.written(), Written::No);
    }
}
