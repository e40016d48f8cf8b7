//! Turns stored through the store's turn API, and the conversations tests start with them.
//!
//! Tests and tools store turns only through [`append_turn`] and [`append_turn_completing`]: when
//! that API changes, these are the places to adapt.

use shared::{
    domain::{ConversationId, MessageId, UserId},
    store::{
        ConversationStore, Erasures, Lease, ReplayText, Shape, StoreError, StoredTurn, TurnKind,
        TurnTarget, TurnWrite,
    },
};

use crate::{
    items::seed_messages,
    stack::{event, reply, store, text},
};

/// Stores the turn `question` / `answer` (an echo reply) with `ConversationStore::append_turn`.
pub async fn append_turn(
    store: &ConversationStore,
    user: &UserId,
    target: &TurnTarget,
    question: &str,
    answer: &str,
) -> Result<StoredTurn, StoreError> {
    store
        .append_turn(user, target, &text(question), &reply(answer))
        .await
}

/// Stores the turn `question` / `answer` (an echo reply) as the chat function does
/// (`ConversationStore::reserve_turn`, then `write_turn`): completing the idempotency record of a
/// lease in the same transaction, and checking that no erasure began since the turn's admission.
pub async fn append_turn_completing(
    store: &ConversationStore,
    user: &UserId,
    target: &TurnTarget,
    question: &str,
    answer: &str,
    completes: Option<(&Lease, &ReplayText<'_>)>,
    admitted: Option<Erasures>,
) -> Result<StoredTurn, StoreError> {
    let reservation = store.reserve_turn(user, target, TurnKind::Exchange).await?;
    let parent = match target {
        TurnTarget::New { .. } => None,
        TurnTarget::Existing(id) => store.newest_leaf(user, id, reservation.leaf()).await?,
    };
    let question = text(question);
    let write = TurnWrite {
        shape: Shape::Exchange {
            text: &question,
            parent,
        },
        reply: &reply(answer),
        completes,
        admitted,
    };
    store.write_turn(reservation, &write).await
}

/// Stores the turn `question` / `answer` under `parent` (`None`: a new first message) of an
/// existing conversation: an edit of the message that followed `parent`.
pub async fn append_turn_under(
    store: &ConversationStore,
    user: &UserId,
    conversation: &ConversationId,
    parent: Option<MessageId>,
    question: &str,
    answer: &str,
) -> Result<StoredTurn, StoreError> {
    let target = TurnTarget::Existing(conversation.clone());
    let reservation = store
        .reserve_turn(user, &target, TurnKind::Exchange)
        .await?;
    let question = text(question);
    let write = TurnWrite {
        shape: Shape::Exchange {
            text: &question,
            parent,
        },
        reply: &reply(answer),
        completes: None,
        admitted: None,
    };
    store.write_turn(reservation, &write).await
}

/// Stores `answer` as another reply to the user's message `answering`.
pub async fn regenerate(
    store: &ConversationStore,
    user: &UserId,
    conversation: &ConversationId,
    answering: MessageId,
    answer: &str,
) -> Result<StoredTurn, StoreError> {
    let target = TurnTarget::Existing(conversation.clone());
    let reservation = store
        .reserve_turn(user, &target, TurnKind::Regeneration)
        .await?;
    let write = TurnWrite {
        shape: Shape::Regeneration { answering },
        reply: &reply(answer),
        completes: None,
        admitted: None,
    };
    store.write_turn(reservation, &write).await
}

/// A new conversation titled `title`, under a fresh id.
pub fn new_conversation(title: &str) -> TurnTarget {
    TurnTarget::New {
        id: ConversationId::generate(),
        title: title.to_owned(),
    }
}

/// Starts a conversation of `user` titled `title` with the turn `question` / `answer`; returns
/// its id (the reply is message 2).
pub async fn start_conversation(
    store: &ConversationStore,
    user: &UserId,
    title: &str,
    question: &str,
    answer: &str,
) -> ConversationId {
    append_turn(store, user, &new_conversation(title), question, answer)
        .await
        .expect("a new conversation")
        .conversation_id
}

/// A conversation of `user` holding `prior` messages in `table` (the one `store` writes to): its
/// first turn through the store (so the head is real), the rest batch-written by
/// [`seed_messages`] in the shape `append_turn` writes.
pub async fn conversation_with_history(
    store: &ConversationStore,
    table: &str,
    user: &UserId,
    prior: u64,
) -> ConversationId {
    let title = format!("{prior} messages");
    let id = start_conversation(store, user, &title, "question 0", "answer 0").await;
    seed_messages(table, user, &id, 3, prior).await;
    id
}

/// Holds the sample events' user until the guard is dropped. The events (`events/*.json`) share one
/// user and conversation, and the tests that change them (erase and recreate them, add a
/// conversation, replay a request) must not run at once: in one test binary they take turns.
pub async fn hold_sample_user() -> tokio::sync::MutexGuard<'static, ()> {
    static SAMPLE_USER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SAMPLE_USER.lock().await
}

/// The user and conversation the sample events name (`events/*.json` share them), with that
/// conversation freshly created: the user's earlier data is erased, then one turn is stored.
pub async fn sample_conversation() -> (UserId, ConversationId) {
    let sample: serde_json::Value =
        serde_json::from_str(&event("history-list-messages.json")).expect("valid JSON");
    let owner = sample["requestContext"]["authorizer"]["claims"]["sub"]
        .as_str()
        .and_then(UserId::parse)
        .expect("the samples' user id is valid");
    let id = sample["pathParameters"]["id"]
        .as_str()
        .and_then(ConversationId::parse)
        .expect("the samples' conversation id is valid");
    let store = store().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    store
        .erase_user(&owner, deadline)
        .await
        .expect("erase the sample user");
    let target = TurnTarget::New {
        id: id.clone(),
        title: "sample".to_owned(),
    };
    append_turn(&store, &owner, &target, "q", "a")
        .await
        .expect("the sample conversation");
    (owner, id)
}
