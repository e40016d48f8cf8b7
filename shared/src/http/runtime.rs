//! The Lambda Runtime API loop of every function: ask for the next event, answer it, ask again.
//!
//! `lambda_runtime::run` would run this loop, over a connection that it makes itself, leaves
//! Nagle's algorithm on (hyper's `HttpConnector` default) and offers no way to change. A streamed
//! answer is many small writes; with Nagle's algorithm each waits until the Runtime API has
//! acknowledged the one before, and a receiver that delays its acknowledgements (Linux does, by up
//! to 40 ms) held every streamed answer back by that much (`docs/PERFORMANCE.md`, "The Lambda
//! path"). So this loop keeps `lambda_runtime`'s types and its Runtime API client crate, and owns
//! the connection (`TCP_NODELAY`, one kept-alive connection) and the protocol's four requests:
//! `next`, an invocation's `response` (whole, or streamed: a JSON prelude, eight NUL bytes, then
//! the body as it is produced), its `error`, and `init/error`.

use std::{convert::Infallible, future::Future, sync::Arc};

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper_util::client::legacy::connect::HttpConnector;
use lambda_http::http::{
    header::CONTENT_TYPE, request::Builder, HeaderMap, HeaderValue, Method, Request, StatusCode,
    Uri,
};
use lambda_runtime::{
    layers::trace::request_span, Config, Context, Diagnostic, FunctionResponse, LambdaEvent,
    MetadataPrelude, StreamResponse,
};
use lambda_runtime_api_client::{body::Body, build_request, Client};
use serde_json::Value;
use tracing::Instrument;

use super::AnswerBody;

/// What a function answers one invocation with: a whole JSON value, or a response in Lambda's
/// streaming format (its metadata prelude, then its body as it is produced).
pub type Answer = FunctionResponse<Value, AnswerBody>;

const REQUEST_ID: &str = "lambda-runtime-aws-request-id";
const DEADLINE: &str = "lambda-runtime-deadline-ms";
const ERROR_TYPE: &str = "lambda-runtime-function-error-type";
const RESPONSE_MODE: &str = "lambda-runtime-function-response-mode";
/// The content type of a streamed answer (a prelude, then the body).
const STREAMED: &str = "application/vnd.awslambda.http-integration-response";
/// What separates a streamed answer's prelude from its body.
const PRELUDE_END: [u8; 8] = [0; 8];

/// Why the loop could not start or go on. Lambda starts a new execution environment after one.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{0} is not set: this program runs as a Lambda function (`make dev` serves the API locally)")]
    Unset(&'static str),
    #[error("{name} is not valid: {value:?}")]
    Invalid { name: &'static str, value: String },
    #[error("the Runtime API could not be reached")]
    Unreachable(#[source] lambda_runtime::Error),
    #[error("the Runtime API answered {status} to {request}")]
    Refused {
        request: &'static str,
        status: StatusCode,
    },
    #[error("the Runtime API's event has no valid {0} header")]
    Malformed(&'static str),
}

/// The execution environment, as Lambda describes it in the process's environment.
#[derive(Debug, Clone)]
pub struct Environment {
    /// `AWS_LAMBDA_RUNTIME_API`: the Runtime API's host and port.
    pub runtime_api: String,
    pub config: Config,
}

impl Environment {
    /// Reads the variables Lambda sets (`AWS_LAMBDA_RUNTIME_API`, `AWS_LAMBDA_FUNCTION_NAME`,
    /// `AWS_LAMBDA_FUNCTION_VERSION`, `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, and the log group and
    /// stream if set); one that is missing or malformed is named in the error.
    pub fn from_env() -> Result<Self, RuntimeError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, RuntimeError> {
        let required = |name: &'static str| var(name).ok_or(RuntimeError::Unset(name));
        let memory = required("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")?;
        Ok(Self {
            runtime_api: required("AWS_LAMBDA_RUNTIME_API")?,
            config: Config {
                function_name: required("AWS_LAMBDA_FUNCTION_NAME")?,
                memory: memory.parse().map_err(|_| RuntimeError::Invalid {
                    name: "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                    value: memory.clone(),
                })?,
                version: required("AWS_LAMBDA_FUNCTION_VERSION")?,
                log_stream: var("AWS_LAMBDA_LOG_STREAM_NAME").unwrap_or_default(),
                log_group: var("AWS_LAMBDA_LOG_GROUP_NAME").unwrap_or_default(),
            },
        })
    }
}

/// One invocation as the Runtime API hands it over: its id, and its event (or why it is not one).
struct Invocation {
    id: String,
    event: Result<LambdaEvent<Value>, Diagnostic>,
}

/// The connection to the Runtime API.
pub struct RuntimeApi {
    client: Client,
    config: Arc<Config>,
    /// Whether each invocation's trace id is put in `_X_AMZN_TRACE_ID`.
    sets_trace_variable: bool,
}

impl RuntimeApi {
    /// A client of the Runtime API at `environment.runtime_api`. Nothing is sent yet.
    pub fn new(environment: Environment) -> Result<Self, RuntimeError> {
        let invalid = || RuntimeError::Invalid {
            name: "AWS_LAMBDA_RUNTIME_API",
            value: environment.runtime_api.clone(),
        };
        let base: Uri = format!("http://{}", environment.runtime_api)
            .parse()
            .map_err(|_| invalid())?;
        let mut connector = HttpConnector::new();
        // Each write of an answer leaves at once (see the module's note).
        connector.set_nodelay(true);
        let client = Client::builder()
            .with_connector(connector)
            .with_endpoint(base)
            .with_pool_size(1)
            .build()
            .map_err(|_| invalid())?;
        Ok(Self {
            client,
            config: Arc::new(environment.config),
            sets_trace_variable: true,
        })
    }

    /// The same client, leaving the process's environment alone: for a process that runs other
    /// threads (a test), where changing a variable races with reading one.
    pub fn leaving_the_environment(self) -> Self {
        Self {
            sets_trace_variable: false,
            ..self
        }
    }

    /// Waits for the next invocation.
    async fn next(&self) -> Result<Invocation, RuntimeError> {
        let request = build_request()
            .method(Method::GET)
            .uri("/2018-06-01/runtime/invocation/next");
        let (status, headers, body) = self.send(request, Body::empty()).await?;
        if !status.is_success() {
            return Err(RuntimeError::Refused {
                request: "next",
                status,
            });
        }
        let id = headers
            .get(REQUEST_ID)
            .and_then(|id| id.to_str().ok())
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_graphic() && b != b'/'))
            .ok_or(RuntimeError::Malformed(REQUEST_ID))?
            .to_owned();
        // `Context::new` would panic without it.
        if headers.get(DEADLINE).is_none() {
            return Err(RuntimeError::Malformed(DEADLINE));
        }
        let event = match Context::new(&id, Arc::clone(&self.config), &headers) {
            Err(err) => Err(diagnostic("InvalidContext", err.to_string())),
            Ok(context) => serde_json::from_slice(&body)
                .map(|payload| LambdaEvent::new(payload, context))
                .map_err(|err| diagnostic("InvalidEvent", format!("the event is not JSON: {err}"))),
        };
        Ok(Invocation { id, event })
    }

    /// Answers invocation `id` with its function's answer.
    async fn respond(&self, id: &str, answer: Answer) -> Result<(), RuntimeError> {
        let request = invocation_request(id, "response");
        let (request, body) = match answer {
            FunctionResponse::BufferedResponse(value) => (request, Body::from(value.to_string())),
            FunctionResponse::StreamingResponse(response) => streamed(request, response),
        };
        self.report("an invocation's response", request, body).await
    }

    /// Reports that invocation `id` failed.
    async fn fail(&self, id: &str, diagnostic: &Diagnostic) -> Result<(), RuntimeError> {
        let request = invocation_request(id, "error").header(ERROR_TYPE, "unhandled");
        self.report(
            "an invocation's error",
            request,
            diagnostic_body(diagnostic),
        )
        .await
    }

    /// Reports that the function could not start: Lambda logs it and answers the invocation
    /// that was waiting with it.
    pub async fn init_failed(&self, diagnostic: &Diagnostic) -> Result<(), RuntimeError> {
        let request = build_request()
            .method(Method::POST)
            .uri("/2018-06-01/runtime/init/error")
            .header(ERROR_TYPE, "Runtime.InitError");
        self.report("an init error", request, diagnostic_body(diagnostic))
            .await
    }

    /// Sends a report. One the Runtime API refuses (too large, or for an invocation that has
    /// timed out) has already failed its invocation there: it is logged and the loop goes on.
    async fn report(
        &self,
        what: &'static str,
        request: Builder,
        body: Body,
    ) -> Result<(), RuntimeError> {
        let (status, _, answer) = self.send(request, body).await?;
        if !status.is_success() {
            tracing::error!(
                %status,
                answer = %String::from_utf8_lossy(&answer),
                "the Runtime API refused {what}"
            );
        }
        Ok(())
    }

    /// Sends one request and reads its whole answer (so that the connection is kept).
    async fn send(
        &self,
        request: Builder,
        body: Body,
    ) -> Result<(StatusCode, HeaderMap, Bytes), RuntimeError> {
        let request: Request<Body> = request
            .body(body)
            .map_err(|err| RuntimeError::Unreachable(err.into()))?;
        let response = self
            .client
            .call(request)
            .await
            .map_err(RuntimeError::Unreachable)?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|err| RuntimeError::Unreachable(err.into()))?
            .to_bytes();
        Ok((parts.status, parts.headers, body))
    }
}

fn diagnostic(error_type: &str, error_message: String) -> Diagnostic {
    Diagnostic {
        error_type: error_type.to_owned(),
        error_message,
    }
}

fn diagnostic_body(diagnostic: &Diagnostic) -> Body {
    Body::from(serde_json::to_vec(diagnostic).unwrap_or_default())
}

/// A request about invocation `id` (whose characters `next` has checked).
fn invocation_request(id: &str, report: &str) -> Builder {
    build_request()
        .method(Method::POST)
        .uri(format!("/2018-06-01/runtime/invocation/{id}/{report}"))
}

/// A streamed answer: the prelude and its end in one piece, then the body's pieces as they come,
/// each sent as it is produced.
fn streamed(request: Builder, response: StreamResponse<AnswerBody>) -> (Builder, Body) {
    let StreamResponse {
        mut metadata_prelude,
        stream: body,
    } = response;
    metadata_prelude
        .headers
        .entry(CONTENT_TYPE)
        .or_insert(HeaderValue::from_static("application/octet-stream"));
    let mut head = prelude_json(&metadata_prelude);
    head.extend_from_slice(&PRELUDE_END);
    let pieces = stream::iter([Ok::<_, Infallible>(Bytes::from(head))])
        .chain(body)
        .map(|piece| piece.map(Frame::data));
    let request = request
        .header(RESPONSE_MODE, "streaming")
        .header(CONTENT_TYPE, STREAMED);
    (request, Body::new(StreamBody::new(pieces)))
}

/// A streamed answer of `response`: its status and headers as the prelude, its body as the stream.
pub fn streamed_answer(response: lambda_http::Response<AnswerBody>) -> Answer {
    let (parts, body) = response.into_parts();
    FunctionResponse::StreamingResponse(StreamResponse {
        metadata_prelude: MetadataPrelude {
            status_code: parts.status,
            headers: parts.headers,
            cookies: Vec::new(),
        },
        stream: body,
    })
}

/// The prelude's JSON. Its fields are a status, header names and values and cookie strings,
/// which always serialize; were one not to, the answer would still be a valid (empty) prelude.
fn prelude_json(prelude: &MetadataPrelude) -> Vec<u8> {
    serde_json::to_vec(prelude).unwrap_or_else(|_| b"{}".to_vec())
}

/// Runs the loop with `handler` until the Runtime API fails: an event at a time, each answered
/// before the next is asked for. A handler's error is the invocation's error.
pub async fn run<F, Fut, E>(api: RuntimeApi, mut handler: F) -> Result<(), RuntimeError>
where
    F: FnMut(LambdaEvent<Value>) -> Fut,
    Fut: Future<Output = Result<Answer, E>>,
    E: Into<Diagnostic>,
{
    loop {
        let Invocation { id, event } = api.next().await?;
        let outcome = match event {
            Ok(event) => {
                let span = request_span(&event.context);
                if api.sets_trace_variable {
                    set_trace_variable(&event.context);
                }
                handler(event).instrument(span).await.map_err(Into::into)
            }
            Err(diagnostic) => Err(diagnostic),
        };
        match outcome {
            Ok(answer) => api.respond(&id, answer).await?,
            Err(diagnostic) => {
                tracing::error!(
                    error_type = %diagnostic.error_type,
                    error = %diagnostic.error_message,
                    "the invocation failed"
                );
                api.fail(&id, &diagnostic).await?;
            }
        }
    }
}

/// Sets `_X_AMZN_TRACE_ID` to the invocation's X-Ray trace id, as every Lambda runtime does (the
/// AWS SDK's calls carry it on). A function's process changes it between invocations, when
/// nothing else runs.
fn set_trace_variable(context: &Context) {
    match &context.xray_trace_id {
        Some(trace) => std::env::set_var("_X_AMZN_TRACE_ID", trace),
        None => std::env::remove_var("_X_AMZN_TRACE_ID"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    const LAMBDA: &[(&str, &str)] = &[
        ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
        ("AWS_LAMBDA_FUNCTION_NAME", "chat"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
    ];

    #[test]
    fn the_environment_is_read_and_a_missing_or_bad_variable_is_named() {
        let environment = Environment::from_vars(vars(LAMBDA)).expect("complete");
        assert_eq!(environment.runtime_api, "127.0.0.1:9001");
        assert_eq!(environment.config.memory, 128);
        assert_eq!(environment.config.function_name, "chat");
        assert!(RuntimeApi::new(environment).is_ok());

        for missing in LAMBDA.iter().map(|(name, _)| *name) {
            let without: Vec<_> = LAMBDA
                .iter()
                .copied()
                .filter(|(name, _)| *name != missing)
                .collect();
            let err = Environment::from_vars(vars(&without)).expect_err("incomplete");
            assert!(err.to_string().starts_with(missing), "{err}");
        }
        let mut bad = LAMBDA.to_vec();
        bad[3].1 = "lots";
        let err = Environment::from_vars(vars(&bad)).expect_err("bad memory");
        assert_eq!(
            err.to_string(),
            r#"AWS_LAMBDA_FUNCTION_MEMORY_SIZE is not valid: "lots""#
        );
        let mut bad = LAMBDA.to_vec();
        bad[0].1 = "not a host";
        let environment = Environment::from_vars(vars(&bad)).expect("read");
        assert!(matches!(
            RuntimeApi::new(environment),
            Err(RuntimeError::Invalid {
                name: "AWS_LAMBDA_RUNTIME_API",
                ..
            })
        ));
    }

    #[tokio::test]
    async fn a_streamed_answer_is_its_prelude_and_its_end_in_one_piece_then_its_body() {
        let mut prelude = MetadataPrelude {
            status_code: StatusCode::CREATED,
            ..MetadataPrelude::default()
        };
        prelude
            .headers
            .insert("x-one", HeaderValue::from_static("1"));
        let body = AnswerBody::Whole(lambda_http::Body::Text("{\"a\":1}".into()));
        let (request, body) = streamed(
            invocation_request("abc", "response"),
            StreamResponse {
                metadata_prelude: prelude,
                stream: body,
            },
        );
        let request = request.body(()).expect("request");
        assert_eq!(request.uri(), "/2018-06-01/runtime/invocation/abc/response");
        assert_eq!(request.headers()[RESPONSE_MODE], "streaming");
        assert_eq!(request.headers()[CONTENT_TYPE], STREAMED);
        let pieces: Vec<Bytes> = body.map(|piece| piece.expect("piece")).collect().await;
        assert_eq!(pieces.len(), 2, "{pieces:?}");
        let (head, end) = pieces[0].split_at(pieces[0].len() - 8);
        assert_eq!(end, PRELUDE_END);
        let head: Value = serde_json::from_slice(head).expect("prelude JSON");
        assert_eq!(head["statusCode"], 201);
        assert_eq!(head["headers"]["x-one"], "1");
        assert_eq!(head["headers"]["content-type"], "application/octet-stream");
        assert_eq!(&pieces[1][..], b"{\"a\":1}");
    }
}
