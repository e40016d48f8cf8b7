//! The items one turn writes: a new conversation's head and the two messages, each marked with
//! the turn's random token so that a write whose answer was lost is recognised on retry.

use super::super::{
    items::{n, s, Item},
    keys, Reply,
};
use crate::domain::{ConversationId, MessageId, Role, UserId};

/// What one turn writes, shared by its items.
#[derive(Debug)]
pub(super) struct Turn {
    pub(super) user: UserId,
    pub(super) partition: String,
    pub(super) conversation: ConversationId,
    /// Marks our items, so that a write whose answer was lost is recognised on retry.
    pub(super) token: String,
    pub(super) created_at: String,
    pub(super) now: i64,
    pub(super) expires_at: Option<i64>,
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

    pub(super) fn head_item(&self, title: &str, leaf: MessageId) -> Item {
        let mut item = self.base_item(keys::head(&self.conversation));
        item.insert("title".to_owned(), s(title));
        item.insert("updated_at".to_owned(), s(&self.created_at));
        item.insert("message_count".to_owned(), n(leaf.seq()));
        item.insert("leaf".to_owned(), n(leaf.seq()));
        item.insert("version".to_owned(), n(1));
        item
    }

    /// A message, under `parent` (`None`: a root, stored as 0).
    pub(super) fn message_item(
        &self,
        id: MessageId,
        parent: Option<MessageId>,
        role: Role,
        content: &str,
        reply: Option<&Reply>,
    ) -> Item {
        let mut item = self.base_item(keys::message(&self.conversation, id));
        item.insert("parent".to_owned(), n(parent.map_or(0, MessageId::seq)));
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
