//! The history function through its handler: sample events, isolation between users,
//! validation, and erasure.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use e2e::{
    api_request, append_turn, event, json_body, json_request, stack, store, user, user_items,
};
use history::{handle, State};
use lambda_http::http::StatusCode;
use serde_json::Value;
use shared::{
    domain::{ConversationId, UserId},
    store::{keys, TurnTarget},
};

async fn state() -> State {
    e2e::history_state(&stack().await.clients).await
}

/// Creates a conversation of `turns` turns for `user`; returns its id.
async fn conversation(user: &UserId, turns: usize) -> ConversationId {
    let store = store().await;
    let id = e2e::start_conversation(&store, user, "a title", "q0", "a0").await;
    for turn in 1..turns {
        append_turn(
            &store,
            user,
            &TurnTarget::Existing(id.clone()),
            &format!("q{turn}"),
            &format!("a{turn}"),
        )
        .await
        .unwrap();
    }
    id
}

async fn call(
    state: &State,
    method: &str,
    resource: &str,
    id: Option<&ConversationId>,
    query: Option<&str>,
    user: Option<&UserId>,
) -> (StatusCode, Value) {
    let params: Vec<(&str, &str)> = id.map(|id| vec![("id", id.as_str())]).unwrap_or_default();
    let req = api_request(method, resource, &params, query, user.map(UserId::as_str));
    let response = handle(state, req).await;
    (response.status(), json_body(&response))
}

/// `DELETE /conversations/{id}` as `user`.
async fn delete(state: &State, user: &UserId, id: &ConversationId) -> (StatusCode, Value) {
    call(
        state,
        "DELETE",
        "/conversations/{id}",
        Some(id),
        None,
        Some(user),
    )
    .await
}

#[tokio::test]
async fn every_sample_event_gets_the_status_its_name_promises() {
    let _sample_user = e2e::hold_sample_user().await;
    let state = state().await;
    let (_, id) = e2e::sample_conversation().await;

    let run = |name: &str| {
        let req = lambda_http::request::from_str(&event(name)).expect("a valid event");
        let state = &state;
        async move { handle(state, req).await }
    };
    let listed = run("history-list-conversations.json").await;
    assert_eq!(listed.status(), StatusCode::OK);
    assert_eq!(json_body(&listed)["conversations"][0]["id"], id.as_str());

    let messages = run("history-list-messages.json").await;
    assert_eq!(messages.status(), StatusCode::OK);
    assert_eq!(
        json_body(&messages)["messages"].as_array().unwrap().len(),
        2
    );

    let deleted = run("history-delete-conversation.json").await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert!(deleted.body().is_empty());

    let erased = run("history-erase.json").await;
    assert_eq!(erased.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn lists_conversations_and_messages_in_the_documented_shape() {
    let state = state().await;
    let user = user();
    let older = conversation(&user, 1).await;
    let newer = conversation(&user, 3).await;

    let (status, body) = call(&state, "GET", "/conversations", None, None, Some(&user)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed = body["conversations"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["id"], newer.as_str(), "newest first");
    assert_eq!(listed[1]["id"], older.as_str());
    assert_eq!(listed[0]["message_count"], 6);
    assert_eq!(listed[0]["title"], "a title");
    assert!(listed[0]["created_at"].is_string() && listed[0]["updated_at"].is_string());
    assert!(body["next_cursor"].is_null());

    let (status, body) = call(
        &state,
        "GET",
        "/conversations/{id}/messages",
        Some(&newer),
        Some("limit=4&order=desc"),
        Some(&user),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4);
    assert_eq!(messages[0]["seq"], 6);
    assert_eq!(messages[0]["id"], "000000000006");
    assert_eq!(messages[0]["role"], "assistant");
    assert_eq!(messages[0]["content"], "a2");
    assert_eq!(messages[0]["provider"], "echo");
    assert_eq!(messages[0]["model"], "echo-1");
    assert_eq!(messages[1]["role"], "user");
    assert!(messages[1].get("provider").is_none());
    let cursor = body["next_cursor"].as_str().expect("more to come");

    let (status, body) = call(
        &state,
        "GET",
        "/conversations/{id}/messages",
        Some(&newer),
        Some(&format!("limit=4&order=desc&cursor={cursor}")),
        Some(&user),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seqs: Vec<u64> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [2, 1]);
    assert!(body["next_cursor"].is_null());
}

#[tokio::test]
async fn another_user_can_neither_see_nor_delete_a_conversation() {
    let state = state().await;
    let (owner, intruder) = (user(), user());
    let id = conversation(&owner, 2).await;
    let unknown = ConversationId::generate();

    for target in [&id, &unknown] {
        let (status, read) = call(
            &state,
            "GET",
            "/conversations/{id}/messages",
            Some(target),
            None,
            Some(&intruder),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, refused) = delete(&state, &intruder, target).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // Foreign and unknown look exactly alike, apart from the request id.
        assert_eq!(read["detail"], "conversation not found");
        assert_eq!(refused["type"], read["type"]);
    }
    let (_, listed) = call(&state, "GET", "/conversations", None, None, Some(&intruder)).await;
    assert_eq!(listed["conversations"], serde_json::json!([]));

    let (status, _) = call(&state, "DELETE", "/history", None, None, Some(&intruder)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = call(
        &state,
        "GET",
        "/conversations/{id}/messages",
        Some(&id),
        None,
        Some(&owner),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["messages"].as_array().unwrap().len(),
        4,
        "the owner's data is untouched"
    );
}

#[tokio::test]
async fn a_cursor_cannot_reach_another_conversation_or_user() {
    let state = state().await;
    let (owner, intruder) = (user(), user());
    let id = conversation(&owner, 3).await;
    let (_, body) = call(
        &state,
        "GET",
        "/conversations/{id}/messages",
        Some(&id),
        Some("limit=2"),
        Some(&owner),
    )
    .await;
    let cursor = body["next_cursor"].as_str().unwrap().to_owned();

    // The owner's cursor on another of the owner's conversations: refused.
    let other = conversation(&owner, 1).await;
    let (status, body) = call(
        &state,
        "GET",
        "/conversations/{id}/messages",
        Some(&other),
        Some(&format!("cursor={cursor}")),
        Some(&owner),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "cursor");
    // On the conversation listing: refused.
    let (status, _) = call(
        &state,
        "GET",
        "/conversations",
        None,
        Some(&format!("cursor={cursor}")),
        Some(&owner),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // In the intruder's hands it resumes in the intruder's own partition, where it finds nothing.
    let (status, _) = call(
        &state,
        "GET",
        "/conversations/{id}/messages",
        Some(&id),
        Some(&format!("cursor={cursor}")),
        Some(&intruder),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_parameters_are_400s_naming_the_parameter() {
    let state = state().await;
    let user = user();
    let id = conversation(&user, 1).await;
    let cases = [
        ("/conversations", None, "limit=0", "limit"),
        ("/conversations", None, "limit=101", "limit"),
        ("/conversations", None, "limit=ten", "limit"),
        ("/conversations", None, "limit=-1", "limit"),
        ("/conversations", None, "cursor=not-a-cursor", "cursor"),
        (
            "/conversations",
            None,
            "cursor=eyJ2IjoxLCJzayI6IlVTRVIjeCJ9",
            "cursor",
        ),
        ("/conversations", None, "user_id=someone", "user_id"),
        (
            "/conversations/{id}/messages",
            Some(&id),
            "order=sideways",
            "order",
        ),
        (
            "/conversations/{id}/messages",
            Some(&id),
            "limit=1&limit=2",
            "limit",
        ),
    ];
    for (resource, id, query, field) in cases {
        let (status, body) = call(&state, "GET", resource, id, Some(query), Some(&user)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["field"], field, "{query}: {body}");
        assert!(body["detail"].as_str().unwrap().contains(field), "{body}");
    }
    for bad_id in [
        "nope",
        "01kb2y8q3m7r4t6v9w0x1y2z3a",
        "01KB2Y8Q3M7R4T6V9W0X1Y2Z3AA",
    ] {
        let req = api_request(
            "GET",
            "/conversations/{id}/messages",
            &[("id", bad_id)],
            None,
            Some(user.as_str()),
        );
        let response = handle(&state, req).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad_id}");
        assert_eq!(json_body(&response)["field"], "id");
        let req = api_request(
            "DELETE",
            "/conversations/{id}",
            &[("id", bad_id)],
            None,
            Some(user.as_str()),
        );
        assert_eq!(handle(&state, req).await.status(), StatusCode::BAD_REQUEST);
    }
    // Nothing was deleted by any of it.
    let (_, body) = call(
        &state,
        "GET",
        "/conversations/{id}/messages",
        Some(&id),
        None,
        Some(&user),
    )
    .await;
    assert_eq!(body["messages"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn every_route_needs_an_identity() {
    let state = state().await;
    let id = ConversationId::generate();
    for (method, resource) in [
        ("GET", "/conversations"),
        ("GET", "/conversations/{id}/messages"),
        ("PATCH", "/conversations/{id}"),
        ("DELETE", "/conversations/{id}"),
        ("DELETE", "/history"),
    ] {
        let (status, body) = call(&state, method, resource, Some(&id), None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {resource}");
        assert_eq!(body["status"], 401);
    }
}

#[tokio::test]
async fn erasure_through_the_route_leaves_an_empty_partition() {
    let state = state().await;
    let user = user();
    for _ in 0..13 {
        conversation(&user, 1).await;
    }
    let (status, _) = call(&state, "DELETE", "/history", None, None, Some(&user)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let left = user_items(&user).await;
    assert_eq!(left.len(), 0);
    // Erasing nothing is fine too.
    let (status, _) = call(&state, "DELETE", "/history", None, None, Some(&user)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_cursor_that_is_not_a_cursor_object_is_refused() {
    use base64::Engine;
    let state = state().await;
    let user = user();
    let id = conversation(&user, 1).await;
    // Valid base64 of JSON, but an array naming a real head: serde would read it as a cursor.
    let array = format!(r#"[1,"{}"]"#, keys::head(&id));
    let cursor = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(array);
    let (status, body) = call(
        &state,
        "GET",
        "/conversations",
        None,
        Some(&format!("cursor={cursor}")),
        Some(&user),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "cursor");
}

#[tokio::test]
async fn every_listing_reads_one_item_more_than_its_page() {
    // Real DynamoDB returns a LastEvaluatedKey whenever a Query stops at its Limit, even with
    // nothing left: reading exactly a page would give a full last page a cursor to an empty one.
    let (clients, recorder) = e2e::recording_clients().await;
    let state = e2e::history_state(&clients).await;
    let user = user();
    let id = conversation(&user, 1).await;
    for (resource, id) in [
        ("/conversations", None),
        ("/conversations/{id}/messages", Some(&id)),
    ] {
        let (status, _) = call(&state, "GET", resource, id, Some("limit=5"), Some(&user)).await;
        assert_eq!(status, StatusCode::OK);
    }
    let limits: Vec<Option<i32>> = recorder
        .calls()
        .into_iter()
        .filter(|call| call.action == "dynamodb:Query")
        .map(|call| call.limit)
        .collect();
    assert_eq!(limits, [Some(6), Some(6)]);

    let (clients, recorder) = e2e::recording_clients().await;
    let feedback = e2e::feedback_state(&clients).await;
    let list = api_request(
        "GET",
        "/feedback",
        &[],
        Some("limit=5"),
        Some(user.as_str()),
    );
    assert_eq!(
        feedback::handle(&feedback, list).await.status(),
        StatusCode::OK
    );
    let limits: Vec<Option<i32>> = recorder
        .calls()
        .into_iter()
        .map(|call| call.limit)
        .collect();
    assert_eq!(limits, [Some(6)]);
}

/// `PATCH /conversations/{id}` with a JSON body, as `user`.
async fn rename(
    state: &State,
    user: &UserId,
    id: &ConversationId,
    body: &str,
) -> (StatusCode, Value) {
    let req = json_request(
        "PATCH",
        "/conversations/{id}",
        &[("id", id.as_str())],
        Some(user.as_str()),
        body,
    );
    let response = handle(state, req).await;
    (response.status(), json_body(&response))
}

#[tokio::test]
async fn a_rename_sets_the_title_and_keeps_the_rest() {
    let state = state().await;
    let owner = user();
    let id = conversation(&owner, 2).await;
    let before = store().await.conversation(&owner, &id).await.unwrap();

    let (status, body) = rename(&state, &owner, &id, r#"{"title":"  Trip to Lisbon  "}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["title"], "Trip to Lisbon");
    assert_eq!(body["message_count"], 4);
    assert_eq!(body["updated_at"], before.updated_at.as_str());

    let (_, listed) = call(&state, "GET", "/conversations", None, None, Some(&owner)).await;
    assert_eq!(listed["conversations"][0]["title"], "Trip to Lisbon");
    // The conversation goes on as before.
    append_turn(
        &store().await,
        &owner,
        &TurnTarget::Existing(id.clone()),
        "q",
        "a",
    )
    .await
    .unwrap();
    let after = store().await.conversation(&owner, &id).await.unwrap();
    assert_eq!(
        (after.title.as_str(), after.message_count),
        ("Trip to Lisbon", 6)
    );
}

#[tokio::test]
async fn a_rename_never_brings_back_a_deleted_or_foreign_conversation() {
    let state = state().await;
    let owner = user();
    let id = conversation(&owner, 1).await;

    let stranger = user();
    let (status, body) = rename(&state, &stranger, &id, r#"{"title":"mine now"}"#).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(user_items(&stranger).await.is_empty());

    let (status, _) = delete(&state, &owner, &id).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = rename(&state, &owner, &id, r#"{"title":"revived?"}"#).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        user_items(&owner).await.is_empty(),
        "a rename wrote into a deleted conversation"
    );
}

#[tokio::test]
async fn a_bad_rename_is_a_400_naming_the_field_and_changes_nothing() {
    let state = state().await;
    let owner = user();
    let id = conversation(&owner, 1).await;
    let long = format!(r#"{{"title":"{}"}}"#, "x".repeat(121));
    for (body, field) in [
        (r#"{"title":"   "}"#, "title"),
        (r#"{"title":"two\nlines"}"#, "title"),
        (long.as_str(), "title"),
        (r#"{"title":7}"#, "title"),
        (r#"{}"#, "title"),
        (r#"{"title":"ok","pinned":true}"#, "pinned"),
        ("[]", "body"),
        ("not json", "body"),
    ] {
        let (status, problem) = rename(&state, &owner, &id, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(field)
                || problem["field"] == field,
            "{body}: {problem}"
        );
    }
    let unchanged = store().await.conversation(&owner, &id).await.unwrap();
    assert_eq!(unchanged.title, "a title");
}

/// A history function whose table answers the first `operation` on `id`'s head with a
/// `TransactionConflictException` (a turn's transaction checking that head); and the count of
/// conflicts answered.
async fn state_conflicting_once(
    operation: &str,
    id: &ConversationId,
) -> (State, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let answered = Arc::<AtomicUsize>::default();
    let fault = e2e::Fault::ConflictOnce {
        on: keys::head(id),
        answered: Arc::clone(&answered),
    };
    let (address, proxy) = e2e::proxy(operation, fault).await;
    let clients = shared::aws::AwsClients {
        dynamodb: e2e::dynamodb_at(address, std::time::Duration::from_secs(3)).await,
        secrets: stack().await.clients.secrets.clone(),
    };
    (e2e::history_state(&clients).await, answered, proxy)
}

#[tokio::test]
async fn a_rename_that_meets_a_turn_in_flight_is_retried() {
    let owner = user();
    let id = conversation(&owner, 1).await;
    let (state, answered, proxy) = state_conflicting_once("UpdateItem", &id).await;
    let (status, body) = rename(&state, &owner, &id, r#"{"title":"renamed"}"#).await;
    proxy.abort();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(answered.load(Ordering::SeqCst), 1);
    let stored = store().await.conversation(&owner, &id).await.unwrap();
    assert_eq!(stored.title.as_str(), "renamed");
}

#[tokio::test]
async fn a_deletion_that_meets_a_turn_in_flight_is_retried() {
    let owner = user();
    let id = conversation(&owner, 1).await;
    let (state, answered, proxy) = state_conflicting_once("DeleteItem", &id).await;
    let (status, body) = delete(&state, &owner, &id).await;
    proxy.abort();
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(answered.load(Ordering::SeqCst), 1);
    assert!(
        user_items(&owner).await.is_empty(),
        "the conversation is gone"
    );
}

#[tokio::test]
async fn messages_say_their_parent_and_siblings_and_a_patch_switches_the_branch() {
    let state = state().await;
    let owner = user();
    let id = conversation(&owner, 2).await;
    let store = store().await;
    let two = shared::domain::MessageId::new(2).unwrap();
    // Edit the second question (message 3, under reply 2): messages 5 and 6.
    e2e::append_turn_under(&store, &owner, &id, Some(two), "q1 again", "a1 again")
        .await
        .unwrap();
    let page = |query: &'static str| {
        let state = &state;
        let (owner, id) = (owner.clone(), id.clone());
        async move {
            call(
                state,
                "GET",
                "/conversations/{id}/messages",
                Some(&id),
                Some(query),
                Some(&owner),
            )
            .await
        }
    };
    let (status, body) = page("order=desc").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let messages = body["messages"].as_array().unwrap();
    let seqs: Vec<u64> = messages
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [6, 5, 2, 1]);
    assert_eq!(messages[1]["parent_id"], "000000000002");
    assert_eq!(
        messages[1]["siblings"],
        serde_json::json!({"ids": ["000000000003", "000000000005"], "index": 1})
    );
    assert_eq!(messages[3]["parent_id"], Value::Null);
    assert_eq!(
        messages[3]["siblings"],
        serde_json::json!({"ids": ["000000000001"], "index": 0})
    );

    // Back to the first version: the branch through message 3, to its end.
    let (status, body) = rename(&state, &owner, &id, r#"{"leaf":"000000000003"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["leaf"], "000000000004");
    let (_, body) = page("order=asc").await;
    let seqs: Vec<u64> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(body["messages"][2]["siblings"]["index"], 0);
    let (_, listed) = call(&state, "GET", "/conversations", None, None, Some(&owner)).await;
    assert_eq!(listed["conversations"][0]["leaf"], "000000000004");

    // Bad switches name the field and change nothing; a message it lacks is a 404.
    for (body, status, field) in [
        (r#"{"leaf":"x"}"#, StatusCode::BAD_REQUEST, "leaf"),
        (r#"{"leaf":4}"#, StatusCode::BAD_REQUEST, "leaf"),
        (
            r#"{"leaf":"000000000004","title":"t"}"#,
            StatusCode::BAD_REQUEST,
            "leaf",
        ),
        (r#"{"leaf":"000000000099"}"#, StatusCode::NOT_FOUND, ""),
    ] {
        let (got, problem) = rename(&state, &owner, &id, body).await;
        assert_eq!(got, status, "{body}: {problem}");
        if !field.is_empty() {
            assert!(
                problem["field"] == field
                    || problem["detail"]
                        .as_str()
                        .unwrap_or_default()
                        .contains(field),
                "{body}: {problem}"
            );
        }
    }
    let stranger = user();
    let (status, _) = rename(&state, &stranger, &id, r#"{"leaf":"000000000006"}"#).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let head = store.conversation(&owner, &id).await.unwrap();
    assert_eq!(head.leaf, shared::domain::MessageId::new(4));
}
