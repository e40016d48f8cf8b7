//! The local stack: its configuration and SDK clients, fresh ids and values, sample events,
//! secrets and private tables.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use aws_smithy_runtime_api::client::interceptors::Intercept;
use shared::{
    aws::AwsClients,
    config::Config,
    domain::{MessageId, MessageText, UserId},
    store::{ConversationStore, Reply},
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

/// A user id given as text, as the tests hold them.
pub(crate) fn user_id(user: impl AsRef<str>) -> UserId {
    UserId::parse(user.as_ref()).expect("a valid user id")
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
