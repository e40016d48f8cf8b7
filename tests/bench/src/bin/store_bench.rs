//! `store-bench`: what one chat turn costs the store, for a short and a long history.
//!
//! For a conversation with 10 prior messages and one with 10,000, it runs the budget's admission
//! (`admit_turn`), the turn's write (`reserve_turn` + `write_turn`) with the budget's settlement
//! (`settle`) beside it, and `recent_messages(20)` (what a chat turn does) and prints the DynamoDB work per turn as the
//! service reports it (`ReturnConsumedCapacity=TOTAL`: capacity units, items read, calls) and the
//! p50/p95 latency of each call. The two conversations take turns, so both meet the emulator in
//! the same state. Run it with `make bench-store` (against the local stack).
//!
//! The long history is written with `BatchWriteItem` (setup, not measured), shaped exactly as
//! `append_turn` writes messages.

use std::time::{Duration, Instant};

use bench::percentile;
use e2e::{append_turn_completing, conversation_with_history, stack, unique};
use shared::{
    config::{BudgetPolicy, DailyBudget},
    domain::{ConversationId, UserId},
    store::{BranchEnd, ConversationStore, TurnTarget},
};

/// Unlimited budgets: the admission does the same work whatever their size.
const POLICY: BudgetPolicy = BudgetPolicy {
    daily: DailyBudget {
        turns: 0,
        tokens: 0,
    },
    per_minute: 0,
};

const TURNS: usize = 30;
const CONTEXT: u16 = 20;
const WARM_UP: usize = 5;

/// One conversation's measured turns.
#[derive(Default)]
struct Run {
    append: Vec<Duration>,
    recent: Vec<Duration>,
    read_units: f64,
    write_units: f64,
    items_read: u64,
    calls: u64,
}

/// One chat turn's store work; returns how long each of its two calls took.
async fn turn_once(
    store: &ConversationStore,
    user: &UserId,
    id: &ConversationId,
    turn: usize,
) -> (Duration, Duration, usize) {
    let started = Instant::now();
    let grant = store
        .admit_turn(user, 2_100, &POLICY)
        .await
        .expect("admit_turn");
    // As the chat function does: the settlement runs beside the write.
    let target = TurnTarget::Existing(id.clone());
    let question = format!("question {turn}");
    let (stored, ()) = tokio::join!(
        append_turn_completing(
            store,
            user,
            &target,
            &question,
            "an answer of some length",
            None,
            Some(grant.erasures()),
        ),
        store.settle(&grant, 130),
    );
    stored.expect("append_turn");
    let append = started.elapsed();
    let started = Instant::now();
    let context = store
        .recent_messages(user, id, BranchEnd::Newest, CONTEXT)
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
        "store benchmark: {TURNS} turns each (admit_turn + the turn's write beside its settlement + recent_messages({CONTEXT})), after {WARM_UP} warm-up turns"
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
    // Warm-up turns fill the short conversation's context window, then the work is steady.
    for turn in 0..WARM_UP {
        for (_, id) in &conversations {
            turn_once(&store, &user, id, turn).await;
        }
    }
    // The two conversations take turns, so that both meet the emulator in the same state.
    let mut runs: Vec<Run> = conversations.iter().map(|_| Run::default()).collect();
    for turn in 0..TURNS {
        for ((_, id), run) in conversations.iter().zip(&mut runs) {
            let before = store.consumption();
            let (append_took, recent_took, context) = turn_once(&store, &user, id, turn).await;
            let after = store.consumption();
            assert_eq!(context, usize::from(CONTEXT), "a full context window");
            run.append.push(append_took);
            run.recent.push(recent_took);
            run.read_units += after.read_units - before.read_units;
            run.write_units += after.write_units - before.write_units;
            run.items_read += after.items_read - before.items_read;
            run.calls += after.calls - before.calls;
        }
    }
    for ((prior, _), run) in conversations.iter().zip(&mut runs) {
        run.append.sort();
        run.recent.sort();
        let per_turn = |total: f64| total / TURNS as f64;
        println!(
            "{:>9} | {:>10.2} {:>10.2} {:>10.1} {:>6.1} | {:>12} {:>12} | {:>12} {:>12}",
            prior,
            per_turn(run.read_units),
            per_turn(run.write_units),
            per_turn(run.items_read as f64),
            per_turn(run.calls as f64),
            ms(percentile(&run.append, 50)),
            ms(percentile(&run.append, 95)),
            ms(percentile(&run.recent, 50)),
            ms(percentile(&run.recent, 95)),
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
