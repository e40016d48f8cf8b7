//! The API's one error type, and the one place where every layer's error becomes an answer:
//! a status, a problem type, and `application/problem+json` (RFC 9457).

use lambda_http::{
    http::{header, HeaderValue, StatusCode},
    Body, Response,
};
use serde::Serialize;

use super::response::body_response;
use crate::{
    llm::LlmError,
    secrets::SecretsError,
    store::{Exhausted, StoreError},
    BoxError,
};

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
    /// What the request would have changed was erased meanwhile (not worth retrying as is).
    #[error("{0}")]
    Gone(String),
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
    /// A per-user budget refused the request: the day's (`quota-exceeded`) or the minute's
    /// (`rate-limited`); the client may retry after `retry_after_secs`.
    #[error("{detail}")]
    TooManyRequests {
        limit: Refusal,
        detail: String,
        /// The refusing budget's size, for the `RateLimit-Limit` header.
        quota: u64,
        retry_after_secs: u64,
    },
    #[error("internal error")]
    Internal(#[source] BoxError),
}

/// Which per-user budget refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The day's turns or tokens are spent.
    QuotaExceeded,
    /// Too many turns this minute.
    RateLimited,
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

    fn unavailable(
        detail: impl Into<String>,
        retry_after_secs: u32,
        cause: Option<BoxError>,
    ) -> Self {
        Self::Unavailable {
            detail: detail.into(),
            retry_after_secs,
            cause,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Gone(_) => StatusCode::GONE,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
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
            Self::Gone(_) => "urn:serverless-chat:problem:gone",
            Self::PayloadTooLarge { .. } => "urn:serverless-chat:problem:payload-too-large",
            Self::Unprocessable(_) => "urn:serverless-chat:problem:unprocessable",
            Self::BadGateway { .. } => "urn:serverless-chat:problem:upstream-rejected",
            Self::Unavailable { .. } => "urn:serverless-chat:problem:unavailable",
            Self::TooManyRequests {
                limit: Refusal::QuotaExceeded,
                ..
            } => "urn:serverless-chat:problem:quota-exceeded",
            Self::TooManyRequests {
                limit: Refusal::RateLimited,
                ..
            } => "urn:serverless-chat:problem:rate-limited",
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
    pub fn log(&self, request_id: &str) {
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
        let problem = self.problem(request_id);
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
            Self::TooManyRequests {
                quota,
                retry_after_secs,
                ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
                super::response::rate_limit_headers(headers, *quota, 0, *retry_after_secs);
            }
            _ => {}
        }
        response
    }
}

/// The problem document (RFC 9457) with our `request_id` and `field` members.
impl ApiError {
    fn problem<'a>(&'a self, request_id: &'a str) -> Problem<'a> {
        let status = self.status();
        Problem {
            problem_type: self.problem_type(),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: self.detail(),
            request_id,
            field: match self {
                Self::BadRequest { field, .. } => Some(field.as_str()),
                _ => None,
            },
        }
    }

    /// The problem document alone, as JSON text (the `error` event of a stream that already
    /// began).
    pub fn problem_json(&self, request_id: &str) -> String {
        serde_json::to_string(&self.problem(request_id)).unwrap_or_else(|_| "{}".to_owned())
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

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => Self::NotFound("conversation not found".to_owned()),
            StoreError::MessageNotFound => Self::NotFound("message not found".to_owned()),
            StoreError::InvalidCursor(err) => Self::bad_request("cursor", err.to_string()),
            StoreError::KeyInProgress => Self::Conflict(
                "a request with this Idempotency-Key is still in progress; retry shortly"
                    .to_owned(),
            ),
            StoreError::LeaseLost | StoreError::BranchMoved => Self::Conflict(err.to_string()),
            StoreError::Erased => Self::Gone(err.to_string()),
            StoreError::KeyReused => Self::Unprocessable(err.to_string()),
            StoreError::Conflict { .. } => Self::unavailable(
                "too many concurrent writes to this conversation; retry shortly",
                1,
                Some(Box::new(err)),
            ),
            StoreError::Incomplete { .. } => {
                Self::unavailable(format!("{err}; repeat the request to finish"), 1, None)
            }
            StoreError::Unavailable(_) => Self::unavailable(
                "the conversation store is unavailable; retry shortly",
                2,
                Some(Box::new(err)),
            ),
            StoreError::Unconfirmed => Self::unavailable(
                "the conversation store did not confirm the turn; it may have been stored: \
                 retry with the same Idempotency-Key",
                1,
                None,
            ),
            StoreError::QuotaExceeded {
                exhausted,
                retry_after_secs,
            } => {
                let (detail, quota) = match exhausted {
                    Exhausted::Turns { limit } => (
                        format!(
                            "today's {limit} turns are used up; the budget renews at 00:00 UTC"
                        ),
                        limit,
                    ),
                    Exhausted::Tokens {
                        limit,
                        remaining,
                        needed,
                    } => (
                        format!(
                            "this turn may use up to {needed} tokens (its context and the longest \
                             reply), and {remaining} of today's {limit} are left; the budget \
                             renews at 00:00 UTC"
                        ),
                        limit,
                    ),
                };
                Self::TooManyRequests {
                    limit: Refusal::QuotaExceeded,
                    detail,
                    quota,
                    retry_after_secs,
                }
            }
            StoreError::RateLimited {
                per_minute,
                retry_after_secs,
            } => Self::TooManyRequests {
                limit: Refusal::RateLimited,
                detail: format!(
                    "{per_minute} turns a minute is the limit; retry in {retry_after_secs} s"
                ),
                quota: per_minute,
                retry_after_secs,
            },
            StoreError::Corrupt(_) | StoreError::Internal(_) => Self::internal(err),
        }
    }
}

impl From<LlmError> for ApiError {
    fn from(err: LlmError) -> Self {
        match err {
            LlmError::Invalid { field, detail } => Self::bad_request(field, detail),
            LlmError::Keys(err) => err.into(),
            LlmError::Rejected { provider } => Self::BadGateway {
                detail: format!("the LLM provider {provider} rejected the request"),
            },
            LlmError::Unavailable { retry_after, .. } => Self::unavailable(
                "no LLM provider can answer right now; retry later",
                u32::try_from(retry_after.as_secs().max(1)).unwrap_or(u32::MAX),
                Some(Box::new(err)),
            ),
            // The chat function answers its budget's refusal in place of this.
            LlmError::NotAdmitted => Self::unavailable(
                "the turn's budget admits no further provider request",
                1,
                Some(Box::new(err)),
            ),
        }
    }
}

impl From<SecretsError> for ApiError {
    fn from(err: SecretsError) -> Self {
        Self::unavailable(
            "the LLM provider keys are unavailable; retry shortly",
            5,
            Some(Box::new(err)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_json(response: &Response<Body>) -> serde_json::Value {
        serde_json::from_slice(response.body().as_ref()).unwrap()
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
    fn every_store_error_has_its_status() {
        let status = |err: StoreError| ApiError::from(err).status().as_u16();
        assert_eq!(status(StoreError::NotFound), 404);
        assert_eq!(status(StoreError::MessageNotFound), 404);
        assert_eq!(status(StoreError::KeyInProgress), 409);
        assert_eq!(status(StoreError::LeaseLost), 409);
        assert_eq!(status(StoreError::BranchMoved), 409);
        assert_eq!(status(StoreError::Erased), 410);
        assert_eq!(status(StoreError::KeyReused), 422);
        assert_eq!(status(StoreError::Conflict { attempts: 8 }), 503);
        assert_eq!(status(StoreError::Unconfirmed), 503);
        assert_eq!(status(StoreError::Corrupt("x".into())), 500);
        let response = ApiError::from(StoreError::Unconfirmed).to_response("r");
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
