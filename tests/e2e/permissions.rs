//! Each function's IAM policy in `template.yaml` grants exactly the actions its code performs:
//! the functions run their routes against the local stack with SDK clients that record every
//! operation, and the recorded actions must equal the policy's, no more and no less.

use std::collections::BTreeSet;

use e2e::{
    api_request, chat_request, json_request, openai_reply_with_usage, recording_clients,
    secret_with, stack, unique,
};
use lambda_http::http::StatusCode;
use serde_json::json;
use wiremock::{matchers::method, Mock, MockServer, ResponseTemplate};

/// The actions of a function's policy in the template, by binary name.
fn granted(binary: &str) -> BTreeSet<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    let template: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let resources = template["Resources"].as_mapping().unwrap();
    let function = resources
        .values()
        .find(|resource| resource["Metadata"]["BuildProperties"]["Binary"] == binary)
        .unwrap_or_else(|| panic!("no function {binary}"));
    let mut actions = BTreeSet::new();
    for policy in function["Properties"]["Policies"].as_sequence().unwrap() {
        for statement in policy["Statement"].as_sequence().unwrap() {
            match &statement["Action"] {
                serde_norway::Value::Sequence(list) => {
                    actions.extend(list.iter().map(|a| a.as_str().unwrap().to_owned()))
                }
                single => {
                    actions.insert(single.as_str().unwrap().to_owned());
                }
            }
        }
    }
    actions
}

fn get(resource: &str, params: &[(&str, &str)], user: &str) -> lambda_http::Request {
    api_request("GET", resource, params, None, Some(user))
}

#[tokio::test]
async fn every_function_is_granted_exactly_what_it_uses() {
    let base = stack().await.config;
    let user = unique("iam");

    // chat: a new conversation (which opens the user's day), a second turn, an idempotent
    // request, its replay, a failure that releases its key and gives its budget back, the usage
    // and the models.
    let (clients, chat_recorder) = recording_clients().await;
    let openai = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(openai_reply_with_usage("hi", 1, 1))
        .up_to_n_times(2)
        .mount(&openai)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&openai)
        .await;
    let mut config = base.clone();
    config.secret_id = secret_with(&json!({"openai_api_key": "sk-iam"})).await;
    let url = format!("{}/v1", openai.uri());
    let chat_config = e2e::chat_config(&[
        ("LLM_PROVIDERS", "openai"),
        ("OPENAI_BASE_URL", url.as_str()),
        ("LLM_MAX_ATTEMPTS", "1"),
    ]);
    let chat = e2e::chat_state(&config, chat_config, &clients);
    let send = |headers: Vec<(&'static str, String)>, body: serde_json::Value| {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        chat_request(Some(&user), &headers, &body.to_string())
    };
    let first = chat::handle(&chat, send(vec![], json!({"message": "one"}))).await;
    assert_eq!(first.status(), StatusCode::OK);
    let conversation = e2e::json_body(&first)["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let turn = json!({"message": "two", "conversation_id": conversation});
    let key = vec![("idempotency-key", unique("k"))];
    assert_eq!(
        chat::handle(&chat, send(key.clone(), turn.clone()))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        chat::handle(&chat, send(key, turn)).await.status(),
        StatusCode::OK
    );
    let failing = vec![("idempotency-key", unique("k"))];
    assert_eq!(
        chat::handle(&chat, send(failing, json!({"message": "three"})))
            .await
            .status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    for route in ["/usage", "/models"] {
        assert_eq!(
            chat::handle(&chat, get(route, &[], &user)).await.status(),
            StatusCode::OK,
            "{route}"
        );
    }
    assert_eq!(chat_recorder.actions(), granted("chat"), "chat");

    // feedback: rate twice (create, replace), list.
    let (clients, recorder) = recording_clients().await;
    let feedback = e2e::feedback_state(&clients).await;
    let body = json!({"conversation_id": conversation, "message_id": "2", "rating": 4}).to_string();
    for expected in [StatusCode::CREATED, StatusCode::OK] {
        let req = json_request("POST", "/feedback", &[], Some(&user), &body);
        assert_eq!(feedback::handle(&feedback, req).await.status(), expected);
    }
    assert_eq!(
        feedback::handle(&feedback, get("/feedback", &[], &user))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(recorder.actions(), granted("feedback"), "feedback");

    // history: both listings, a rename, a conversation's deletion, erasure.
    let (clients, recorder) = recording_clients().await;
    let history = e2e::history_state(&clients).await;
    let id = [("id", conversation.as_str())];
    assert_eq!(
        history::handle(&history, get("/conversations", &[], &user))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        history::handle(&history, get("/conversations/{id}/messages", &id, &user))
            .await
            .status(),
        StatusCode::OK
    );
    let rename = json_request(
        "PATCH",
        "/conversations/{id}",
        &id,
        Some(&user),
        r#"{"title":"renamed"}"#,
    );
    assert_eq!(
        history::handle(&history, rename).await.status(),
        StatusCode::OK
    );
    let delete = api_request("DELETE", "/conversations/{id}", &id, None, Some(&user));
    assert_eq!(
        history::handle(&history, delete).await.status(),
        StatusCode::NO_CONTENT
    );
    let erase = api_request("DELETE", "/history", &[], None, Some(&user));
    assert_eq!(
        history::handle(&history, erase).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(recorder.actions(), granted("history"), "history");

    // health: readiness (liveness touches nothing).
    let (clients, recorder) = recording_clients().await;
    let health = health::State::new(base.clone(), clients);
    assert_eq!(
        health::handle(&health, get("/health", &[], &user))
            .await
            .status(),
        StatusCode::OK
    );
    assert!(recorder.actions().is_empty(), "liveness calls nothing");
    assert_eq!(
        health::handle(&health, get("/health/ready", &[], &user))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(recorder.actions(), granted("health"), "health");
}
