//! The API layer's one error type, its one mapping to `application/problem+json` (RFC 9457),
//! JSON responses, and [`serve`], which every HTTP route runs through.

use std::{
    collections::HashMap,
    future::Future,
    time::{Duration, Instant, SystemTime},
};

use lambda_http::{
    http::{header, HeaderValue, StatusCode},
    request::RequestContext,
    Body, Request, RequestExt, Response,
};
use serde::Serialize;

use crate::telemetry;

/// A boxed error that keeps its cause chain for the logs.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything a route can answer besides success. Client errors say what was wrong; server errors
/// are logged in full with the request id and answered with a generic text.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request that cannot be accepted as sent; `field` names the offending input.
    #[error("{field}: {detail}")]
    BadRequest { field: String, detail: String },
    #[error("the request carries no valid identity")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("{method} is not allowed here; allowed: {allowed}")]
    MethodNotAllowed { method: String, allowed: String },
    #[error("{0}")]
    Conflict(String),
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    Unprocessable(String),
    /// An upstream service refused our request; `detail` is ours, never the upstream's body.
    #[error("{detail}")]
    BadGateway { detail: String },
    /// A dependency is unavailable; the client may retry after `retry_after_secs`.
    #[error("{detail}")]
    Unavailable {
        detail: String,
        retry_after_secs: u32,
        #[source]
        cause: Option<BoxError>,
    },
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl ApiError {
    /// A 400 naming the field, parameter or header that was wrong.
    pub fn bad_request(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::BadRequest {
            field: field.into(),
            detail: detail.into(),
        }
    }

    pub fn internal(cause: impl Into<BoxError>) -> Self {
        Self::Internal(cause.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem type: a stable identifier clients can branch on.
    fn problem_type(&self) -> &'static str {
        match self {
            Self::BadRequest { .. } => "urn:serverless-chat:problem:invalid-request",
            Self::Unauthorized => "urn:serverless-chat:problem:unauthorized",
            Self::NotFound(_) => "urn:serverless-chat:problem:not-found",
            Self::MethodNotAllowed { .. } => "urn:serverless-chat:problem:method-not-allowed",
            Self::Conflict(_) => "urn:serverless-chat:problem:conflict",
            Self::PayloadTooLarge { .. } => "urn:serverless-chat:problem:payload-too-large",
            Self::Unprocessable(_) => "urn:serverless-chat:problem:unprocessable",
            Self::BadGateway { .. } => "urn:serverless-chat:problem:upstream-rejected",
            Self::Unavailable { .. } => "urn:serverless-chat:problem:unavailable",
            Self::Internal(_) => "urn:serverless-chat:problem:internal",
        }
    }

    /// What the client is told. Internal causes never leave the process.
    fn detail(&self) -> String {
        match self {
            Self::Internal(_) => {
                "an internal error occurred; quote the request_id when reporting it".to_owned()
            }
            other => other.to_string(),
        }
    }

    /// Logs the error with its whole cause chain: server errors at `error`, client errors at `info`.
    fn log(&self, request_id: &str) {
        let mut causes = String::new();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            causes.push_str(": ");
            causes.push_str(&cause.to_string());
            source = cause.source();
        }
        if self.status().is_server_error() {
            tracing::error!(request_id, status = self.status().as_u16(), error = %self, causes, "request failed");
        } else {
            tracing::info!(request_id, status = self.status().as_u16(), error = %self, "request rejected");
        }
    }

    /// The RFC 9457 response for this error.
    pub fn to_response(&self, request_id: &str) -> Response<Body> {
        let status = self.status();
        let problem = Problem {
            problem_type: self.problem_type(),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: self.detail(),
            request_id,
            field: match self {
                Self::BadRequest { field, .. } => Some(field.as_str()),
                _ => None,
            },
        };
        let mut response = body_response(status, &problem, "application/problem+json");
        let headers = response.headers_mut();
        match self {
            Self::Unavailable {
                retry_after_secs, ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Self::MethodNotAllowed { allowed, .. } => {
                if let Ok(value) = HeaderValue::from_str(allowed) {
                    headers.insert(header::ALLOW, value);
                }
            }
            _ => {}
        }
        response
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    problem_type: &'static str,
    title: &'static str,
    status: u16,
    detail: String,
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

/// Parses a request's JSON body into `T`, strictly. A body over `max_bytes` is a 413 before any
/// parsing; otherwise every problem is a 400 naming the field (or `body` when it is not JSON).
pub fn json_body<T: serde::de::DeserializeOwned>(
    req: &Request,
    max_bytes: usize,
) -> Result<T, ApiError> {
    let bytes: &[u8] = req.body().as_ref();
    if bytes.len() > max_bytes {
        return Err(ApiError::PayloadTooLarge { limit: max_bytes });
    }
    // Serde would also build a struct from an array; the API takes objects only.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request("body", "must be a JSON object"));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if !inner.is_data() {
            return ApiError::bad_request("body", "is not valid JSON");
        }
        // serde_json appends the position; the field name says more.
        let message = inner.to_string();
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(text, _)| text)
            .to_owned();
        let field = if path == "." {
            // Unknown and missing fields are reported on the object; their name is in the text.
            message
                .split('`')
                .nth(1)
                .map_or_else(|| "body".to_owned(), str::to_owned)
        } else {
            path
        };
        ApiError::bad_request(field, message)
    })?;
    deserializer
        .end()
        .map_err(|_| ApiError::bad_request("body", "is not valid JSON"))?;
    Ok(value)
}

/// A JSON response. Responses may carry user data, so no cache may keep them.
pub fn json(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    body_response(status, body, "application/json")
}

/// `204 No Content`.
pub fn no_content() -> Response<Body> {
    let mut response = Response::new(Body::Empty);
    *response.status_mut() = StatusCode::NO_CONTENT;
    add_common_headers(&mut response);
    response
}

/// `CORS_ALLOW_ORIGIN`: the one browser origin the API answers (API Gateway answers preflights;
/// a proxy integration must add the header to every response itself).
fn allowed_origin() -> Option<&'static HeaderValue> {
    static ORIGIN: std::sync::OnceLock<Option<HeaderValue>> = std::sync::OnceLock::new();
    ORIGIN
        .get_or_init(|| {
            std::env::var("CORS_ALLOW_ORIGIN")
                .ok()
                .filter(|origin| !origin.is_empty() && origin != "*")
                .and_then(|origin| HeaderValue::from_str(&origin).ok())
        })
        .as_ref()
}

fn add_common_headers(response: &mut Response<Body>) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(origin) = allowed_origin() {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
}

fn body_response(
    status: StatusCode,
    body: &impl Serialize,
    content_type: &'static str,
) -> Response<Body> {
    // Serializing our own response types cannot fail (no maps with non-string keys, no I/O).
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".to_owned());
    let mut response = Response::new(Body::Text(text));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    add_common_headers(&mut response);
    response
}

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
}

/// API Gateway's REST integration gives up after 29 s; we answer before that.
const GATEWAY_LIMIT: Duration = Duration::from_secs(29);
/// The time for the work, leaving the rest of the gateway's limit for finishing it.
const GATEWAY_BUDGET: Duration = Duration::from_secs(25);
/// Kept back from the Lambda deadline to write the answer and the log line.
const DEADLINE_MARGIN: Duration = Duration::from_millis(500);

/// The invocation's (work, hard) deadlines.
fn deadlines_of(req: &Request, now: Instant) -> (Instant, Instant) {
    let lambda_remaining = req
        .lambda_context_ref()
        .filter(|context| context.deadline > 0)
        .map(|context| {
            context
                .deadline()
                .duration_since(SystemTime::now())
                .unwrap_or_default()
        });
    let hard = lambda_remaining
        .map_or(GATEWAY_LIMIT, |remaining| remaining.min(GATEWAY_LIMIT))
        .saturating_sub(DEADLINE_MARGIN);
    (now + hard.min(GATEWAY_BUDGET), now + hard)
}

/// The query string parameters of a request, checked against the names its route accepts.
/// An unknown or repeated parameter is a 400 naming it.
pub fn query_params<'a>(
    req: &'a Request,
    accepted: &[&str],
) -> Result<HashMap<&'a str, &'a str>, ApiError> {
    let mut params = HashMap::new();
    let Some(query) = req.query_string_parameters_ref() else {
        return Ok(params);
    };
    for (name, value) in query.iter() {
        if !accepted.contains(&name) {
            return Err(ApiError::bad_request(
                name,
                format!("unknown query parameter; accepted: {}", accepted.join(", ")),
            ));
        }
        if params.insert(name, value).is_some() {
            return Err(ApiError::bad_request(name, "given more than once"));
        }
    }
    Ok(params)
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
pub fn request_id(req: &Request) -> String {
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
pub async fn serve<F, Fut>(req: Request, route: F) -> Response<Body>
where
    F: FnOnce(Request, Invocation) -> Fut,
    Fut: Future<Output = Result<Response<Body>, ApiError>>,
{
    let started = Instant::now();
    let (deadline, hard_deadline) = deadlines_of(&req, started);
    let invocation = Invocation {
        request_id: request_id(&req),
        cold_start: telemetry::take_cold_start(),
        deadline,
        hard_deadline,
    };
    let route_name = format!("{} {}", req.method(), route_of(&req).unwrap_or("-"));
    let request_id = invocation.request_id.clone();
    let cold_start = invocation.cold_start;
    let response = match route(req, invocation).await {
        Ok(response) => response,
        Err(err) => {
            err.log(&request_id);
            err.to_response(&request_id)
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

    fn body_json(response: &Response<Body>) -> serde_json::Value {
        serde_json::from_slice(response.body().as_ref()).unwrap()
    }

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
        let (work, hard) = deadlines_of(&req, now);
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

    #[test]
    fn a_bad_request_names_the_field_in_problem_json() {
        let response =
            ApiError::bad_request("limit", "must be between 1 and 100").to_response("req-1");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let body = body_json(&response);
        assert_eq!(body["status"], 400);
        assert_eq!(body["title"], "Bad Request");
        assert_eq!(body["field"], "limit");
        assert_eq!(body["request_id"], "req-1");
        assert!(body["detail"].as_str().unwrap().contains("limit"));
        assert_eq!(body["type"], "urn:serverless-chat:problem:invalid-request");
    }

    #[test]
    fn internal_causes_are_never_sent() {
        let cause = std::io::Error::other("password=hunter2 at 10.0.0.1");
        let response = ApiError::internal(cause).to_response("req-2");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let text = std::str::from_utf8(response.body().as_ref()).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("10.0.0.1"), "{text}");
        assert!(text.contains("req-2"));
    }

    #[test]
    fn unavailable_says_when_to_retry() {
        let response = ApiError::Unavailable {
            detail: "the store is unavailable".to_owned(),
            retry_after_secs: 2,
            cause: None,
        }
        .to_response("req-3");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }
}
