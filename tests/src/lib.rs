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

pub mod bench;

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
    shared::store::ConversationStore::from_config(&stack.config, &stack.clients)
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
    request_with(method, resource, path_parameters, query, user, &[], b"")
}

/// `POST /chat` with a JSON body, as `user`, with extra headers.
pub fn chat_request(
    user: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> lambda_http::Request {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    request_with("POST", "/chat", &[], None, user, &all, body.as_bytes())
}

/// Any API Gateway request, built as the local API server builds it.
pub fn request_with(
    method: &str,
    resource: &str,
    path_parameters: &[(&str, &str)],
    query: Option<&str>,
    user: Option<&str>,
    extra_headers: &[(&str, &str)],
    body: &[u8],
) -> lambda_http::Request {
    use lambda_http::http::{HeaderMap, HeaderName, HeaderValue, Method};
    let mut path = resource.to_owned();
    for (name, value) in path_parameters {
        path = path.replace(&format!("{{{name}}}"), value);
    }
    let mut headers = HeaderMap::new();
    if let Some(user) = user {
        let value = HeaderValue::from_str(user).expect("a header-safe user id");
        headers.insert(local_api::DEV_USER_HEADER, value);
    }
    for (name, value) in extra_headers {
        headers.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
            HeaderValue::from_str(value).expect("a header value"),
        );
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
        body,
        request_id: &unique("req"),
    });
    lambda_http::request::from_str(&event.to_string()).expect("lambda_http parses the event")
}

/// The JSON body of a response.
pub fn json_body(response: &lambda_http::Response<lambda_http::Body>) -> serde_json::Value {
    serde_json::from_slice(response.body().as_ref()).unwrap_or(serde_json::Value::Null)
}

/// A new secret holding `keys` (a JSON object); returns its name.
pub async fn secret_with(keys: &serde_json::Value) -> String {
    let stack = stack().await;
    let name = unique("keys");
    stack
        .clients
        .secrets
        .create_secret()
        .name(&name)
        .secret_string(keys.to_string())
        .send()
        .await
        .expect("create a secret");
    name
}

/// Replaces the value of secret `name`, as a key rotation does.
pub async fn rotate_secret(name: &str, keys: &serde_json::Value) {
    stack()
        .await
        .clients
        .secrets
        .put_secret_value()
        .secret_id(name)
        .secret_string(keys.to_string())
        .send()
        .await
        .expect("put a secret value");
}

/// A table with the deployed key schema, for tests whose volume would slow everyone else's.
pub async fn private_table() -> String {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let stack = stack().await;
    let name = unique("table");
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("an attribute definition")
    };
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .expect("a key schema element")
    };
    stack
        .clients
        .dynamodb
        .create_table()
        .table_name(&name)
        .attribute_definitions(attribute("PK"))
        .attribute_definitions(attribute("SK"))
        .key_schema(key("PK", KeyType::Hash))
        .key_schema(key("SK", KeyType::Range))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create a table");
    name
}

/// Every item of `user`'s partition in `table`, read directly.
pub async fn partition_items(
    table: &str,
    user: &str,
) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    let stack = stack().await;
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let output = stack
            .clients
            .dynamodb
            .query()
            .table_name(table)
            .key_condition_expression("PK = :pk")
            .expression_attribute_values(
                ":pk",
                aws_sdk_dynamodb::types::AttributeValue::S(format!("USER#{user}")),
            )
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("query the partition");
        items.extend(output.items().iter().cloned());
        start = output.last_evaluated_key().cloned();
        if start.is_none() {
            return items;
        }
    }
}

/// How many items `user`'s partition holds in `table`.
pub async fn partition_count(table: &str, user: &str) -> usize {
    partition_items(table, user).await.len()
}

/// Writes messages `first..=last` of a conversation directly (setup for volume tests), shaped
/// as `append_turn` writes them: odd seqs are the user's, even seqs the assistant's.
pub async fn seed_messages(table: &str, user: &str, conversation: &str, first: u64, last: u64) {
    use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
    let stack = stack().await;
    let s = |v: String| AttributeValue::S(v);
    let requests: Vec<WriteRequest> = (first..=last)
        .map(|seq| {
            let role = if seq % 2 == 1 { "user" } else { "assistant" };
            let put = PutRequest::builder()
                .item("PK", s(format!("USER#{user}")))
                .item("SK", s(format!("MSG#{conversation}#{seq:012}")))
                .item("role", s(role.to_owned()))
                .item("content", s(format!("message {seq}")))
                .item("created_at", s("2026-11-27T06:00:00.000Z".to_owned()))
                .item("turn", s("seed".to_owned()))
                .build()
                .expect("a put request");
            WriteRequest::builder().put_request(put).build()
        })
        .collect();
    for batch in requests.chunks(25) {
        let mut pending = batch.to_vec();
        while !pending.is_empty() {
            let output = stack
                .clients
                .dynamodb
                .batch_write_item()
                .request_items(table, pending)
                .send()
                .await
                .expect("batch write");
            pending = output
                .unprocessed_items()
                .and_then(|items| items.get(table))
                .cloned()
                .unwrap_or_default();
        }
    }
    stack
        .clients
        .dynamodb
        .update_item()
        .table_name(table)
        .key("PK", s(format!("USER#{user}")))
        .key("SK", s(format!("CONV#{conversation}")))
        .update_expression("SET message_count = :count")
        .expression_attribute_values(":count", AttributeValue::N(last.to_string()))
        .send()
        .await
        .expect("set the head's count");
}

/// A conversation of `user` holding `prior` messages in `table` (the one `store` writes to): its first turn through the store (so the head
/// is real), the rest batch-written by [`seed_messages`] in the shape `append_turn` writes.
pub async fn conversation_with_history(
    store: &shared::store::ConversationStore,
    table: &str,
    user: &shared::identity::UserId,
    prior: u64,
) -> shared::store::ConversationId {
    use shared::store::{ConversationId, TurnTarget};
    let id = ConversationId::generate();
    let target = TurnTarget::New {
        id: id.clone(),
        title: format!("{prior} messages"),
    };
    store
        .append_turn(user, &target, "question 0", &reply("answer 0"))
        .await
        .expect("first turn");
    seed_messages(table, user.as_str(), id.as_str(), 3, prior).await;
    id
}

/// The user and conversation the sample events name (`events/*.json` share them), with that
/// conversation freshly created: the user's earlier data is erased, then one turn is stored.
pub async fn sample_conversation() -> (shared::identity::UserId, shared::store::ConversationId) {
    use shared::store::{ConversationId, TurnTarget};
    let sample: serde_json::Value =
        serde_json::from_str(&event("history-list-messages.json")).expect("valid JSON");
    let owner = sample["requestContext"]["authorizer"]["claims"]["sub"]
        .as_str()
        .and_then(shared::identity::UserId::parse)
        .expect("the samples' user id is valid");
    let id = sample["pathParameters"]["id"]
        .as_str()
        .and_then(ConversationId::parse)
        .expect("the samples' conversation id is valid");
    let store = store().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    store
        .erase_user(&owner, deadline)
        .await
        .expect("erase the sample user");
    let target = TurnTarget::New {
        id: id.clone(),
        title: "sample".to_owned(),
    };
    store
        .append_turn(&owner, &target, "q", &reply("a"))
        .await
        .expect("the sample conversation");
    (owner, id)
}

/// An address that accepts connections and never answers: a hung dependency. The listener lives
/// until the returned task is aborted.
pub async fn hung_endpoint() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = listener.local_addr().expect("its address");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (address, task)
}

/// A proxy in front of the local stack that forwards every request except the DynamoDB
/// operation `hung` (e.g. `TransactWriteItems`), which it accepts and never answers: a table
/// that reads but whose writes of that kind time out. Lives until the returned task is aborted.
pub async fn proxy_hanging(hung: &str) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use axum::{body::Bytes, http::HeaderMap, response::IntoResponse};
    let target = std::env::var("AWS_ENDPOINT_URL").expect("the local stack's endpoint");
    let hung_target = format!("DynamoDB_20120810.{hung}");
    let client = reqwest::Client::new();
    let forward = move |method: axum::http::Method, headers: HeaderMap, body: Bytes| {
        let (client, target, hung_target) = (client.clone(), target.clone(), hung_target.clone());
        async move {
            let operation = headers.get("x-amz-target").and_then(|v| v.to_str().ok());
            if operation == Some(hung_target.as_str()) {
                std::future::pending::<()>().await;
            }
            let mut request = client.request(method, &target).body(body);
            for (name, value) in &headers {
                if name != "host" && name != "content-length" {
                    request = request.header(name, value);
                }
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    let body = response.bytes().await.unwrap_or_default();
                    (status, headers, body).into_response()
                }
                Err(_) => axum::http::StatusCode::BAD_GATEWAY.into_response(),
            }
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = listener.local_addr().expect("its address");
    let app = axum::Router::new().fallback(forward);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (address, task)
}

/// A DynamoDB client for the endpoint at `address` (a hung or proxied table), each call bounded by
/// `operation_timeout`.
pub async fn dynamodb_at(
    address: std::net::SocketAddr,
    operation_timeout: std::time::Duration,
) -> aws_sdk_dynamodb::Client {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(format!("http://{address}"))
        .region(aws_config::Region::new("us-east-1"))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_timeout(operation_timeout)
                .build(),
        )
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&sdk)
}
