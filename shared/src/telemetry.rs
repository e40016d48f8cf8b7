//! Structured JSON logs through `tracing`, and the cold-start flag.
//!
//! Info-level lines carry ids, routes, statuses and timings; never a secret, never a message body.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use tracing_subscriber::EnvFilter;

static COLD: AtomicBool = AtomicBool::new(true);

/// Installs the JSON log subscriber; the level comes from `RUST_LOG` (default `info`).
/// Call once, first thing in `main`.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A second call (tests, the local server hosting several functions) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_ansi(false)
        .with_env_filter(filter)
        .try_init();
}

/// True exactly once per process: for the first invocation of an execution environment.
pub fn take_cold_start() -> bool {
    COLD.swap(false, Ordering::Relaxed)
}

/// The one summary line of a request.
pub fn request_summary(
    request_id: &str,
    route: &str,
    status: u16,
    latency: Duration,
    cold_start: bool,
) {
    tracing::info!(
        request_id,
        route,
        status,
        latency_ms = latency.as_secs_f64() * 1_000.0,
        cold_start,
        "request"
    );
}
