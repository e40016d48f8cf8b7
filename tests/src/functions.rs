//! The functions' states, built as their `main`s build them, and the local API server serving
//! them. Tests build states only here: when a function's constructor changes, this is the place to
//! adapt.

use std::{future::Future, net::SocketAddr, path::PathBuf};

use shared::{
    aws::AwsClients,
    config::{ChatConfig, Config, FeedbackConfig},
};

use crate::{providers::echo_chat, stack::stack};

/// The chat function's state with `config`, `chat` and `clients`.
pub fn chat_state(config: &Config, chat: ChatConfig, clients: &AwsClients) -> chat::State {
    chat::State::new(config, chat, clients).expect("the chat state")
}

/// The chat function on the local stack, with only the echo provider.
pub async fn echo_chat_state() -> chat::State {
    let stack = stack().await;
    chat_state(&stack.config, echo_chat(), &stack.clients)
}

/// The history function on the local stack's configuration, calling AWS with `clients`.
pub async fn history_state(clients: &AwsClients) -> history::State {
    history::State::new(&stack().await.config, clients)
}

/// The feedback function's settings, every one at its default.
pub fn feedback_config() -> FeedbackConfig {
    FeedbackConfig::from_lookup(|_| None).expect("the default configuration")
}

/// The feedback function on the local stack's configuration, its settings at their defaults,
/// calling AWS with `clients`.
pub async fn feedback_state(clients: &AwsClients) -> feedback::State {
    feedback::State::new(&stack().await.config, feedback_config(), clients)
}

/// Every function's state from the environment `make test` sets, as the local API server builds
/// them; fails early, and clearly, without the local stack.
pub async fn local_functions() -> local_api::Functions {
    stack().await;
    local_api::Functions::from_env()
        .await
        .expect("configuration from make test")
}

/// Serves `functions` with the local API server on a free loopback port, and the web client from
/// `web_root` if given, until `shutdown` resolves; returns its address and the server's task.
pub async fn serve_local_api(
    functions: local_api::Functions,
    web_root: Option<PathBuf>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = listener.local_addr().expect("its address");
    let task = tokio::spawn(local_api::serve(
        listener,
        local_api::router(functions, web_root),
        shutdown,
    ));
    (address, task)
}

/// Serves `functions` with the local API server on a free loopback port, for the rest of the
/// test; returns its address.
pub async fn local_server(functions: local_api::Functions) -> SocketAddr {
    serve_local_api(functions, None, std::future::pending())
        .await
        .0
}
