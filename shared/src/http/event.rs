//! From a raw API Gateway event to a request, robustly, and the Lambda loop of the HTTP functions.
//!
//! `lambda_http` builds each request's URI from the `Host` and `X-Forwarded-Proto` headers and
//! unwraps the result: a client that sends `X-Forwarded-Proto: 1` or `Host: [` would make it
//! panic, which (with `panic = "abort"`) kills the execution environment. Our functions never read
//! either header, so every event loses them before it is converted: the URI is then built from
//! API Gateway's own domain name, or is relative. Every function, and the local API server,
//! converts events here and nowhere else.

use std::{convert::Infallible, future::Future};

use lambda_http::{request::LambdaRequest, Adapter, Body, Request, Response};
use lambda_runtime::{Diagnostic, FunctionResponse, LambdaEvent, Service};
use serde_json::Value;

use super::{
    runtime::{self, Environment, RuntimeApi},
    AnswerBody,
};

/// Headers dropped from every event before conversion (compared without regard to case).
const DROPPED_HEADERS: [&str; 2] = ["host", "x-forwarded-proto"];

/// Why an invocation's event could not be served.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("the event is not an API Gateway request: {0}")]
    Unsupported(#[source] serde_json::Error),
}

impl From<EventError> for Diagnostic {
    fn from(err: EventError) -> Self {
        Diagnostic {
            error_type: "UnsupportedEvent".to_owned(),
            error_message: err.to_string(),
        }
    }
}

/// Removes the headers `lambda_http` cannot be trusted with from an event's `headers` and
/// `multiValueHeaders`.
fn drop_unsafe_headers(event: &mut Value) {
    for field in ["headers", "multiValueHeaders"] {
        if let Some(Value::Object(headers)) = event.get_mut(field) {
            headers.retain(|name, _| {
                !DROPPED_HEADERS
                    .iter()
                    .any(|dropped| name.eq_ignore_ascii_case(dropped))
            });
        }
    }
}

/// The API Gateway request (REST or HTTP API) in a raw event, with the unsafe headers dropped.
pub fn lambda_request(mut event: Value) -> Result<LambdaRequest, EventError> {
    drop_unsafe_headers(&mut event);
    serde_json::from_value(event).map_err(EventError::Unsupported)
}

/// The request in a raw event, as a function's handler takes it.
pub fn request(event: Value) -> Result<Request, EventError> {
    lambda_request(event).map(Request::from)
}

/// Serves one raw Lambda event with `handler`; the answer is in API Gateway's response shape.
pub async fn invoke<F, Fut>(handler: &F, event: LambdaEvent<Value>) -> Result<Value, EventError>
where
    F: Fn(Request) -> Fut + Sync,
    Fut: Future<Output = Response<Body>> + Send,
{
    let (payload, context) = event.into_parts();
    let request = lambda_request(payload)?;
    // lambda_http's own adapter turns the request and our response into API Gateway's shapes.
    let mut adapter = Adapter::from(lambda_http::service_fn(|req: Request| async move {
        Ok::<_, Infallible>(handler(req).await)
    }));
    let response = match adapter.call(LambdaEvent::new(request, context)).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    Ok(serde_json::to_value(response).unwrap_or(Value::Null))
}

/// The Lambda loop of an HTTP function: each event through [`invoke`].
pub async fn run<F, Fut>(handler: F) -> Result<(), lambda_runtime::Error>
where
    F: Fn(Request) -> Fut + Sync,
    Fut: Future<Output = Response<Body>> + Send,
{
    let handler = &handler;
    serve_events(move |event| async move {
        invoke(handler, event)
            .await
            .map(FunctionResponse::BufferedResponse)
    })
    .await
}

/// The Lambda loop of any function: reads the execution environment, then hands each raw event
/// to `handler` and its answer (or its error) to the Runtime API.
pub async fn serve_events<F, Fut, E>(handler: F) -> Result<(), lambda_runtime::Error>
where
    F: FnMut(LambdaEvent<Value>) -> Fut,
    Fut: Future<Output = Result<runtime::Answer, E>>,
    E: Into<Diagnostic>,
{
    let api = RuntimeApi::new(Environment::from_env()?)?;
    Ok(runtime::run(api, handler).await?)
}

/// Reports to Lambda that the function could not start (its init error names `err`), and
/// returns the error for `main` to exit with. Outside Lambda it only returns it.
pub async fn init_failed<E>(err: E) -> lambda_runtime::Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    let diagnostic = Diagnostic {
        error_type: "InitError".to_owned(),
        error_message: err.to_string(),
    };
    if let Ok(api) = Environment::from_env().and_then(RuntimeApi::new) {
        if let Err(report) = api.init_failed(&diagnostic).await {
            tracing::warn!(error = %report, "the init error could not be reported");
        }
    }
    err.into()
}

/// What a streaming function answers one invocation with: its response in Lambda's streaming
/// format (the metadata prelude, then the body as it is produced), or, for an invocation that is
/// not a request, nothing.
pub type StreamedAnswer = runtime::Answer;

/// Serves one raw Lambda event with a streaming `handler`. An event that is not an API Gateway
/// request (API Gateway may follow a streamed answer with an invocation of its own, which is not a
/// proxy event) is answered with nothing and a debug line, so that it does not count as an error.
pub async fn invoke_streaming<F, Fut>(handler: &F, event: LambdaEvent<Value>) -> StreamedAnswer
where
    F: Fn(Request) -> Fut + Sync,
    Fut: Future<Output = Response<AnswerBody>> + Send,
{
    let (payload, context) = event.into_parts();
    let request = match lambda_request(payload) {
        Ok(request) => Request::from(request),
        Err(err) => {
            tracing::debug!(error = %err, "an invocation that is not a request; nothing to answer");
            return FunctionResponse::BufferedResponse(Value::Null);
        }
    };
    let request = lambda_http::RequestExt::with_lambda_context(request, context);
    runtime::streamed_answer(handler(request).await)
}

/// The Lambda loop of a streaming HTTP function (its API Gateway integration is in `STREAM`
/// mode): each event through [`invoke_streaming`].
pub async fn run_streaming<F, Fut>(handler: F) -> Result<(), lambda_runtime::Error>
where
    F: Fn(Request) -> Fut + Sync,
    Fut: Future<Output = Response<AnswerBody>> + Send,
{
    let handler = &handler;
    serve_events(
        move |event| async move { Ok::<_, Infallible>(invoke_streaming(handler, event).await) },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::RequestExt;
    use serde_json::json;

    fn rest_event(headers: Value, path: &str) -> Value {
        let multi: serde_json::Map<String, Value> = headers
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, value)| (name.clone(), json!([value])))
            .collect();
        json!({
            "resource": "/conversations/{id}", "path": path, "httpMethod": "GET",
            "headers": headers, "multiValueHeaders": multi,
            "queryStringParameters": {"limit": "5"}, "multiValueQueryStringParameters": {"limit": ["5"]},
            "pathParameters": {"id": "x"}, "stageVariables": null,
            "requestContext": {"accountId": "1", "resourceId": "r", "stage": "v1", "requestId": "q",
                "resourcePath": "/conversations/{id}", "httpMethod": "GET", "apiId": "a",
                "domainName": "abc.execute-api.us-east-1.amazonaws.com",
                "identity": {"sourceIp": "203.0.113.1"}},
            "body": null, "isBase64Encoded": false
        })
    }

    #[test]
    fn hostile_host_and_scheme_headers_are_dropped_before_conversion() {
        for (name, value) in [
            ("X-Forwarded-Proto", "1"),
            ("x-forwarded-proto", "ht tp"),
            ("Host", "["),
            ("host", "a b"),
            ("HOST", "x:y:z"),
        ] {
            let event = rest_event(json!({ name: value, "accept": "*/*" }), "/conversations/x");
            let request = request(event).expect("converted");
            assert!(request.headers().get("host").is_none());
            assert!(request.headers().get("x-forwarded-proto").is_none());
            assert_eq!(request.headers()["accept"], "*/*", "other headers stay");
            assert_eq!(
                request.uri().host(),
                Some("abc.execute-api.us-east-1.amazonaws.com")
            );
            assert_eq!(
                request
                    .query_string_parameters_ref()
                    .and_then(|q| q.first("limit")),
                Some("5")
            );
        }
    }

    #[test]
    fn odd_paths_convert_without_panicking() {
        for path in [
            "/conversations/%zz",
            "/conversations/a b",
            "/conversations/ü/{}|^`\\",
            "//x",
        ] {
            let event = rest_event(json!({"Host": "["}), path);
            assert!(request(event).is_ok(), "{path}");
        }
    }

    #[test]
    fn an_event_that_is_not_a_request_is_an_error() {
        assert!(matches!(
            request(json!({"detail-type": "Scheduled Event"})),
            Err(EventError::Unsupported(_))
        ));
    }
}
