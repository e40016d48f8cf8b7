//! The common library of the chat backend's Lambda functions.
//!
//! Each function is a thin crate: it parses and validates a request, calls into this crate, and
//! maps the result. The layers point one way (see `docs/ARCHITECTURE.md`):
//!
//! - [`http`]: request input into domain values, every error into its answer, [`http::serve`].
//! - [`store`], [`llm`], [`secrets`], [`readiness`]: the dependencies, knowing nothing of HTTP.
//! - [`domain`], [`config`], [`telemetry`], [`aws`]: values, settings, logs and metrics, clients.

pub mod aws;
mod backoff;
pub mod config;
pub mod domain;
pub mod http;
#[cfg(test)]
mod layers;
pub mod llm;
pub mod readiness;
pub mod secrets;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tokens;

/// A boxed error that keeps its cause chain for the logs.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
