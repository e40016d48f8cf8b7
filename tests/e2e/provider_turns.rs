//! What the provider tests share: a streamed turn through the local API server, and the check
//! that a stalled provider's turn fell back.

use std::time::{Duration, Instant};

use e2e::{drain, stack};
use futures_util::StreamExt;
use serde_json::{json, Value};
use shared::llm::ReplyStream;

/// What a streamed turn through the local API server showed: `GET /models`'s models of
/// `provider`, the turn's events, the replies stored for its user, and `GET /usage` after it.
pub(crate) struct LocalTurn {
    pub(crate) models: Value,
    pub(crate) events: Vec<(String, Value)>,
    pub(crate) stored: Vec<String>,
    pub(crate) usage: Value,
}

/// A streamed turn asking `provider`, through a local API server whose chat function has
/// `chat` (its keys in `secret`), by a fresh user.
pub(crate) async fn local_streamed_turn(
    chat: shared::config::ChatConfig,
    secret: &str,
    provider: &str,
) -> LocalTurn {
    use eventsource_stream::Eventsource;
    let stack = stack().await;
    let mut config = stack.config.clone();
    config.secret_id = secret.to_owned();
    let functions = local_api::Functions::new(config, chat, e2e::feedback_config(), stack.clients)
        .expect("states");
    let address = e2e::local_server(functions).await;
    let user = e2e::unique(provider);
    let client = reqwest::Client::new();
    let get = |route: &'static str| {
        let request = client
            .get(format!("http://{address}{route}"))
            .header("x-dev-user", &user);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let listed = get("/models").await;
    let models = listed["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|listed| listed["name"] == provider)
        .unwrap_or_else(|| panic!("{provider} not listed: {listed}"))["models"]
        .clone();
    let response = client
        .post(format!("http://{address}/chat"))
        .header("x-dev-user", &user)
        .header("accept", "text/event-stream")
        .header("content-type", "application/json")
        .body(json!({"message": "A name for my starter?", "provider": provider}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut events = Vec::new();
    let mut stream = response.bytes_stream().eventsource();
    while let Some(event) = stream.next().await {
        let event = event.unwrap();
        events.push((event.event, serde_json::from_str(&event.data).unwrap()));
    }
    let stored = e2e::user_items(&user)
        .await
        .iter()
        .filter(|item| e2e::is_reply(item))
        .filter_map(|item| item.get("content").and_then(|v| v.as_s().ok()).cloned())
        .collect();
    LocalTurn {
        models,
        events,
        stored,
        usage: get("/usage").await,
    }
}

/// The stream a stalled provider's turn got: the fallback's (echo), whole, well within 5 s.
pub(crate) async fn assert_fell_back_to_echo(stream: &mut ReplyStream, started: Instant) {
    assert_eq!(stream.provider(), "echo");
    let (pieces, error) = drain(stream).await;
    assert!(
        error.is_none() && !pieces.is_empty(),
        "{pieces:?} {error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
