//! `store-bench`: what one chat turn and one page of messages cost the store, for a short and a
//! long history, on a line and with branches.
//!
//! For a conversation with 10 prior messages, one with 10,000, and one with 10,000 and branches
//! at several depths (an edit and regenerations deep in the history, and near its end), it runs
//! the budget's admission (`admit_turn`), the turn's write (`reserve_turn` + `write_turn`) with
//! the budget's settlement (`settle`) beside it, and `recent_messages(20)` (what a chat turn
//! does), then reads the newest page of 20 of the active branch (`list_messages`, what the client
//! opens a conversation with). It prints the DynamoDB work per turn as the service reports it
//! (`ReturnConsumedCapacity=TOTAL`: capacity units, items read, calls), the page's items and
//! calls, and the p50/p95 latency of each. On the branched conversation every other measured turn
//! regenerates the reply before it, so that the context and the page always cross ten branch
//! points. The conversations take turns, so all meet the emulator in the same state. Run it with
//! `make bench-store` (against the local stack).
//!
//! The long histories are written with `BatchWriteItem` (setup, not measured), shaped exactly as
//! `append_turn` writes messages on a line; the branches through the store.

use std::time::{Duration, Instant};

use bench::percentile;
use e2e::{
    append_turn_completing, append_turn_under, conversation_with_history, regenerate, stack, unique,
};
use shared::{
    config::{BudgetPolicy, DailyBudget},
    domain::{ConversationId, MessageId, UserId},
    store::{BranchEnd, ConversationStore, Order, PageRequest, TurnTarget},
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
    page: Vec<Duration>,
    page_items: u64,
    page_calls: u64,
    read_units: f64,
    write_units: f64,
    items_read: u64,
    calls: u64,
}

/// One conversation of the benchmark.
struct Subject {
    label: &'static str,
    id: ConversationId,
    /// Every other turn regenerates the reply before it.
    regenerates: bool,
    /// The last stored turn's user message.
    question: Option<MessageId>,
}

/// One chat turn's store work; returns how long its write and its context read took.
async fn turn_once(
    store: &ConversationStore,
    user: &UserId,
    subject: &mut Subject,
    turn: usize,
) -> (Duration, Duration, usize) {
    let id = &subject.id;
    let started = Instant::now();
    let grant = store
        .admit_turn(user, 2_100, &POLICY)
        .await
        .expect("admit_turn");
    // As the chat function does: the settlement runs beside the write.
    let target = TurnTarget::Existing(id.clone());
    let question = format!("question {turn}");
    let regenerating = subject.regenerates && turn % 2 == 1;
    let write = async {
        match subject.question {
            Some(answering) if regenerating => {
                regenerate(store, user, id, answering, "another answer of some length").await
            }
            _ => {
                append_turn_completing(
                    store,
                    user,
                    &target,
                    &question,
                    "an answer of some length",
                    None,
                    Some(grant.erasures()),
                )
                .await
            }
        }
    };
    let (stored, ()) = tokio::join!(write, store.settle(&grant, 130));
    subject.question = Some(stored.expect("append_turn").user_message);
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

/// The newest page of the active branch, as the client opens a conversation.
async fn page_once(store: &ConversationStore, user: &UserId, id: &ConversationId) -> Duration {
    let started = Instant::now();
    let page = store
        .list_messages(
            user,
            id,
            &PageRequest {
                limit: CONTEXT,
                cursor: None,
            },
            Order::Newest,
        )
        .await
        .expect("list_messages");
    assert_eq!(page.items.len(), usize::from(CONTEXT));
    started.elapsed()
}

/// A conversation of 10,000 messages with branches at several depths: a regeneration of the
/// reply at depth 100, an edit at 2,000, a regeneration at 5,000, then near the end a
/// regeneration, an edit and a regeneration on the edit, each on the branch it makes active.
async fn branched(store: &ConversationStore, table: &str, user: &UserId) -> ConversationId {
    let id = conversation_with_history(store, table, user, 10_000).await;
    let seq = |n: u64| MessageId::new(n).expect("an id");
    regenerate(store, user, &id, seq(99), "deep regeneration")
        .await
        .expect("regenerate");
    append_turn_under(store, user, &id, Some(seq(2_000)), "deep edit", "r")
        .await
        .expect("edit");
    regenerate(store, user, &id, seq(4_999), "middle regeneration")
        .await
        .expect("regenerate");
    regenerate(store, user, &id, seq(9_999), "late regeneration")
        .await
        .expect("regenerate");
    let edit = append_turn_under(store, user, &id, Some(seq(9_996)), "late edit", "r")
        .await
        .expect("edit");
    regenerate(store, user, &id, edit.user_message, "the edit regenerated")
        .await
        .expect("regenerate");
    id
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
        "store benchmark: {TURNS} turns each (admit_turn + the turn's write beside its settlement + recent_messages({CONTEXT})), then a page of {CONTEXT} newest first, after {WARM_UP} warm-up turns"
    );
    println!(
        "{:>17} | {:>8} {:>8} {:>10} {:>5} | {:>10} {:>10} | {:>10} {:>10} | {:>10} {:>10} {:>10}",
        "history",
        "read CU",
        "write CU",
        "items read",
        "calls",
        "append p50",
        "append p95",
        "recent p50",
        "recent p95",
        "page items",
        "page calls",
        "page p50"
    );
    // Every conversation exists before any is measured, so all see the same table.
    let table = &stack.config.table_name;
    let mut subjects = Vec::new();
    for (label, prior) in [("10", 10u64), ("10,000", 10_000)] {
        subjects.push(Subject {
            label,
            id: conversation_with_history(&store, table, &user, prior).await,
            regenerates: false,
            question: None,
        });
    }
    subjects.push(Subject {
        label: "10,000 + branches",
        id: branched(&store, table, &user).await,
        regenerates: true,
        question: None,
    });
    // Warm-up turns fill the short conversation's context window, then the work is steady.
    for turn in 0..WARM_UP {
        for subject in &mut subjects {
            turn_once(&store, &user, subject, turn).await;
        }
    }
    // The conversations take turns, so that all meet the emulator in the same state.
    let mut runs: Vec<Run> = subjects.iter().map(|_| Run::default()).collect();
    for turn in 0..TURNS {
        for (subject, run) in subjects.iter_mut().zip(&mut runs) {
            let before = store.consumption();
            let (append_took, recent_took, context) = turn_once(&store, &user, subject, turn).await;
            let after = store.consumption();
            assert_eq!(context, usize::from(CONTEXT), "a full context window");
            run.append.push(append_took);
            run.recent.push(recent_took);
            run.read_units += after.read_units - before.read_units;
            run.write_units += after.write_units - before.write_units;
            run.items_read += after.items_read - before.items_read;
            run.calls += after.calls - before.calls;
            let before = store.consumption();
            run.page.push(page_once(&store, &user, &subject.id).await);
            let after = store.consumption();
            run.page_items += after.items_read - before.items_read;
            run.page_calls += after.calls - before.calls;
        }
    }
    for (subject, run) in subjects.iter().zip(&mut runs) {
        run.append.sort();
        run.recent.sort();
        run.page.sort();
        let per_turn = |total: f64| total / TURNS as f64;
        println!(
            "{:>17} | {:>8.2} {:>8.2} {:>10.1} {:>5.1} | {:>10} {:>10} | {:>10} {:>10} | {:>10.1} {:>10.1} {:>10}",
            subject.label,
            per_turn(run.read_units),
            per_turn(run.write_units),
            per_turn(run.items_read as f64),
            per_turn(run.calls as f64),
            ms(percentile(&run.append, 50)),
            ms(percentile(&run.append, 95)),
            ms(percentile(&run.recent, 50)),
            ms(percentile(&run.recent, 95)),
            per_turn(run.page_items as f64),
            per_turn(run.page_calls as f64),
            ms(percentile(&run.page, 50)),
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
