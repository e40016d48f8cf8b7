//! Shared helpers of the end-to-end tests: the local stack, the sample events, fresh ids.
//!
//! The tests need the local stack that `make test` starts. Without it they fail with a message
//! that says so; they never skip.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use aws_smithy_runtime_api::client::interceptors::Intercept;
use shared::{
    aws::AwsClients,
    config::Config,
    domain::{ConversationId, MessageId, MessageText, UserId},
    store::{keys, ConversationStore, Reply, TurnTarget},
};

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

/// SDK clients for tests, the one way tests build them: the local stack's endpoint unless
/// `endpoint` names another (a hung or proxied table), each call bounded by `operation_timeout`,
/// and `interceptor` (a recorder) on both clients when given.
pub async fn clients_at<I>(
    endpoint: Option<&str>,
    operation_timeout: std::time::Duration,
    interceptor: Option<I>,
) -> AwsClients
where
    I: Intercept + Clone + 'static,
{
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(
        aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(std::time::Duration::from_secs(1))
            .operation_timeout(operation_timeout)
            .build(),
    );
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    let sdk = loader.load().await;
    let mut dynamodb = aws_sdk_dynamodb::config::Builder::from(&sdk);
    let mut secrets = aws_sdk_secretsmanager::config::Builder::from(&sdk);
    if let Some(interceptor) = interceptor {
        dynamodb = dynamodb.interceptor(interceptor.clone());
        secrets = secrets.interceptor(interceptor);
    }
    AwsClients {
        dynamodb: aws_sdk_dynamodb::Client::from_conf(dynamodb.build()),
        secrets: aws_sdk_secretsmanager::Client::from_conf(secrets.build()),
    }
}

/// No interceptor, for [`clients_at`].
#[derive(Debug, Clone)]
pub struct NoInterceptor;

impl Intercept for NoInterceptor {
    fn name(&self) -> &'static str {
        "none"
    }
}

/// A fresh user: tests never share a partition.
pub fn user() -> UserId {
    UserId::parse(&unique("user")).expect("a valid user id")
}

/// A user's message, valid as the chat function would accept it.
pub fn text(content: &str) -> MessageText {
    MessageText::parse(content, 100_000).expect("a valid message")
}

/// A message id from its sequence number.
pub fn message_id(seq: u64) -> MessageId {
    MessageId::new(seq).expect("a valid message id")
}

/// A conversation store with its own SDK client, as a separate Lambda execution environment has.
pub async fn store() -> ConversationStore {
    let stack = stack().await;
    ConversationStore::from_config(&stack.config, &stack.clients)
}

/// An assistant reply as a provider would have produced it.
pub fn reply(content: &str) -> Reply {
    Reply {
        content: content.to_owned(),
        provider: "echo".to_owned(),
        model: "echo-1".to_owned(),
        usage: shared::domain::TokenUsage {
            input_tokens: 3,
            output_tokens: 5,
        },
        ending: shared::store::Ending::Complete,
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
pub fn json_body<B: AsRef<[u8]>>(response: &lambda_http::Response<B>) -> serde_json::Value {
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

/// A user id given as text, as the tests hold them.
fn user_id(user: impl AsRef<str>) -> UserId {
    UserId::parse(user.as_ref()).expect("a valid user id")
}

/// Every item of `user`'s partition in `table`, read directly.
pub async fn partition_items(
    table: &str,
    user: impl AsRef<str>,
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
                aws_sdk_dynamodb::types::AttributeValue::S(keys::partition(&user_id(&user))),
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

/// How many items of stored data `user`'s partition holds in `table`: everything but the budget
/// item, which admission writes before anything else (see `e2e/budget.rs` for it).
pub async fn partition_count(table: &str, user: impl AsRef<str>) -> usize {
    partition_items(table, user)
        .await
        .iter()
        .filter(|item| !is_budget_item(item))
        .count()
}

/// Whether a stored item is a user's budget item (`SK = USAGE`).
pub fn is_budget_item(
    item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
) -> bool {
    item.get("SK")
        .and_then(|key| key.as_s().ok())
        .is_some_and(|key| key == keys::usage())
}

/// Writes messages `first..=last` of a conversation directly (setup for volume tests), shaped
/// as `append_turn` writes them: odd seqs are the user's, even seqs the assistant's.
pub async fn seed_messages(
    table: &str,
    user: impl AsRef<str>,
    conversation: &ConversationId,
    first: u64,
    last: u64,
) {
    let user = &user_id(user);
    use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
    let stack = stack().await;
    let s = |v: String| AttributeValue::S(v);
    let requests: Vec<WriteRequest> = (first..=last)
        .map(|seq| {
            let role = if seq % 2 == 1 { "user" } else { "assistant" };
            let put = PutRequest::builder()
                .item("PK", s(keys::partition(user)))
                .item("SK", s(keys::message(conversation, message_id(seq))))
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
        .key("PK", s(keys::partition(user)))
        .key("SK", s(keys::head(conversation)))
        .update_expression("SET message_count = :count")
        .expression_attribute_values(":count", AttributeValue::N(last.to_string()))
        .send()
        .await
        .expect("set the head's count");
}

/// A conversation of `user` holding `prior` messages in `table` (the one `store` writes to): its first turn through the store (so the head
/// is real), the rest batch-written by [`seed_messages`] in the shape `append_turn` writes.
pub async fn conversation_with_history(
    store: &ConversationStore,
    table: &str,
    user: &UserId,
    prior: u64,
) -> ConversationId {
    let id = ConversationId::generate();
    let target = TurnTarget::New {
        id: id.clone(),
        title: format!("{prior} messages"),
    };
    store
        .append_turn(user, &target, &text("question 0"), &reply("answer 0"))
        .await
        .expect("first turn");
    seed_messages(table, user, &id, 3, prior).await;
    id
}

/// Holds the sample events' user until the guard is dropped. The events (`events/*.json`) share one
/// user and conversation, and the tests that change them (erase and recreate them, add a
/// conversation, replay a request) must not run at once: in one test binary they take turns.
pub async fn hold_sample_user() -> tokio::sync::MutexGuard<'static, ()> {
    static SAMPLE_USER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SAMPLE_USER.lock().await
}

/// The user and conversation the sample events name (`events/*.json` share them), with that
/// conversation freshly created: the user's earlier data is erased, then one turn is stored.
pub async fn sample_conversation() -> (UserId, ConversationId) {
    let sample: serde_json::Value =
        serde_json::from_str(&event("history-list-messages.json")).expect("valid JSON");
    let owner = sample["requestContext"]["authorizer"]["claims"]["sub"]
        .as_str()
        .and_then(UserId::parse)
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
        .append_turn(&owner, &target, &text("q"), &reply("a"))
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

/// What a fault-injecting [`proxy`] does to one DynamoDB operation.
#[derive(Clone)]
pub enum Fault {
    /// Accept it and never answer: it never reaches the table.
    Hang,
    /// Forward it, then never answer: the write lands, its answer is lost.
    LoseAnswer,
    /// Hold it until the gate opens, then forward it: the test orders it after other work.
    Gate(Gate),
    /// The first call as [`Fault::LoseAnswer`]; every later one refused with a
    /// `ValidationException` (an error that is neither a cancellation nor retried by the SDK).
    LoseAnswerThenRefuse(std::sync::Arc<std::sync::atomic::AtomicUsize>),
}

/// Holds requests until opened; tells when one has arrived.
#[derive(Clone)]
pub struct Gate {
    arrived: std::sync::Arc<tokio::sync::Semaphore>,
    open: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            arrived: std::sync::Arc::new(tokio::sync::Semaphore::new(0)),
            open: std::sync::Arc::new(tokio::sync::watch::channel(false).0),
        }
    }
}

impl Gate {
    /// Waits until a request has arrived at the gate (each arrival is waited for once).
    pub async fn arrived(&self) {
        if let Ok(permit) = self.arrived.acquire().await {
            permit.forget();
        }
    }

    /// Lets every held request, and every later one, through.
    pub fn open(&self) {
        self.open.send_replace(true);
    }
}

/// A proxy in front of the local stack that forwards every request, but does `fault` to the
/// DynamoDB operation `operation` (e.g. `TransactWriteItems`). Lives until the returned task is
/// aborted.
pub async fn proxy(
    operation: &str,
    fault: Fault,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use axum::{body::Bytes, http::HeaderMap, response::IntoResponse};
    let target = std::env::var("AWS_ENDPOINT_URL").expect("the local stack's endpoint");
    let faulty = format!("DynamoDB_20120810.{operation}");
    let client = reqwest::Client::new();
    let forward = move |method: axum::http::Method, headers: HeaderMap, body: Bytes| {
        let (client, target, faulty, fault) = (
            client.clone(),
            target.clone(),
            faulty.clone(),
            fault.clone(),
        );
        async move {
            let operation = headers.get("x-amz-target").and_then(|v| v.to_str().ok());
            let fault = (operation == Some(faulty.as_str())).then_some(fault);
            if let Some(Fault::LoseAnswerThenRefuse(calls)) = &fault {
                if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0 {
                    let body = r#"{"__type":"com.amazon.coral.validate#ValidationException","message":"injected"}"#;
                    let mut refused = (axum::http::StatusCode::BAD_REQUEST, body).into_response();
                    refused.headers_mut().insert(
                        "content-type",
                        axum::http::HeaderValue::from_static("application/x-amz-json-1.0"),
                    );
                    return refused;
                }
            }
            match &fault {
                Some(Fault::Hang) => std::future::pending::<()>().await,
                Some(Fault::Gate(gate)) => {
                    gate.arrived.add_permits(1);
                    let _ = gate.open.subscribe().wait_for(|open| *open).await;
                }
                _ => {}
            }
            let mut request = client.request(method, &target).body(body);
            for (name, value) in &headers {
                if name != "host" && name != "content-length" {
                    request = request.header(name, value);
                }
            }
            let response = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    let body = response.bytes().await.unwrap_or_default();
                    (status, headers, body).into_response()
                }
                Err(_) => axum::http::StatusCode::BAD_GATEWAY.into_response(),
            };
            if matches!(
                fault,
                Some(Fault::LoseAnswer | Fault::LoseAnswerThenRefuse(_))
            ) {
                std::future::pending::<()>().await;
            }
            response
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
    let endpoint = format!("http://{address}");
    clients_at(Some(&endpoint), operation_timeout, None::<NoInterceptor>)
        .await
        .dynamodb
}

/// One SDK call as a [`Recorder`] saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The IAM action (`dynamodb:Query`); a transaction is one call per item.
    pub action: String,
    /// `ConsistentRead` of a `GetItem` or `Query`.
    pub consistent: Option<bool>,
    /// `Limit` of a `Query`.
    pub limit: Option<i32>,
}

/// Records every SDK call of the clients it is installed on ([`clients_at`]).
#[derive(Debug, Clone, Default)]
pub struct Recorder(std::sync::Arc<std::sync::Mutex<Vec<Call>>>);

impl Recorder {
    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.0.lock().map(|calls| calls.clone()).unwrap_or_default()
    }

    /// The IAM actions of the calls so far.
    pub fn actions(&self) -> std::collections::BTreeSet<String> {
        self.calls().into_iter().map(|call| call.action).collect()
    }
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "call-recorder"
    }

    fn read_before_serialization(
        &self,
        context: &aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef<'_>,
        _components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        use aws_sdk_dynamodb::operation::{
            get_item::GetItemInput, query::QueryInput,
            transact_write_items::TransactWriteItemsInput,
        };
        let Some(metadata) = cfg.load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
        else {
            return Ok(());
        };
        let service = match metadata.service() {
            "DynamoDB" => "dynamodb",
            "Secrets Manager" | "SecretsManager" => "secretsmanager",
            other => other,
        };
        let input = context.input();
        let mut calls = self.0.lock().map_err(|_| "a poisoned recorder")?;
        let call = |action: String| Call {
            action,
            consistent: None,
            limit: None,
        };
        // A transaction is authorised per item: Put, Update, Delete, ConditionCheck.
        if let Some(input) = input.downcast_ref::<TransactWriteItemsInput>() {
            for item in input.transact_items() {
                let action = if item.put().is_some() {
                    "PutItem"
                } else if item.update().is_some() {
                    "UpdateItem"
                } else if item.delete().is_some() {
                    "DeleteItem"
                } else {
                    "ConditionCheckItem"
                };
                calls.push(call(format!("dynamodb:{action}")));
            }
        } else if let Some(input) = input.downcast_ref::<QueryInput>() {
            calls.push(Call {
                consistent: input.consistent_read(),
                limit: input.limit(),
                ..call("dynamodb:Query".to_owned())
            });
        } else if let Some(input) = input.downcast_ref::<GetItemInput>() {
            calls.push(Call {
                consistent: input.consistent_read(),
                ..call("dynamodb:GetItem".to_owned())
            });
        } else {
            calls.push(call(format!("{service}:{}", metadata.name())));
        }
        Ok(())
    }
}

/// Clients on the local stack that record their calls.
pub async fn recording_clients() -> (AwsClients, Recorder) {
    let timeout = stack().await.config.aws_operation_timeout;
    let recorder = Recorder::default();
    let clients = clients_at(None, timeout, Some(recorder.clone())).await;
    (clients, recorder)
}

/// A chat configuration from `pairs`, every other setting at its default.
pub fn chat_config(pairs: &[(&str, &str)]) -> shared::config::ChatConfig {
    let vars: std::collections::HashMap<&str, &str> = pairs.iter().copied().collect();
    shared::config::ChatConfig::from_lookup(|name| vars.get(name).map(|v| (*v).to_owned()))
        .expect("a valid chat configuration")
}

/// A chat configuration with only the offline `echo` provider.
pub fn echo_chat() -> shared::config::ChatConfig {
    chat_config(&[("LLM_PROVIDERS", "echo")])
}

/// Wiremock servers standing in for OpenAI and Gemini, a secret holding their keys
/// (`sk-test-1`, `g-test-1`), and the chat configuration that points at them (models
/// `gpt-test,gpt-other` and `gemini-test`, fast backoff, 1 s per provider request), adjusted by
/// `overrides`.
pub struct StubbedProviders {
    pub openai: wiremock::MockServer,
    pub gemini: wiremock::MockServer,
    pub secret: String,
    pub config: shared::config::ChatConfig,
}

pub async fn stubbed_providers(overrides: &[(&str, &str)]) -> StubbedProviders {
    let (openai, gemini) = (
        wiremock::MockServer::start().await,
        wiremock::MockServer::start().await,
    );
    let secret = secret_with(
        &serde_json::json!({"openai_api_key": "sk-test-1", "gemini_api_key": "g-test-1"}),
    )
    .await;
    let (openai_url, gemini_url) = (
        format!("{}/v1", openai.uri()),
        format!("{}/v1beta", gemini.uri()),
    );
    let mut pairs = vec![
        ("LLM_PROVIDERS", "openai,gemini,echo"),
        ("OPENAI_BASE_URL", openai_url.as_str()),
        ("OPENAI_MODELS", "gpt-test,gpt-other"),
        ("GEMINI_BASE_URL", gemini_url.as_str()),
        ("GEMINI_MODELS", "gemini-test"),
        ("SYSTEM_PROMPT", "Answer briefly."),
        ("LLM_BACKOFF_BASE_MS", "1"),
        ("LLM_BACKOFF_CAP_MS", "5"),
        ("LLM_REQUEST_TIMEOUT_MS", "1000"),
        ("MAX_OUTPUT_TOKENS", "300"),
    ];
    pairs.retain(|(name, _)| !overrides.iter().any(|(other, _)| other == name));
    pairs.extend_from_slice(overrides);
    StubbedProviders {
        config: chat_config(&pairs),
        openai,
        gemini,
        secret,
    }
}

/// Serves `functions` with the local API server on a free loopback port, for the rest of the
/// test; returns its address.
pub async fn local_server(functions: local_api::Functions) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = listener.local_addr().expect("its address");
    tokio::spawn(local_api::serve(
        listener,
        local_api::router(functions, None),
        std::future::pending(),
    ));
    address
}
