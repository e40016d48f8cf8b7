//! What the provider is sent besides the new message: the conversation's recent messages.

use shared::{domain::Role, llm::ContextMessage, store::Message};

/// The earlier messages sent to the LLM: the newest ones, oldest first, within `max_chars`,
/// starting with a user message (providers expect alternating turns from the user's side).
pub(crate) fn window(history: &[Message], max_chars: usize) -> Vec<ContextMessage> {
    let mut budget = max_chars;
    let mut context: Vec<ContextMessage> = history
        .iter()
        .rev()
        .map_while(|message| {
            let size = message.content.chars().count();
            budget = budget.checked_sub(size)?;
            Some(ContextMessage {
                role: message.role,
                content: message.content.clone(),
            })
        })
        .collect();
    context.reverse();
    let first_user = context
        .iter()
        .position(|message| message.role == Role::User)
        .unwrap_or(context.len());
    context.drain(..first_user);
    context
}

#[cfg(test)]
mod tests {
    use shared::{domain::MessageId, store::Ending};

    use super::*;

    fn message(seq: u64, role: Role, content: &str) -> Message {
        Message {
            id: MessageId::new(seq).unwrap(),
            parent: MessageId::new(seq - 1),
            siblings: vec![MessageId::new(seq).unwrap()],
            role,
            content: content.to_owned(),
            created_at: String::new(),
            provider: None,
            model: None,
            usage: None,
            ending: Ending::Complete,
        }
    }

    fn contents(context: &[ContextMessage]) -> Vec<&str> {
        context.iter().map(|m| m.content.as_str()).collect()
    }

    #[test]
    fn the_context_keeps_the_newest_messages_within_budget_and_starts_with_the_user() {
        let history = [
            message(1, Role::User, "aaaa"),
            message(2, Role::Assistant, "bbbb"),
            message(3, Role::User, "cc"),
            message(4, Role::Assistant, "dd"),
        ];
        assert_eq!(
            contents(&window(&history, 100)),
            ["aaaa", "bbbb", "cc", "dd"]
        );
        // 8 characters: "dd", "cc", then "bbbb" fits but starts with the assistant: dropped.
        assert_eq!(contents(&window(&history, 8)), ["cc", "dd"]);
        assert!(window(&history, 1).is_empty());
    }
}
