//! The turn write: a user message and its reply, stored whole or not at all.

use std::time::Duration;

use aws_sdk_dynamodb::{
    error::SdkError,
    operation::transact_write_items::TransactWriteItemsError,
    types::{
        CancellationReason, ConditionCheck, Put, ReturnValue, ReturnValuesOnConditionCheckFailure,
        TransactWriteItem,
    },
};

use super::{
    error::{from_sdk as classify, is_condition_failed, is_timeout, is_transaction_conflict},
    items::{n, number, s, timestamp, Item},
    keys,
    meter::{ask, Work},
    ConversationStore, Grant, Lease, Reply, StoreError, StoredTurn, TurnTarget,
};
use crate::{
    backoff::full_jitter,
    domain::{ConversationId, MessageId, MessageText, Role, UserId},
};

/// How often a turn's write is tried before it is given up as a [`StoreError::Conflict`].
const MAX_ATTEMPTS: u32 = 8;
const BACKOFF_BASE: Duration = Duration::from_millis(20);
const BACKOFF_CAP: Duration = Duration::from_millis(500);

/// What a conditional put of a turn found.
enum PutOutcome {
    Stored,
    /// An item with one of our keys exists and was written by someone else.
    Taken,
    /// A transient collision (`TransactionConflict`, throttling): the same write may be retried.
    Retry,
    /// The write timed out: it may or may not have landed; the same write is retried.
    TimedOut,
}

/// What one turn writes, shared by its items.
#[derive(Debug)]
struct Turn {
    user: UserId,
    partition: String,
    conversation: ConversationId,
    /// Marks our items, so that a write whose answer was lost is recognised on retry.
    token: String,
    created_at: String,
    now: i64,
    expires_at: Option<i64>,
}

/// The answer a request gives for its stored turn, as the idempotency record keeps it.
pub type Answer<'a> = dyn Fn(&StoredTurn) -> String + Sync + 'a;

/// An idempotency record to complete in the turn's transaction, with the answer the request gives
/// for the stored turn.
struct Completion<'a> {
    lease: &'a Lease,
    answer: &'a Answer<'a>,
}

impl ConversationStore {
    /// Stores a turn, the user's message and the assistant's reply, whole or not at all.
    ///
    /// A new conversation's head and both messages are written in one transaction, the head with
    /// `attribute_not_exists`. For an existing conversation the next two sequence numbers are
    /// reserved with an atomic `ADD` on its head, then both messages are put in one transaction
    /// with `attribute_not_exists(SK)` and a check that the head still exists (a conversation
    /// deleted meanwhile takes no orphans): concurrent turns never wait for or overwrite each other.
    pub async fn append_turn(
        &self,
        user: &UserId,
        target: &TurnTarget,
        text: &MessageText,
        reply: &Reply,
    ) -> Result<StoredTurn, StoreError> {
        self.append_turn_completing(user, target, text, reply, None, None)
            .await
    }

    /// [`Self::append_turn`], completing the request's idempotency record with `answer` (the
    /// request's answer for the stored turn) in the same transaction when there is a `lease`, and
    /// settling the turn's budget `grant` to the reply's usage when there is one. If the lease was
    /// taken over by a retry meanwhile, nothing is stored ([`StoreError::LeaseLost`]).
    pub async fn append_turn_completing(
        &self,
        user: &UserId,
        target: &TurnTarget,
        text: &MessageText,
        reply: &Reply,
        completion: Option<(&Lease, &Answer<'_>)>,
        grant: Option<&Grant>,
    ) -> Result<StoredTurn, StoreError> {
        let reservation = self.reserve_turn(user, target).await?;
        let completion = completion.map(|(lease, answer)| Completion { lease, answer });
        self.write_turn(reservation, target, text, reply, completion, grant)
            .await
    }

    /// Reserves a turn's two message ids before its reply exists (a streamed reply announces
    /// them first): a new conversation's are 1 and 2; an existing one's are the next two of its
    /// head (an atomic `ADD`; [`StoreError::NotFound`] for an unknown conversation).
    pub async fn reserve_turn(
        &self,
        user: &UserId,
        target: &TurnTarget,
    ) -> Result<Reservation, StoreError> {
        let now = self.now();
        let turn = Turn {
            user: user.clone(),
            partition: keys::partition(user),
            conversation: target.id().clone(),
            token: crate::tokens::random_token(),
            created_at: timestamp(now),
            now: now.timestamp(),
            expires_at: self.expires_at(now),
        };
        let first = match target {
            TurnTarget::New { .. } => 1,
            TurnTarget::Existing(_) => self.reserve(&turn).await?,
        };
        message_id(first + 1)?;
        Ok(Reservation { turn, first })
    }

    /// Writes a reserved turn, completing the idempotency record of `lease` with `answer` and
    /// settling `grant` in the same transaction when given (see
    /// [`Self::append_turn_completing`]).
    pub async fn write_reserved(
        &self,
        reservation: Reservation,
        target: &TurnTarget,
        text: &MessageText,
        reply: &Reply,
        completion: Option<(&Lease, &Answer<'_>)>,
        grant: Option<&Grant>,
    ) -> Result<StoredTurn, StoreError> {
        let completion = completion.map(|(lease, answer)| Completion { lease, answer });
        self.write_turn(reservation, target, text, reply, completion, grant)
            .await
    }

    async fn write_turn(
        &self,
        reservation: Reservation,
        target: &TurnTarget,
        text: &MessageText,
        reply: &Reply,
        completion: Option<Completion<'_>>,
        grant: Option<&Grant>,
    ) -> Result<StoredTurn, StoreError> {
        let Reservation { turn, mut first } = reservation;
        let mut timed_out = false;
        for attempt in 1..=MAX_ATTEMPTS {
            let stored = StoredTurn {
                conversation_id: turn.conversation.clone(),
                user_message: message_id(first)?,
                reply_message: message_id(first + 1)?,
                created_at: turn.created_at.clone(),
            };
            let outcome = self
                .put_turn(
                    &turn,
                    target,
                    &stored,
                    (text, reply),
                    completion.as_ref(),
                    grant,
                )
                .await?;
            match (outcome, target) {
                (PutOutcome::Stored, _) => return Ok(stored),
                // A new id that is already taken cannot become free: a fresh id is the caller's call.
                (PutOutcome::Taken, TurnTarget::New { .. }) => {
                    return Err(StoreError::Conflict { attempts: attempt })
                }
                (PutOutcome::Taken, TurnTarget::Existing(_)) => {
                    conflict_metric();
                    tracing::warn!(conversation = %turn.conversation, first, "reserved sequence numbers were taken; reserving again");
                    first = self.reserve(&turn).await?;
                }
                (PutOutcome::Retry, _) => {
                    conflict_metric();
                    tracing::info!(conversation = %turn.conversation, attempt, "turn write collided; retrying");
                    timed_out = false;
                    tokio::time::sleep(full_jitter(BACKOFF_BASE, BACKOFF_CAP, attempt)).await;
                }
                // A timed-out write may still land. Retrying the same keys with the same token is
                // safe: the retry either writes the turn or finds it ours. Answering an error here
                // instead could leave a stored turn behind a 503.
                (PutOutcome::TimedOut, _) => {
                    tracing::warn!(conversation = %turn.conversation, attempt, "turn write timed out; retrying");
                    timed_out = true;
                    tokio::time::sleep(full_jitter(BACKOFF_BASE, BACKOFF_CAP, attempt)).await;
                }
            }
        }
        if timed_out {
            return Err(StoreError::Unconfirmed);
        }
        Err(StoreError::Conflict {
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Reserves the next two sequence numbers of an existing, unexpired conversation; returns
    /// the first.
    async fn reserve(&self, turn: &Turn) -> Result<u64, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut update = self
                .db
                .update_item()
                .table_name(&self.table)
                .key("PK", s(&turn.partition))
                .key("SK", s(keys::head(&turn.conversation)))
                .condition_expression(
                    "attribute_exists(SK) AND (attribute_not_exists(expires_at) OR expires_at > :now)",
                )
                .expression_attribute_values(":two", n(2))
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":now", n(turn.now))
                .expression_attribute_values(":at", s(&turn.created_at))
                .return_values(ReturnValue::UpdatedNew)
                .return_consumed_capacity(ask());
            update = match turn.expires_at {
                Some(expires_at) => update
                    .update_expression(
                        "ADD message_count :two, version :one SET updated_at = :at, expires_at = :exp",
                    )
                    .expression_attribute_values(":exp", n(expires_at)),
                None => update
                    .update_expression("ADD message_count :two, version :one SET updated_at = :at"),
            };
            let output = match update.send().await {
                Ok(output) => output,
                Err(err) if is_condition_failed(&err) => return Err(StoreError::NotFound),
                // Another turn's transaction is checking the head right now.
                Err(err) if is_transaction_conflict(&err) && attempt < MAX_ATTEMPTS => {
                    conflict_metric();
                    tokio::time::sleep(full_jitter(BACKOFF_BASE, BACKOFF_CAP, attempt)).await;
                    continue;
                }
                Err(err) => return Err(classify(err)),
            };
            self.meter.record(Work::Write, output.consumed_capacity());
            let attributes = output.attributes().cloned().unwrap_or_default();
            let count = number(&attributes, "message_count")?;
            return count.checked_sub(1).ok_or_else(|| {
                StoreError::Corrupt("message_count below 2 after a reservation".into())
            });
        }
    }

    /// One transaction: the head (put for a new conversation, checked for an existing one), the
    /// two messages with `attribute_not_exists(SK)`, the idempotency record's completion, and the
    /// settlement of the turn's budget (last, unconditional: it never cancels the turn).
    async fn put_turn(
        &self,
        turn: &Turn,
        target: &TurnTarget,
        stored: &StoredTurn,
        (text, reply): (&MessageText, &Reply),
        completion: Option<&Completion<'_>>,
        grant: Option<&Grant>,
    ) -> Result<PutOutcome, StoreError> {
        let internal = |err| StoreError::Internal(Box::new(err));
        let mut writes = Vec::with_capacity(5);
        let head = match target {
            TurnTarget::New { title, .. } => {
                TransactWriteItem::builder().put(self.new_item(turn.head_item(title))?)
            }
            TurnTarget::Existing(_) => {
                let check = ConditionCheck::builder()
                    .table_name(&self.table)
                    .key("PK", s(&turn.partition))
                    .key("SK", s(keys::head(&turn.conversation)))
                    .condition_expression(
                        "attribute_exists(SK) AND (attribute_not_exists(expires_at) OR expires_at > :now)",
                    )
                    .expression_attribute_values(":now", n(turn.now))
                    .build()
                    .map_err(internal)?;
                TransactWriteItem::builder().condition_check(check)
            }
        };
        writes.push(head.build());
        let question = turn.message_item(stored.user_message, Role::User, text.as_str(), None);
        let answer = turn.message_item(
            stored.reply_message,
            Role::Assistant,
            &reply.content,
            Some(reply),
        );
        for item in [question, answer] {
            writes.push(
                TransactWriteItem::builder()
                    .put(self.new_item(item)?)
                    .build(),
            );
        }
        if let Some(completion) = completion {
            let update = self.completion(
                &turn.user,
                completion.lease,
                &turn.conversation,
                (completion.answer)(stored),
            )?;
            writes.push(TransactWriteItem::builder().update(update).build());
        }
        if let Some(grant) = grant {
            let settlement = self.settlement(grant, reply.usage.total())?;
            writes.push(TransactWriteItem::builder().update(settlement).build());
        }
        let result = self
            .db
            .transact_write_items()
            .set_transact_items(Some(writes))
            .return_consumed_capacity(ask())
            .send()
            .await;
        match result {
            Ok(output) => {
                self.meter.record(Work::Write, output.consumed_capacity());
                Ok(PutOutcome::Stored)
            }
            Err(err) => match cancellation_reasons(&err) {
                Some(reasons) => judge(reasons, &turn.token, target),
                None if is_timeout(&err) => Ok(PutOutcome::TimedOut),
                None => Err(classify(err)),
            },
        }
    }

    /// A put of a new item, returning the existing one when the key is taken.
    fn new_item(&self, item: Item) -> Result<Put, StoreError> {
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(SK)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|err| StoreError::Internal(Box::new(err)))
    }
}

/// A turn's reserved message ids, to be written with [`ConversationStore::write_reserved`].
#[derive(Debug)]
pub struct Reservation {
    turn: Turn,
    first: u64,
}

impl Reservation {
    pub fn user_message(&self) -> MessageId {
        MessageId::new(self.first).unwrap_or(MessageId::FIRST)
    }

    pub fn reply_message(&self) -> MessageId {
        MessageId::new(self.first + 1).unwrap_or(MessageId::FIRST)
    }
}

impl Turn {
    fn base_item(&self, sort_key: String) -> Item {
        let mut item = Item::from([
            ("PK".to_owned(), s(&self.partition)),
            ("SK".to_owned(), s(sort_key)),
            ("created_at".to_owned(), s(&self.created_at)),
            ("turn".to_owned(), s(&self.token)),
        ]);
        if let Some(expires_at) = self.expires_at {
            item.insert("expires_at".to_owned(), n(expires_at));
        }
        item
    }

    fn head_item(&self, title: &str) -> Item {
        let mut item = self.base_item(keys::head(&self.conversation));
        item.insert("title".to_owned(), s(title));
        item.insert("updated_at".to_owned(), s(&self.created_at));
        item.insert("message_count".to_owned(), n(2));
        item.insert("version".to_owned(), n(1));
        item
    }

    fn message_item(
        &self,
        id: MessageId,
        role: Role,
        content: &str,
        reply: Option<&Reply>,
    ) -> Item {
        let mut item = self.base_item(keys::message(&self.conversation, id));
        item.insert("role".to_owned(), s(role.as_str()));
        item.insert("content".to_owned(), s(content));
        if let Some(reply) = reply {
            item.insert("provider".to_owned(), s(&reply.provider));
            item.insert("model".to_owned(), s(&reply.model));
            item.insert("input_tokens".to_owned(), n(reply.usage.input_tokens));
            item.insert("output_tokens".to_owned(), n(reply.usage.output_tokens));
            if let Some(ending) = reply.ending.as_stored() {
                item.insert("ending".to_owned(), s(ending));
            }
        }
        item
    }
}

fn message_id(seq: u64) -> Result<MessageId, StoreError> {
    MessageId::new(seq)
        .ok_or_else(|| StoreError::Corrupt(format!("sequence number {seq} out of range")))
}

/// Reads a cancelled turn transaction, whose items are: the head (put or checked), the two
/// messages, and the idempotency completion if any. The head gone means the conversation was
/// deleted; our own messages already there mean an earlier attempt whose answer was lost
/// succeeded; someone else's mean the numbers are taken; a failed completion means a retry took
/// the idempotency key over.
fn judge(
    reasons: &[CancellationReason],
    token: &str,
    target: &TurnTarget,
) -> Result<PutOutcome, StoreError> {
    let failed = |index: usize| {
        reasons
            .get(index)
            .and_then(CancellationReason::code)
            .is_some_and(|code| code == "ConditionalCheckFailed")
    };
    let ours = |index: usize| {
        reasons
            .get(index)
            .and_then(CancellationReason::item)
            .and_then(|item| item.get("turn"))
            .and_then(|existing| existing.as_s().ok())
            .is_some_and(|existing| existing == token)
    };
    if failed(0) && matches!(target, TurnTarget::Existing(_)) {
        return Err(StoreError::NotFound);
    }
    if failed(3) {
        return Err(StoreError::LeaseLost);
    }
    if (0..3).any(|index| failed(index) && !ours(index)) {
        return Ok(PutOutcome::Taken);
    }
    let transient = reasons
        .iter()
        .filter_map(CancellationReason::code)
        .any(|code| code != "None" && code != "ConditionalCheckFailed");
    Ok(if transient {
        PutOutcome::Retry
    } else {
        PutOutcome::Stored
    })
}

fn cancellation_reasons<R>(
    err: &SdkError<TransactWriteItemsError, R>,
) -> Option<&[CancellationReason]> {
    match err.as_service_error()? {
        TransactWriteItemsError::TransactionCanceledException(cancelled) => {
            Some(cancelled.cancellation_reasons())
        }
        _ => None,
    }
}

/// One conditional-write conflict of the store, as a CloudWatch metric.
fn conflict_metric() {
    crate::telemetry::emit_metrics(
        &[("Operation", "append_turn")],
        &[("StoreConflicts", 1.0, "Count")],
    );
}
