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
