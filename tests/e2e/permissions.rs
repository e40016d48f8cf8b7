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

/// One statement of a function's policy, and whether it is conditional (`!If [Condition,
/// statement, !Ref AWS::NoValue]`: granted only with some parameters, as Bedrock's).
pub(crate) struct Statement {
    pub(crate) conditional: bool,
    pub(crate) body: serde_norway::Value,
}

/// The statements of the policy of the function whose binary is `binary`.
pub(crate) fn statements(binary: &str) -> Vec<Statement> {
    use serde_norway::Value;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    let template: Value = serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let resources = template["Resources"].as_mapping().unwrap();
    let function = resources
        .values()
        .find(|resource| resource["Metadata"]["BuildProperties"]["Binary"] == binary)
        .unwrap_or_else(|| panic!("no function {binary}"));
    let mut statements = Vec::new();
    for policy in function["Properties"]["Policies"].as_sequence().unwrap() {
        for statement in policy["Statement"].as_sequence().unwrap() {
            match statement {
                Value::Tagged(tagged) if tagged.tag == "If" => {
                    let branches = tagged
                        .value
                        .as_sequence()
                        .expect("!If [condition, then, else]");
                    assert!(
                        matches!(&branches[2], Value::Tagged(no) if no.tag == "Ref" && no.value == "AWS::NoValue"),
                        "{binary}: a conditional statement grants nothing otherwise"
                    );
                    statements.push(Statement {
                        conditional: true,
                        body: branches[1].clone(),
                    });
                }
                other => statements.push(Statement {
                    conditional: false,
                    body: other.clone(),
                }),
            }
        }
    }
    statements
}

/// The actions of a statement.
pub(crate) fn actions(statement: &serde_norway::Value) -> Vec<String> {
    match &statement["Action"] {
        serde_norway::Value::Sequence(list) => list
            .iter()
            .map(|action| action.as_str().unwrap().to_owned())
            .collect(),
        single => vec![single.as_str().unwrap().to_owned()],
    }
}

/// The actions a function's policy grants whatever the parameters, by binary name.
fn granted(binary: &str) -> BTreeSet<String> {
    statements(binary)
        .iter()
        .filter(|statement| !statement.conditional)
        .flat_map(|statement| actions(&statement.body))
        .collect()
}

/// The actions granted only with some parameters.
fn granted_conditionally(binary: &str) -> BTreeSet<String> {
    statements(binary)
        .iter()
        .filter(|statement| statement.conditional)
        .flat_map(|statement| actions(&statement.body))
        .collect()
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

/// Bedrock's calls are the SDK's own client (not the recorded ones): its stub records the
/// operations instead, each mapped to the IAM action that authorizes it. Whole and streamed
/// answers use exactly what the chat function is granted when `LlmProviders` names bedrock, and
/// no other function may call Bedrock.
#[tokio::test]
async fn chat_is_granted_exactly_the_bedrock_actions_it_uses_and_only_with_bedrock() {
    let stack = stack().await;
    let bedrock = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}},
            "stopReason": "end_turn", "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2},
            "metrics": {"latencyMs": 1}})))
        .mount(&bedrock)
        .await;
    let mut config = stack.config.clone();
    config.secret_id = secret_with(&json!({})).await;
    let endpoint = bedrock.uri();
    let chat_config = e2e::chat_config(&[
        ("LLM_PROVIDERS", "bedrock"),
        ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", endpoint.as_str()),
        ("BEDROCK_GUARDRAIL_ID", "gr4x1y2z3abc"),
        ("BEDROCK_GUARDRAIL_VERSION", "1"),
        ("LLM_MAX_ATTEMPTS", "1"),
    ]);
    let chat = e2e::chat_state(&config, chat_config, &stack.clients);
    let user = unique("iam-bedrock");
    let whole = chat::handle(
        &chat,
        chat_request(Some(&user), &[], r#"{"message":"one"}"#),
    )
    .await;
    assert_eq!(whole.status(), StatusCode::OK, "{}", e2e::json_body(&whole));
    // A streamed turn: the stub's JSON is not an event stream, so it fails, after its request.
    let streamed = chat::handle(
        &chat,
        chat_request(
            Some(&user),
            &[("accept", "text/event-stream")],
            r#"{"message":"two"}"#,
        ),
    )
    .await;
    drop(streamed);
    // A call that names a guardrail needs bedrock:ApplyGuardrail as well.
    let used: BTreeSet<String> = bedrock
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .flat_map(|request| {
            let path = request.url.path();
            let invoke = if path.ends_with("/converse-stream") {
                "bedrock:InvokeModelWithResponseStream"
            } else if path.ends_with("/converse") {
                "bedrock:InvokeModel"
            } else {
                panic!("an unexpected Bedrock call: {path}")
            };
            let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
            let guarded = body.get("guardrailConfig").is_some();
            [Some(invoke), guarded.then_some("bedrock:ApplyGuardrail")]
                .into_iter()
                .flatten()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(
        used,
        granted_conditionally("chat"),
        "chat's Bedrock actions"
    );
    for binary in ["history", "feedback", "health"] {
        assert!(
            granted_conditionally(binary)
                .iter()
                .chain(granted(binary).iter())
                .all(|action| !action.starts_with("bedrock:")),
            "{binary} may call Bedrock"
        );
    }
}
