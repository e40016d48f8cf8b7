//! The common library of the chat backend's Lambda functions.
//!
//! Each function is a thin crate: it parses and validates a request, calls into this crate, and
//! maps the result. Everything that talks to AWS, every error type and the telemetry live here.

pub mod aws;
pub mod config;
pub mod http;
pub mod identity;
pub mod llm;
pub mod readiness;
pub mod secrets;
pub mod store;
pub mod telemetry;
