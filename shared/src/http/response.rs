//! Successful answers, and the headers every answer carries.

use std::sync::OnceLock;

use lambda_http::{
    http::{header, HeaderValue, StatusCode},
    Body, Response,
};
use serde::Serialize;

/// The response headers a browser script may read besides the CORS-safelisted ones (the same list
/// as the API's gateway responses in `template.yaml`).
pub const EXPOSED_HEADERS: &str =
    "Retry-After,idempotent-replayed,x-amzn-RequestId,RateLimit-Limit,RateLimit-Remaining,RateLimit-Reset";

/// The answer header that marks a replayed idempotent answer.
const REPLAYED: &str = "idempotent-replayed";

static ALLOWED_ORIGIN: OnceLock<Option<HeaderValue>> = OnceLock::new();

/// The browser origin every answer allows, if one is set.
pub fn allowed_origin() -> Option<HeaderValue> {
    ALLOWED_ORIGIN.get().cloned().flatten()
}

/// Sets the one browser origin the API answers (`CORS_ALLOW_ORIGIN`), once per process;
/// `startup::apply` calls it. API Gateway answers preflights; a proxy integration must add
/// the header to every response itself.
pub(crate) fn set_allowed_origin(origin: Option<&str>) {
    let value = origin
        .filter(|origin| !origin.is_empty() && *origin != "*")
        .and_then(|origin| HeaderValue::from_str(origin).ok());
    // The first configuration of the process wins, as each execution environment has one.
    let _ = ALLOWED_ORIGIN.set(value);
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

/// A JSON response whose body is already serialised (an answer that is also stored).
pub fn json_text(status: StatusCode, text: String) -> Response<Body> {
    let mut response = Response::new(Body::Text(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    add_common_headers(&mut response);
    response
}

/// The stored answer of an idempotent request's first run, marked as a replay: the same bytes
/// as the first answer.
pub fn replay(stored: String) -> Response<Body> {
    let mut response = json_text(StatusCode::OK, stored);
    mark_replayed(&mut response);
    response
}

/// Marks an answer as the replay of an idempotent request's first run.
pub fn mark_replayed<B>(response: &mut Response<B>) {
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
}

/// The `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` headers (seconds until
/// the budget renews) of the per-user budget closest to refusing.
pub fn rate_limit_headers(
    headers: &mut lambda_http::http::HeaderMap,
    limit: u64,
    remaining: u64,
    reset_secs: u64,
) {
    headers.insert("ratelimit-limit", HeaderValue::from(limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(reset_secs));
}

pub(super) fn body_response(
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

pub(super) fn add_common_headers<B>(response: &mut Response<B>) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(Some(origin)) = ALLOWED_ORIGIN.get() {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED_HEADERS),
        );
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
}
