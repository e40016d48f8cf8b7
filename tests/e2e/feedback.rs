//! The feedback function through its handler, and the operators' export.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use e2e::{
    api_request, event, json_body, json_request, message_id, partition_count, stack, store, user,
};
use feedback::{handle, State};
use lambda_http::http::StatusCode;
use serde_json::{json, Value};
use shared::{
    domain::{Comment, ConversationId, Rating, UserId},
    store::{keys, ConversationStore},
};

async fn state() -> Arc<State> {
    Arc::new(e2e::feedback_state(&stack().await.clients).await)
}

/// A conversation of one turn for `user`: its id (the reply is message 2).
async fn conversation(user: &UserId) -> ConversationId {
    e2e::start_conversation(&store().await, user, "t", "the question", "the answer").await
}

async fn post(state: &State, user: Option<&UserId>, body: &str) -> (StatusCode, Value) {
    let req = json_request("POST", "/feedback", &[], user.map(UserId::as_str), body);
    let response = handle(state, req).await;
    (response.status(), json_body(&response))
}

async fn get(state: &State, user: &UserId, query: Option<&str>) -> (StatusCode, Value) {
    let req = api_request("GET", "/feedback", &[], query, Some(user.as_str()));
    let response = handle(state, req).await;
    (response.status(), json_body(&response))
}

/// How many feedback items `user`'s partition holds.
async fn feedback_items(user: &UserId) -> usize {
    let table = stack().await.config.table_name;
    e2e::items_beginning(&table, user, Some(&keys::feedback_on(None)))
        .await
        .len()
}

#[tokio::test]
async fn rating_a_reply_creates_then_replaces_one_item() {
    let state = state().await;
    let user = user();
    let id = conversation(&user).await;
    let body = |rating: u8, comment: &str| {
        json!({"conversation_id": id.as_str(), "message_id": "000000000002", "rating": rating, "comment": comment}).to_string()
    };

    let (status, first) = post(&state, Some(&user), &body(4, "good")).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["rating"], 4);
    assert_eq!(first["comment"], "good");
    assert_eq!(first["message_id"], "000000000002");
    assert_eq!(first["conversation_id"], id.as_str());

    let (status, second) = post(&state, Some(&user), &body(2, "on reflection, no")).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["rating"], 2);
    assert_eq!(
        second["created_at"], first["created_at"],
        "a replacement keeps the creation time"
    );
    assert_eq!(feedback_items(&user).await, 1);

    let (status, listed) = get(&state, &user, Some(&format!("conversation_id={id}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["feedback"].as_array().unwrap().len(), 1);
    assert_eq!(listed["feedback"][0]["rating"], 2);
    assert_eq!(listed["feedback"][0]["comment"], "on reflection, no");
    assert!(listed["next_cursor"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_posts_on_one_message_leave_one_item() {
    let state = state().await;
    let user = user();
    let id = conversation(&user).await;
    let mut tasks = tokio::task::JoinSet::new();
    for rating in 0..20u8 {
        let (state, user, id) = (Arc::clone(&state), user.clone(), id.clone());
        tasks.spawn(async move {
            let body = json!({"conversation_id": id.as_str(), "message_id": "2", "rating": rating % 5 + 1}).to_string();
            post(&state, Some(&user), &body).await.0
        });
    }
    let mut created = 0;
    while let Some(status) = tasks.join_next().await {
        match status.unwrap() {
            StatusCode::CREATED => created += 1,
            StatusCode::OK => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created, 1, "exactly one post created the item");
    assert_eq!(feedback_items(&user).await, 1);
}

#[tokio::test]
async fn only_the_callers_own_assistant_replies_can_be_rated() {
    let state = state().await;
    let (owner, stranger) = (user(), user());
    let id = conversation(&owner).await;
    let cases = [
        (&owner, "000000000001"),    // the user's own message
        (&owner, "000000000003"),    // no such message
        (&stranger, "000000000002"), // someone else's reply
    ];
    let mut details = Vec::new();
    for (who, message) in cases {
        let body =
            json!({"conversation_id": id.as_str(), "message_id": message, "rating": 5}).to_string();
        let (status, problem) = post(&state, Some(who), &body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{message}: {problem}");
        details.push(problem["detail"].clone());
    }
    assert!(
        details.iter().all(|detail| detail == &details[0]),
        "the same 404 in all three cases"
    );
    let other = ConversationId::generate();
    let (status, _) = post(
        &state,
        Some(&owner),
        &json!({"conversation_id": other.as_str(), "message_id": "2", "rating": 5}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(feedback_items(&owner).await, 0);
    assert_eq!(
        partition_count(&stack().await.config.table_name, &stranger).await,
        0
    );
}

#[tokio::test]
async fn bad_feedback_is_a_400_naming_the_field_and_nothing_is_stored() {
    let state = state().await;
    let user = user();
    let id = conversation(&user).await;
    let base = json!({"conversation_id": id.as_str(), "message_id": "2", "rating": 3});
    let with = |field: &str, value: Value| {
        let mut body = base.clone();
        body[field] = value;
        body.to_string()
    };
    let without = |field: &str| {
        let mut body = base.clone();
        body.as_object_mut().unwrap().remove(field);
        body.to_string()
    };
    let cases = [
        (with("rating", json!(0)), "rating"),
        (with("rating", json!(6)), "rating"),
        (with("rating", json!(3.5)), "rating"),
        (with("rating", json!("5")), "rating"),
        (with("rating", json!(-1)), "rating"),
        (without("rating"), "rating"),
        (with("comment", json!("x".repeat(2_001))), "comment"),
        (with("comment", json!(5)), "comment"),
        (with("message_id", json!("two")), "message_id"),
        (with("message_id", json!("0")), "message_id"),
        (with("conversation_id", json!("nope")), "conversation_id"),
        (without("conversation_id"), "conversation_id"),
        (with("user_id", json!("someone")), "user_id"),
        ("not json".to_owned(), "body"),
    ];
    for (body, field) in cases {
        let (status, problem) = post(&state, Some(&user), &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
        assert_eq!(problem["field"], field, "{body}: {problem}");
    }
    let (status, _) = post(&state, None, &base.to_string()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(feedback_items(&user).await, 0);
    // A comment of exactly 2,000 characters is fine.
    let (status, _) = post(
        &state,
        Some(&user),
        &with("comment", json!("x".repeat(2_000))),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn erasure_and_conversation_deletion_remove_feedback() {
    let state = state().await;
    let user = user();
    let (kept, deleted) = (conversation(&user).await, conversation(&user).await);
    for id in [&kept, &deleted] {
        let (status, _) = post(
            &state,
            Some(&user),
            &json!({"conversation_id": id.as_str(), "message_id": "2", "rating": 5}).to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    store()
        .await
        .delete_conversation(&user, &deleted, deadline)
        .await
        .unwrap();
    let (_, listed) = get(&state, &user, None).await;
    let ids: Vec<&str> = listed["feedback"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["conversation_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [kept.as_str()]);
    store().await.erase_user(&user, deadline).await.unwrap();
    assert_eq!(feedback_items(&user).await, 0);
}

#[tokio::test]
async fn the_export_returns_exactly_the_days_asked_for_across_users() {
    let stack = stack().await;
    let (ada, bob) = (user(), user());
    // A day no other test writes on: each feedback is given by a store whose clock reads it.
    let day = |d: u32| Utc.with_ymd_and_hms(2031, 3, d, 12, 0, 0).unwrap();
    let mut expected = Vec::new();
    for (who, d, rating) in [
        (&ada, 10, 5u64),
        (&bob, 11, 2),
        (&ada, 12, 4),
        (&bob, 13, 1),
    ] {
        let store = ConversationStore::from_config(&stack.config, &stack.clients)
            .with_clock(move || day(d));
        let id = e2e::start_conversation(
            &store,
            who,
            "t",
            &format!("question {d}"),
            &format!("answer {d}"),
        )
        .await;
        let comment = Comment::parse("noted", 100).unwrap();
        store
            .rate_message(
                who,
                &id,
                message_id(2),
                Rating::new(rating).unwrap(),
                comment.as_ref(),
            )
            .await
            .unwrap();
        expected.push((d, who.clone(), id, rating));
    }
    let mut out = Vec::new();
    let from = day(11).date_naive();
    let to = day(12).date_naive();
    let table = feedback_export::Table {
        db: stack.clients.dynamodb.clone(),
        name: stack.config.table_name.clone(),
    };
    let count = feedback_export::export(&table, from, to, Some("pepper"), &mut out)
        .await
        .unwrap();
    let lines: Vec<Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(count, 2);
    assert_eq!(lines.len(), 2);
    for (line, (d, who, id, rating)) in lines.iter().zip(&expected[1..3]) {
        assert_eq!(line["day"], format!("2031-03-{d}"));
        assert_eq!(line["conversation_id"], id.as_str());
        assert_eq!(line["rating"], *rating);
        assert_eq!(line["prompt"], format!("question {d}"));
        assert_eq!(line["reply"], format!("answer {d}"));
        assert_eq!(line["provider"], "echo");
        assert_eq!(line["user"], feedback_export::pseudonym("pepper", who));
        assert_ne!(line["user"], who.as_str(), "user ids are pseudonymised");
    }
    let mut raw = Vec::new();
    feedback_export::export(&table, from, from, None, &mut raw)
        .await
        .unwrap();
    let line: Value =
        serde_json::from_str(String::from_utf8(raw).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(line["user"], bob.as_str(), "kept when asked");
}

#[tokio::test]
async fn every_sample_event_gets_the_status_its_name_promises() {
    let _sample_user = e2e::hold_sample_user().await;
    let state = state().await;
    // The feedback samples rate the reply of the conversation the samples share.
    e2e::sample_conversation().await;
    let posted = handle(
        &state,
        lambda_http::request::from_str(&event("feedback-post.json")).unwrap(),
    )
    .await;
    assert_eq!(
        posted.status(),
        StatusCode::CREATED,
        "{}",
        json_body(&posted)
    );
    let listed = handle(
        &state,
        lambda_http::request::from_str(&event("feedback-get.json")).unwrap(),
    )
    .await;
    assert_eq!(listed.status(), StatusCode::OK);
    assert_eq!(json_body(&listed)["feedback"][0]["rating"], 5);
}

#[tokio::test]
async fn a_message_without_its_conversation_cannot_be_rated() {
    // A reply left without its head (as a turn racing a deletion once could leave one).
    let state = state().await;
    let user = user();
    let id = conversation(&user).await;
    e2e::delete_raw(&user, &keys::head(&id)).await;
    let body = json!({"conversation_id": id.as_str(), "message_id": "2", "rating": 5}).to_string();
    let (status, problem) = post(&state, Some(&user), &body).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    assert_eq!(feedback_items(&user).await, 0);
}

#[tokio::test]
async fn feedback_reads_the_rated_reply_consistently() {
    // A reply stored a moment ago must be found: eventually consistent reads may miss it.
    let (clients, recorder) = e2e::recording_clients().await;
    let state = e2e::feedback_state(&clients).await;
    let user = user();
    let id = conversation(&user).await;
    let body = json!({"conversation_id": id.as_str(), "message_id": "2", "rating": 3}).to_string();
    let (status, _) = post(&state, Some(&user), &body).await;
    assert_eq!(status, StatusCode::CREATED);
    let reads: Vec<e2e::Call> = recorder
        .calls()
        .into_iter()
        .filter(|call| call.action == "dynamodb:GetItem" || call.action == "dynamodb:Query")
        .collect();
    assert!(!reads.is_empty());
    assert!(
        reads.iter().all(|call| call.consistent == Some(true)),
        "{reads:?}"
    );
}
