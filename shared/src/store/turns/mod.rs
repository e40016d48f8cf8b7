//! The turn write: a user message and its reply (or, for a regeneration, another reply to a
//! stored user message), stored whole or not at all.
//!
//! Two calls: [`ConversationStore::reserve_turn`] takes the turn's message ids (an atomic `ADD`
//! on an existing conversation's head, which also tells the head's active leaf; a new
//! conversation's are 1 and 2), and [`ConversationStore::write_turn`] puts the messages in one
//! transaction with the head's new leaf and whatever else the turn completes (the request's
//! idempotency record). A turn reserves before its provider is called, beside reading its
//! context, and gives the reservation back if it stores nothing.
//!
//! Messages form a tree: each names its parent. A child whose id directly follows its parent's
//! needs nothing more (the common case: a user message and its reply, the next turn of a line);
//! any other child (an edit, a regeneration, a turn that raced another from the same message) is
//! also added, in the same transaction, to its parent's children item, and the head counts it in
//! `forks`. So a turn on a line writes exactly what it wrote before branches.

mod items;
mod judge;

use aws_sdk_dynamodb::{
    operation::update_item::builders::UpdateItemFluentBuilder,
    types::{
        AttributeValue, ConditionCheck, Put, ReturnValue, ReturnValuesOnConditionCheckFailure,
        TransactWriteItem, Update,
    },
};

use super::{
    error::{from_sdk, is_condition_failed, is_timeout, is_transaction_conflict},
    items::{n, number, s, timestamp, Item, EXISTS_NOT_EXPIRED},
    keys,
    meter::{ask, Work},
    ConversationStore, Erasures, Lease, Reply, StoreError, StoredTurn, TurnTarget, BACKOFF,
};
use crate::domain::{MessageId, MessageText, Role, UserId};
use judge::{judge, Outcome};

/// How often a turn's write (or its reservation) is tried before it is given up as a
/// [`StoreError::Conflict`].
const MAX_ATTEMPTS: u32 = 8;

/// The answer a request gives for its stored turn (its ids are known only once it is stored),
/// as the idempotency record keeps it for replays.
pub type ReplayText<'a> = dyn Fn(&StoredTurn) -> String + Sync + 'a;

/// What a turn adds to its conversation, as reserved: two messages, or one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnKind {
    /// A user message and its reply.
    Exchange,
    /// Another reply to a user message already stored.
    Regeneration,
}

impl TurnKind {
    fn ids(self) -> u64 {
        match self {
            Self::Exchange => 2,
            Self::Regeneration => 1,
        }
    }
}

/// What a turn writes besides its reply.
#[derive(Debug, Clone, Copy)]
pub enum Shape<'a> {
    /// The user's message, under `parent` (`None`: a root), then the reply under it.
    Exchange {
        text: &'a MessageText,
        parent: Option<MessageId>,
    },
    /// The reply only, under the user's message `answering`.
    Regeneration { answering: MessageId },
}

/// One turn's write: its messages, and what else lands with them in the same transaction.
pub struct TurnWrite<'a> {
    pub shape: Shape<'a>,
    pub reply: &'a Reply,
    /// The request's idempotency record, completed with the answer it replays; if the lease
    /// was taken over by a retry meanwhile, nothing is stored ([`StoreError::LeaseLost`]).
    pub completes: Option<(&'a Lease, &'a ReplayText<'a>)>,
    /// The user's erasures counted when the turn was admitted: if an erasure has begun since,
    /// nothing is stored ([`StoreError::Erased`]).
    pub admitted: Option<Erasures>,
}

/// A turn's reserved message ids, to be written with [`ConversationStore::write_turn`].
#[derive(Debug)]
pub struct Reservation {
    turn: items::Turn,
    target: TurnTarget,
    kind: TurnKind,
    first: u64,
    /// The head's active leaf when the ids were reserved.
    leaf: Option<MessageId>,
    /// An existing head as the reservation found it, to put back if the turn is abandoned.
    previous: Option<Previous>,
}

/// What a reservation changes on an existing head besides its count.
#[derive(Debug)]
struct Previous {
    updated_at: Option<AttributeValue>,
    expires_at: Option<AttributeValue>,
}

impl Reservation {
    pub fn target(&self) -> &TurnTarget {
        &self.target
    }

    /// The first reserved id: an exchange's user message, a regeneration's reply.
    pub fn first(&self) -> MessageId {
        MessageId::new(self.first).unwrap_or(MessageId::FIRST)
    }

    pub fn reply_message(&self) -> MessageId {
        MessageId::new(self.first + self.kind.ids() - 1).unwrap_or(MessageId::FIRST)
    }

    /// The end of the conversation's active branch when the ids were reserved: `None` for a new
    /// conversation, and for one stored before branches (whose branch ends at its newest
    /// message).
    pub fn leaf(&self) -> Option<MessageId> {
        self.leaf
    }
}

impl ConversationStore {
    /// Stores a plain turn, the user's message and the assistant's reply, whole or not at all
    /// (tools and seeding; the chat function uses [`Self::reserve_turn`] and
    /// [`Self::write_turn`]).
    pub async fn append_turn(
        &self,
        user: &UserId,
        target: &TurnTarget,
        text: &MessageText,
        reply: &Reply,
    ) -> Result<StoredTurn, StoreError> {
        let reservation = self.reserve_turn(user, target, TurnKind::Exchange).await?;
        let parent = match target {
            TurnTarget::New { .. } => None,
            TurnTarget::Existing(conversation) => {
                self.newest_leaf(user, conversation, reservation.leaf())
                    .await?
            }
        };
        let write = TurnWrite {
            shape: Shape::Exchange { text, parent },
            reply,
            completes: None,
            admitted: None,
        };
        self.write_turn(reservation, &write).await
    }

    /// Reserves a turn's message ids: a new conversation's are 1 and 2; an existing one's are
    /// the next of its head (an atomic `ADD`, so concurrent turns never conflict;
    /// [`StoreError::NotFound`] for an unknown or expired conversation).
    pub async fn reserve_turn(
        &self,
        user: &UserId,
        target: &TurnTarget,
        kind: TurnKind,
    ) -> Result<Reservation, StoreError> {
        let now = self.now();
        let turn = items::Turn {
            user: user.clone(),
            partition: keys::partition(user),
            conversation: target.id().clone(),
            token: crate::tokens::random_token(),
            created_at: timestamp(now),
            now: now.timestamp(),
            expires_at: self.expires_at(now),
        };
        let (first, previous, leaf) = match (target, kind) {
            (TurnTarget::New { .. }, TurnKind::Exchange) => (1, None, None),
            (TurnTarget::New { .. }, TurnKind::Regeneration) => {
                return Err(StoreError::Corrupt(
                    "a new conversation has no reply to regenerate".to_owned(),
                ))
            }
            (TurnTarget::Existing(_), _) => {
                let (first, previous, leaf) = self.reserve(&turn, kind.ids()).await?;
                (first, Some(previous), leaf)
            }
        };
        message_id(first + kind.ids() - 1)?;
        Ok(Reservation {
            turn,
            target: target.clone(),
            kind,
            first,
            leaf,
            previous,
        })
    }

    /// Gives back a reservation whose turn will not be written (its provider failed before it
    /// began): the head's count, `updated_at` and expiry as they were, if no other turn has
    /// reserved since (then the two numbers stay unused: ids only grow). Best effort.
    pub async fn cancel_reservation(&self, reservation: Reservation) {
        let Reservation {
            turn,
            kind,
            first,
            previous: Some(previous),
            ..
        } = reservation
        else {
            return;
        };
        let ids = kind.ids();
        let minus = -i64::try_from(ids).unwrap_or(2);
        let mut set = vec![];
        let mut remove = vec![];
        let mut update = self
            .head_update(&turn)
            .condition_expression("message_count = :ours AND updated_at = :at")
            .expression_attribute_values(":ours", n(first + ids - 1))
            .expression_attribute_values(":at", s(&turn.created_at))
            .expression_attribute_values(":minus", n(minus))
            .return_consumed_capacity(ask());
        for (name, value) in [
            ("updated_at", previous.updated_at),
            ("expires_at", previous.expires_at),
        ] {
            match value {
                Some(value) => {
                    set.push(format!("{name} = :old_{name}"));
                    update = update.expression_attribute_values(format!(":old_{name}"), value);
                }
                None => remove.push(name),
            }
        }
        let mut expression = String::from("ADD message_count :minus");
        if !set.is_empty() {
            expression.push_str(&format!(" SET {}", set.join(", ")));
        }
        if !remove.is_empty() {
            expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        match update.update_expression(expression).send().await {
            Ok(output) => self.meter.record(Work::Write, output.consumed_capacity()),
            Err(err) if is_condition_failed(&err) => {
                tracing::info!(conversation = %turn.conversation, "another turn reserved since; its numbers stay unused");
            }
            Err(err) => {
                tracing::warn!(error = %from_sdk(err), "could not give a reservation back");
            }
        }
    }

    /// Writes a reserved turn in one transaction: a new conversation's head with
    /// `attribute_not_exists` (an existing one's checked, so that a conversation deleted
    /// meanwhile takes no orphans), both messages with `attribute_not_exists(SK)`, and what
    /// `write` completes. Collisions are retried; numbers taken by someone else are
    /// reserved again; a write that timed out is retried with the same keys and token (it either
    /// lands or is found ours), and one never confirmed is [`StoreError::Unconfirmed`].
    pub async fn write_turn(
        &self,
        reservation: Reservation,
        write: &TurnWrite<'_>,
    ) -> Result<StoredTurn, StoreError> {
        let Reservation {
            turn,
            target,
            kind,
            mut first,
            ..
        } = reservation;
        // Once an attempt may have landed (it timed out), the turn stays "may have been stored"
        // until an attempt proves otherwise: finding it ours (stored), or someone else's items
        // under its ids (it did not land there). Any other later outcome proves nothing.
        let mut may_have_landed = false;
        for attempt in 1..=MAX_ATTEMPTS {
            let user_message = match write.shape {
                Shape::Exchange { .. } => message_id(first)?,
                Shape::Regeneration { answering } => answering,
            };
            let stored = StoredTurn {
                conversation_id: turn.conversation.clone(),
                user_message,
                reply_message: message_id(first + kind.ids() - 1)?,
                created_at: turn.created_at.clone(),
            };
            let outcome = match self.put_turn(&turn, &target, &stored, write).await {
                Ok(outcome) => outcome,
                Err(err) if may_have_landed => {
                    tracing::warn!(error = %err, "a turn write that may have landed failed again");
                    return Err(StoreError::Unconfirmed);
                }
                Err(err) => return Err(err),
            };
            match (outcome, &target) {
                (Outcome::Stored, _) => return Ok(stored),
                // A new id that is already taken cannot become free: a fresh id is the caller's call.
                (Outcome::Taken, TurnTarget::New { .. }) => {
                    return Err(StoreError::Conflict { attempts: attempt })
                }
                (Outcome::Taken, TurnTarget::Existing(_)) => {
                    conflict_metric();
                    tracing::warn!(conversation = %turn.conversation, first, "reserved sequence numbers were taken; reserving again");
                    may_have_landed = false;
                    first = self.reserve(&turn, kind.ids()).await?.0;
                }
                (Outcome::Retry, _) => {
                    conflict_metric();
                    tracing::info!(conversation = %turn.conversation, attempt, "turn write collided; retrying");
                    tokio::time::sleep(BACKOFF.pause(attempt)).await;
                }
                // A timed-out write may still land. Retrying the same keys with the same token is
                // safe: the retry either writes the turn or finds it ours. Answering an error here
                // instead could leave a stored turn behind a 503.
                (Outcome::TimedOut, _) => {
                    tracing::warn!(conversation = %turn.conversation, attempt, "turn write timed out; retrying");
                    may_have_landed = true;
                    tokio::time::sleep(BACKOFF.pause(attempt)).await;
                }
            }
        }
        if may_have_landed {
            return Err(StoreError::Unconfirmed);
        }
        Err(StoreError::Conflict {
            attempts: MAX_ATTEMPTS,
        })
    }

    /// An update of the turn's conversation head.
    fn head_update(&self, turn: &items::Turn) -> UpdateItemFluentBuilder {
        self.db
            .update_item()
            .table_name(&self.table)
            .key("PK", s(&turn.partition))
            .key("SK", s(keys::head(&turn.conversation)))
    }

    /// Reserves the next `ids` sequence numbers of an existing, unexpired conversation; returns
    /// the first, what the head held before, and its active leaf.
    async fn reserve(
        &self,
        turn: &items::Turn,
        ids: u64,
    ) -> Result<(u64, Previous, Option<MessageId>), StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut update = self
                .head_update(turn)
                .condition_expression(EXISTS_NOT_EXPIRED)
                .expression_attribute_values(":ids", n(ids))
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":now", n(turn.now))
                .expression_attribute_values(":at", s(&turn.created_at))
                .return_values(ReturnValue::AllOld)
                .return_consumed_capacity(ask());
            update = match turn.expires_at {
                Some(expires_at) => update
                    .update_expression(
                        "ADD message_count :ids, version :one SET updated_at = :at, expires_at = :exp",
                    )
                    .expression_attribute_values(":exp", n(expires_at)),
                None => update
                    .update_expression("ADD message_count :ids, version :one SET updated_at = :at"),
            };
            let output = match update.send().await {
                Ok(output) => output,
                Err(err) if is_condition_failed(&err) => return Err(StoreError::NotFound),
                // Another turn's transaction is checking the head right now.
                Err(err) if is_transaction_conflict(&err) && attempt < MAX_ATTEMPTS => {
                    conflict_metric();
                    tokio::time::sleep(BACKOFF.pause(attempt)).await;
                    continue;
                }
                Err(err) => return Err(from_sdk(err)),
            };
            self.meter.record(Work::Write, output.consumed_capacity());
            let mut old = output.attributes.unwrap_or_default();
            let count = number(&old, "message_count")?;
            let leaf = number(&old, "leaf").ok().and_then(MessageId::new);
            let previous = Previous {
                updated_at: old.remove("updated_at"),
                expires_at: old.remove("expires_at"),
            };
            return Ok((count + 1, previous, leaf));
        }
    }

    /// One transaction, its items in [`judge::Slots`]' order: the head (put for a new
    /// conversation, its leaf set on an existing one), the messages, the idempotency record's
    /// completion if any, the check of the user's erasures if the turn was admitted, and the
    /// parent's children item if the new child does not directly follow its parent.
    async fn put_turn(
        &self,
        turn: &items::Turn,
        target: &TurnTarget,
        stored: &StoredTurn,
        write: &TurnWrite<'_>,
    ) -> Result<Outcome, StoreError> {
        let internal = |err| StoreError::Internal(Box::new(err));
        let mut writes = Vec::with_capacity(6);
        // The child that may not directly follow its parent: the user's message, or a
        // regeneration's reply (an exchange's reply always follows its user message).
        let (child, parent) = match write.shape {
            Shape::Exchange { parent, .. } => (stored.user_message, parent),
            Shape::Regeneration { answering } => (stored.reply_message, Some(answering)),
        };
        let parent_seq = parent.map_or(0, MessageId::seq);
        let forks = child.seq() != parent_seq + 1;
        let head = match target {
            TurnTarget::New { title, .. } => TransactWriteItem::builder()
                .put(self.new_item(turn.head_item(title, stored.reply_message))?),
            TurnTarget::Existing(_) => {
                let expression = if forks {
                    "SET leaf = :leaf ADD forks :one"
                } else {
                    "SET leaf = :leaf"
                };
                let mut update = Update::builder()
                    .table_name(&self.table)
                    .key("PK", s(&turn.partition))
                    .key("SK", s(keys::head(&turn.conversation)))
                    .update_expression(expression)
                    .condition_expression(EXISTS_NOT_EXPIRED)
                    .expression_attribute_values(":now", n(turn.now))
                    .expression_attribute_values(":leaf", n(stored.reply_message.seq()));
                if forks {
                    update = update.expression_attribute_values(":one", n(1));
                }
                TransactWriteItem::builder().update(update.build().map_err(internal)?)
            }
        };
        writes.push(head.build());
        let mut messages = Vec::with_capacity(2);
        if let Shape::Exchange { text, parent } = write.shape {
            messages.push(turn.message_item(
                stored.user_message,
                parent,
                Role::User,
                text.as_str(),
                None,
            ));
        }
        messages.push(turn.message_item(
            stored.reply_message,
            Some(stored.user_message),
            Role::Assistant,
            &write.reply.content,
            Some(write.reply),
        ));
        let message_slots = messages.len();
        for item in messages {
            writes.push(
                TransactWriteItem::builder()
                    .put(self.new_item(item)?)
                    .build(),
            );
        }
        if let Some((lease, replay)) = write.completes {
            let update = self.completion(&turn.user, lease, &turn.conversation, replay(stored))?;
            writes.push(TransactWriteItem::builder().update(update).build());
        }
        let erasures = write.admitted;
        if let Some(Erasures(seen)) = erasures {
            let check = ConditionCheck::builder()
                .table_name(&self.table)
                .key("PK", s(&turn.partition))
                .key("SK", s(keys::usage()));
            let check = if seen == 0 {
                check.condition_expression("attribute_not_exists(erasures)")
            } else {
                check
                    .condition_expression("erasures = :seen")
                    .expression_attribute_values(":seen", n(seen))
            };
            writes.push(
                TransactWriteItem::builder()
                    .condition_check(check.build().map_err(internal)?)
                    .build(),
            );
        }
        if forks {
            let mut expression = String::from("ADD children :child");
            let mut update = Update::builder()
                .table_name(&self.table)
                .key("PK", s(&turn.partition))
                .key("SK", s(keys::children(&turn.conversation, parent_seq)))
                .expression_attribute_values(
                    ":child",
                    AttributeValue::Ns(vec![child.seq().to_string()]),
                );
            if let Some(expires_at) = turn.expires_at {
                expression.push_str(" SET expires_at = :exp");
                update = update.expression_attribute_values(":exp", n(expires_at));
            }
            writes.push(
                TransactWriteItem::builder()
                    .update(
                        update
                            .update_expression(expression)
                            .build()
                            .map_err(internal)?,
                    )
                    .build(),
            );
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
                Ok(Outcome::Stored)
            }
            Err(err) => {
                let slots = judge::Slots {
                    existing_head: matches!(target, TurnTarget::Existing(_)),
                    messages: message_slots,
                    completion: write.completes.is_some(),
                    erasures: write.admitted.is_some(),
                };
                match judge::cancellation_reasons(&err) {
                    Some(reasons) => judge(&slots.decode(reasons), &turn.token),
                    None if is_timeout(&err) => Ok(Outcome::TimedOut),
                    None => Err(from_sdk(err)),
                }
            }
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

fn message_id(seq: u64) -> Result<MessageId, StoreError> {
    MessageId::new(seq)
        .ok_or_else(|| StoreError::Corrupt(format!("sequence number {seq} out of range")))
}

/// One conditional-write conflict of the store, as a CloudWatch metric.
fn conflict_metric() {
    crate::telemetry::emit_metrics(
        &[("Operation", "append_turn")],
        &[("StoreConflicts", 1.0, "Count")],
    );
}
