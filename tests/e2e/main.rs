//! The end-to-end tests, one test binary: a module per area, each test isolated by fresh ids.
//! Their helpers are the `e2e` library (`tests/src`), which the benchmark tools use too.
//!
//! The tests need the local stack that `make test` starts; without it they fail saying so.

mod anthropic;
mod bedrock;
mod branches;
mod budget;
mod chat;
mod contract;
mod feedback;
mod health;
mod history;
mod hostile;
mod init;
mod llm_stream;
mod local_api;
pub(crate) mod permissions;
mod provider_turns;
mod runtime;
mod store;
mod stream;
