//! The common library of the chat backend's Lambda functions.
//!
//! Each function is a thin crate: it parses and validates a request, calls into this crate, and
//! maps the result. The layers point one way, each importing only from those below it (see
//! `docs/ARCHITECTURE.md`; a test in `layers` keeps it so):
//!
//! - [`startup`]: a function's configuration applied (process-wide settings, clients' timeouts).
//! - [`http`]: request input into domain values, every error into its answer, [`http::serve`].
//! - [`llm`], [`readiness`]; below them [`store`], [`secrets`]: the dependencies, knowing
//!   nothing of HTTP.
//! - [`aws`]: the SDK clients.
//! - [`domain`], [`config`], [`telemetry`]: values, settings, logs and metrics.
//! - [`tokens`] and the backoff: small helpers.

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
