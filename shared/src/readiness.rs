//! Readiness checks of the dependencies: the table answers, the secret exists.
//!
//! Each check is bounded by a timeout, so a hung dependency fails its check instead of hanging
//! the caller. The secret is described, never read: readiness is an anonymous route, and its
//! function holds no permission to read the provider keys.

use std::{future::Future, time::Duration};

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use serde::Serialize;
use tokio::time::Instant;

use aws_sdk_dynamodb::operation::describe_table::DescribeTableError;
use aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretError;

use crate::{aws::AwsClients, config::Config};

/// The outcome of one check.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub latency_ms: u64,
    /// Why it failed, as a category (`timeout`, `unreachable`, `not_found`, `access_denied`, `error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
}

/// The outcome of all checks.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub checks: Vec<Check>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.checks.iter().all(|check| check.ok)
    }

    /// The names of the failed checks.
    pub fn failed(&self) -> Vec<&'static str> {
        self.checks
            .iter()
            .filter(|check| !check.ok)
            .map(|check| check.name)
            .collect()
    }
}

/// Runs every check concurrently, each within `config.health_check_timeout`.
pub async fn check(clients: &AwsClients, config: &Config) -> Readiness {
    let timeout = config.health_check_timeout;
    let table = clients
        .dynamodb
        .describe_table()
        .table_name(&config.table_name)
        .send();
    let secret = clients
        .secrets
        .describe_secret()
        .secret_id(&config.secret_id)
        .send();
    let (dynamodb, secrets) = tokio::join!(
        timed("dynamodb", timeout, async {
            table.await.map(drop).map_err(|err| {
                failure_kind(err, |e: &DescribeTableError| {
                    e.is_resource_not_found_exception()
                })
            })
        }),
        timed("secretsmanager", timeout, async {
            secret.await.map(drop).map_err(|err| {
                failure_kind(err, |e: &DescribeSecretError| {
                    e.is_resource_not_found_exception()
                })
            })
        }),
    );
    Readiness {
        checks: vec![dynamodb, secrets],
    }
}

async fn timed(
    name: &'static str,
    timeout: Duration,
    check: impl Future<Output = Result<(), &'static str>>,
) -> Check {
    let started = Instant::now();
    let outcome = tokio::time::timeout(timeout, check)
        .await
        .unwrap_or(Err("timeout"));
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    if let Err(reason) = outcome {
        tracing::warn!(check = name, reason, latency_ms, "readiness check failed");
    }
    Check {
        name,
        ok: outcome.is_ok(),
        latency_ms,
        error: outcome.err(),
    }
}

/// Sorts an SDK error into a category safe to show on an unauthenticated route; the whole error
/// goes to the log.
fn failure_kind<E, R>(err: SdkError<E, R>, is_not_found: impl Fn(&E) -> bool) -> &'static str
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    tracing::warn!(error = %DisplayErrorContext(&err), "dependency call failed");
    match &err {
        SdkError::TimeoutError(_) => "timeout",
        SdkError::DispatchFailure(failure) if failure.is_timeout() => "timeout",
        SdkError::DispatchFailure(_) => "unreachable",
        SdkError::ServiceError(service) if is_not_found(service.err()) => "not_found",
        // Access denial has no modelled variant on these operations; its code is all there is.
        SdkError::ServiceError(service)
            if service.err().code() == Some("AccessDeniedException") =>
        {
            "access_denied"
        }
        _ => "error",
    }
}
