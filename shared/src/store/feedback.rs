//! Feedback on replies: one item per message and user (`keys::feedback`), written in one
//! transaction with checks that the conversation's head exists and that the rated message exists
//! and is the assistant's. Each item also carries the day index's keys, so that an operator can
//! export a range of days without a `Scan`.

use aws_sdk_dynamodb::{
    operation::transact_write_items::TransactWriteItemsError,
    types::{ConditionCheck, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem},
};

use super::{
    error::from_sdk,
    items::{self, n, optional, s, text, timestamp, Item, EXISTS_NOT_EXPIRED},
    keys,
    meter::{ask, Work},
    paging::{resume_within, Listing},
    ConversationStore, Feedback, Order, Page, PageRequest, StoreError, BACKOFF,
};
use crate::domain::{Comment, ConversationId, MessageId, Rating, UserId};

/// Attempts of a feedback write that keeps colliding with concurrent ones.
const MAX_ATTEMPTS: u32 = 5;

/// Whether feedback was new or replaced an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Created,
    Replaced,
}

/// Which condition of a feedback transaction failed.
enum FailedCondition {
    /// The conversation or the message is gone, or the message is not a reply.
    NotFound,
    /// The feedback existed when created, or vanished when replaced: the existing item, if any.
    Feedback(Item),
}

impl ConversationStore {
    /// Rates a reply in one of the caller's conversations. A message that does not exist, is the
    /// user's own, or is someone else's is [`StoreError::MessageNotFound`], alike.
    pub async fn rate_message(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        message: MessageId,
        rating: Rating,
        comment: Option<&Comment>,
    ) -> Result<(Written, Feedback), StoreError> {
        let at = self.now();
        let partition = keys::partition(user);
        let message_key = keys::message(conversation, message);
        let now = timestamp(at);
        // Who wrote the reply goes into the feedback (and its metric); the transaction below
        // re-checks the message atomically. The read is consistent: a reply stored a moment ago
        // exists.
        let reply = self
            .live_item(user, message_key.clone())
            .await?
            .ok_or(StoreError::MessageNotFound)?;
        if text(&reply, "role")? != "assistant" {
            return Err(StoreError::MessageNotFound);
        }
        let mut feedback = Feedback {
            conversation_id: conversation.clone(),
            message_id: message,
            rating,
            comment: comment.map(|comment| comment.as_str().to_owned()),
            created_at: now.clone(),
            updated_at: now.clone(),
            provider: optional(&reply, "provider"),
            model: optional(&reply, "model"),
        };
        let mut item = Item::from([
            ("PK".to_owned(), s(&partition)),
            ("SK".to_owned(), s(keys::feedback(conversation, message))),
            ("conversation_id".to_owned(), s(conversation.as_str())),
            ("rating".to_owned(), n(rating.get())),
            ("created_at".to_owned(), s(&now)),
            ("updated_at".to_owned(), s(&now)),
            (
                keys::DAY_INDEX_PK.to_owned(),
                s(keys::feedback_day(at.date_naive())),
            ),
            (
                keys::DAY_INDEX_SK.to_owned(),
                s(keys::feedback_day_order(&now, user, conversation, message)),
            ),
        ]);
        if let Some(comment) = comment {
            item.insert("comment".to_owned(), s(comment.as_str()));
        }
        for name in ["provider", "model", "expires_at"] {
            if let Some(value) = reply.get(name) {
                item.insert(name.to_owned(), value.clone());
            }
        }
        // First as new feedback; if there is one already, replace it and keep its created_at.
        // Concurrent posts on one message may collide (TransactionConflict): try again.
        let mut new = true;
        for attempt in 1..=MAX_ATTEMPTS {
            match self
                .put_feedback(
                    &partition,
                    conversation,
                    &message_key,
                    item.clone(),
                    new,
                    at.timestamp(),
                )
                .await
            {
                Ok(Ok(())) if new => return Ok((Written::Created, feedback)),
                Ok(Ok(())) => return Ok((Written::Replaced, feedback)),
                Ok(Err(FailedCondition::NotFound)) => return Err(StoreError::MessageNotFound),
                Ok(Err(FailedCondition::Feedback(previous))) => {
                    if let Ok(created_at) = text(&previous, "created_at") {
                        item.insert("created_at".to_owned(), s(created_at));
                        feedback.created_at = created_at.to_owned();
                    }
                    new = !new;
                }
                Err(StoreError::Conflict { .. }) => {
                    tokio::time::sleep(BACKOFF.pause(attempt)).await;
                }
                Err(err) => return Err(err),
            }
        }
        Err(StoreError::Conflict {
            attempts: MAX_ATTEMPTS,
        })
    }

    /// One transaction: the conversation's head exists, the message exists and is the
    /// assistant's, and the feedback is put (only if new, or only if it exists).
    async fn put_feedback(
        &self,
        partition: &str,
        conversation: &ConversationId,
        message_key: &str,
        item: Item,
        new: bool,
        now: i64,
    ) -> Result<Result<(), FailedCondition>, StoreError> {
        let internal = |err| StoreError::Internal(Box::new(err));
        let head = ConditionCheck::builder()
            .table_name(&self.table)
            .key("PK", s(partition))
            .key("SK", s(keys::head(conversation)))
            .condition_expression(EXISTS_NOT_EXPIRED)
            .expression_attribute_values(":now", n(now))
            .build()
            .map_err(internal)?;
        let reply = ConditionCheck::builder()
            .table_name(&self.table)
            .key("PK", s(partition))
            .key("SK", s(message_key))
            .condition_expression(format!("{EXISTS_NOT_EXPIRED} AND #role = :assistant"))
            .expression_attribute_names("#role", "role")
            .expression_attribute_values(":assistant", s("assistant"))
            .expression_attribute_values(":now", n(now))
            .build()
            .map_err(internal)?;
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(if new {
                "attribute_not_exists(SK)"
            } else {
                "attribute_exists(SK)"
            })
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(internal)?;
        let result = self
            .db
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().condition_check(head).build())
            .transact_items(TransactWriteItem::builder().condition_check(reply).build())
            .transact_items(TransactWriteItem::builder().put(put).build())
            .return_consumed_capacity(ask())
            .send()
            .await;
        let err = match result {
            Ok(output) => {
                self.meter.record(Work::Write, output.consumed_capacity());
                return Ok(Ok(()));
            }
            Err(err) => err,
        };
        let reasons = match err.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
                cancelled.cancellation_reasons().to_vec()
            }
            _ => return Err(from_sdk(err)),
        };
        let failed = |index: usize| {
            reasons
                .get(index)
                .and_then(|reason| reason.code())
                .is_some_and(|code| code == "ConditionalCheckFailed")
        };
        if failed(0) || failed(1) {
            return Ok(Err(FailedCondition::NotFound));
        }
        if failed(2) {
            let previous = reasons
                .get(2)
                .and_then(|reason| reason.item())
                .cloned()
                .unwrap_or_default();
            return Ok(Err(FailedCondition::Feedback(previous)));
        }
        // TransactionConflict: another post on the same message is in flight. Ours is as good.
        Err(StoreError::Conflict { attempts: 1 })
    }

    /// The caller's feedback, newest conversation first, latest message first; one conversation's
    /// with `conversation`.
    pub async fn list_feedback(
        &self,
        user: &UserId,
        conversation: Option<&ConversationId>,
        page: &PageRequest,
    ) -> Result<Page<Feedback>, StoreError> {
        let prefix = keys::feedback_on(conversation);
        let listing = Listing {
            prefix: &prefix,
            start_after: resume_within(page, &prefix)?,
            limit: page.limit,
            order: Order::Newest,
        };
        let raw = self.query_page(user, &listing).await?;
        raw.map(items::feedback_from)
    }
}

impl Feedback {
    /// Feedback from its item, as read from the table or its day index (operators' tools).
    pub fn from_item(
        item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
    ) -> Result<Self, StoreError> {
        items::feedback_from(item)
    }
}
