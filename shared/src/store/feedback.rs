//! Feedback on assistant messages: one item per message and user (`FB#<conversation>#<seq>`),
//! written in one transaction with a check that the rated message exists and is the assistant's.
//!
//! Each item also carries `GSI1PK = FB#<yyyy-mm-dd>` and `GSI1SK = <updated_at>#...`, so that an
//! operator can export a range of days from the index without a `Scan`.

use std::collections::HashMap;

use aws_sdk_dynamodb::{
    operation::transact_write_items::TransactWriteItemsError,
    types::{
        AttributeValue, ConditionCheck, Put, ReturnConsumedCapacity,
        ReturnValuesOnConditionCheckFailure, TransactWriteItem,
    },
};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::{
    conversations::{classify, is_expired, n, number, s, text, Item},
    keys::{self, ConversationId},
    ConversationStore, Page, PageRequest, StoreError,
};
use crate::identity::UserId;

/// Attempts of a feedback write that keeps colliding with concurrent ones.
const MAX_ATTEMPTS: u32 = 5;

/// The index that lists feedback by day.
pub const DAY_INDEX: &str = "GSI1";

/// A rating, 1 to 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rating(u8);

impl Rating {
    pub fn new(value: u8) -> Option<Self> {
        (1..=5).contains(&value).then_some(Self(value))
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

/// Feedback as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Feedback {
    pub conversation_id: String,
    pub message_id: String,
    pub rating: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Who produced the rated reply.
    #[serde(skip)]
    pub provider: Option<String>,
    #[serde(skip)]
    pub model: Option<String>,
}

/// Whether feedback was new or replaced an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Created,
    Replaced,
}

/// Where a page of the day index ended.
#[derive(Debug, Clone)]
pub struct IndexPosition(HashMap<String, AttributeValue>);

/// An exported feedback item, with whose it is.
#[derive(Debug, Clone)]
pub struct DayFeedback {
    pub user: String,
    pub feedback: Feedback,
}

impl ConversationStore {
    /// Rates an assistant message of one of the caller's conversations. A message that does not
    /// exist, is the user's own, or is someone else's is [`StoreError::NotFound`], alike.
    pub async fn rate_message(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        seq: u64,
        rating: Rating,
        comment: Option<&str>,
    ) -> Result<(Written, Feedback), StoreError> {
        self.rate_message_at(user, conversation, seq, rating, comment, Utc::now())
            .await
    }

    /// [`Self::rate_message`] at a given time (for tools and tests that need past days).
    pub async fn rate_message_at(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        seq: u64,
        rating: Rating,
        comment: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(Written, Feedback), StoreError> {
        let partition = keys::partition(user);
        let message_key = keys::message(conversation, seq);
        let now = at.to_rfc3339_opts(SecondsFormat::Millis, true);
        // Who wrote the reply goes into the feedback (and its metric); the transaction below
        // re-checks the message atomically.
        let message = self
            .db()
            .get_item()
            .table_name(self.table())
            .key("PK", s(&partition))
            .key("SK", s(&message_key))
            .projection_expression("#role, provider, model, expires_at")
            .expression_attribute_names("#role", "role")
            .send()
            .await
            .map_err(classify)?
            .item
            .ok_or(StoreError::NotFound)?;
        if text(&message, "role")? != "assistant" || is_expired(&message, at.timestamp()) {
            return Err(StoreError::NotFound);
        }
        let mut feedback = Feedback {
            conversation_id: conversation.to_string(),
            message_id: keys::message_id(seq),
            rating: rating.get(),
            comment: comment.map(str::to_owned),
            created_at: now.clone(),
            updated_at: now.clone(),
            provider: text(&message, "provider").ok().map(str::to_owned),
            model: text(&message, "model").ok().map(str::to_owned),
        };
        let sort_key = format!("{}{seq:012}", keys::feedback_prefix(conversation));
        let mut item: Item = Item::from([
            ("PK".to_owned(), s(&partition)),
            ("SK".to_owned(), s(&sort_key)),
            ("conversation_id".to_owned(), s(conversation.as_str())),
            ("rating".to_owned(), n(rating.get())),
            ("created_at".to_owned(), s(&now)),
            ("updated_at".to_owned(), s(&now)),
            ("GSI1PK".to_owned(), s(format!("FB#{}", &now[..10]))),
            (
                "GSI1SK".to_owned(),
                s(format!("{now}#{user}#{conversation}#{seq:012}")),
            ),
        ]);
        if let Some(comment) = comment {
            item.insert("comment".to_owned(), s(comment));
        }
        for name in ["provider", "model", "expires_at"] {
            if let Some(value) = message.get(name) {
                item.insert(name.to_owned(), value.clone());
            }
        }
        // First as new feedback; if there is one already, replace it and keep its created_at.
        // Concurrent posts on one message may collide (TransactionConflict): try again.
        let mut new = true;
        for attempt in 1..=MAX_ATTEMPTS {
            match self
                .put_feedback(&partition, &message_key, item.clone(), new, at)
                .await
            {
                Ok(Ok(())) if new => return Ok((Written::Created, feedback)),
                Ok(Ok(())) => return Ok((Written::Replaced, feedback)),
                Ok(Err(previous)) => {
                    // It existed when we created, or vanished when we replaced: switch and retry.
                    if let Ok(created_at) = text(&previous, "created_at") {
                        item.insert("created_at".to_owned(), s(created_at));
                        feedback.created_at = created_at.to_owned();
                    }
                    new = !new;
                }
                Err(StoreError::Conflict { .. }) => {
                    tokio::time::sleep(super::conversations::backoff(attempt)).await;
                }
                Err(err) => return Err(err),
            }
        }
        Err(StoreError::Conflict {
            attempts: MAX_ATTEMPTS,
        })
    }

    /// One transaction: the message is there and is the assistant's, and the feedback is put
    /// (only if new, or only if it exists). `Ok(Err(old))` when the feedback condition failed.
    async fn put_feedback(
        &self,
        partition: &str,
        message_key: &str,
        item: Item,
        new: bool,
        at: DateTime<Utc>,
    ) -> Result<Result<(), Item>, StoreError> {
        let check = ConditionCheck::builder()
            .table_name(self.table())
            .key("PK", s(partition))
            .key("SK", s(message_key))
            .condition_expression(
                "attribute_exists(SK) AND #role = :assistant AND (attribute_not_exists(expires_at) OR expires_at > :now)",
            )
            .expression_attribute_names("#role", "role")
            .expression_attribute_values(":assistant", s("assistant"))
            .expression_attribute_values(":now", n(at.timestamp()))
            .build()
            .map_err(|err| StoreError::Internal(Box::new(err)))?;
        let put = Put::builder()
            .table_name(self.table())
            .set_item(Some(item))
            .condition_expression(if new {
                "attribute_not_exists(SK)"
            } else {
                "attribute_exists(SK)"
            })
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|err| StoreError::Internal(Box::new(err)))?;
        let result = self
            .db()
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().condition_check(check).build())
            .transact_items(TransactWriteItem::builder().put(put).build())
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(Ok(())),
            Err(err) => err,
        };
        let reasons = match err.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
                cancelled.cancellation_reasons().to_vec()
            }
            _ => return Err(classify(err)),
        };
        let failed = |index: usize| {
            reasons
                .get(index)
                .and_then(|reason| reason.code())
                .is_some_and(|code| code == "ConditionalCheckFailed")
        };
        if failed(0) {
            return Err(StoreError::NotFound);
        }
        if failed(1) {
            return Ok(Err(reasons
                .get(1)
                .and_then(|reason| reason.item())
                .cloned()
                .unwrap_or_default()));
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
        let prefix = conversation.map_or_else(|| "FB#".to_owned(), keys::feedback_prefix);
        let start = page
            .cursor
            .as_ref()
            .map(|cursor| cursor.within(&prefix))
            .transpose()?;
        let raw = self
            .query_page(user, &prefix, start, page.limit, false, true)
            .await?;
        raw.map(feedback_from)
    }

    /// One day's feedback of every user, from the day index (operators' export).
    /// `start` is the `next` of the previous page.
    pub async fn feedback_of_day(
        &self,
        day: chrono::NaiveDate,
        start: Option<IndexPosition>,
    ) -> Result<(Vec<DayFeedback>, Option<IndexPosition>), StoreError> {
        let mut query = self
            .db()
            .query()
            .table_name(self.table())
            .index_name(DAY_INDEX)
            .key_condition_expression("GSI1PK = :day")
            .expression_attribute_values(":day", s(format!("FB#{}", day.format("%Y-%m-%d"))))
            .limit(500);
        if let Some(IndexPosition(start)) = start {
            query = query.set_exclusive_start_key(Some(start));
        }
        let output = query.send().await.map_err(classify)?;
        let items = output
            .items()
            .iter()
            .map(|item| {
                let user = text(item, "PK")?.trim_start_matches("USER#").to_owned();
                Ok(DayFeedback {
                    user,
                    feedback: feedback_from(item)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let next = output.last_evaluated_key().cloned().map(IndexPosition);
        Ok((items, next))
    }

    /// The text of a message, if it exists (operators' export).
    pub async fn message_text(
        &self,
        user: &str,
        conversation: &str,
        seq: u64,
    ) -> Result<Option<String>, StoreError> {
        let output = self
            .db()
            .get_item()
            .table_name(self.table())
            .key("PK", s(format!("USER#{user}")))
            .key("SK", s(format!("MSG#{conversation}#{seq:012}")))
            .projection_expression("content")
            .send()
            .await
            .map_err(classify)?;
        Ok(output
            .item()
            .and_then(|item| text(item, "content").ok())
            .map(str::to_owned))
    }
}

fn feedback_from(item: &Item) -> Result<Feedback, StoreError> {
    let sort_key = text(item, "SK")?;
    let seq = keys::seq_of(sort_key)
        .ok_or_else(|| StoreError::Corrupt(format!("{sort_key} is not a feedback key")))?;
    let optional = |name: &str| text(item, name).ok().map(str::to_owned);
    Ok(Feedback {
        conversation_id: text(item, "conversation_id")?.to_owned(),
        message_id: keys::message_id(seq),
        rating: u8::try_from(number(item, "rating")?).unwrap_or(0),
        comment: optional("comment"),
        created_at: text(item, "created_at")?.to_owned(),
        updated_at: text(item, "updated_at")?.to_owned(),
        provider: optional("provider"),
        model: optional("model"),
    })
}
