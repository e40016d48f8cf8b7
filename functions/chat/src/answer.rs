//! The answer of a turn: the JSON body, what an idempotent replay sends again, and the `done`
//! event of a stream.

use serde::Serialize;
use shared::{
    domain::{ConversationId, MessageId, TokenUsage},
    store::{Ending, Reply, StoredTurn},
};

#[derive(Serialize)]
pub(crate) struct ChatAnswer<'a> {
    conversation_id: &'a ConversationId,
    /// The user's message the reply answers (for a regeneration, the one stored before).
    user_message_id: MessageId,
    message_id: MessageId,
    reply: &'a str,
    provider: &'a str,
    model: &'a str,
    usage: TokenUsage,
    created_at: &'a str,
    /// How the reply ended, when it did not end normally (`stopped`, `incomplete`).
    #[serde(skip_serializing_if = "Ending::is_complete")]
    ending: Ending,
}

impl<'a> ChatAnswer<'a> {
    pub(crate) fn of(stored: &'a StoredTurn, reply: &'a Reply) -> Self {
        Self {
            conversation_id: &stored.conversation_id,
            user_message_id: stored.user_message,
            message_id: stored.reply_message,
            reply: &reply.content,
            provider: &reply.provider,
            model: &reply.model,
            usage: reply.usage,
            created_at: &stored.created_at,
            ending: reply.ending,
        }
    }

    /// The answer as the text that is sent and stored for replays (one text, so that a replay
    /// is the first answer byte for byte).
    pub(crate) fn text(stored: &StoredTurn, reply: &Reply) -> String {
        serde_json::to_string(&ChatAnswer::of(stored, reply)).unwrap_or_default()
    }
}
