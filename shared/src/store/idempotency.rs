//! The idempotency lifecycle: `IDEM#<key>` records in the caller's partition, so that a retried
//! request is answered from its first run instead of being run twice.
//!
//! 1. [`ConversationStore::claim`] claims the key with a conditional put (the key is free,
//!    expired, or held by an owner whose lease ran out) or finds the answer of the first run.
//! 2. The turn's own transaction completes the record with the answer
//!    ([`ConversationStore::write_turn`] with [`super::TurnWrite::completes`]): the turn and its
//!    answer land together or not at all, and a write whose lease was taken over stores nothing.
//! 3. After a failure that stored nothing, [`ConversationStore::release`] gives the key back so
//!    that a retry can run. A caller whose write may have landed keeps the key claimed instead
//!    (it just drops the lease): the record then frees itself when its lease ends, and a retry
//!    meanwhile is told to wait.
//!
//! The payload fingerprint is compared on every path: the same key with another request is
//! refused, whether the record is in progress or completed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::{
    operation::put_item::PutItemError,
    types::{ReturnValuesOnConditionCheckFailure, Update},
};

use super::{
    error::{from_sdk, is_condition_failed},
    items::{n, s, text},
    keys, ConversationStore, StoreError,
};
use crate::domain::{ConversationId, UserId};

/// How long a completed answer is replayed.
const RECORD_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A client's idempotency key: 1 to 128 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The form the API documents (`infra/openapi.yaml` carries the same pattern; a test compares).
    pub const PATTERN: &'static str = r"^[\x20-\x7E]{1,128}$";

    pub fn parse(raw: &str) -> Option<Self> {
        let valid =
            (1..=128).contains(&raw.len()) && raw.bytes().all(|b| (0x20..=0x7e).contains(&b));
        valid.then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What claiming a key found: may the request run?
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// Yes; with a key, the lease proves the claim until the request completes or releases it.
    Run(Option<Lease>),
    /// The same request completed before: here is its answer.
    Replay(String),
}

/// Proof of holding a key.
#[derive(Debug, PartialEq, Eq)]
pub struct Lease {
    sort_key: String,
    token: String,
}

fn epoch(at: SystemTime) -> (u64, u128) {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    (since.as_secs(), since.as_millis())
}

impl ConversationStore {
    /// Claims `key` for a request (none: no idempotency) and the `fingerprint` of its payload.
    /// A claimed key is held until `lease_until`, the request's deadline: a record whose owner
    /// died frees itself then. A key in use is [`StoreError::KeyInProgress`], a key used with
    /// another payload [`StoreError::KeyReused`].
    pub async fn claim(
        &self,
        user: &UserId,
        key: Option<&IdempotencyKey>,
        fingerprint: &str,
        lease_until: SystemTime,
    ) -> Result<Claim, StoreError> {
        let Some(key) = key else {
            return Ok(Claim::Run(None));
        };
        let now = SystemTime::from(self.now());
        let (now_secs, now_millis) = epoch(now);
        let (expires_at, _) = epoch(now + RECORD_LIFETIME);
        let (_, lease_millis) = epoch(lease_until);
        let sort_key = keys::idempotency(key);
        let token = crate::tokens::random_token();
        let result = self
            .db
            .put_item()
            .table_name(&self.table)
            .item("PK", s(keys::partition(user)))
            .item("SK", s(&sort_key))
            .item("status", s("in_progress"))
            .item("payload_hash", s(fingerprint))
            .item("token", s(&token))
            .item("lease_until", n(lease_millis))
            .item("expires_at", n(expires_at))
            .condition_expression(
                "attribute_not_exists(SK) OR expires_at <= :now OR (#status = :in_progress AND lease_until <= :now_ms)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":now", n(now_secs))
            .expression_attribute_values(":now_ms", n(now_millis))
            .expression_attribute_values(":in_progress", s("in_progress"))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let existing = match result {
            Ok(_) => return Ok(Claim::Run(Some(Lease { sort_key, token }))),
            Err(err) => match err.as_service_error() {
                // DynamoDB returns the item that failed the condition (ALL_OLD), so no read is
                // needed, and chat is not granted GetItem for one.
                Some(PutItemError::ConditionalCheckFailedException(failed)) => {
                    failed.item().cloned().ok_or_else(|| {
                        StoreError::Unavailable(
                            "a refused idempotency claim came back without the record".into(),
                        )
                    })?
                }
                _ => return Err(from_sdk(err)),
            },
        };
        if text(&existing, "payload_hash")? != fingerprint {
            return Err(StoreError::KeyReused);
        }
        match (text(&existing, "status")?, text(&existing, "response")) {
            ("completed", Ok(response)) => Ok(Claim::Replay(response.to_owned())),
            _ => Err(StoreError::KeyInProgress),
        }
    }

    /// After a request failed and stored nothing: gives its key back so that a retry can run
    /// (a conditional delete on the lease's token: a key another request took over is theirs).
    pub async fn release(&self, user: &UserId, lease: Lease) {
        let result = self
            .db
            .delete_item()
            .table_name(&self.table)
            .key("PK", s(keys::partition(user)))
            .key("SK", s(&lease.sort_key))
            .condition_expression("#token = :token")
            .expression_attribute_names("#token", "token")
            .expression_attribute_values(":token", s(&lease.token))
            .send()
            .await;
        match result {
            Ok(_) => {}
            // Our lease ran out and another request holds the key now: it is theirs to settle.
            Err(err) if is_condition_failed(&err) => {}
            Err(err) => {
                let err = from_sdk(err);
                tracing::error!(error = %err, "could not release the idempotency record; it frees itself when its lease ends");
            }
        }
    }

    /// The part of a turn's transaction that completes the record with `answer`: only while the
    /// lease is still ours. The record names its conversation, so that deleting the conversation
    /// deletes the record too.
    pub(super) fn completion(
        &self,
        user: &UserId,
        lease: &Lease,
        conversation: &ConversationId,
        answer: String,
    ) -> Result<Update, StoreError> {
        Update::builder()
            .table_name(&self.table)
            .key("PK", s(keys::partition(user)))
            .key("SK", s(&lease.sort_key))
            .update_expression(
                "SET #status = :completed, #response = :response, conversation_id = :conversation REMOVE lease_until",
            )
            .condition_expression("#token = :token")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#response", "response")
            .expression_attribute_names("#token", "token")
            .expression_attribute_values(":completed", s("completed"))
            .expression_attribute_values(":response", s(answer))
            .expression_attribute_values(":conversation", s(conversation.as_str()))
            .expression_attribute_values(":token", s(&lease.token))
            .build()
            .map_err(|err| StoreError::Internal(Box::new(err)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_short_printable_ascii() {
        assert!(IdempotencyKey::parse("a").is_some());
        assert!(IdempotencyKey::parse("retry 7f3c-2a").is_some());
        assert!(IdempotencyKey::parse(&"k".repeat(128)).is_some());
        assert!(IdempotencyKey::parse(&"k".repeat(129)).is_none());
        assert!(IdempotencyKey::parse("").is_none());
        assert!(IdempotencyKey::parse("tab\there").is_none());
        assert!(IdempotencyKey::parse("ключ").is_none());
    }
}
