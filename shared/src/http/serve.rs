//! [`serve`]: every HTTP route runs through it. It works out the invocation's deadlines, matches
//! the route, turns an error into its problem answer, and logs the request's one summary line.

use std::{
    future::Future,
    time::{Duration, Instant, SystemTime},
};

use lambda_http::{request::RequestContext, Body, Request, RequestExt, Response};

use super::ApiError;
use crate::telemetry;

/// What [`serve`] knows about the invocation, handed to the route.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub request_id: String,
    /// True for the first invocation of this execution environment.
    pub cold_start: bool,
    /// When the work must be done: the Lambda deadline less a margin for answering, and never
    /// later than API Gateway's integration limit allows, with room to spare.
    pub deadline: Instant,
    /// The last moment an answer is still useful: the Lambda deadline or API Gateway's 29 s, less
    /// the margin for answering. Only for finishing what must not be cut short (a write whose
    /// outcome the caller must learn); new work keeps to [`Self::deadline`].
    pub hard_deadline: Instant,
    /// The Lambda deadline less the margin for answering, not capped by API Gateway's 29 s:
    /// what a streamed answer, which the gateway lets run longer, keeps to. `None` outside Lambda.
    pub lambda_deadline: Option<Instant>,
}

/// API Gateway's REST integration gives up after 29 s; we answer before that.
const GATEWAY_LIMIT: Duration = Duration::from_secs(29);
/// Kept back from the Lambda deadline to write the answer and the log line.
const DEADLINE_MARGIN: Duration = Duration::from_millis(500);

/// The time left before the Lambda deadline, less the margin for answering.
fn lambda_remaining(req: &Request) -> Option<Duration> {
    req.lambda_context_ref()
        .filter(|context| context.deadline > 0)
        .map(|context| {
            context
                .deadline()
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .saturating_sub(DEADLINE_MARGIN)
        })
}

/// The invocation's (work, hard) deadlines.
fn deadlines_of(req: &Request, now: Instant, budget: Duration) -> (Instant, Instant) {
    let gateway = GATEWAY_LIMIT.saturating_sub(DEADLINE_MARGIN);
    let hard = lambda_remaining(req).map_or(gateway, |remaining| remaining.min(gateway));
    (now + hard.min(budget), now + hard)
}

/// The route template API Gateway matched (`/conversations/{id}`), not the raw path, so that
/// routing and logs never depend on ids.
pub fn route_of(req: &Request) -> Option<&str> {
    match req.request_context_ref()? {
        RequestContext::ApiGatewayV1(context) => context.resource_path.as_deref(),
        RequestContext::ApiGatewayV2(context) => context
            .route_key
            .as_deref()
            .map(|key| key.split_once(' ').map_or(key, |(_, path)| path)),
        _ => None,
    }
}

/// Matches a request against a function's routes, `(method, resource)`: the resource it matched,
/// or a 404 for an unknown resource, or a 405 naming the allowed methods.
pub fn route(req: &Request, routes: &[(&str, &'static str)]) -> Result<&'static str, ApiError> {
    let resource = route_of(req).unwrap_or_default();
    let mut allowed = Vec::new();
    for (method, candidate) in routes {
        if *candidate == resource {
            if req.method().as_str() == *method {
                return Ok(candidate);
            }
            allowed.push(*method);
        }
    }
    if allowed.is_empty() {
        return Err(ApiError::NotFound(format!("no route for {resource:?}")));
    }
    Err(ApiError::MethodNotAllowed {
        method: req.method().to_string(),
        allowed: allowed.join(", "),
    })
}

/// API Gateway's request id (what clients see in `x-amzn-RequestId`), else Lambda's.
fn request_id(req: &Request) -> String {
    let gateway = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(context)) => context.request_id.clone(),
        Some(RequestContext::ApiGatewayV2(context)) => context.request_id.clone(),
        _ => None,
    };
    gateway
        .or_else(|| {
            req.lambda_context_ref()
                .map(|context| context.request_id.clone())
        })
        .unwrap_or_else(|| "-".to_owned())
}

/// Runs one HTTP invocation: turns an error into its problem response, and logs the one summary
/// line of the request (request id, route, status, latency, cold start).
/// `budget` is the time for the work (`WORK_BUDGET_MS`); the rest of the invocation's time is
/// for finishing it.
pub async fn serve<F, Fut, B>(req: Request, budget: Duration, route: F) -> Response<B>
where
    F: FnOnce(Request, Invocation) -> Fut,
    Fut: Future<Output = Result<Response<B>, ApiError>>,
    B: From<Body>,
{
    let started = Instant::now();
    let (deadline, hard_deadline) = deadlines_of(&req, started, budget);
    let invocation = Invocation {
        request_id: request_id(&req),
        cold_start: telemetry::take_cold_start(),
        deadline,
        hard_deadline,
        lambda_deadline: lambda_remaining(&req).map(|left| started + left),
    };
    let route_name = format!("{} {}", req.method(), route_of(&req).unwrap_or("-"));
    let request_id = invocation.request_id.clone();
    let cold_start = invocation.cold_start;
    let response = match route(req, invocation).await {
        Ok(response) => response,
        Err(err) => {
            err.log(&request_id);
            err.to_response(&request_id).map(B::from)
        }
    };
    telemetry::request_summary(
        &request_id,
        &route_name,
        response.status().as_u16(),
        started.elapsed(),
        cold_start,
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both deadlines of a request whose Lambda invocation has `left` (none: not in Lambda), as
    /// durations from `now`.
    fn deadlines_with(left: Option<Duration>) -> (Duration, Duration) {
        let mut req = Request::default();
        if let Some(left) = left {
            let mut context = lambda_http::Context::default();
            let at = SystemTime::now() + left;
            context.deadline = u64::try_from(
                at.duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis(),
            )
            .unwrap();
            req = req.with_lambda_context(context);
        }
        let now = Instant::now();
        let (work, hard) = deadlines_of(&req, now, Duration::from_secs(25));
        (work - now, hard - now)
    }

    #[test]
    fn work_keeps_within_the_gateway_budget_and_finishing_within_the_lambda_deadline() {
        let close = |a: Duration, b: f64| (a.as_secs_f64() - b).abs() < 0.1;
        // Lambda's 29 s timeout: work for 25 s, finishing until 28.5 s.
        let (work, hard) = deadlines_with(Some(Duration::from_secs(29)));
        assert!(close(work, 25.0) && close(hard, 28.5), "{work:?} {hard:?}");
        // A shorter invocation bounds both, less the margin for answering.
        let (work, hard) = deadlines_with(Some(Duration::from_secs(10)));
        assert!(close(work, 9.5) && close(hard, 9.5), "{work:?} {hard:?}");
        // A longer one cannot outlast API Gateway's 29 s.
        let (work, hard) = deadlines_with(Some(Duration::from_secs(900)));
        assert!(close(work, 25.0) && close(hard, 28.5), "{work:?} {hard:?}");
        // Outside Lambda (the local server): the gateway's limits.
        let (work, hard) = deadlines_with(None);
        assert!(close(work, 25.0) && close(hard, 28.5), "{work:?} {hard:?}");
    }
}
