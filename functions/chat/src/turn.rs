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
    domain::{ConversationId, MessageText, Role, TokenUsage, UserId},
    http::{ApiError, Invocation},
    llm::{Choice, ContextMessage, LlmError, Tab, Unmetered},
    store::{
        Claim, ConversationStore, Ending, IdempotencyKey, Lease, ReplayText, Reply, Reservation,
        StoreError, StoredTurn, TurnTarget, TurnWrite, Usage,
    },
};

use crate::{answer::ChatAnswer, charge::Account, context, State};

/// A validated chat request.
pub(crate) struct Request {
    pub(crate) user: UserId,
    pub(crate) message: MessageText,
    pub(crate) conversation: Option<ConversationId>,
    pub(crate) choice: Choice,
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

    /// Where the turn goes and the context sent to the provider, then the budget's admission of
    /// the turn's worst case: after the context is known, before the provider is called (a
    /// refusal stores nothing and calls no provider).
    pub(crate) async fn prepare(
        &mut self,
        state: &State,
    ) -> Result<(TurnTarget, Vec<ContextMessage>), Failure> {
        let request = &self.request;
        let (target, history) = match &request.conversation {
            Some(id) => {
                let history = self
                    .store
                    .recent_messages(&request.user, id, state.config.context_messages)
                    .await?;
                (TurnTarget::Existing(id.clone()), history)
            }
            None => (TurnTarget::new_for(&request.message), Vec::new()),
        };
        let mut context = context::window(&history, state.config.context_chars);
        context.push(ContextMessage {
            role: Role::User,
            content: request.message.as_str().to_owned(),
        });
        let bound = state.llm.request_bound(&context);
        let grant = self
            .store
            .admit_turn(&request.user, bound.whole(), &state.budgets)
            .await?;
        self.account = Some(Account::new(self.store.clone(), grant, bound));
        Ok((target, context))
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
        let (target, context) = self.prepare(state).await?;
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
        let reservation = self
            .within_write_deadline(self.store.reserve_turn(&self.request.user, &target))
            .await?;
        let replay = |stored: &StoredTurn| ChatAnswer::text(stored, &reply);
        let stored = self.store(reservation, &reply, Some(&replay)).await?;
        Ok(replay(&stored))
    }

    /// Writes the reserved turn, with `replay` completing its key with that answer, bounded by
    /// the write deadline ([`StoreError::Unconfirmed`] past it); the account is settled at the
    /// same time, since what the turn is charged does not depend on the write.
    pub(crate) async fn store(
        &self,
        reservation: Reservation,
        reply: &Reply,
        replay: Option<&ReplayText<'_>>,
    ) -> Result<StoredTurn, StoreError> {
        let write = TurnWrite {
            text: &self.request.message,
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
    pub(crate) async fn end(self, written: Written) {
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
    let canonical = serde_json::json!({
        "message": request.message.as_str(),
        "conversation_id": request.conversation.as_ref().map(ConversationId::as_str),
        "provider": request.choice.provider,
        "model": request.choice.model,
    });
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
