//! Renaming a conversation: one conditional `UpdateItem` on its head.

use aws_sdk_dynamodb::types::ReturnValue;

use super::{
    error::{from_sdk, is_condition_failed, retry_conflicts},
    items::{self, n, s},
    keys,
    meter::{ask, Work},
    Conversation, ConversationStore, StoreError,
};
use crate::domain::{ConversationId, Title, UserId};

impl ConversationStore {
    /// Sets a conversation's title and returns the conversation as it now is. The write requires
    /// a live head, so it never brings back a deleted (or expired) conversation:
    /// [`StoreError::NotFound`] when the caller has no such conversation. Its activity time
    /// (`updated_at`) is the last turn's and does not change.
    pub async fn rename_conversation(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        title: &Title,
    ) -> Result<Conversation, StoreError> {
        let update = self
            .db
            .update_item()
            .table_name(&self.table)
            .key("PK", s(keys::partition(user)))
            .key("SK", s(keys::head(conversation)))
            .update_expression("SET title = :title")
            .condition_expression(items::EXISTS_NOT_EXPIRED)
            .expression_attribute_values(":title", s(title.as_str()))
            .expression_attribute_values(":now", n(self.now().timestamp()))
            .return_values(ReturnValue::AllNew)
            .return_consumed_capacity(ask());
        let output = match retry_conflicts(|| update.clone().send()).await {
            Ok(output) => output,
            Err(err) if is_condition_failed(&err) => return Err(StoreError::NotFound),
            Err(err) => return Err(from_sdk(err)),
        };
        self.meter.record(Work::Write, output.consumed_capacity());
        let item = output
            .attributes
            .ok_or_else(|| StoreError::Corrupt("the renamed head came back empty".to_owned()))?;
        items::conversation_from(&item)
    }
}
