//! The AWS SDK clients, built once per execution environment and borrowed by every invocation.
//!
//! Endpoints come from the SDK's own resolution, so the standard `AWS_ENDPOINT_URL` variable points
//! every client at the local stack; there is no endpoint plumbing of our own.

use std::time::Duration;

use aws_config::{timeout::TimeoutConfig, BehaviorVersion};

use crate::config::Config;

/// The clients a function may use. Cloning is cheap: clients share their connection pools.
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
}

impl AwsClients {
    /// Builds the clients from the standard AWS configuration chain. It makes no network call:
    /// credentials are resolved lazily, on the first request.
    pub async fn load(config: &Config) -> Self {
        Self::with_timeouts(config.aws_connect_timeout, config.aws_operation_timeout).await
    }

    /// As [`Self::load`], for tools that have no function configuration.
    pub async fn with_timeouts(connect: Duration, operation: Duration) -> Self {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(connect)
            .operation_timeout(operation)
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
