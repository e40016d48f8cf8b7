//! Shared helpers of the end-to-end tests: the local stack, the sample events, fresh ids.
//!
//! The tests need the local stack that `make test` starts. Without it they fail with a message
//! that says so; they never skip.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use shared::{aws::AwsClients, config::Config};

/// The configuration and clients of the local stack.
pub struct Stack {
    pub config: Config,
    pub clients: AwsClients,
}

/// Connects to the local stack that `make test` started, or fails the test saying how to start it.
pub async fn stack() -> Stack {
    const HOW: &str = "the end-to-end tests need the local AWS stack: run them with `make test`";
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .unwrap_or_else(|_| panic!("AWS_ENDPOINT_URL is not set; {HOW}"));
    let address = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    if let Err(err) = tokio::net::TcpStream::connect(&address).await {
        panic!("the local stack at {endpoint} does not answer ({err}); {HOW}");
    }
    let config = Config::from_env().unwrap_or_else(|err| panic!("{err}; {HOW}"));
    let clients = AwsClients::load(&config).await;
    Stack { config, clients }
}

/// The text of `events/<name>`.
pub fn event(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../events")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// An id no other test (or earlier run) uses: tests are isolated by fresh ids, not by order.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{nanos:x}-{}-{n}", std::process::id())
}

/// A fresh user: tests never share a partition.
pub fn user() -> shared::identity::UserId {
    shared::identity::UserId::parse(&unique("user")).expect("a valid user id")
}

/// A conversation store with its own SDK client, as a separate Lambda execution environment has.
pub async fn store() -> shared::store::ConversationStore {
    let stack = stack().await;
    shared::store::ConversationStore::new(
        stack.clients.dynamodb,
        stack.config.table_name.clone(),
        stack.config.retention(),
    )
}

/// An assistant reply as a provider would have produced it.
pub fn reply(content: &str) -> shared::store::Reply {
    shared::store::Reply {
        content: content.to_owned(),
        provider: "echo".to_owned(),
        model: "echo-1".to_owned(),
        usage: shared::store::TokenUsage {
            input_tokens: 3,
            output_tokens: 5,
        },
    }
}

/// An API Gateway request for `resource`, built exactly as the local API server builds it;
/// `user` becomes the authorizer's claims.
pub fn api_request(
    method: &str,
    resource: &str,
    path_parameters: &[(&str, &str)],
    query: Option<&str>,
    user: Option<&str>,
) -> lambda_http::Request {
    use lambda_http::http::{HeaderMap, HeaderValue, Method};
    let mut path = resource.to_owned();
    for (name, value) in path_parameters {
        path = path.replace(&format!("{{{name}}}"), value);
    }
    let mut headers = HeaderMap::new();
    if let Some(user) = user {
        let value = HeaderValue::from_str(user).expect("a header-safe user id");
        headers.insert(local_api::DEV_USER_HEADER, value);
    }
    let method = Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let path_parameters = path_parameters
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let event = local_api::proxy_event(&local_api::ProxyRequest {
        method: &method,
        path: &path,
        resource,
        headers: &headers,
        query,
        path_parameters: &path_parameters,
        body: b"",
        request_id: &unique("req"),
    });
    lambda_http::request::from_str(&event.to_string()).expect("lambda_http parses the event")
}

/// The JSON body of a response.
pub fn json_body(response: &lambda_http::Response<lambda_http::Body>) -> serde_json::Value {
    serde_json::from_slice(response.body().as_ref()).unwrap_or(serde_json::Value::Null)
}
