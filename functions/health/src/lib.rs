//! The health function: liveness, readiness, and the scheduled readiness probe, in one binary.
//!
//! - `GET /health` touches no dependency: it answers while the process can.
//! - `GET /health/ready` checks DynamoDB and Secrets Manager, each within a bounded time; the
//!   result is served for `READINESS_CACHE_MS` before the dependencies are asked again, so an
//!   anonymous flood of calls is not a flood of AWS calls.
//! - An EventBridge `Scheduled Event` runs the same checks, logs one line, and fails the
//!   invocation when a check fails, so Lambda's own `Errors` metric counts probe failures.

use std::time::Instant;

use aws_lambda_events::event::cloudwatch_events::CloudWatchEvent;
use lambda_http::{http::StatusCode, Body, Request, Response};
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::Serialize;
use serde_json::Value;
use shared::{
    aws::AwsClients,
    config::{Config, ConfigError},
    http::{self, event, ApiError, Invocation},
    readiness::{self, Readiness},
};
use tokio::sync::Mutex;

/// What the function builds once per execution environment.
pub struct State {
    config: Config,
    clients: AwsClients,
    /// The last readiness result, and when it was checked.
    readiness: Mutex<Option<(Instant, Readiness)>>,
}

impl State {
    /// Reads the configuration and builds the clients; fails naming a bad variable.
    pub async fn from_env() -> Result<Self, ConfigError> {
        let config = Config::from_env()?;
        shared::startup::apply(&config);
        let clients = AwsClients::load(&config).await;
        Ok(Self::new(config, clients))
    }

    pub fn new(config: Config, clients: AwsClients) -> Self {
        Self {
            config,
            clients,
            readiness: Mutex::new(None),
        }
    }

    /// The dependencies' readiness, checked at most once per `READINESS_CACHE_MS`.
    async fn readiness(&self) -> Readiness {
        // Callers wait for one check instead of each making one.
        let mut cached = self.readiness.lock().await;
        if let Some((at, readiness)) = cached.as_ref() {
            if at.elapsed() < self.config.readiness_cache {
                return readiness.clone();
            }
        }
        let readiness = readiness::check(&self.clients, &self.config).await;
        *cached = Some((Instant::now(), readiness.clone()));
        readiness
    }
}

/// Why an invocation of the function failed (reported to Lambda, counted in `Errors`).
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("the event is neither an API Gateway request nor a scheduled event: {0}")]
    Unsupported(#[source] serde_json::Error),
    #[error("readiness probe failed: {}", failed.join(", "))]
    ProbeFailed { failed: Vec<&'static str> },
}

impl From<EventError> for Diagnostic {
    fn from(err: EventError) -> Self {
        let error_type = match err {
            EventError::Unsupported(_) => "UnsupportedEvent",
            EventError::ProbeFailed { .. } => "ReadinessProbeFailed",
        };
        Diagnostic {
            error_type: error_type.to_owned(),
            error_message: err.to_string(),
        }
    }
}

impl From<event::EventError> for EventError {
    fn from(err: event::EventError) -> Self {
        match err {
            event::EventError::Unsupported(err) => Self::Unsupported(err),
        }
    }
}

/// The Lambda entry point: a scheduled event runs the probe, anything else must be an API
/// Gateway request.
pub async fn handle_event(state: &State, event: LambdaEvent<Value>) -> Result<Value, EventError> {
    let (payload, context) = event.into_parts();
    if payload.get("detail-type").is_some() {
        let event: CloudWatchEvent =
            serde_json::from_value(payload).map_err(EventError::Unsupported)?;
        return probe(state, &event)
            .await
            .map(|report| serde_json::json!(report));
    }
    let handler = |req: Request| handle(state, req);
    Ok(event::invoke(&handler, LambdaEvent::new(payload, context)).await?)
}

/// The HTTP routes of the function; the local API server calls this directly.
pub async fn handle(state: &State, req: Request) -> Response<Body> {
    http::serve(req, state.config.work_budget, |req, invocation| {
        route(state, req, invocation)
    })
    .await
}

/// The function's routes, `(method, resource)` as API Gateway names them.
pub const ROUTES: &[(&str, &str)] = &[("GET", "/health"), ("GET", "/health/ready")];

async fn route(
    state: &State,
    req: Request,
    invocation: Invocation,
) -> Result<Response<Body>, ApiError> {
    let route = http::route(&req, ROUTES)?;
    if route == "/health" {
        return Ok(http::json(StatusCode::OK, &liveness(state, &invocation)));
    }
    let readiness = state.readiness().await;
    let status = if readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok(http::json(status, &ReadinessBody::new(state, readiness)))
}

#[derive(Serialize)]
struct Liveness<'a> {
    status: &'static str,
    service: &'a str,
    version: &'static str,
    function: &'a str,
    cold_start: bool,
}

fn liveness<'a>(state: &'a State, invocation: &Invocation) -> Liveness<'a> {
    Liveness {
        status: "ok",
        service: &state.config.service_name,
        version: env!("CARGO_PKG_VERSION"),
        function: &state.config.function_name,
        cold_start: invocation.cold_start,
    }
}

#[derive(Serialize)]
struct ReadinessBody<'a> {
    status: &'static str,
    service: &'a str,
    version: &'static str,
    /// The names of the failed checks; empty when ready.
    failed: Vec<&'static str>,
    checks: Vec<readiness::Check>,
}

impl<'a> ReadinessBody<'a> {
    fn new(state: &'a State, readiness: Readiness) -> Self {
        Self {
            status: if readiness.is_ready() {
                "ok"
            } else {
                "unavailable"
            },
            service: &state.config.service_name,
            version: env!("CARGO_PKG_VERSION"),
            failed: readiness.failed(),
            checks: readiness.checks,
        }
    }
}

/// The scheduled probe: one structured log line, and an error when a check fails.
async fn probe<'a>(
    state: &'a State,
    event: &CloudWatchEvent,
) -> Result<ReadinessBody<'a>, EventError> {
    // The probe always asks the dependencies themselves.
    let readiness = readiness::check(&state.clients, &state.config).await;
    let body = ReadinessBody::new(state, readiness);
    let checks = serde_json::to_string(&body.checks).unwrap_or_default();
    if body.failed.is_empty() {
        tracing::info!(
            probe = "readiness",
            event_id = event.id.as_deref(),
            ready = true,
            checks,
            "probe"
        );
        Ok(body)
    } else {
        tracing::error!(
            probe = "readiness",
            event_id = event.id.as_deref(),
            ready = false,
            checks,
            "probe"
        );
        Err(EventError::ProbeFailed {
            failed: body.failed,
        })
    }
}
