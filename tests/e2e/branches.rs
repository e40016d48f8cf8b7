//! A conversation is a tree, at the store: edits and regenerations are siblings, the active
//! branch is what is read and what the LLM sees, switching is conditional, concurrent
//! alternatives are all kept, and conversations stored before branches read as a line.

use e2e::{
    append_turn, append_turn_under, as_stored_before_branches, regenerate, stack,
    start_conversation, store, unique,
};
use shared::{
    domain::{ConversationId, MessageId, UserId},
    store::{
        keys, BranchEnd, ConversationStore, Cursor, Message, Order, PageRequest, StoreError,
        TurnTarget,
    },
};
use tokio::task::JoinSet;

fn id(seq: u64) -> MessageId {
    MessageId::new(seq).unwrap()
}

fn ids(seqs: &[u64]) -> Vec<MessageId> {
    seqs.iter().copied().map(id).collect()
}

/// A conversation of three turns: messages 1..=6, "q1"/"a1" … "q3"/"a3".
async fn three_turns(store: &ConversationStore, user: &UserId) -> ConversationId {
    let conversation = start_conversation(store, user, "tree", "q1", "a1").await;
    let target = TurnTarget::Existing(conversation.clone());
    for turn in 2..=3 {
        append_turn(
            store,
            user,
            &target,
            &format!("q{turn}"),
            &format!("a{turn}"),
        )
        .await
        .unwrap();
    }
    conversation
}

/// The active branch, newest first, read in pages of `limit`.
async fn active_branch(
    store: &ConversationStore,
    user: &UserId,
    conversation: &ConversationId,
    limit: u16,
    order: Order,
) -> Vec<Message> {
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_messages(user, conversation, &PageRequest { limit, cursor }, order)
            .await
            .unwrap();
        assert!(page.items.len() <= usize::from(limit));
        all.extend(page.items);
        match page.next {
            Some(next) => cursor = Some(Cursor::decode(&next.encode()).unwrap()),
            None => return all,
        }
    }
}

fn seqs(messages: &[Message]) -> Vec<u64> {
    messages.iter().map(|message| message.id.seq()).collect()
}

fn contents(messages: &[Message]) -> Vec<&str> {
    messages
        .iter()
        .map(|message| message.content.as_str())
        .collect()
}

fn find(messages: &[Message], seq: u64) -> &Message {
    messages
        .iter()
        .find(|message| message.id.seq() == seq)
        .unwrap_or_else(|| panic!("message {seq} is on the branch"))
}

#[tokio::test]
async fn an_edit_is_a_sibling_and_its_branch_is_the_active_one_and_the_context() {
    let store = store().await;
    let user = UserId::parse(&unique("u")).unwrap();
    let conversation = three_turns(&store, &user).await;

    // Edit q3 (message 5, under a2 = 4): a new user message under 4, and its reply.
    let edit = append_turn_under(&store, &user, &conversation, Some(id(4)), "q3'", "a3'")
        .await
        .unwrap();
    assert_eq!((edit.user_message, edit.reply_message), (id(7), id(8)));

    let head = store.conversation(&user, &conversation).await.unwrap();
    assert_eq!(head.leaf, Some(id(8)));
    assert!(head.branched);

    let newest_first = active_branch(&store, &user, &conversation, 2, Order::Newest).await;
    assert_eq!(seqs(&newest_first), [8, 7, 4, 3, 2, 1]);
    assert_eq!(find(&newest_first, 7).siblings, ids(&[5, 7]));
    assert_eq!(find(&newest_first, 7).parent, Some(id(4)));
    assert_eq!(find(&newest_first, 8).siblings, ids(&[8]));
    assert_eq!(find(&newest_first, 8).parent, Some(id(7)));
    assert_eq!(find(&newest_first, 1).parent, None);
    assert_eq!(find(&newest_first, 1).siblings, ids(&[1]));

    let oldest_first = active_branch(&store, &user, &conversation, 4, Order::Oldest).await;
    assert_eq!(seqs(&oldest_first), [1, 2, 3, 4, 7, 8]);
    assert_eq!(find(&oldest_first, 7).siblings, ids(&[5, 7]));

    // The context of a turn from the leaf is the branch: never the sibling's text.
    let context = store
        .recent_messages(&user, &conversation, BranchEnd::At(id(8)), 20)
        .await
        .unwrap();
    assert_eq!(contents(&context), ["q1", "a1", "q2", "a2", "q3'", "a3'"]);
    // The next turn goes on from the leaf.
    let next = append_turn(
        &store,
        &user,
        &TurnTarget::Existing(conversation.clone()),
        "q4",
        "a4",
    )
    .await
    .unwrap();
    assert_eq!(next.user_message, id(9));
    let context = store
        .recent_messages(&user, &conversation, BranchEnd::Newest, 3)
        .await
        .unwrap();
    assert_eq!(contents(&context), ["a3'", "q4", "a4"]);
}

#[tokio::test]
async fn a_regeneration_is_a_sibling_reply_and_switching_follows_the_newest_child() {
    let store = store().await;
    let user = UserId::parse(&unique("u")).unwrap();
    let conversation = three_turns(&store, &user).await;

    // Regenerate a2 (message 4, answering q2 = 3).
    let again = regenerate(&store, &user, &conversation, id(3), "a2'")
        .await
        .unwrap();
    assert_eq!((again.user_message, again.reply_message), (id(3), id(7)));
    let branch = active_branch(&store, &user, &conversation, 20, Order::Newest).await;
    assert_eq!(contents(&branch), ["a2'", "q2", "a1", "q1"]);
    assert_eq!(branch[0].siblings, ids(&[4, 7]));
    assert_eq!(branch[0].parent, Some(id(3)));

    // Back to the first version of the reply: the branch goes on to its newest descendant.
    let switched = store
        .switch_branch(&user, &conversation, id(4))
        .await
        .unwrap();
    assert_eq!(switched.leaf, Some(id(6)));
    let branch = active_branch(&store, &user, &conversation, 20, Order::Newest).await;
    assert_eq!(seqs(&branch), [6, 5, 4, 3, 2, 1]);
    assert_eq!(find(&branch, 4).siblings, ids(&[4, 7]));
    // Message 3's children are 4 (directly after it) and 7 (listed): a message in the middle
    // of a branch knows its alternatives too.
    assert_eq!(find(&branch, 5).siblings, ids(&[5]));

    // An edit under 4, then a switch to 4's subtree follows the newest child: the edit.
    let edit = append_turn_under(&store, &user, &conversation, Some(id(4)), "q3'", "a3'")
        .await
        .unwrap();
    assert_eq!(edit.reply_message, id(9));
    store
        .switch_branch(&user, &conversation, id(7))
        .await
        .unwrap();
    let switched = store
        .switch_branch(&user, &conversation, id(4))
        .await
        .unwrap();
    assert_eq!(switched.leaf, Some(id(9)), "4's newest child is 8, then 9");

    // Every version stays readable.
    for (end, expected) in [(6, "a3"), (7, "a2'"), (9, "a3'")] {
        let branch = store
            .recent_messages(&user, &conversation, BranchEnd::At(id(end)), 1)
            .await
            .unwrap();
        assert_eq!(contents(&branch), [expected]);
    }
    // A version off the active branch can still be rated.
    let (_, feedback) = store
        .rate_message(
            &user,
            &conversation,
            id(7),
            shared::domain::Rating::new(4).unwrap(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(feedback.message_id, id(7));
    // A message the conversation does not have.
    assert!(matches!(
        store.switch_branch(&user, &conversation, id(99)).await,
        Err(StoreError::MessageNotFound)
    ));
    assert!(matches!(
        store
            .switch_branch(&user, &ConversationId::generate(), id(1))
            .await,
        Err(StoreError::NotFound)
    ));
}

#[tokio::test]
async fn a_new_first_message_is_a_sibling_of_the_first() {
    let store = store().await;
    let user = UserId::parse(&unique("u")).unwrap();
    let conversation = three_turns(&store, &user).await;
    let root = append_turn_under(&store, &user, &conversation, None, "q1'", "a1'")
        .await
        .unwrap();
    let branch = active_branch(&store, &user, &conversation, 20, Order::Newest).await;
    assert_eq!(contents(&branch), ["a1'", "q1'"]);
    assert_eq!(branch[1].parent, None);
    assert_eq!(branch[1].siblings, ids(&[1, root.user_message.seq()]));
    let oldest = active_branch(&store, &user, &conversation, 1, Order::Oldest).await;
    assert_eq!(contents(&oldest), ["q1'", "a1'"]);
}

#[tokio::test]
async fn fifty_concurrent_regenerations_of_one_reply_store_fifty_siblings() {
    let store = std::sync::Arc::new(store().await);
    let user = UserId::parse(&unique("u")).unwrap();
    let conversation = three_turns(&store, &user).await;
    let mut tasks = JoinSet::new();
    for n in 0..50 {
        let store = store.clone();
        let user = user.clone();
        let conversation = conversation.clone();
        tasks.spawn(async move {
            regenerate(&store, &user, &conversation, id(3), &format!("again {n}"))
                .await
                .map(|stored| stored.reply_message)
        });
    }
    let mut stored = Vec::new();
    while let Some(done) = tasks.join_next().await {
        stored.push(done.unwrap().expect("every regeneration is stored"));
    }
    stored.sort();
    stored.dedup();
    assert_eq!(stored.len(), 50, "fifty distinct replies");

    // The head's leaf is one of them (the last stored), and its siblings are all 51 replies.
    let head = store.conversation(&user, &conversation).await.unwrap();
    let leaf = head.leaf.unwrap();
    assert!(stored.contains(&leaf));
    let branch = store
        .recent_messages(&user, &conversation, BranchEnd::At(leaf), 20)
        .await
        .unwrap();
    let last = branch.last().unwrap();
    let mut expected = stored.clone();
    expected.push(id(4));
    expected.sort();
    assert_eq!(last.siblings, expected, "no sibling lost or duplicated");
    assert_eq!(contents(&branch)[..3], ["q1", "a1", "q2"]);
    // Every one of them is readable, with its own text, as the end of its branch.
    for reply in &stored {
        let end = store
            .recent_messages(&user, &conversation, BranchEnd::At(*reply), 2)
            .await
            .unwrap();
        assert_eq!(end[0].content, "q2");
        assert!(end[1].content.starts_with("again "));
    }
}

#[tokio::test]
async fn two_turns_sent_from_the_same_leaf_at_once_are_both_kept_as_siblings() {
    let store = std::sync::Arc::new(store().await);
    let user = UserId::parse(&unique("u")).unwrap();
    let conversation = three_turns(&store, &user).await;
    let target = TurnTarget::Existing(conversation.clone());
    let (a, b) = tokio::join!(
        append_turn(&store, &user, &target, "from tab A", "a"),
        append_turn(&store, &user, &target, "from tab B", "b"),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let head = store.conversation(&user, &conversation).await.unwrap();
    let leaf = head.leaf.unwrap();
    assert!(leaf == a.reply_message || leaf == b.reply_message);
    let branch = store
        .recent_messages(&user, &conversation, BranchEnd::At(leaf), 20)
        .await
        .unwrap();
    let question = &branch[branch.len() - 2];
    assert_eq!(question.parent, Some(id(6)));
    assert_eq!(
        question.siblings,
        {
            let mut both = vec![a.user_message, b.user_message];
            both.sort();
            both
        },
        "the other tab's message is its sibling"
    );
}

#[tokio::test]
async fn a_switch_that_read_a_leaf_a_turn_has_moved_since_changes_nothing() {
    let store = store().await;
    let user = UserId::parse(&unique("u")).unwrap();
    let conversation = three_turns(&store, &user).await;
    regenerate(&store, &user, &conversation, id(5), "a3'")
        .await
        .unwrap();
    let seen = store.conversation(&user, &conversation).await.unwrap();
    assert_eq!(seen.leaf, Some(id(7)));
    // A turn lands after the switch read the head…
    let turn = append_turn(
        &store,
        &user,
        &TurnTarget::Existing(conversation.clone()),
        "q4",
        "a4",
    )
    .await
    .unwrap();
    // …so the switch, conditional on the leaf it read, is refused and the turn stays shown.
    assert!(matches!(
        store.switch_branch_from(&user, &seen, id(6)).await,
        Err(StoreError::BranchMoved)
    ));
    let head = store.conversation(&user, &conversation).await.unwrap();
    assert_eq!(head.leaf, Some(turn.reply_message));
    // Read again, the same switch goes through.
    let switched = store
        .switch_branch(&user, &conversation, id(6))
        .await
        .unwrap();
    assert_eq!(switched.leaf, Some(id(6)));
}

#[tokio::test]
async fn a_conversation_stored_before_branches_reads_as_a_line_and_takes_branches() {
    let stack = stack().await;
    let store = store().await;
    let user = UserId::parse(&unique("u")).unwrap();
    let conversation = three_turns(&store, &user).await;
    as_stored_before_branches(&stack.config.table_name, &user, &conversation).await;
    let head = store.conversation(&user, &conversation).await.unwrap();
    assert_eq!((head.leaf, head.branched), (None, false));

    let branch = active_branch(&store, &user, &conversation, 4, Order::Newest).await;
    assert_eq!(seqs(&branch), [6, 5, 4, 3, 2, 1]);
    assert_eq!(find(&branch, 5).parent, Some(id(4)));
    assert_eq!(find(&branch, 1).parent, None);
    assert!(branch
        .iter()
        .all(|message| message.siblings == [message.id]));
    let oldest = active_branch(&store, &user, &conversation, 4, Order::Oldest).await;
    assert_eq!(seqs(&oldest), [1, 2, 3, 4, 5, 6]);

    // A turn goes on from its newest message, and an edit of an old message is a sibling.
    let target = TurnTarget::Existing(conversation.clone());
    let next = append_turn(&store, &user, &target, "q4", "a4")
        .await
        .unwrap();
    assert_eq!(next.user_message, id(7));
    let edit = append_turn_under(&store, &user, &conversation, Some(id(2)), "q2'", "a2'")
        .await
        .unwrap();
    let branch = active_branch(&store, &user, &conversation, 20, Order::Newest).await;
    assert_eq!(contents(&branch), ["a2'", "q2'", "a1", "q1"]);
    assert_eq!(
        find(&branch, edit.user_message.seq()).siblings,
        vec![id(3), edit.user_message]
    );
    let switched = store
        .switch_branch(&user, &conversation, id(3))
        .await
        .unwrap();
    assert_eq!(
        switched.leaf,
        Some(id(8)),
        "the line's end, then the turn after it"
    );
}

#[tokio::test]
async fn deleting_a_conversation_with_branches_leaves_nothing_of_it() {
    let stack = stack().await;
    let store = store().await;
    let user = UserId::parse(&unique("u")).unwrap();
    let conversation = three_turns(&store, &user).await;
    regenerate(&store, &user, &conversation, id(3), "a2'")
        .await
        .unwrap();
    append_turn_under(&store, &user, &conversation, None, "q1'", "a1'")
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    store
        .delete_conversation(&user, &conversation, deadline)
        .await
        .unwrap();
    let left = stack
        .clients
        .dynamodb
        .query()
        .table_name(&stack.config.table_name)
        .key_condition_expression("PK = :pk")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(keys::partition(&user)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(left.count(), 0, "{:?}", left.items());
}
