//! The wiring of a function's execution environment: where its configuration meets the layers
//! that must not know it as a whole.
//!
//! Each function, and the local API server, reads its [`Config`] once, calls [`apply`] once,
//! then builds its clients (`AwsClients::load(&config)`) and its state.

use crate::{aws::Timeouts, config::Config, http, telemetry};

/// Applies the process-wide settings of `config`, once per execution environment: the CORS
/// origin of every answer, and whether CloudWatch metric records are written (with the
/// function's name in them). The first call of a process wins.
pub fn apply(config: &Config) {
    http::set_allowed_origin(config.cors_allow_origin.as_deref());
    telemetry::configure_metrics(config.metrics, &config.function_name);
}

impl From<&Config> for Timeouts {
    fn from(config: &Config) -> Self {
        Self {
            connect: config.aws_connect_timeout,
            operation: config.aws_operation_timeout,
        }
    }
}
