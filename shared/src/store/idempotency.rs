//! Idempotency records: `IDEM#<key>` in the caller's partition, so that a retried request is
//! answered from its first run instead of being run twice.
//!
//! A request claims its key with a conditional put (the key is free, expired, or held by an
//! owner whose lease ran out). A claimed key is completed with the response, or released when the
//! request fails so that a retry can run. The payload hash is compared on every path: the same key
//! with another payload is refused, whether the record is in progress or completed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::{
    operation::put_item::PutItemError, types::ReturnValuesOnConditionCheckFailure,
};

use super::{
    conversations::{classify, n, s, text},
    keys, ConversationStore, StoreError,
};
use crate::identity::UserId;

/// How long a completed answer is replayed.
pub const RECORD_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A client's idempotency key: 1 to 128 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Option<Self> {
        let valid =
            (1..=128).contains(&raw.len()) && raw.bytes().all(|b| (0x20..=0x7e).contains(&b));
        valid.then(|| Self(raw.to_owned()))
    }
}

/// What claiming a key found.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key is ours until the lease ends: run the request, then complete or release.
    Started(Lease),
    /// The same request already completed: here is its response.
    Replay(String),
    /// The same request is still running elsewhere.
    InProgress,
    /// The key was used with a different payload.
    Mismatch,
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
    /// Claims `key` for a request with `payload_hash`, held until `lease_until` (the request's
    /// deadline: a record whose owner died frees itself then).
    pub async fn claim_idempotency_key(
        &self,
        user: &UserId,
        key: &IdempotencyKey,
        payload_hash: &str,
        lease_until: SystemTime,
    ) -> Result<Claim, StoreError> {
        let now = SystemTime::now();
        let (now_secs, now_millis) = epoch(now);
        let (expires_at, _) = epoch(now + RECORD_LIFETIME);
        let (_, lease_millis) = epoch(lease_until);
        let sort_key = format!("IDEM#{}", key.0);
        let token = format!("{:032x}", fastrand::u128(..));
        let result = self
            .db()
            .put_item()
            .table_name(self.table())
            .item("PK", s(keys::partition(user)))
            .item("SK", s(&sort_key))
            .item("status", s("in_progress"))
            .item("payload_hash", s(payload_hash))
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
            Ok(_) => return Ok(Claim::Started(Lease { sort_key, token })),
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
                _ => return Err(classify(err)),
            },
        };
        if text(&existing, "payload_hash")? != payload_hash {
            return Ok(Claim::Mismatch);
        }
        Ok(
            match (text(&existing, "status")?, text(&existing, "response")) {
                ("completed", Ok(response)) => Claim::Replay(response.to_owned()),
                _ => Claim::InProgress,
            },
        )
    }

    /// Stores the response of a claimed request, to be replayed for 24 hours.
    pub async fn complete_idempotency_key(
        &self,
        user: &UserId,
        lease: &Lease,
        response: &str,
    ) -> Result<(), StoreError> {
        let result = self
            .db()
            .update_item()
            .table_name(self.table())
            .key("PK", s(keys::partition(user)))
            .key("SK", s(&lease.sort_key))
            .update_expression("SET #status = :completed, #response = :response REMOVE lease_until")
            .condition_expression("#token = :token")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#response", "response")
            .expression_attribute_names("#token", "token")
            .expression_attribute_values(":completed", s("completed"))
            .expression_attribute_values(":response", s(response))
            .expression_attribute_values(":token", s(&lease.token))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                // Our lease ran out and another request took the key over; its answer stands.
                tracing::warn!("idempotency record was taken over before completion");
                Ok(())
            }
            Err(err) => Err(classify(err)),
        }
    }

    /// Gives a claimed key back after a failure, so that a retry can run.
    pub async fn release_idempotency_key(
        &self,
        user: &UserId,
        lease: &Lease,
    ) -> Result<(), StoreError> {
        let result = self
            .db()
            .delete_item()
            .table_name(self.table())
            .key("PK", s(keys::partition(user)))
            .key("SK", s(&lease.sort_key))
            .condition_expression("#token = :token")
            .expression_attribute_names("#token", "token")
            .expression_attribute_values(":token", s(&lease.token))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(err) => Err(classify(err)),
        }
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
