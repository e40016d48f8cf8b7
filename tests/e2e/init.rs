//! What the functions open during init (`CONNECT_AT_INIT_MS`): the connections their first call
//! would otherwise open, counted at a TCP relay in front of each dependency; and an init that a
//! hung dependency holds no longer than that setting.

use std::time::{Duration, Instant};

use e2e::{
    api_request, chat_request, chat_state, clients_at, hung_endpoint, json_body, openai_reply,
    stack, unique, user, CountingRelay, NoInterceptor, OPENAI_PATH,
};
use lambda_http::http::StatusCode;
use serde_json::json;
use shared::aws::AwsClients;
use wiremock::{
    matchers::{header, method, path},
    Mock, ResponseTemplate,
};

/// A counting relay in front of the local stack, and SDK clients that go through it.
async fn relayed_aws() -> (CountingRelay, AwsClients) {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("the local stack's endpoint");
    let local_stack = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("the local stack at an IP address and port");
    let relay = CountingRelay::start(local_stack).await;
    let clients = clients_at(
        Some(&format!("http://{}", relay.address)),
        Duration::from_secs(60),
        None::<NoInterceptor>,
    )
    .await;
    (relay, clients)
}

#[tokio::test]
async fn chat_opens_at_init_every_connection_its_first_turn_uses_and_the_turn_opens_none() {
    let stack = stack().await;
    let (aws, clients) = relayed_aws().await;
    let stubs = e2e::stubbed_providers(&[]).await;
    let provider = CountingRelay::start(*stubs.openai.address()).await;
    let base_url = format!("http://{}/v1", provider.address);
    let chat = e2e::chat_config(&[
        ("LLM_PROVIDERS", "openai"),
        ("OPENAI_BASE_URL", &base_url),
        ("OPENAI_MODELS", "gpt-test"),
    ]);
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .and(header("authorization", "Bearer sk-test-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list",
            "data": [{"id": "gpt-test", "object": "model", "owned_by": "test"}],
        })))
        .expect(1)
        .mount(&stubs.openai)
        .await;
    Mock::given(method("POST"))
        .and(path(OPENAI_PATH))
        .respond_with(openai_reply("Call it Clint Yeastwood."))
        .expect(1)
        .mount(&stubs.openai)
        .await;
    let mut config = stack.config.clone();
    config.secret_id = stubs.secret.clone();
    config.connect_at_init = Duration::from_secs(5);
    let state = chat_state(&config, chat, &clients);

    state.connect_at_init().await;
    // Two to DynamoDB (the turn's last two writes go side by side) and one to Secrets Manager;
    // one to the provider, opened with the key the secret holds (the mock checks it).
    assert_eq!(
        aws.connections(),
        3,
        "connections to the AWS endpoint after init"
    );
    assert_eq!(
        provider.connections(),
        1,
        "connections to the provider after init"
    );

    let user = unique("init-user");
    let body = json!({"message": "A name for my sourdough starter?"}).to_string();
    let response = chat::handle(&state, chat_request(Some(&user), &[], &body)).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{}",
        json_body(&response)
    );
    assert_eq!(json_body(&response)["reply"], "Call it Clint Yeastwood.");
    assert_eq!(
        aws.connections(),
        3,
        "the first turn opened AWS connections"
    );
    assert_eq!(
        provider.connections(),
        1,
        "the first turn opened a provider connection"
    );
}

#[tokio::test]
async fn history_opens_its_connections_at_init_and_none_when_told_not_to() {
    let stack = stack().await;
    for (within, expected) in [(Duration::ZERO, 0), (Duration::from_secs(5), 2)] {
        let (aws, clients) = relayed_aws().await;
        let mut config = stack.config.clone();
        config.connect_at_init = within;
        let state = history::State::new(&config, &clients);
        state.connect_at_init().await;
        assert_eq!(aws.connections(), expected, "CONNECT_AT_INIT_MS {within:?}");

        let user = user();
        let request = api_request("GET", "/conversations", &[], None, Some(user.as_str()));
        let response = history::handle(&state, request).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{}",
            json_body(&response)
        );
        assert_eq!(aws.connections(), expected.max(1), "after the first call");
    }
}

#[tokio::test]
async fn a_dependency_that_never_answers_holds_init_no_longer_than_connect_at_init() {
    let stack = stack().await;
    let (hung, hold) = hung_endpoint().await;
    // Every AWS call hangs (the operation timeout is a minute); the provider is never reached.
    let clients = clients_at(
        Some(&format!("http://{hung}")),
        Duration::from_secs(60),
        None::<NoInterceptor>,
    )
    .await;
    let stubs = e2e::stubbed_providers(&[]).await;
    let mut config = stack.config.clone();
    config.secret_id = stubs.secret.clone();
    config.connect_at_init = Duration::from_millis(300);
    let state = chat_state(&config, stubs.config, &clients);

    let started = Instant::now();
    state.connect_at_init().await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
        "init waited {waited:?} for a hung dependency, with CONNECT_AT_INIT_MS=300"
    );
    hold.abort();
}
