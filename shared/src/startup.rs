//! The wiring of a function's execution environment: where its configuration meets the layers
//! that must not know it as a whole.
//!
//! Each function, and the local API server, reads its [`Config`] once, calls [`apply`] once,
//! then builds its clients (`AwsClients::load(&config)`) and its state.

use std::{future::Future, time::Duration};

use crate::{aws::Timeouts, config::Config, http, telemetry};

/// Applies the process-wide settings of `config`, once per execution environment: the CORS
/// origin of every answer, and whether CloudWatch metric records are written (with the
/// function's name in them). The first call of a process wins.
pub fn apply(config: &Config) {
    http::set_allowed_origin(config.cors_allow_origin.as_deref());
    telemetry::configure_metrics(config.metrics, &config.function_name);
}

/// Runs `opening` before the function's first `next`, for at most `within` (its config's
/// `connect_at_init`; zero runs nothing): what the first call would otherwise open itself, its
/// connections and handshakes, so that the first caller does not wait for them (init runs
/// before any caller when the environment is provisioned ahead, and Lambda gives it more CPU;
/// `docs/PERFORMANCE.md`, "The first turn after a cold start"). `opening` logs its own
/// failures; what is not done within `within` is left to the first call. Init never fails for
/// it and waits no longer than `within`, however a dependency fails.
pub async fn connect_at_init(within: Duration, opening: impl Future<Output = ()>) {
    if within.is_zero() {
        return;
    }
    if tokio::time::timeout(within, opening).await.is_err() {
        tracing::warn!(
            within_ms = within.as_millis() as u64,
            "not everything was open at the end of CONNECT_AT_INIT_MS; the first call opens the rest"
        );
    }
}

impl From<&Config> for Timeouts {
    fn from(config: &Config) -> Self {
        Self {
            connect: config.aws_connect_timeout,
            operation: config.aws_operation_timeout,
        }
    }
}
