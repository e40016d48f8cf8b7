//! Items as DynamoDB holds them: attribute helpers, and the decoding of each kind of item into
//! its record. What a turn writes is encoded in `turns/items.rs`, feedback in `feedback.rs`.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat, Utc};

use super::{keys, Conversation, Feedback, Message, StoreError};
use crate::domain::{MessageId, Rating, Role, TokenUsage};

pub(super) type Item = HashMap<String, AttributeValue>;

/// The condition of a live item, written once for the two forms below (`:now`: epoch seconds).
macro_rules! not_expired {
    () => {
        "attribute_not_exists(expires_at) OR expires_at > :now"
    };
}

/// Reads skip items whose retention has passed: DynamoDB deletes expired items late.
pub(super) const NOT_EXPIRED: &str = not_expired!();

/// A write's condition that its item exists and is not expired (a conversation's head, a reply).
pub(super) const EXISTS_NOT_EXPIRED: &str =
    concat!("attribute_exists(SK) AND (", not_expired!(), ")");

pub(super) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(super) fn n(value: impl std::fmt::Display) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// The timestamp format of every stored time (RFC 3339, milliseconds, UTC).
pub(super) fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The readers of an item's attributes: each names the attribute when it is missing or has
/// another type.
pub(super) fn text<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    item.get(name)
        .and_then(|value| value.as_s().ok())
        .map(String::as_str)
        .ok_or_else(|| StoreError::Corrupt(format!("attribute {name} is missing or not a string")))
}

/// A count or limit: a whole number of zero or more.
pub(super) fn number(item: &Item, name: &str) -> Result<u64, StoreError> {
    parsed(item, name)
}

/// A whole number that may be below zero (what is left of a budget after a settlement) or a
/// time in epoch seconds.
pub(super) fn signed(item: &Item, name: &str) -> Result<i64, StoreError> {
    parsed(item, name)
}

fn parsed<T: std::str::FromStr>(item: &Item, name: &str) -> Result<T, StoreError> {
    item.get(name)
        .and_then(|value| value.as_n().ok())
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("attribute {name} is missing or not a number")))
}

/// A string attribute that may be absent.
pub(super) fn optional(item: &Item, name: &str) -> Option<String> {
    text(item, name).ok().map(str::to_owned)
}

pub(super) fn sort_key(item: &Item) -> Result<String, StoreError> {
    text(item, "SK").map(str::to_owned)
}

pub(super) fn is_expired(item: &Item, now: i64) -> bool {
    signed(item, "expires_at").is_ok_and(|expires_at| expires_at <= now)
}

pub(super) fn conversation_from(item: &Item) -> Result<Conversation, StoreError> {
    let sort_key = text(item, "SK")?;
    let id = keys::conversation_of_head(sort_key)
        .ok_or_else(|| StoreError::Corrupt(format!("{sort_key} is not a conversation head")))?;
    Ok(Conversation {
        id,
        title: text(item, "title")?.to_owned(),
        created_at: text(item, "created_at")?.to_owned(),
        updated_at: text(item, "updated_at")?.to_owned(),
        message_count: number(item, "message_count")?,
        leaf: number(item, "leaf").ok().and_then(MessageId::new),
        branched: number(item, "forks").is_ok_and(|forks| forks > 0),
    })
}

/// The parent a message was stored with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StoredParent {
    Root,
    Of(MessageId),
    /// Stored before branches: the conversation was a line, and the parent is the message
    /// before it in key order.
    Line,
}

/// The `parent` attribute: 0 for a root, absent on messages stored before branches.
pub(super) fn stored_parent(item: &Item) -> Result<StoredParent, StoreError> {
    match item.get("parent") {
        None => Ok(StoredParent::Line),
        Some(_) => {
            let parent = number(item, "parent")?;
            Ok(MessageId::new(parent).map_or(StoredParent::Root, StoredParent::Of))
        }
    }
}

/// The ids a children item lists.
pub(super) fn children_from(item: &Item) -> Vec<u64> {
    item.get("children")
        .and_then(|value| value.as_ns().ok())
        .map(|ids| ids.iter().filter_map(|id| id.parse().ok()).collect())
        .unwrap_or_default()
}

/// A message, its parent as stored (a line's parent is taken to be the message before it until
/// a walk knows better), its siblings itself alone until a walk knows more.
pub(super) fn message_from(item: &Item) -> Result<Message, StoreError> {
    let sort_key = text(item, "SK")?;
    let id = keys::message_id_of(sort_key)
        .ok_or_else(|| StoreError::Corrupt(format!("{sort_key} is not a message key")))?;
    let parent = match stored_parent(item)? {
        StoredParent::Root => None,
        StoredParent::Of(parent) => Some(parent),
        StoredParent::Line => id.previous(),
    };
    let role = Role::parse(text(item, "role")?)
        .ok_or_else(|| StoreError::Corrupt(format!("{sort_key} has an unknown role")))?;
    let usage = match (number(item, "input_tokens"), number(item, "output_tokens")) {
        (Ok(input_tokens), Ok(output_tokens)) => Some(TokenUsage {
            input_tokens,
            output_tokens,
        }),
        _ => None,
    };
    let ending = super::Ending::from_stored(text(item, "ending").ok())
        .ok_or_else(|| StoreError::Corrupt(format!("{sort_key} has an unknown ending")))?;
    Ok(Message {
        ending,
        id,
        parent,
        siblings: vec![id],
        role,
        content: text(item, "content")?.to_owned(),
        created_at: text(item, "created_at")?.to_owned(),
        provider: optional(item, "provider"),
        model: optional(item, "model"),
        usage,
    })
}

/// Feedback, from its item in the table or in the day index.
pub(super) fn feedback_from(item: &Item) -> Result<Feedback, StoreError> {
    let sort_key = text(item, "SK")?;
    let message_id = keys::message_id_of(sort_key)
        .ok_or_else(|| StoreError::Corrupt(format!("{sort_key} is not a feedback key")))?;
    let conversation_id = crate::domain::ConversationId::parse(text(item, "conversation_id")?)
        .ok_or_else(|| StoreError::Corrupt(format!("{sort_key} names no conversation")))?;
    let rating = Rating::new(number(item, "rating")?)
        .map_err(|_| StoreError::Corrupt(format!("{sort_key} has a rating out of range")))?;
    Ok(Feedback {
        conversation_id,
        message_id,
        rating,
        comment: optional(item, "comment"),
        created_at: text(item, "created_at")?.to_owned(),
        updated_at: text(item, "updated_at")?.to_owned(),
        provider: optional(item, "provider"),
        model: optional(item, "model"),
    })
}
