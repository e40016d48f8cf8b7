//! Per-user budgets against the local DynamoDB: the concurrency bound, settlement, the day
//! boundary and the minute window (with an injected clock), the operator's override, erasure, and
//! what the chat function answers when a budget refuses.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use e2e::{chat_request, json_body, openai_reply_with_usage, stack, user, user_items, Item};
use lambda_http::http::StatusCode;
use serde_json::{json, Value};
use shared::{
    config::{BudgetPolicy, DailyBudget},
    domain::{Role, UserId},
    llm::ContextMessage,
    store::{ConversationStore, Exhausted, StoreError},
};
use wiremock::{matchers::method, Mock, MockServer, ResponseTemplate};

fn policy(turns: u64, tokens: u64, per_minute: u64) -> BudgetPolicy {
    BudgetPolicy {
        daily: DailyBudget { turns, tokens },
        per_minute,
    }
}

/// A store whose clock the test moves.
struct Clocked {
    store: ConversationStore,
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl Clocked {
    async fn at(start: &str) -> Self {
        let now = Arc::new(Mutex::new(start.parse::<DateTime<Utc>>().unwrap()));
        let clock = now.clone();
        let store = e2e::store()
            .await
            .with_clock(move || *clock.lock().unwrap());
        Self { store, now }
    }

    fn advance(&self, by: Duration) {
        *self.now.lock().unwrap() += by;
    }
}

/// The user's budget item as stored.
async fn usage_item(user: &UserId) -> Item {
    user_items(user)
        .await
        .into_iter()
        .find(e2e::is_budget_item)
        .expect("the user's budget item")
}

fn number(item: &Item, name: &str) -> i64 {
    item[name].as_n().unwrap().parse().unwrap()
}

#[tokio::test]
async fn fifty_concurrent_admissions_with_ten_turns_left_admit_exactly_ten() {
    let clocked = Arc::new(Clocked::at("2026-11-27T12:00:00Z").await);
    let rules = policy(12, 0, 0);
    let owner = user();
    for _ in 0..2 {
        clocked.store.admit_turn(&owner, 100, &rules).await.unwrap();
    }
    let mut attempts = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let clocked = clocked.clone();
        let owner = owner.clone();
        attempts.spawn(async move { clocked.store.admit_turn(&owner, 100, &rules).await });
    }
    let results = attempts.join_all().await;
    let admitted = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(StoreError::QuotaExceeded {
                    exhausted: Exhausted::Turns { limit: 12 },
                    ..
                })
            )
        })
        .count();
    assert_eq!((admitted, refused), (10, 40), "{results:?}");
    let item = usage_item(&owner).await;
    assert_eq!(number(&item, "turns"), 12);
    assert_eq!(number(&item, "turns_left"), 0);
    assert_eq!(number(&item, "tokens"), 1_200);
}

#[tokio::test]
async fn tokens_are_reserved_whole_so_a_day_is_never_overdrawn() {
    let clocked = Clocked::at("2026-11-27T12:00:00Z").await;
    let rules = policy(0, 1_000, 0);
    let owner = user();
    let first = clocked.store.admit_turn(&owner, 400, &rules).await.unwrap();
    clocked.store.admit_turn(&owner, 400, &rules).await.unwrap();
    // 200 left: a turn that may use 400 is refused, though it might have used less.
    let refused = clocked.store.admit_turn(&owner, 400, &rules).await;
    assert!(
        matches!(
            refused,
            Err(StoreError::QuotaExceeded {
                exhausted: Exhausted::Tokens {
                    limit: 1_000,
                    remaining: 200,
                    needed: 400
                },
                ..
            })
        ),
        "{refused:?}"
    );
    // A turn that stored nothing gives its reservation back; then there is room again.
    clocked.store.refund(&first).await;
    let usage = clocked.store.usage(&owner, &rules).await.unwrap();
    assert_eq!((usage.turns.used, usage.tokens.used), (1, 400));
    assert_eq!(usage.tokens.remaining, Some(600));
    clocked.store.admit_turn(&owner, 400, &rules).await.unwrap();
}

#[tokio::test]
async fn a_spent_day_is_refused_until_utc_midnight_and_the_next_day_starts_afresh() {
    let clocked = Clocked::at("2026-11-27T23:59:50Z").await;
    let rules = policy(2, 0, 0);
    let owner = user();
    for _ in 0..2 {
        clocked.store.admit_turn(&owner, 10, &rules).await.unwrap();
    }
    let refused = clocked.store.admit_turn(&owner, 10, &rules).await;
    assert!(
        matches!(
            refused,
            Err(StoreError::QuotaExceeded {
                retry_after_secs: 10,
                ..
            })
        ),
        "{refused:?}"
    );
    clocked.advance(Duration::seconds(15));
    let grant = clocked.store.admit_turn(&owner, 10, &rules).await.unwrap();
    assert_eq!(grant.usage.day.to_string(), "2026-11-28");
    assert_eq!(
        (grant.usage.turns.used, grant.usage.turns.remaining),
        (1, Some(1))
    );
    let item = usage_item(&owner).await;
    assert_eq!(item["day"].as_s().unwrap(), "2026-11-28");
    // Kept two days after its day, then removed by TTL.
    let expires = DateTime::<Utc>::from_timestamp(number(&item, "expires_at"), 0).unwrap();
    assert_eq!(expires.to_rfc3339(), "2026-12-01T00:00:00+00:00");
}

#[tokio::test]
async fn the_minute_window_refuses_until_the_next_minute() {
    let clocked = Clocked::at("2026-11-27T12:00:20Z").await;
    let rules = policy(0, 0, 3);
    let owner = user();
    for _ in 0..3 {
        clocked.store.admit_turn(&owner, 1, &rules).await.unwrap();
    }
    let refused = clocked.store.admit_turn(&owner, 1, &rules).await;
    assert!(
        matches!(
            refused,
            Err(StoreError::RateLimited {
                per_minute: 3,
                retry_after_secs: 40
            })
        ),
        "{refused:?}"
    );
    clocked.advance(Duration::seconds(40));
    let grant = clocked.store.admit_turn(&owner, 1, &rules).await.unwrap();
    assert_eq!(grant.usage.minute.remaining, Some(2));
    // Old minutes' counters do not pile up in the item.
    clocked.advance(Duration::seconds(60));
    clocked.store.admit_turn(&owner, 1, &rules).await.unwrap();
    let windows = usage_item(&owner)
        .await
        .keys()
        .filter(|name| name.starts_with('w'))
        .count();
    assert_eq!(windows, 1);
}

#[tokio::test]
async fn an_operator_budget_applies_at_once_and_on_later_days() {
    let clocked = Clocked::at("2026-11-27T12:00:00Z").await;
    let rules = policy(5, 0, 0);
    let owner = user();
    clocked.store.admit_turn(&owner, 10, &rules).await.unwrap();
    // Today is open: the new budget counts what was used.
    let usage = clocked
        .store
        .set_budget(
            &owner,
            Some(DailyBudget {
                turns: 2,
                tokens: 0,
            }),
            &rules,
        )
        .await
        .unwrap();
    assert_eq!(
        (usage.turns.limit, usage.turns.remaining),
        (Some(2), Some(1))
    );
    assert!(usage.overridden);
    clocked.store.admit_turn(&owner, 10, &rules).await.unwrap();
    assert!(matches!(
        clocked.store.admit_turn(&owner, 10, &rules).await,
        Err(StoreError::QuotaExceeded {
            exhausted: Exhausted::Turns { limit: 2 },
            ..
        })
    ));
    // The next day opens with the override, not the default, and keeps it (no TTL).
    clocked.advance(Duration::days(1));
    clocked.store.admit_turn(&owner, 10, &rules).await.unwrap();
    clocked.store.admit_turn(&owner, 10, &rules).await.unwrap();
    assert!(clocked.store.admit_turn(&owner, 10, &rules).await.is_err());
    assert!(!usage_item(&owner).await.contains_key("expires_at"));
    // Cleared: back to the default at once.
    let usage = clocked
        .store
        .set_budget(&owner, None, &rules)
        .await
        .unwrap();
    assert_eq!(
        (usage.turns.limit, usage.turns.remaining),
        (Some(5), Some(3))
    );
    assert!(!usage.overridden);
    assert!(usage_item(&owner).await.contains_key("expires_at"));

    // Set before the user's first turn of a day: the day opens with it.
    let newcomer = user();
    clocked
        .store
        .set_budget(
            &newcomer,
            Some(DailyBudget {
                turns: 1,
                tokens: 0,
            }),
            &rules,
        )
        .await
        .unwrap();
    clocked
        .store
        .admit_turn(&newcomer, 10, &rules)
        .await
        .unwrap();
    assert!(clocked
        .store
        .admit_turn(&newcomer, 10, &rules)
        .await
        .is_err());
}

#[tokio::test]
async fn erasing_all_data_keeps_the_budget() {
    let clocked = Clocked::at("2026-11-27T12:00:00Z").await;
    let rules = policy(1, 0, 0);
    let owner = user();
    clocked.store.admit_turn(&owner, 10, &rules).await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    clocked.store.erase_user(&owner, deadline).await.unwrap();
    assert!(matches!(
        clocked.store.admit_turn(&owner, 10, &rules).await,
        Err(StoreError::QuotaExceeded { .. })
    ));
    let items = user_items(&owner).await;
    assert_eq!(items.len(), 1, "only the budget item is kept");
}

// ---- Through the chat function ----

/// A chat function with the echo provider (or an OpenAI stub) and the given budgets.
async fn chat_state(rules: BudgetPolicy, openai: Option<&MockServer>) -> chat::State {
    chat_state_with(rules, openai, &[]).await
}

/// The same, with more of the chat configuration (`extra`).
async fn chat_state_with(
    rules: BudgetPolicy,
    openai: Option<&MockServer>,
    extra: &[(&str, &str)],
) -> chat::State {
    let stack = stack().await;
    let mut config = stack.config.clone();
    config.budget = rules;
    let chat_config = match openai {
        None => e2e::chat_config(&[("LLM_PROVIDERS", "echo"), ("MAX_OUTPUT_TOKENS", "50")]),
        Some(server) => {
            config.secret_id = e2e::secret_with(&json!({"openai_api_key": "sk-budget"})).await;
            let url = format!("{}/v1", server.uri());
            let mut pairs = vec![
                ("LLM_PROVIDERS", "openai"),
                ("OPENAI_BASE_URL", url.as_str()),
                ("MAX_OUTPUT_TOKENS", "50"),
            ];
            pairs.extend_from_slice(extra);
            e2e::chat_config(&pairs)
        }
    };
    e2e::chat_state(&config, chat_config, &stack.clients)
}

async fn send(
    state: &chat::State,
    owner: &UserId,
    message: &str,
) -> lambda_http::Response<shared::http::AnswerBody> {
    let body = json!({"message": message}).to_string();
    chat::handle(state, chat_request(Some(owner.as_str()), &[], &body)).await
}

fn header(
    response: &lambda_http::Response<shared::http::AnswerBody>,
    name: &str,
) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

#[tokio::test]
async fn fifty_concurrent_chat_turns_with_ten_left_answer_ten_and_the_counters_match_the_turns() {
    let state = Arc::new(chat_state(policy(12, 0, 0), None).await);
    let owner = user();
    for _ in 0..2 {
        assert_eq!(
            send(&state, &owner, "warm up").await.status(),
            StatusCode::OK
        );
    }
    let mut turns = tokio::task::JoinSet::new();
    for i in 0..50 {
        let state = state.clone();
        let owner = owner.clone();
        turns.spawn(async move {
            let response = send(&state, &owner, &format!("turn number {i}")).await;
            (response.status(), json_body(&response))
        });
    }
    let answers: Vec<(StatusCode, Value)> = turns.join_all().await;
    let ok = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::OK)
        .count();
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::TOO_MANY_REQUESTS)
        .map(|(_, body)| body)
        .collect();
    assert_eq!((ok, refused.len()), (10, 40), "{answers:?}");
    assert!(refused
        .iter()
        .all(|body| body["type"] == "urn:serverless-chat:problem:quota-exceeded"));

    // The counters agree with what is stored: 12 turns, and the tokens their replies report.
    let items = user_items(&owner).await;
    let replies: Vec<_> = items.iter().filter(|item| e2e::is_reply(item)).collect();
    assert_eq!(replies.len(), 12);
    let stored_tokens: i64 = replies
        .iter()
        .map(|item| number(item, "input_tokens") + number(item, "output_tokens"))
        .sum();
    let budget = usage_item(&owner).await;
    assert_eq!(number(&budget, "turns"), 12);
    assert_eq!(number(&budget, "tokens"), stored_tokens);
    assert_eq!(number(&budget, "turns_left"), 0);
}

#[tokio::test]
async fn a_refused_turn_calls_no_provider_stores_nothing_and_says_when_to_retry() {
    let openai = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(openai_reply_with_usage("hi", 7, 1))
        .expect(1)
        .mount(&openai)
        .await;
    let state = chat_state(policy(1, 0, 0), Some(&openai)).await;
    let owner = user();
    let first = send(&state, &owner, "hello").await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(header(&first, "ratelimit-limit").as_deref(), Some("1"));
    assert_eq!(header(&first, "ratelimit-remaining").as_deref(), Some("0"));
    let stored = user_items(&owner).await.len();

    let refused = send(&state, &owner, "again").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = header(&refused, "retry-after").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry_after), "{retry_after}");
    assert_eq!(
        header(&refused, "ratelimit-remaining").as_deref(),
        Some("0")
    );
    assert_eq!(
        header(&refused, "ratelimit-reset"),
        Some(retry_after.to_string())
    );
    let problem = json_body(&refused);
    assert_eq!(
        problem["type"],
        "urn:serverless-chat:problem:quota-exceeded"
    );
    assert_eq!(problem["status"], 429);
    assert!(
        problem["detail"].as_str().unwrap().contains("00:00 UTC"),
        "{problem}"
    );
    assert_eq!(
        user_items(&owner).await.len(),
        stored,
        "a refused turn stored something"
    );
    // wiremock checks on drop that the provider was called once, for the first turn only.
}

#[tokio::test]
async fn a_turn_reserves_its_worst_case_and_settles_to_the_reported_usage() {
    let openai = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(openai_reply_with_usage("hi", 7, 1))
        .mount(&openai)
        .await;
    let state = chat_state(policy(0, 10_000, 0), Some(&openai)).await;
    let owner = user();
    assert_eq!(send(&state, &owner, "hello").await.status(), StatusCode::OK);
    let budget = usage_item(&owner).await;
    assert_eq!(
        number(&budget, "tokens"),
        8,
        "settled to the provider's 7 + 1"
    );
    assert_eq!(number(&budget, "tokens_left"), 10_000 - 8);

    // The request carried the output cap the reservation counted on.
    let sent: Value =
        serde_json::from_slice(&openai.received_requests().await.unwrap()[0].body).unwrap();
    let cap = sent
        .get("max_completion_tokens")
        .or_else(|| sent.get("max_tokens"))
        .and_then(Value::as_u64);
    assert_eq!(cap, Some(50), "{sent}");

    // A request the provider refused with a status stores nothing, keeps its turn, and is
    // charged its input's bound: it reached the provider.
    openai.reset().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(400).set_body_json(
                json!({"error": {"message": "no", "type": "invalid_request_error"}}),
            ),
        )
        .mount(&openai)
        .await;
    assert_eq!(
        send(&state, &owner, "fails").await.status(),
        StatusCode::BAD_GATEWAY
    );
    let budget = usage_item(&owner).await;
    assert_eq!(
        (number(&budget, "turns"), number(&budget, "tokens")),
        (2, 8 + bound_of("fails"))
    );
}

/// The input bound of a first message `text` (no system prompt), as admission counts it.
fn bound_of(text: &str) -> i64 {
    let context = [ContextMessage {
        role: Role::User,
        content: text.to_owned(),
    }];
    i64::try_from(shared::llm::input_token_bound(&context, None)).unwrap()
}

/// An OpenAI stub that answers "hi" (7 + 1 tokens) after `ms` milliseconds.
async fn slow_openai(ms: u64) -> MockServer {
    let openai = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            openai_reply_with_usage("hi", 7, 1).set_delay(std::time::Duration::from_millis(ms)),
        )
        .mount(&openai)
        .await;
    openai
}

/// Waits until the stub has received `count` requests (the provider is answering them).
async fn received(server: &MockServer, count: usize) {
    while server.received_requests().await.unwrap_or_default().len() < count {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_turn_whose_write_fails_after_the_provider_answered_is_charged_not_refunded() {
    let openai = slow_openai(400).await;
    let state = Arc::new(chat_state(policy(2, 0, 0), Some(&openai)).await);
    let owner = user();
    let first = send(&state, &owner, "hello").await;
    assert_eq!(first.status(), StatusCode::OK);
    let id = json_body(&first)["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The second turn's conversation is deleted while its provider answers: its write fails.
    let body = json!({"message": "and then", "conversation_id": id}).to_string();
    let turn = tokio::spawn({
        let (state, owner) = (state.clone(), owner.clone());
        async move { chat::handle(&state, chat_request(Some(owner.as_str()), &[], &body)).await }
    });
    received(&openai, 2).await;
    let conversation = shared::domain::ConversationId::parse(&id).unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    e2e::store()
        .await
        .delete_conversation(&owner, &conversation, deadline)
        .await
        .unwrap();
    assert_eq!(turn.await.unwrap().status(), StatusCode::NOT_FOUND);

    // The provider answered, so the turn is spent: the day's two turns are used.
    let budget = usage_item(&owner).await;
    assert_eq!(
        (number(&budget, "turns"), number(&budget, "tokens")),
        (2, 8 + 8),
        "both turns charged what the provider reported"
    );
    let third = send(&state, &owner, "once more").await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn every_provider_request_sent_is_charged_and_each_retry_is_admitted_first() {
    let openai = MockServer::start().await;
    let unavailable = || {
        ResponseTemplate::new(503)
            .set_body_json(json!({"error": {"message": "overloaded", "type": "server_error"}}))
    };
    Mock::given(method("POST"))
        .respond_with(unavailable())
        .up_to_n_times(2)
        .mount(&openai)
        .await;
    Mock::given(method("POST"))
        .respond_with(openai_reply_with_usage("hi", 7, 1))
        .mount(&openai)
        .await;
    let retries = [
        ("LLM_MAX_ATTEMPTS", "3"),
        ("LLM_BACKOFF_BASE_MS", "1"),
        ("LLM_BACKOFF_CAP_MS", "2"),
    ];
    let state = chat_state_with(policy(0, 100_000, 0), Some(&openai), &retries).await;
    let owner = user();
    assert_eq!(send(&state, &owner, "hello").await.status(), StatusCode::OK);
    // Two refused requests, each charged its input's bound, and the answer's reported 8.
    let budget = usage_item(&owner).await;
    assert_eq!(number(&budget, "tokens"), 2 * bound_of("hello") + 8);
    assert_eq!(openai.received_requests().await.unwrap().len(), 3);

    // A day with room for one request only: the retry is refused before it is sent.
    let openai = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(unavailable())
        .mount(&openai)
        .await;
    let reservation = bound_of("hello") + 50;
    let limit = u64::try_from(reservation + reservation / 2).unwrap();
    let state = chat_state_with(policy(0, limit, 0), Some(&openai), &retries).await;
    let owner = user();
    let refused = send(&state, &owner, "hello").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        json_body(&refused)["type"],
        "urn:serverless-chat:problem:quota-exceeded"
    );
    assert_eq!(
        openai.received_requests().await.unwrap().len(),
        1,
        "the refused retry was not sent"
    );
    let budget = usage_item(&owner).await;
    assert_eq!(
        (number(&budget, "turns"), number(&budget, "tokens")),
        (1, bound_of("hello")),
        "the one request sent is charged its input's bound"
    );
}

#[tokio::test]
async fn a_turn_that_spans_midnight_gives_nothing_back_to_the_new_day() {
    let openai = slow_openai(300).await;
    let Clocked { store, now } = Clocked::at("2026-11-27T23:59:50Z").await;
    let state = Arc::new(
        chat_state(policy(0, 10_000, 0), Some(&openai))
            .await
            .with_store(store),
    );
    let owner = user();
    let late = tokio::spawn({
        let (state, owner) = (state.clone(), owner.clone());
        async move { send(&state, &owner, "late").await.status() }
    });
    received(&openai, 1).await;
    *now.lock().unwrap() += Duration::minutes(1);
    // The next day opens with this turn, while the first is still answering.
    assert_eq!(send(&state, &owner, "early").await.status(), StatusCode::OK);
    assert_eq!(late.await.unwrap(), StatusCode::OK);

    let budget = usage_item(&owner).await;
    assert_eq!(budget["day"].as_s().unwrap(), "2026-11-28");
    assert_eq!(
        number(&budget, "tokens_left"),
        10_000 - 8,
        "the new day is charged its own turn, and credited nothing for yesterday's"
    );
}

#[tokio::test]
async fn usage_reports_the_day_and_refuses_anonymous_callers() {
    let state = chat_state(policy(200, 200_000, 10), None).await;
    let owner = user();
    let get = |user: Option<&str>| e2e::api_request("GET", "/usage", &[], None, user);
    let fresh = chat::handle(&state, get(Some(owner.as_str()))).await;
    assert_eq!(fresh.status(), StatusCode::OK);
    let body = json_body(&fresh);
    assert_eq!(
        body["turns"],
        json!({"used": 0, "limit": 200, "remaining": 200})
    );
    assert_eq!(body["tokens"]["remaining"], 200_000);
    assert_eq!(body["custom_budget"], false);

    assert_eq!(
        send(&state, &owner, "count me").await.status(),
        StatusCode::OK
    );
    let body = json_body(&chat::handle(&state, get(Some(owner.as_str()))).await);
    assert_eq!(
        body["turns"],
        json!({"used": 1, "limit": 200, "remaining": 199})
    );
    assert_eq!(body["minute"]["used"], 1);
    let used = body["tokens"]["used"].as_u64().unwrap();
    assert!(used > 0 && used < 50, "settled to the echo's count: {body}");
    assert_eq!(body["day"], Utc::now().date_naive().to_string());

    let anonymous = chat::handle(&state, get(None)).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_minute_limit_answers_rate_limited_until_the_window_s_end() {
    let clocked = Clocked::at("2026-11-27T12:00:45Z").await;
    let now = clocked.now.clone();
    let state = chat_state(policy(0, 0, 2), None)
        .await
        .with_store(clocked.store);
    let owner = user();
    let first = send(&state, &owner, "quick").await;
    assert_eq!(first.status(), StatusCode::OK);
    // The minute's window is closest to refusing: it is the one the headers describe.
    assert_eq!(header(&first, "ratelimit-limit").as_deref(), Some("2"));
    assert_eq!(header(&first, "ratelimit-remaining").as_deref(), Some("1"));
    assert_eq!(send(&state, &owner, "quick").await.status(), StatusCode::OK);
    let refused = send(&state, &owner, "one too many").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let problem = json_body(&refused);
    assert_eq!(problem["type"], "urn:serverless-chat:problem:rate-limited");
    assert_eq!(header(&refused, "retry-after").as_deref(), Some("15"));
    *now.lock().unwrap() += Duration::seconds(15);
    assert_eq!(
        send(&state, &owner, "next minute").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_operator_tool_sets_shows_and_clears_a_user_s_budget() {
    let clocked = Clocked::at("2026-11-27T09:00:00Z").await;
    let rules = policy(200, 200_000, 10);
    let owner = user();
    let run = |line: String| {
        let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        budget_admin::parse_args(&args)
            .expect("a valid command line")
            .0
    };
    let set = run(format!("set {} --turns 1 --tokens 0", owner.as_str()));
    let report = budget_admin::run(&clocked.store, &rules, &set)
        .await
        .unwrap();
    assert_eq!(report["custom_budget"], true);
    assert_eq!(
        report["turns"],
        json!({"used": 0, "limit": 1, "remaining": 1})
    );
    assert_eq!(report["tokens"]["limit"], Value::Null, "0 is unlimited");

    clocked
        .store
        .admit_turn(&owner, 10_000_000, &rules)
        .await
        .unwrap();
    assert!(clocked.store.admit_turn(&owner, 1, &rules).await.is_err());
    let shown = budget_admin::run(
        &clocked.store,
        &rules,
        &run(format!("show {}", owner.as_str())),
    )
    .await
    .unwrap();
    assert_eq!(
        shown["turns"],
        json!({"used": 1, "limit": 1, "remaining": 0})
    );
    assert_eq!(shown["tokens"]["used"], 10_000_000);

    let cleared = budget_admin::run(
        &clocked.store,
        &rules,
        &run(format!("clear {}", owner.as_str())),
    )
    .await
    .unwrap();
    assert_eq!(cleared["custom_budget"], false);
    assert_eq!(
        cleared["turns"],
        json!({"used": 1, "limit": 200, "remaining": 199})
    );
    // Back on the default, today's tokens count against it: 10,000,000 used of 200,000.
    assert_eq!(cleared["tokens"]["remaining"], 0);
    assert!(clocked.store.admit_turn(&owner, 1, &rules).await.is_err());
}

#[tokio::test]
async fn a_provider_that_bills_past_the_cap_takes_at_most_twice_the_reservation() {
    let openai = MockServer::start().await;
    // A compatible server that ignores `max_tokens`: it reports 100,000 tokens for one turn.
    Mock::given(method("POST"))
        .respond_with(openai_reply_with_usage("hi", 7, 99_993))
        .mount(&openai)
        .await;
    let state = chat_state(policy(0, 10_000, 0), Some(&openai)).await;
    let owner = user();
    assert_eq!(send(&state, &owner, "hello").await.status(), StatusCode::OK);
    let reservation = bound_of("hello") + 50;
    let budget = usage_item(&owner).await;
    assert_eq!(
        number(&budget, "tokens"),
        2 * reservation,
        "bounded at twice the reservation; the rest is logged, not charged"
    );
    assert_eq!(number(&budget, "tokens_left"), 10_000 - 2 * reservation);
}

#[tokio::test]
async fn the_usage_item_keeps_no_minute_window_but_the_current_ones() {
    let Clocked { store, now } = Clocked::at("2026-11-27T10:00:05Z").await;
    let state = chat_state(policy(0, 0, 10), None).await.with_store(store);
    let owner = user();
    let windows = |item: &Item| {
        let mut names: Vec<String> = item
            .keys()
            .filter(|name| name.starts_with('w'))
            .cloned()
            .collect();
        names.sort();
        names
    };
    for _ in 0..3 {
        assert_eq!(send(&state, &owner, "hello").await.status(), StatusCode::OK);
        // A pause longer than the two minutes admission clears.
        *now.lock().unwrap() += Duration::minutes(5);
    }
    let minute = (now.lock().unwrap().timestamp() / 60) - 5;
    assert_eq!(
        windows(&usage_item(&owner).await),
        [format!("w{minute}")],
        "only the last turn's minute is left"
    );
}

#[tokio::test]
async fn nothing_of_a_turn_admitted_before_an_erasure_lands_after_it() {
    let openai = slow_openai(400).await;
    let state = Arc::new(chat_state(policy(0, 0, 0), Some(&openai)).await);
    let history = e2e::history_state(&stack().await.clients).await;
    let owner = user();
    // A turn without an Idempotency-Key that starts a new conversation.
    let turn = tokio::spawn({
        let (state, owner) = (state.clone(), owner.clone());
        async move { send(&state, &owner, "forget me").await }
    });
    received(&openai, 1).await;
    let erase = e2e::api_request("DELETE", "/history", &[], None, Some(owner.as_str()));
    assert_eq!(
        history::handle(&history, erase).await.status(),
        StatusCode::NO_CONTENT
    );
    let answer = turn.await.unwrap();
    assert_eq!(answer.status(), StatusCode::GONE);
    assert!(
        json_body(&answer)["detail"]
            .as_str()
            .unwrap()
            .contains("erased"),
        "{}",
        json_body(&answer)
    );
    let left: Vec<Item> = user_items(&owner)
        .await
        .into_iter()
        .filter(|item| !e2e::is_budget_item(item))
        .collect();
    assert!(left.is_empty(), "written after the erasure: {left:?}");
    // The provider answered: the turn is charged all the same.
    assert_eq!(number(&usage_item(&owner).await, "tokens"), 8);
}
