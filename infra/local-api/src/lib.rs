//! A local stand-in for API Gateway (REST API, Lambda proxy integration).
//!
//! Each HTTP request becomes the event API Gateway would send (resource, path parameters,
//! single- and multi-value headers and query, request context), converted exactly as the
//! functions convert their events in Lambda (`shared::http::event`), and handed to the function's
//! handler in-process: the functions run unchanged.
//!
//! Beside the API it serves the web client (`web/dist`, built by `make web`) at `/`, same origin
//! as the API, with the security headers CloudFront sends in a deployment, and the client's
//! runtime settings at `/config.json` (development sign-in: a typed user name).
//!
//! It also plays the authorizer: the development header `X-Dev-User: <id>` becomes
//! `requestContext.authorizer.claims.sub`. The header is removed before the function sees the
//! request, and exists nowhere but here. A value that is not UTF-8, or a repeated header, names
//! no one: the function answers `401`.
//!
//! Because that header makes anyone anyone, the server answers only requests addressed to a
//! loopback host name (`localhost`, `*.localhost`, `127.0.0.1`, `[::1]`): a page on another origin
//! cannot reach it by DNS rebinding (its requests carry the attacker's host name).

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::{to_bytes, Body as AxumBody},
    extract::{MatchedPath, Path, RawQuery, Request as AxumRequest, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::on,
    Router,
};
use base64::Engine;
use lambda_http::Body;
use serde_json::{json, Map, Value};

/// The development header that stands in for a verified token.
pub const DEV_USER_HEADER: &str = "x-dev-user";

/// The largest body accepted, as API Gateway's 10 MB payload limit.
const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// Which function serves a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Chat,
    Feedback,
    Health,
    History,
}

impl Function {
    /// The function's binary, as `template.yaml` names it in `BuildProperties.Binary`.
    pub fn binary(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Feedback => "feedback",
            Self::Health => "health",
            Self::History => "history",
        }
    }
}

/// One route of the API, as the template declares it.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    /// The resource template, in API Gateway's (and axum's) `{param}` syntax.
    pub resource: &'static str,
    pub function: Function,
}

/// Every route the local server serves: each function's own table (`ROUTES` beside its
/// handlers), so that the server cannot drift from the functions; a test holds them to
/// `template.yaml` and `infra/openapi.yaml`.
pub fn routes() -> Vec<Route> {
    let tables: [(&[(&'static str, &'static str)], Function); 4] = [
        (chat::ROUTES, Function::Chat),
        (feedback::ROUTES, Function::Feedback),
        (health::ROUTES, Function::Health),
        (history::ROUTES, Function::History),
    ];
    tables
        .into_iter()
        .flat_map(|(table, function)| {
            table.iter().map(move |&(method, resource)| Route {
                method,
                resource,
                function,
            })
        })
        .collect()
}

/// The functions' states, each built once as its Lambda execution environment would.
pub struct Functions {
    chat: chat::State,
    feedback: feedback::State,
    health: health::State,
    history: history::State,
}

impl Functions {
    /// Builds every function's state from the environment, as each Lambda would at cold start.
    pub async fn from_env() -> Result<Self, shared::config::ConfigError> {
        let config = shared::config::Config::from_env()?;
        shared::startup::apply(&config);
        let clients = shared::aws::AwsClients::load(&config).await;
        let chat = shared::config::ChatConfig::from_env()?;
        let feedback = shared::config::FeedbackConfig::from_env()?;
        Self::new(config, chat, feedback, clients)
    }

    /// Every function's state from the given settings.
    pub fn new(
        config: shared::config::Config,
        chat: shared::config::ChatConfig,
        feedback: shared::config::FeedbackConfig,
        clients: shared::aws::AwsClients,
    ) -> Result<Self, shared::config::ConfigError> {
        Ok(Self {
            chat: chat::State::new(&config, chat, &clients)?,
            feedback: feedback::State::new(&config, feedback, &clients),
            history: history::State::new(&config, &clients),
            health: health::State::new(config, clients),
        })
    }

    async fn call(&self, function: Function, req: lambda_http::Request) -> Response {
        match function {
            // Chat answers through API Gateway's streaming integration: its events are passed
            // on as they come, each flushed.
            Function::Chat => streamed(chat::handle(&self.chat, req).await),
            Function::Feedback => into_http(feedback::handle(&self.feedback, req).await),
            Function::Health => into_http(health::handle(&self.health, req).await),
            Function::History => into_http(history::handle(&self.history, req).await),
        }
    }
}

struct App {
    functions: Functions,
    requests: AtomicU64,
}

/// The web client's settings in development: the API on the same origin, sign-in by name.
const DEV_CLIENT_CONFIG: &str = r#"{"apiBaseUrl":"","auth":{"mode":"dev"}}"#;

/// The page's Content-Security-Policy: its own scripts and styles only, no inline script, the
/// API on its own origin. The deployment's (CloudFront's) adds the API's and Cognito's origins.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The router with every route of [`routes`], and the web client from `web_root` if given.
pub fn router(functions: Functions, web_root: Option<PathBuf>) -> Router {
    let app = Arc::new(App {
        functions,
        requests: AtomicU64::new(0),
    });
    let mut router = Router::new();
    let resources: std::collections::BTreeSet<&str> =
        routes().iter().map(|route| route.resource).collect();
    for resource in resources {
        router = router.route(resource, axum::routing::options(preflight));
    }
    for route in routes() {
        let method = Method::from_bytes(route.method.as_bytes()).unwrap_or(Method::GET);
        let function = route.function;
        let filter = axum::routing::MethodFilter::try_from(method)
            .unwrap_or(axum::routing::MethodFilter::GET);
        router = router.route(
            route.resource,
            on(filter, move |state, matched, path, query, req| {
                invoke(state, matched, path, query, req, function)
            }),
        );
    }
    let router = router.with_state(app);
    let router = match web_root {
        Some(root) => router.fallback_service(site(root)),
        None => router.fallback(no_such_route),
    };
    router.layer(axum::middleware::from_fn(loopback_hosts_only))
}

/// What API Gateway answers a CORS preflight with (`Cors` of `ChatApi` in `template.yaml`): the
/// allowed origin (`CORS_ALLOW_ORIGIN`), methods and headers, whatever the request asks; no
/// function runs and no identity is needed.
async fn preflight() -> Response {
    let mut response = StatusCode::OK.into_response();
    let headers = response.headers_mut();
    if let Some(origin) = shared::http::allowed_origin() {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    for (name, value) in PREFLIGHT {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The preflight's fixed headers, as `template.yaml` sets them (a test keeps them in step).
pub const PREFLIGHT: [(header::HeaderName, &str); 3] = [
    (
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        "Authorization,Content-Type,Idempotency-Key",
    ),
    (
        header::ACCESS_CONTROL_ALLOW_METHODS,
        "GET,POST,PATCH,DELETE,OPTIONS",
    ),
    (header::ACCESS_CONTROL_MAX_AGE, "600"),
];

/// The web client's files from `root`, and its runtime settings at `/config.json`.
fn site(root: PathBuf) -> Router {
    let files = tower_http::services::ServeDir::new(root)
        .append_index_html_on_directories(true)
        .call_fallback_on_method_not_allowed(true)
        .not_found_service(axum::routing::any(no_such_route));
    Router::new()
        .route(
            "/config.json",
            axum::routing::get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    DEV_CLIENT_CONFIG,
                )
            }),
        )
        .fallback_service(files)
        .layer(axum::middleware::map_response(page_headers))
}

/// Refuses a request whose `Host` is not a loopback name, with `403` and the reason.
async fn loopback_hosts_only(req: AxumRequest, next: axum::middleware::Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .or_else(|| req.uri().authority().map(|authority| authority.as_str()));
    if host.is_some_and(is_loopback_host) {
        return next.run(req).await;
    }
    (
        StatusCode::FORBIDDEN,
        axum::Json(json!({
            "message": "the development server answers only requests addressed to a loopback host \
                        name (localhost, 127.0.0.1, [::1]); this one's Host header names another or none"
        })),
    )
        .into_response()
}

/// Whether a `Host` header value (name and optional port) names this machine's loopback.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((name, port))
                if port.is_empty() || port.strip_prefix(':').is_some_and(is_port) =>
            {
                name
            }
            _ => return false,
        },
        None => match host.split_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => host,
        },
    };
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_port(port: &str) -> bool {
    port.parse::<u16>().is_ok()
}

/// What API Gateway answers for a path it has no route for.
async fn no_such_route() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"message": "no such route"})),
    )
        .into_response()
}

/// Security and cache headers on the web client's files (the API's answers carry their own).
async fn page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
    ] {
        headers
            .entry(name)
            .or_insert_with(|| HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert_with(|| HeaderValue::from_static("no-cache"));
    response
}

/// Serves `router` until `shutdown` resolves, then lets requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Streamed events are small writes: without TCP_NODELAY each would wait for the client's
    // delayed acknowledgement of the previous one (about 40 ms).
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::warn!(error = %err, "could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

async fn invoke(
    State(app): State<Arc<App>>,
    matched: MatchedPath,
    Path(path_parameters): Path<HashMap<String, String>>,
    RawQuery(query): RawQuery,
    req: AxumRequest,
    function: Function,
) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let body = match to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                axum::Json(json!({"message": "Request Too Long"})),
            )
                .into_response()
        }
    };
    let number = app.requests.fetch_add(1, Ordering::Relaxed);
    let request_id = format!("local-{}-{number}", std::process::id());
    let event = proxy_event(&ProxyRequest {
        method: &parts.method,
        path: parts.uri.path(),
        resource: matched.as_str(),
        headers: &parts.headers,
        query: query.as_deref(),
        path_parameters: &path_parameters,
        body: &body,
        request_id: &request_id,
    });
    let response = match shared::http::event::request(event) {
        Ok(request) => app.functions.call(function, request).await,
        Err(err) => {
            tracing::error!(error = %err, "the event we built did not parse");
            (
                StatusCode::BAD_GATEWAY,
                axum::Json(json!({"message": "Internal server error"})),
            )
                .into_response()
        }
    };
    tracing::info!(
        method = %parts.method,
        path = parts.uri.path(),
        status = response.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1_000.0,
        request_id,
        "local-api"
    );
    response
}

/// What the proxy event is built from.
pub struct ProxyRequest<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub resource: &'a str,
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
    pub path_parameters: &'a HashMap<String, String>,
    pub body: &'a [u8],
    pub request_id: &'a str,
}

/// The API Gateway REST proxy event for a request.
pub fn proxy_event(req: &ProxyRequest<'_>) -> Value {
    let mut headers = Map::new();
    let mut multi_headers: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    // Named only by exactly one X-Dev-User whose bytes are UTF-8: a lossy decoding would make two
    // different byte strings one user.
    let mut users = req.headers.get_all(DEV_USER_HEADER).iter();
    let user = match (users.next(), users.next()) {
        (Some(value), None) => std::str::from_utf8(value.as_bytes()).ok(),
        _ => None,
    };
    for (name, value) in req.headers {
        if name.as_str() == DEV_USER_HEADER {
            continue;
        }
        // API Gateway passes any header value on, bytes beyond ASCII included; so do we, and
        // the function judges it (a non-ASCII Idempotency-Key is a 400, not a silent drop).
        let value = String::from_utf8_lossy(value.as_bytes());
        let value = value.as_ref();
        headers.insert(name.as_str().to_owned(), Value::from(value));
        multi_headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(Value::from(value));
    }

    let mut query = Map::new();
    let mut multi_query: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    if let Some(raw) = req.query {
        let pairs: Vec<(String, String)> = serde_urlencoded_pairs(raw);
        for (key, value) in pairs {
            query.insert(key.clone(), Value::from(value.clone()));
            multi_query.entry(key).or_default().push(Value::from(value));
        }
    }

    let (body, is_base64) = match std::str::from_utf8(req.body) {
        _ if req.body.is_empty() => (Value::Null, false),
        Ok(text) => (Value::from(text), false),
        Err(_) => (
            Value::from(base64::engine::general_purpose::STANDARD.encode(req.body)),
            true,
        ),
    };

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut context = json!({
        "accountId": "000000000000",
        "apiId": "local",
        "resourceId": "local",
        "resourcePath": req.resource,
        "httpMethod": req.method.as_str(),
        "path": format!("/local{}", req.path),
        "stage": "local",
        "protocol": "HTTP/1.1",
        "requestId": req.request_id,
        "requestTimeEpoch": now.as_millis() as u64,
        "identity": {"sourceIp": "127.0.0.1", "userAgent": headers.get("user-agent").cloned().unwrap_or(Value::Null)},
    });
    if let Some(user) = user {
        context["authorizer"] = json!({"claims": {"sub": user}});
    }

    let or_null = |map: Map<String, Value>| {
        if map.is_empty() {
            Value::Null
        } else {
            Value::Object(map)
        }
    };
    let path_parameters: Map<String, Value> = req
        .path_parameters
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    json!({
        "resource": req.resource,
        "path": req.path,
        "httpMethod": req.method.as_str(),
        "headers": headers,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": or_null(query),
        "multiValueQueryStringParameters": if multi_query.is_empty() { Value::Null } else { json!(multi_query) },
        "pathParameters": or_null(path_parameters),
        "stageVariables": Value::Null,
        "requestContext": context,
        "body": body,
        "isBase64Encoded": is_base64,
    })
}

fn serde_urlencoded_pairs(raw: &str) -> Vec<(String, String)> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
        &format!("/?{raw}").parse().unwrap_or_default(),
    )
    .map(|query| query.0)
    .unwrap_or_default()
}

fn streamed(response: lambda_http::Response<shared::http::AnswerBody>) -> Response {
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, AxumBody::from_stream(body))
}

fn into_http(response: lambda_http::Response<Body>) -> Response {
    let (parts, body) = response.into_parts();
    let bytes = match body {
        Body::Empty => Vec::new(),
        Body::Text(text) => text.into_bytes(),
        Body::Binary(bytes) => bytes,
        _ => Vec::new(),
    };
    Response::from_parts(parts, AxumBody::from(bytes))
}
