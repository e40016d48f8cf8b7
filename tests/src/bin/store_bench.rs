//! `store-bench`: what one chat turn costs the store, for a short and a long history.
//!
//! For a conversation with 10 prior messages and one with 10,000, it runs `append_turn` followed
//! by `recent_messages(20)` (what a chat turn does) and prints the DynamoDB work per turn as the
//! service reports it (`ReturnConsumedCapacity=TOTAL`: capacity units, items read, calls) and the
//! p50/p95 latency of each call. Run it with `make bench-store` (against the local stack).
//!
//! The long history is written with `BatchWriteItem` (setup, not measured), shaped exactly as
//! `append_turn` writes messages.

use std::time::{Duration, Instant};

use e2e::{
    bench::{self, percentile},
    conversation_with_history, reply, stack, unique,
};
use shared::{
    identity::UserId,
    store::{ConversationId, ConversationStore, TurnTarget},
};

const TURNS: usize = 30;
const CONTEXT: u16 = 20;
const WARM_UP: usize = 5;

/// One chat turn's store work; returns how long each of its two calls took.
async fn turn_once(
    store: &ConversationStore,
    user: &UserId,
    id: &ConversationId,
    turn: usize,
) -> (Duration, Duration, usize) {
    let started = Instant::now();
    store
        .append_turn(
            user,
            &TurnTarget::Existing(id.clone()),
            &format!("question {turn}"),
            &reply("an answer of some length"),
        )
        .await
        .expect("append_turn");
    let append = started.elapsed();
    let started = Instant::now();
    let context = store
        .recent_messages(user, id, CONTEXT)
        .await
        .expect("recent_messages");
    let recent = started.elapsed();
    assert!(context.len() <= usize::from(CONTEXT));
    (append, recent, context.len())
}

#[tokio::main]
async fn main() {
    let stack = stack().await;
    let store = ConversationStore::new(
        stack.clients.dynamodb.clone(),
        stack.config.table_name.clone(),
        None,
    );
    let user = UserId::parse(&unique("bench")).expect("a user id");
    println!(
        "store benchmark: {TURNS} turns each (append_turn + recent_messages({CONTEXT})), after {WARM_UP} warm-up turns"
    );
    println!(
        "{:>9} | {:>10} {:>10} {:>10} {:>6} | {:>12} {:>12} | {:>12} {:>12}",
        "history",
        "read CU",
        "write CU",
        "items read",
        "calls",
        "append p50",
        "append p95",
        "recent p50",
        "recent p95"
    );
    // Both conversations exist before either is measured, so both see the same table.
    let mut conversations = Vec::new();
    for prior in [10u64, 10_000] {
        conversations.push((
            prior,
            conversation_with_history(&store, &stack.config.table_name, &user, prior).await,
        ));
    }
    for (prior, id) in &conversations {
        // Warm-up turns fill the short conversation's context window, then the work is steady.
        for turn in 0..WARM_UP {
            turn_once(&store, &user, id, turn).await;
        }
        let mut append: Vec<Duration> = Vec::with_capacity(TURNS);
        let mut recent: Vec<Duration> = Vec::with_capacity(TURNS);
        let before = store.consumption();
        for turn in 0..TURNS {
            let (append_took, recent_took, context) = turn_once(&store, &user, id, turn).await;
            assert_eq!(context, usize::from(CONTEXT), "a full context window");
            append.push(append_took);
            recent.push(recent_took);
        }
        let after = store.consumption();
        append.sort();
        recent.sort();
        let per_turn = |a: f64, b: f64| (b - a) / TURNS as f64;
        println!(
            "{:>9} | {:>10.2} {:>10.2} {:>10.1} {:>6.1} | {:>12} {:>12} | {:>12} {:>12}",
            prior,
            per_turn(before.read_units, after.read_units),
            per_turn(before.write_units, after.write_units),
            per_turn(before.items_read as f64, after.items_read as f64),
            per_turn(before.calls as f64, after.calls as f64),
            ms(percentile(&append, 50)),
            ms(percentile(&append, 95)),
            ms(percentile(&recent, 50)),
            ms(percentile(&recent, 95)),
        );
    }
    let total = count_items(&stack).await;
    println!("(the table held {total} items; the local emulator's latency grows with that, DynamoDB's does not)");
}

async fn count_items(stack: &e2e::Stack) -> i64 {
    let output = stack
        .clients
        .dynamodb
        .describe_table()
        .table_name(&stack.config.table_name)
        .send()
        .await
        .expect("describe table");
    output
        .table()
        .and_then(|table| table.item_count())
        .unwrap_or(-1)
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", bench::ms(duration))
}
