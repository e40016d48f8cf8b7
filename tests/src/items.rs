//! The table read and written directly, to look at and arrange what the store does not expose.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use shared::{domain::ConversationId, store::keys};

use crate::stack::{message_id, stack, user_id};

/// A stored item, as DynamoDB returns it.
pub type Item = HashMap<String, AttributeValue>;

/// Every item of `user`'s partition in `table`, read directly.
pub async fn partition_items(table: &str, user: impl AsRef<str>) -> Vec<Item> {
    items_beginning(table, user, None).await
}

/// Every item of `user`'s partition in the local stack's table.
pub async fn user_items(user: impl AsRef<str>) -> Vec<Item> {
    partition_items(&stack().await.config.table_name, user).await
}

/// The items of `user`'s partition in `table` whose sort key begins with `prefix` (all of them
/// without one), read directly: consistently, every page.
pub async fn items_beginning(
    table: &str,
    user: impl AsRef<str>,
    prefix: Option<&str>,
) -> Vec<Item> {
    let stack = stack().await;
    let mut items = Vec::new();
    let mut start = None;
    let condition = match prefix {
        Some(_) => "PK = :pk AND begins_with(SK, :prefix)",
        None => "PK = :pk",
    };
    loop {
        let mut query = stack
            .clients
            .dynamodb
            .query()
            .table_name(table)
            .key_condition_expression(condition)
            .expression_attribute_values(
                ":pk",
                AttributeValue::S(keys::partition(&user_id(&user))),
            );
        if let Some(prefix) = prefix {
            query =
                query.expression_attribute_values(":prefix", AttributeValue::S(prefix.to_owned()));
        }
        let output = query
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("query the partition");
        items.extend(output.items().iter().cloned());
        start = output.last_evaluated_key().cloned();
        if start.is_none() {
            return items;
        }
    }
}

/// How many items of stored data `user`'s partition holds in `table`: everything but the budget
/// item, which admission writes before anything else (see `e2e/budget.rs` for it).
pub async fn partition_count(table: &str, user: impl AsRef<str>) -> usize {
    partition_items(table, user)
        .await
        .iter()
        .filter(|item| !is_budget_item(item))
        .count()
}

/// Whether a stored item is a user's budget item (`SK = USAGE`).
pub fn is_budget_item(item: &Item) -> bool {
    item.get("SK")
        .and_then(|key| key.as_s().ok())
        .is_some_and(|key| key == keys::usage())
}

/// Whether a stored item is an assistant's message (a reply).
pub fn is_reply(item: &Item) -> bool {
    item.get("role")
        .and_then(|r| r.as_s().ok())
        .map(String::as_str)
        == Some("assistant")
}

/// Puts an item with nothing but its key into `user`'s partition of the local stack's table.
pub async fn put_raw(user: impl AsRef<str>, sort_key: &str) {
    let stack = stack().await;
    stack
        .clients
        .dynamodb
        .put_item()
        .table_name(&stack.config.table_name)
        .item("PK", AttributeValue::S(keys::partition(&user_id(user))))
        .item("SK", AttributeValue::S(sort_key.to_owned()))
        .send()
        .await
        .expect("put an item");
}

/// Deletes an item of `user`'s partition of the local stack's table, behind the store's back.
pub async fn delete_raw(user: impl AsRef<str>, sort_key: &str) {
    let stack = stack().await;
    stack
        .clients
        .dynamodb
        .delete_item()
        .table_name(&stack.config.table_name)
        .key("PK", AttributeValue::S(keys::partition(&user_id(user))))
        .key("SK", AttributeValue::S(sort_key.to_owned()))
        .send()
        .await
        .expect("delete an item");
}

/// Sets the `expires_at` of an item of `user`'s partition of the local stack's table to `at`
/// (seconds since the epoch), as if its time had come.
pub async fn set_expiry(user: impl AsRef<str>, sort_key: &str, at: i64) {
    let stack = stack().await;
    stack
        .clients
        .dynamodb
        .update_item()
        .table_name(&stack.config.table_name)
        .key("PK", AttributeValue::S(keys::partition(&user_id(user))))
        .key("SK", AttributeValue::S(sort_key.to_owned()))
        .update_expression("SET expires_at = :at")
        .expression_attribute_values(":at", AttributeValue::N(at.to_string()))
        .send()
        .await
        .expect("set an item's expiry");
}

/// Writes messages `first..=last` of a conversation directly (setup for volume tests), shaped
/// as `append_turn` writes them on a line: odd seqs are the user's, even seqs the assistant's,
/// each the child of the one before; the head's count and leaf end at `last`.
pub async fn seed_messages(
    table: &str,
    user: impl AsRef<str>,
    conversation: &ConversationId,
    first: u64,
    last: u64,
) {
    let user = &user_id(user);
    let stack = stack().await;
    let s = |v: String| AttributeValue::S(v);
    let requests: Vec<WriteRequest> = (first..=last)
        .map(|seq| {
            let role = if seq % 2 == 1 { "user" } else { "assistant" };
            let put = PutRequest::builder()
                .item("PK", s(keys::partition(user)))
                .item("SK", s(keys::message(conversation, message_id(seq))))
                .item("parent", AttributeValue::N((seq - 1).to_string()))
                .item("role", s(role.to_owned()))
                .item("content", s(format!("message {seq}")))
                .item("created_at", s("2026-11-27T06:00:00.000Z".to_owned()))
                .item("turn", s("seed".to_owned()))
                .build()
                .expect("a put request");
            WriteRequest::builder().put_request(put).build()
        })
        .collect();
    for batch in requests.chunks(25) {
        let mut pending = batch.to_vec();
        while !pending.is_empty() {
            let output = stack
                .clients
                .dynamodb
                .batch_write_item()
                .request_items(table, pending)
                .send()
                .await
                .expect("batch write");
            pending = output
                .unprocessed_items()
                .and_then(|items| items.get(table))
                .cloned()
                .unwrap_or_default();
        }
    }
    stack
        .clients
        .dynamodb
        .update_item()
        .table_name(table)
        .key("PK", s(keys::partition(user)))
        .key("SK", s(keys::head(conversation)))
        .update_expression("SET message_count = :count, leaf = :count")
        .expression_attribute_values(":count", AttributeValue::N(last.to_string()))
        .send()
        .await
        .expect("set the head's count");
}

/// Makes a conversation look as the version before branches wrote it: no `parent` on its
/// messages, no `leaf` or `forks` on its head.
pub async fn as_stored_before_branches(
    table: &str,
    user: &shared::domain::UserId,
    conversation: &ConversationId,
) {
    let stack = stack().await;
    let db = &stack.clients.dynamodb;
    let s = |v: String| AttributeValue::S(v);
    let remove = |sort_key: String, expression: &'static str| {
        db.update_item()
            .table_name(table)
            .key("PK", s(keys::partition(user)))
            .key("SK", s(sort_key))
            .update_expression(expression)
            .send()
    };
    remove(keys::head(conversation), "REMOVE leaf, forks")
        .await
        .expect("strip the head");
    let items = db
        .query()
        .table_name(table)
        .key_condition_expression("PK = :pk AND begins_with(SK, :prefix)")
        .expression_attribute_values(":pk", s(keys::partition(user)))
        .expression_attribute_values(":prefix", s(keys::messages(conversation)))
        .send()
        .await
        .expect("read the messages");
    for item in items.items() {
        let sort_key = item["SK"].as_s().expect("a key").clone();
        remove(sort_key, "REMOVE parent")
            .await
            .expect("strip a message");
    }
}
