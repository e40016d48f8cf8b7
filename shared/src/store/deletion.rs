//! Deletion of a conversation, and erasure of everything a user stored.
//!
//! Heads go first. A turn's transaction and a feedback write require the conversation's head, so
//! once it is gone nothing new can land in the conversation; whatever landed before is then found
//! by the sweep that follows (every read here is strongly consistent). A deletion racing turns
//! therefore leaves nothing behind, and an interrupted one is finished by repeating it.

use aws_sdk_dynamodb::types::{DeleteRequest, ReturnValue, WriteRequest};
use tokio::time::Instant;

use super::{
    error::{from_sdk, is_condition_failed, retry_conflicts},
    items::{n, s, sort_key, Item},
    keys,
    meter::{ask, Work},
    ConversationStore, StoreError, BACKOFF,
};
use crate::domain::{ConversationId, UserId};

/// DynamoDB's limit of requests in one `BatchWriteItem`.
const BATCH_WRITE_LIMIT: usize = 25;
/// Keys read per page while deleting.
const DELETE_PAGE: i32 = 500;

/// Which items of a partition a sweep deletes.
struct Sweep<'a> {
    /// Sort keys starting with this (all when `None`).
    prefix: Option<&'a str>,
    /// Only items of this conversation (idempotency records name theirs).
    conversation: Option<&'a ConversationId>,
}

impl ConversationStore {
    /// Deletes a conversation: its head, then its messages, its feedback and the idempotency
    /// records of its turns. Returns how many items were deleted; [`StoreError::NotFound`] when
    /// the caller has nothing of that conversation.
    pub async fn delete_conversation(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        deadline: Instant,
    ) -> Result<usize, StoreError> {
        let delete = self
            .db
            .delete_item()
            .table_name(&self.table)
            .key("PK", s(keys::partition(user)))
            .key("SK", s(keys::head(conversation)))
            .return_values(ReturnValue::AllOld)
            .return_consumed_capacity(ask());
        let head = retry_conflicts(|| delete.clone().send())
            .await
            .map_err(from_sdk)?;
        self.meter.record(Work::Write, head.consumed_capacity());
        let mut deleted = usize::from(head.attributes().is_some());
        let messages = keys::messages(conversation);
        let feedback = keys::feedback_on(Some(conversation));
        let sweeps = [
            Sweep {
                prefix: Some(&messages),
                conversation: None,
            },
            Sweep {
                prefix: Some(&feedback),
                conversation: None,
            },
            Sweep {
                prefix: Some(keys::idempotency_records()),
                conversation: Some(conversation),
            },
        ];
        for sweep in &sweeps {
            self.delete_where(user, sweep, deadline, &mut deleted)
                .await?;
        }
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(deleted)
    }

    /// Deletes every item in the caller's partition but its budget item (`USAGE`: the day's
    /// counters and an operator's override, no content): heads first, then messages, feedback and
    /// idempotency records. Returns how many items were deleted.
    ///
    /// First the user's count of erasures goes up: a turn admitted before it then cannot write
    /// (its transaction checks the count it was admitted with), so after the erasure's answer
    /// nothing of such a turn appears.
    pub async fn erase_user(&self, user: &UserId, deadline: Instant) -> Result<usize, StoreError> {
        self.count_erasure(user).await?;
        let mut deleted = 0;
        for prefix in [Some(keys::heads()), None] {
            let sweep = Sweep {
                prefix,
                conversation: None,
            };
            self.delete_where(user, &sweep, deadline, &mut deleted)
                .await?;
        }
        Ok(deleted)
    }

    /// Counts an erasure in the user's budget item, if there is one: without it no turn was
    /// ever admitted, so none can be in flight.
    async fn count_erasure(&self, user: &UserId) -> Result<(), StoreError> {
        let update = self
            .usage_update(user)
            .update_expression("ADD erasures :one")
            .condition_expression("attribute_exists(SK)")
            .expression_attribute_values(":one", n(1))
            .return_consumed_capacity(ask());
        match retry_conflicts(|| update.clone().send()).await {
            Ok(output) => {
                self.meter.record(Work::Write, output.consumed_capacity());
                Ok(())
            }
            Err(err) if is_condition_failed(&err) => Ok(()),
            Err(err) => Err(from_sdk(err)),
        }
    }

    /// Deletes the items of the caller's partition that `sweep` selects, page by page.
    async fn delete_where(
        &self,
        user: &UserId,
        sweep: &Sweep<'_>,
        deadline: Instant,
        deleted: &mut usize,
    ) -> Result<(), StoreError> {
        let partition = keys::partition(user);
        let mut start: Option<Item> = None;
        loop {
            let mut query = self
                .db
                .query()
                .table_name(&self.table)
                .expression_attribute_values(":pk", s(&partition))
                .projection_expression("SK")
                .consistent_read(true)
                .limit(DELETE_PAGE)
                .set_exclusive_start_key(start.take())
                .return_consumed_capacity(ask());
            query = match sweep.prefix {
                Some(prefix) => query
                    .key_condition_expression("PK = :pk AND begins_with(SK, :prefix)")
                    .expression_attribute_values(":prefix", s(prefix)),
                None => query.key_condition_expression("PK = :pk"),
            };
            if let Some(conversation) = sweep.conversation {
                query = query
                    .filter_expression("conversation_id = :conversation")
                    .expression_attribute_values(":conversation", s(conversation.as_str()));
            }
            let output = query.send().await.map_err(from_sdk)?;
            self.meter.record(Work::Read, output.consumed_capacity());
            let mut sort_keys: Vec<String> = output
                .items()
                .iter()
                .map(sort_key)
                .collect::<Result<_, _>>()?;
            // The budget item outlives erasure: erasing data must not renew a budget.
            sort_keys.retain(|key| key != keys::usage());
            self.delete_keys(&partition, &sort_keys, deadline, deleted)
                .await?;
            match output.last_evaluated_key() {
                Some(key) => start = Some(key.clone()),
                None => return Ok(()),
            }
        }
    }

    /// `BatchWriteItem` deletes in batches of 25, retrying `UnprocessedItems` with backoff until
    /// they are done or the deadline passes.
    async fn delete_keys(
        &self,
        partition: &str,
        sort_keys: &[String],
        deadline: Instant,
        deleted: &mut usize,
    ) -> Result<(), StoreError> {
        for (index, chunk) in sort_keys.chunks(BATCH_WRITE_LIMIT).enumerate() {
            let mut pending = chunk
                .iter()
                .map(|sort_key| {
                    DeleteRequest::builder()
                        .key("PK", s(partition))
                        .key("SK", s(sort_key))
                        .build()
                        .map(|delete| WriteRequest::builder().delete_request(delete).build())
                        .map_err(|err| StoreError::Internal(Box::new(err)))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut attempt = 0;
            while !pending.is_empty() {
                let later = sort_keys
                    .len()
                    .saturating_sub(index * BATCH_WRITE_LIMIT + chunk.len());
                if Instant::now() >= deadline {
                    return Err(StoreError::Incomplete {
                        deleted: *deleted,
                        remaining: pending.len() + later,
                    });
                }
                let output = self
                    .db
                    .batch_write_item()
                    .request_items(&self.table, pending.clone())
                    .return_consumed_capacity(ask())
                    .send()
                    .await
                    .map_err(from_sdk)?;
                self.meter.record(Work::Write, output.consumed_capacity());
                let unprocessed = output
                    .unprocessed_items()
                    .and_then(|items| items.get(&self.table))
                    .cloned()
                    .unwrap_or_default();
                *deleted += pending.len() - unprocessed.len();
                pending = unprocessed;
                if !pending.is_empty() {
                    attempt += 1;
                    let pause = BACKOFF
                        .pause(attempt)
                        .min(deadline.saturating_duration_since(Instant::now()));
                    tokio::time::sleep(pause).await;
                }
            }
        }
        Ok(())
    }
}
