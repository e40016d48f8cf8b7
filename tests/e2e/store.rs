//! The conversation store against the local stack: concurrency, pagination, retention, deletion.

use aws_sdk_dynamodb::types::AttributeValue;
use std::{collections::HashMap, sync::Arc, time::Duration};

use e2e::{
    append_turn, message_id, new_conversation, put_raw, set_expiry, stack, store, user, user_items,
};
use shared::{
    domain::{ConversationId, Role, UserId},
    store::{
        keys, BranchEnd, Claim, ConversationStore, Cursor, IdempotencyKey, Message, Order,
        PageRequest, StoreError, TurnTarget,
    },
};
use tokio::{sync::Semaphore, task::JoinSet, time::Instant};

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

/// Every message of a conversation, oldest first, read in pages of `limit`.
async fn read_all(
    store: &ConversationStore,
    user: &UserId,
    id: &ConversationId,
    limit: u16,
    order: Order,
) -> (Vec<Message>, usize) {
    let mut messages = Vec::new();
    let mut cursor: Option<Cursor> = None;
    let mut pages = 0;
    loop {
        let page = store
            .list_messages(
                user,
                id,
                &PageRequest {
                    limit,
                    cursor: cursor.take(),
                },
                order,
            )
            .await
            .expect("a page");
        pages += 1;
        assert!(page.items.len() <= usize::from(limit));
        messages.extend(page.items);
        match page.next {
            Some(next) => cursor = Some(Cursor::decode(&next.encode()).expect("our own cursor")),
            None => return (messages, pages),
        }
    }
}

/// Appends `turns` turns to each conversation at once, `in_flight` at a time, alternating between
/// two separately built stores (two SDK clients, as two Lambda environments would have).
async fn append_concurrently(
    user: &UserId,
    conversations: &[ConversationId],
    turns: usize,
    in_flight: usize,
) {
    let stores = [Arc::new(store().await), Arc::new(store().await)];
    let permits = Arc::new(Semaphore::new(in_flight));
    let mut tasks = JoinSet::new();
    for turn in 0..turns {
        for (index, id) in conversations.iter().enumerate() {
            let store = Arc::clone(&stores[(turn + index) % 2]);
            let permits = Arc::clone(&permits);
            let (user, id) = (user.clone(), id.clone());
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await.expect("open semaphore");
                append_turn(
                    &store,
                    &user,
                    &TurnTarget::Existing(id),
                    &format!("question {turn}"),
                    &format!("answer {turn}"),
                )
                .await
            });
        }
    }
    let mut succeeded = 0;
    while let Some(result) = tasks.join_next().await {
        result.expect("the task ran").expect("every turn is stored");
        succeeded += 1;
    }
    assert_eq!(succeeded, turns * conversations.len());
}

/// Every message item of a conversation as stored, in key order: (seq, parent, role, content).
async fn every_message(user: &UserId, id: &ConversationId) -> Vec<(u64, u64, String, String)> {
    let stack = stack().await;
    let mut found = Vec::new();
    let mut start = None;
    loop {
        let output = stack
            .clients
            .dynamodb
            .query()
            .table_name(&stack.config.table_name)
            .key_condition_expression("PK = :pk AND begins_with(SK, :prefix)")
            .expression_attribute_values(":pk", AttributeValue::S(keys::partition(user)))
            .expression_attribute_values(":prefix", AttributeValue::S(keys::messages(id)))
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("read the messages");
        for item in output.items() {
            let Some(keys::MessageKey::Message(seq)) =
                keys::message_key_of(item["SK"].as_s().unwrap())
            else {
                continue;
            };
            let text = |name: &str| item[name].as_s().unwrap().clone();
            let parent = item["parent"].as_n().unwrap().parse().unwrap();
            found.push((seq.seq(), parent, text("role"), text("content")));
        }
        match output.last_evaluated_key() {
            Some(key) => start = Some(key.clone()),
            None => return found,
        }
    }
}

/// Checks a conversation after concurrent turns: seqs 1..=n without gaps or duplicates, each
/// question directly followed by its own answer, every turn exactly once, every message under a
/// parent that exists, the head's count; and on the active branch, each message's siblings are
/// exactly its parent's children as stored (turns that raced from the same message are
/// alternatives of each other, none lost).
async fn assert_whole(store: &ConversationStore, user: &UserId, id: &ConversationId, turns: usize) {
    let messages = every_message(user, id).await;
    // The first turn created the conversation ("question first").
    assert_eq!(messages.len(), 2 * (turns + 1), "messages stored");
    let seqs: Vec<u64> = messages.iter().map(|m| m.0).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(
        seqs, expected,
        "sequence numbers strictly increasing, no gap, no duplicate"
    );
    let mut seen = HashMap::new();
    for pair in messages[2..].chunks(2) {
        assert_eq!(pair[0].2, "user");
        assert_eq!(pair[1].2, "assistant");
        assert_eq!(pair[1].1, pair[0].0, "a reply is its question's child");
        assert!(pair[0].1 < pair[0].0, "a parent is older than its child");
        assert_eq!(
            messages[pair[0].1 as usize - 1].2,
            "assistant",
            "a question answers a reply"
        );
        let turn = pair[0].3.strip_prefix("question ").expect("a question");
        assert_eq!(
            pair[1].3,
            format!("answer {turn}"),
            "a reply follows its own question"
        );
        *seen.entry(turn.to_owned()).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), turns, "every turn present");
    assert!(seen.values().all(|&count| count == 1), "no turn twice");
    let head = store.conversation(user, id).await.expect("the head");
    assert_eq!(
        head.message_count,
        messages.len() as u64,
        "the head counts what is stored"
    );
    let mut children: HashMap<u64, Vec<u64>> = HashMap::new();
    for (seq, parent, _, _) in &messages {
        children.entry(*parent).or_default().push(*seq);
    }
    let branch = store
        .recent_messages(user, id, BranchEnd::Newest, 100)
        .await
        .expect("the active branch");
    assert_eq!(branch.last().map(|m| m.id), head.leaf);
    for message in &branch {
        let parent = message.parent.map_or(0, |p| p.seq());
        let siblings: Vec<u64> = message.siblings.iter().map(|s| s.seq()).collect();
        assert_eq!(
            siblings, children[&parent],
            "the siblings of {}",
            message.id
        );
    }
}

/// A new conversation of `user`, its first turn "question first" / "answer first".
async fn start_conversation(store: &ConversationStore, user: &UserId) -> ConversationId {
    e2e::start_conversation(store, user, "first", "question first", "answer first").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_turns_on_one_conversation_are_all_stored_whole() {
    let store = store().await;
    let user = user();
    let id = start_conversation(&store, &user).await;
    append_concurrently(&user, std::slice::from_ref(&id), 200, 50).await;
    assert_whole(&store, &user, &id, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_turns_across_twenty_conversations_of_one_user_are_all_stored_whole() {
    let store = store().await;
    let user = user();
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(start_conversation(&store, &user).await);
    }
    append_concurrently(&user, &ids, 10, 50).await;
    for id in &ids {
        assert_whole(&store, &user, id, 10).await;
    }
    let page = store
        .list_conversations(
            &user,
            &PageRequest {
                limit: 100,
                cursor: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 20);
    assert!(page.next.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_messages_read_in_pages_of_37_in_both_orders() {
    let store = store().await;
    let user = user();
    let id = start_conversation(&store, &user).await;
    e2e::seed_messages(&stack().await.config.table_name, &user, &id, 3, 1000).await;

    let (oldest_first, pages) = read_all(&store, &user, &id, 37, Order::Oldest).await;
    assert_eq!(
        pages, 28,
        "1000 / 37 rounded up; the last page has no cursor"
    );
    let seqs: Vec<u64> = oldest_first.iter().map(|m| m.id.seq()).collect();
    assert_eq!(seqs, (1..=1000).collect::<Vec<u64>>());

    let (newest_first, pages) = read_all(&store, &user, &id, 37, Order::Newest).await;
    assert_eq!(pages, 28);
    let seqs: Vec<u64> = newest_first.iter().map(|m| m.id.seq()).collect();
    assert_eq!(seqs, (1..=1000).rev().collect::<Vec<u64>>());
}

#[tokio::test]
async fn an_exact_multiple_of_the_page_size_ends_without_an_empty_page() {
    let store = store().await;
    let user = user();
    let id = start_conversation(&store, &user).await;
    append_turn(&store, &user, &TurnTarget::Existing(id.clone()), "q", "a")
        .await
        .unwrap();
    let (messages, pages) = read_all(&store, &user, &id, 2, Order::Oldest).await;
    assert_eq!((messages.len(), pages), (4, 2));
}

#[tokio::test]
async fn recent_messages_are_the_last_n_oldest_first() {
    let store = store().await;
    let user = user();
    let id = start_conversation(&store, &user).await;
    for turn in 0..5 {
        append_turn(
            &store,
            &user,
            &TurnTarget::Existing(id.clone()),
            &format!("question {turn}"),
            &format!("answer {turn}"),
        )
        .await
        .unwrap();
    }
    let recent = store
        .recent_messages(&user, &id, BranchEnd::Newest, 3)
        .await
        .unwrap();
    let seqs: Vec<u64> = recent.iter().map(|m| m.id.seq()).collect();
    assert_eq!(seqs, [10, 11, 12]);
    assert_eq!(recent[2].content, "answer 4");
    assert_eq!(recent[2].provider.as_deref(), Some("echo"));
    assert_eq!(recent[2].usage.map(|u| u.output_tokens), Some(5));
    assert_eq!(recent[1].role, Role::User);
    assert!(recent[1].provider.is_none());

    let unknown = store
        .recent_messages(&user, &ConversationId::generate(), BranchEnd::Newest, 3)
        .await;
    assert!(matches!(unknown, Err(StoreError::NotFound)));
}

#[tokio::test]
async fn a_turn_on_an_unknown_or_foreign_conversation_is_not_found_and_stores_nothing() {
    let store = store().await;
    let (owner, stranger) = (user(), user());
    let id = start_conversation(&store, &owner).await;
    let foreign = append_turn(
        &store,
        &stranger,
        &TurnTarget::Existing(id.clone()),
        "q",
        "a",
    )
    .await;
    assert!(matches!(foreign, Err(StoreError::NotFound)), "{foreign:?}");
    let unknown = append_turn(
        &store,
        &owner,
        &TurnTarget::Existing(ConversationId::generate()),
        "q",
        "a",
    )
    .await;
    assert!(matches!(unknown, Err(StoreError::NotFound)), "{unknown:?}");
    assert_eq!(user_items(&stranger).await.len(), 0);
    assert_eq!(
        user_items(&owner).await.len(),
        3,
        "head and the first turn only"
    );
}

#[tokio::test]
async fn a_new_conversation_id_is_never_reused() {
    let store = store().await;
    let user = user();
    let target = new_conversation("taken");
    append_turn(&store, &user, &target, "q", "a").await.unwrap();
    let again = append_turn(&store, &user, &target, "q2", "a2").await;
    assert!(
        matches!(again, Err(StoreError::Conflict { .. })),
        "{again:?}"
    );
    let (messages, _) = read_all(&store, &user, target.id(), 10, Order::Oldest).await;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].content, "q");
}

#[tokio::test]
async fn retention_stamps_items_and_reads_skip_expired_ones() {
    let stack = stack().await;
    let store = ConversationStore::new(
        stack.clients.dynamodb.clone(),
        stack.config.table_name.clone(),
        Some(Duration::from_secs(86_400)),
    );
    let user = user();
    let turn = append_turn(&store, &user, &new_conversation("kept a day"), "q", "a")
        .await
        .unwrap();
    let id = turn.conversation_id;
    let items = user_items(&user).await;
    let now = chrono_now();
    for item in &items {
        let expires_at: i64 = item["expires_at"].as_n().unwrap().parse().unwrap();
        assert!(
            (expires_at - now - 86_400).abs() < 60,
            "expires_at set a day ahead"
        );
    }

    // Make the first message look expired, as DynamoDB may keep it for a while past its time.
    set_expiry(&user, &keys::message(&id, message_id(1)), now - 10).await;
    let recent = store
        .recent_messages(&user, &id, BranchEnd::Newest, 10)
        .await
        .unwrap();
    assert_eq!(recent.iter().map(|m| m.id.seq()).collect::<Vec<_>>(), [2]);
    let (listed, _) = read_all(&store, &user, &id, 10, Order::Oldest).await;
    assert_eq!(listed.len(), 1);

    // An expired head makes the whole conversation unknown, and a turn cannot revive it.
    set_expiry(&user, &keys::head(&id), now - 10).await;
    assert!(matches!(
        store.conversation(&user, &id).await,
        Err(StoreError::NotFound)
    ));
    let revive = append_turn(&store, &user, &TurnTarget::Existing(id.clone()), "q", "a").await;
    assert!(matches!(revive, Err(StoreError::NotFound)));
    let listed = store
        .list_conversations(&user, &PageRequest::default())
        .await
        .unwrap();
    assert!(listed.items.is_empty());
}

#[tokio::test]
async fn deleting_a_conversation_removes_its_messages_and_feedback_only() {
    let store = store().await;
    let user = user();
    let doomed = start_conversation(&store, &user).await;
    let kept = start_conversation(&store, &user).await;
    for _ in 0..15 {
        append_turn(
            &store,
            &user,
            &TurnTarget::Existing(doomed.clone()),
            "q",
            "a",
        )
        .await
        .unwrap();
    }
    put_raw(&user, &keys::feedback(&doomed, message_id(2))).await;
    put_raw(&user, &keys::feedback(&kept, message_id(2))).await;

    let deleted = store
        .delete_conversation(&user, &doomed, deadline())
        .await
        .unwrap();
    assert_eq!(deleted, 32 + 1 + 1, "32 messages, one feedback, the head");
    let left: Vec<String> = user_items(&user)
        .await
        .iter()
        .map(|item| item["SK"].as_s().unwrap().clone())
        .collect();
    assert!(
        left.iter().all(|sk| !sk.contains(doomed.as_str())),
        "{left:?}"
    );
    assert_eq!(
        left.len(),
        4,
        "the kept conversation: head, two messages, feedback"
    );
    let again = store.delete_conversation(&user, &doomed, deadline()).await;
    assert!(matches!(again, Err(StoreError::NotFound)));
}

#[tokio::test]
async fn erasure_removes_every_kind_of_item_beyond_one_batch() {
    let store = store().await;
    let (user, bystander) = (user(), user());
    let mut ids = Vec::new();
    for _ in 0..26 {
        ids.push(start_conversation(&store, &user).await);
    }
    for (n, id) in ids.iter().enumerate() {
        put_raw(&user, &keys::feedback(id, message_id(2))).await;
        put_raw(
            &user,
            &keys::idempotency(&shared::store::IdempotencyKey::parse(&format!("key-{n}")).unwrap()),
        )
        .await;
    }
    let bystanders = start_conversation(&store, &bystander).await;
    assert_eq!(user_items(&user).await.len(), 26 * 5);

    let deleted = store.erase_user(&user, deadline()).await.unwrap();
    assert_eq!(deleted, 26 * 5);
    assert!(user_items(&user).await.is_empty());
    assert_eq!(user_items(&bystander).await.len(), 3);
    assert!(store.conversation(&bystander, &bystanders).await.is_ok());
}

#[tokio::test]
async fn an_erasure_past_its_deadline_says_how_far_it_got() {
    let store = store().await;
    let user = user();
    start_conversation(&store, &user).await;
    let err = store
        .erase_user(&user, Instant::now() - Duration::from_millis(1))
        .await
        .expect_err("no time left");
    // Heads go first: the one head is what remained when time ran out.
    assert!(
        matches!(
            err,
            StoreError::Incomplete {
                deleted: 0,
                remaining: 1
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("deleted 0"), "{err}");
    assert_eq!(user_items(&user).await.len(), 3);
}

/// A store whose turn transactions wait at `gate` until the test opens it.
async fn gated_store() -> (ConversationStore, e2e::Gate, tokio::task::JoinHandle<()>) {
    let stack = stack().await;
    let gate = e2e::Gate::default();
    let (address, proxy) = e2e::proxy("TransactWriteItems", e2e::Fault::Gate(gate.clone())).await;
    let db = e2e::dynamodb_at(address, Duration::from_secs(60)).await;
    let store = ConversationStore::new(db, stack.config.table_name.clone(), None);
    (store, gate, proxy)
}

/// A turn that reserved its numbers before a deletion and writes after it: the deletion wins, the
/// turn stores nothing, and nothing of the conversation is left.
async fn race_a_turn_against(
    delete: impl AsyncFnOnce(&ConversationStore, &UserId, &ConversationId),
) {
    let store = store().await;
    let user = user();
    let id = start_conversation(&store, &user).await;
    let (gated, gate, proxy) = gated_store().await;
    let turn = {
        let (user, id) = (user.clone(), id.clone());
        tokio::spawn(async move {
            append_turn(&gated, &user, &TurnTarget::Existing(id), "late", "late").await
        })
    };
    gate.arrived().await; // the turn has reserved its numbers; its transaction waits
    delete(&store, &user, &id).await;
    gate.open();
    let result = turn.await.expect("the turn ran");
    proxy.abort();
    assert!(matches!(result, Err(StoreError::NotFound)), "{result:?}");
    let left: Vec<String> = user_items(&user)
        .await
        .iter()
        .map(|item| item["SK"].as_s().unwrap().clone())
        .filter(|sort_key| sort_key.contains(id.as_str()))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn a_turn_racing_the_deletion_of_its_conversation_leaves_nothing_behind() {
    race_a_turn_against(async |store, user, id| {
        store
            .delete_conversation(user, id, deadline())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_turn_racing_an_erasure_leaves_nothing_behind() {
    race_a_turn_against(async |store, user, _| {
        store.erase_user(user, deadline()).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn deleting_a_conversation_deletes_the_idempotency_records_of_its_turns() {
    let store = store().await;
    let user = user();
    let doomed = start_conversation(&store, &user).await;
    let kept = start_conversation(&store, &user).await;
    for (n, id) in [&doomed, &kept].into_iter().enumerate() {
        let key = IdempotencyKey::parse(&format!("key-{n}")).unwrap();
        let far = std::time::SystemTime::now() + Duration::from_secs(60);
        let Claim::Run(Some(lease)) = store.claim(&user, Some(&key), "hash", far).await.unwrap()
        else {
            panic!("a fresh key is claimed");
        };
        e2e::append_turn_completing(
            &store,
            &user,
            &TurnTarget::Existing(id.clone()),
            "q",
            "a",
            Some((&lease, &|_| "{}".to_owned())),
            None,
        )
        .await
        .unwrap();
    }
    store
        .delete_conversation(&user, &doomed, deadline())
        .await
        .unwrap();
    let records: Vec<String> = user_items(&user)
        .await
        .iter()
        .map(|item| item["SK"].as_s().unwrap().clone())
        .filter(|sort_key| sort_key.starts_with(keys::idempotency_records()))
        .collect();
    let kept_key = keys::idempotency(&IdempotencyKey::parse("key-1").unwrap());
    assert_eq!(records, [kept_key], "only the kept conversation's record");
}

/// The one test that pins the stored layout on purpose: a change of key scheme must be a
/// decision (existing tables hold these keys), not an accident.
#[tokio::test]
async fn the_stored_key_layout_is_pinned() {
    let store = store().await;
    let user = user();
    let id = start_conversation(&store, &user).await;
    let key = IdempotencyKey::parse("pinned").unwrap();
    let far = std::time::SystemTime::now() + Duration::from_secs(60);
    store.claim(&user, Some(&key), "hash", far).await.unwrap();
    let mut sort_keys: Vec<String> = user_items(&user)
        .await
        .iter()
        .map(|item| {
            assert_eq!(item["PK"].as_s().unwrap(), &format!("USER#{user}"));
            item["SK"].as_s().unwrap().clone()
        })
        .collect();
    sort_keys.sort();
    assert_eq!(
        sort_keys,
        [
            format!("CONV#{id}"),
            "IDEM#pinned".to_owned(),
            format!("MSG#{id}#000000000001"),
            format!("MSG#{id}#000000000002"),
        ]
    );
    assert_eq!(
        keys::feedback(&id, message_id(2)),
        format!("FB#{id}#000000000002")
    );
}

/// The time now, in seconds since the epoch (as `expires_at` holds it).
fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn a_hung_table_is_unavailable_within_the_operation_timeout() {
    // A server that accepts connections and never answers stands in for a saturated table.
    let (address, hold) = e2e::hung_endpoint().await;
    let db = e2e::dynamodb_at(address, Duration::from_millis(300)).await;
    let store = ConversationStore::new(db, "any", None);
    let started = std::time::Instant::now();
    let result = append_turn(&store, &user(), &new_conversation("t"), "q", "a").await;
    hold.abort();
    // Every attempt timed out, so nobody knows whether one landed: the error says so.
    assert!(matches!(result, Err(StoreError::Unconfirmed)), "{result:?}");
    // Eight attempts of at most 300 ms each, with their backoff: bounded, never hanging.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let response = shared::http::ApiError::from(result.unwrap_err()).to_response("req");
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
}
