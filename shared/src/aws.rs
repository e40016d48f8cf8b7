//! The AWS SDK clients, built once per execution environment and borrowed by every invocation.
//!
//! Endpoints come from the SDK's own resolution, so the standard `AWS_ENDPOINT_URL` variable points
//! every client at the local stack; there is no endpoint plumbing of our own.

use std::time::Duration;

use aws_config::{timeout::TimeoutConfig, BehaviorVersion};

/// The clients a function may use. Cloning is cheap: clients share their connection pools.
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
}

/// The timeouts of every client (a function's `Config` gives them: `shared::startup`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// The longest a connection may take to open.
    pub connect: Duration,
    /// The longest one call may take, its retries included.
    pub operation: Duration,
}

impl AwsClients {
    /// Builds the clients from the standard AWS configuration chain, with `timeouts` (a
    /// function's `&Config`, or [`Timeouts`] for tools that have none). It makes no network
    /// call: credentials are resolved lazily, on the first request.
    pub async fn load(timeouts: impl Into<Timeouts>) -> Self {
        let timeouts = timeouts.into();
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(timeouts.connect)
            .operation_timeout(timeouts.operation)
            .build();
        let sdk_config = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(timeouts)
            .load()
            .await;
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(&sdk_config),
            secrets: aws_sdk_secretsmanager::Client::new(&sdk_config),
        }
    }
}
