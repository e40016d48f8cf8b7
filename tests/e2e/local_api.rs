//! The local API server end to end over HTTP, and its API Gateway event construction.

use std::collections::HashMap;

use lambda_http::http::{HeaderMap, HeaderValue, Method};
use serde_json::Value;

/// The address of a running local API server; it shuts down when `stop` is dropped.
struct Server {
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Starts the local API server on a free port, without the web client.
async fn start_server() -> Server {
    start_server_with(None).await
}

/// Starts the local API server on a free port, serving the web client from `web_root`.
async fn start_server_with(web_root: Option<std::path::PathBuf>) -> Server {
    let functions = e2e::local_functions().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (address, task) = e2e::serve_local_api(functions, web_root, async {
        let _ = stopped.await;
    })
    .await;
    let url = format!("http://{address}");
    Server { url, stop, task }
}

#[tokio::test]
async fn serves_liveness_and_readiness_over_http() {
    let server = start_server().await;
    let url = &server.url;
    let client = reqwest::Client::new();

    let live = client.get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    assert_eq!(live.headers()["content-type"], "application/json");
    let body: Value = live.json().await.unwrap();
    assert_eq!(body["status"], "ok");

    let ready = client
        .get(format!("{url}/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"][0]["name"], "dynamodb");
    assert_eq!(body["checks"][0]["ok"], true);
    assert_eq!(body["checks"][1]["name"], "secretsmanager");
    assert_eq!(body["checks"][1]["ok"], true);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_refused() {
    let server = start_server().await;
    let url = &server.url;
    let client = reqwest::Client::new();
    let missing = client.get(format!("{url}/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let wrong_method = client.delete(format!("{url}/health")).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);
}

#[tokio::test]
async fn serves_the_web_client_beside_the_api_on_one_origin() {
    let root = std::env::temp_dir().join(format!("web-root-{}", e2e::user().as_str()));
    std::fs::create_dir_all(root.join("assets")).unwrap();
    std::fs::write(
        root.join("index.html"),
        "<!doctype html><title>chat</title>",
    )
    .unwrap();
    std::fs::write(root.join("assets/app-1234.js"), "export {};").unwrap();
    let server = start_server_with(Some(root.clone())).await;
    let url = &server.url;
    let client = reqwest::Client::new();

    let page = client.get(format!("{url}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert!(page.text().await.unwrap().contains("<title>chat</title>"));

    let script = client
        .get(format!("{url}/assets/app-1234.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert!(script.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("javascript"));

    let config: Value = client
        .get(format!("{url}/config.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["auth"]["mode"], "dev");
    assert_eq!(config["apiBaseUrl"], "");

    // The API is unchanged beside it: its routes, and API Gateway's 404 for anything else.
    let live = client.get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    assert!(live.headers().get("content-security-policy").is_none());
    for missing in [
        client.get(format!("{url}/nope.html")),
        client.post(format!("{url}/nope")),
        client.get(format!("{url}/../Cargo.toml")),
    ] {
        let answer = missing.send().await.unwrap();
        assert_eq!(answer.status(), 404);
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["message"], "no such route");
    }
    std::fs::remove_dir_all(root).unwrap();
}

#[tokio::test]
async fn stops_cleanly_when_asked() {
    let Server { url, stop, task } = start_server().await;
    let client = reqwest::Client::new();
    let status = client
        .get(format!("{url}/health"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    drop(stop);
    let result = tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .expect("the server stops within 10 s");
    assert!(matches!(result, Ok(Ok(()))), "{result:?}");
    let after = reqwest::Client::new()
        .get(format!("{url}/health"))
        .send()
        .await;
    assert!(after.is_err(), "the server kept serving after shutdown");
}

fn event_for(headers: HeaderMap, query: Option<&str>, body: &[u8]) -> Value {
    let path_parameters = HashMap::from([("id".to_owned(), "c-1".to_owned())]);
    local_api::proxy_event(&local_api::ProxyRequest {
        method: &Method::POST,
        path: "/conversations/c-1/messages",
        resource: "/conversations/{id}/messages",
        headers: &headers,
        query,
        path_parameters: &path_parameters,
        body,
        request_id: "local-1",
    })
}

#[test]
fn the_dev_header_becomes_authorizer_claims_and_is_removed() {
    let mut headers = HeaderMap::new();
    headers.insert("x-dev-user", HeaderValue::from_static("user-42"));
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let event = event_for(headers, Some("limit=5&order=desc"), b"{\"a\":1}");
    assert_eq!(
        event["requestContext"]["authorizer"]["claims"]["sub"],
        "user-42"
    );
    assert!(event["headers"].get("x-dev-user").is_none());
    assert!(event["multiValueHeaders"].get("x-dev-user").is_none());

    let request =
        lambda_http::request::from_str(&event.to_string()).expect("lambda_http parses it");
    let user = shared::http::caller(&request).expect("an identity");
    assert_eq!(user.as_str(), "user-42");
    assert_eq!(
        shared::http::route_of(&request),
        Some("/conversations/{id}/messages")
    );
    use lambda_http::RequestExt;
    let query = request.query_string_parameters();
    assert_eq!(query.first("limit"), Some("5"));
    assert_eq!(query.first("order"), Some("desc"));
    assert_eq!(request.path_parameters().first("id"), Some("c-1"));
    assert_eq!(request.body().as_ref(), b"{\"a\":1}");
}

#[test]
fn without_the_dev_header_there_are_no_claims() {
    let event = event_for(HeaderMap::new(), None, b"");
    assert!(event["requestContext"].get("authorizer").is_none());
    let request = lambda_http::request::from_str(&event.to_string()).unwrap();
    assert!(shared::http::caller(&request).is_err());
}

#[tokio::test]
async fn the_dev_header_identifies_the_caller_of_history_routes() {
    let server = start_server().await;
    let client = reqwest::Client::new();
    let url = format!("{}/conversations?limit=5", server.url);

    let anonymous = client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.headers()["content-type"],
        "application/problem+json"
    );

    let user = e2e::unique("dev-user");
    let named = client
        .get(&url)
        .header("X-Dev-User", &user)
        .send()
        .await
        .unwrap();
    assert_eq!(named.status(), 200);
    assert_eq!(named.headers()["cache-control"], "no-store");
    let origin = std::env::var("CORS_ALLOW_ORIGIN").expect("make test sets CORS_ALLOW_ORIGIN");
    assert_eq!(
        named.headers()["access-control-allow-origin"],
        origin.as_str()
    );
    assert_eq!(named.headers()["vary"], "Origin");
    // What a browser script may read: when to retry, replays, the request id.
    assert_eq!(
        named.headers()["access-control-expose-headers"],
        shared::http::EXPOSED_HEADERS
    );
    assert!(shared::http::EXPOSED_HEADERS.contains("Retry-After"));
    assert!(shared::http::EXPOSED_HEADERS.contains("idempotent-replayed"));
    let body: Value = named.json().await.unwrap();
    assert_eq!(body["conversations"], serde_json::json!([]));

    // Two methods on one path (GET and POST /feedback) both reach the function.
    let listed = client
        .get(format!("{}/feedback", server.url))
        .header("X-Dev-User", &user)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let refused = client
        .post(format!("{}/feedback", server.url))
        .header("X-Dev-User", &user)
        .header("content-type", "application/json")
        .body(r#"{"rating": 9}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);

    let erase = client
        .delete(format!("{}/history", server.url))
        .header("X-Dev-User", &user)
        .send()
        .await
        .unwrap();
    assert_eq!(erase.status(), 204);
}

#[test]
fn a_dev_header_that_is_not_utf8_or_is_repeated_names_no_one() {
    // Two different byte strings must not decode (lossily) into one user.
    let mut invalid = HeaderMap::new();
    invalid.insert(
        "x-dev-user",
        HeaderValue::from_bytes(b"alice\xff").expect("a header value of opaque bytes"),
    );
    let event = event_for(invalid, None, b"");
    assert!(event["requestContext"].get("authorizer").is_none());
    assert!(event["headers"].get("x-dev-user").is_none());

    let mut repeated = HeaderMap::new();
    repeated.append("x-dev-user", HeaderValue::from_static("alice"));
    repeated.append("x-dev-user", HeaderValue::from_static("bob"));
    let event = event_for(repeated, None, b"");
    assert!(event["requestContext"].get("authorizer").is_none());

    // UTF-8 beyond ASCII is a name like any other.
    let mut accented = HeaderMap::new();
    accented.insert(
        "x-dev-user",
        HeaderValue::from_bytes("josé".as_bytes()).expect("UTF-8 bytes"),
    );
    let event = event_for(accented, None, b"");
    assert_eq!(
        event["requestContext"]["authorizer"]["claims"]["sub"],
        "josé"
    );
}

#[tokio::test]
async fn a_dev_header_that_is_not_utf8_is_refused_with_401_over_http() {
    let server = start_server().await;
    let answer = reqwest::Client::new()
        .get(format!("{}/conversations", server.url))
        .header(
            "X-Dev-User",
            HeaderValue::from_bytes(b"alice\xff").expect("opaque bytes"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
}

#[test]
fn only_loopback_host_names_are_loopback() {
    for host in [
        "localhost",
        "localhost:3000",
        "LOCALHOST:3000",
        "app.localhost:5173",
        "127.0.0.1",
        "127.0.0.1:3000",
        "127.8.9.10:80",
        "[::1]",
        "[::1]:3000",
    ] {
        assert!(local_api::is_loopback_host(host), "{host} is loopback");
    }
    for host in [
        "",
        "evil.example",
        "evil.example:3000",
        "localhost.evil.example",
        "127.0.0.1.nip.io:3000",
        "10.0.0.1:3000",
        "0.0.0.0:3000",
        "[::2]:3000",
        "[::1]3000",
        "localhost:http",
        "localhost:99999",
        "::1",
    ] {
        assert!(!local_api::is_loopback_host(host), "{host} is not loopback");
    }
}

/// The status code and body of a raw HTTP/1.1 exchange (its `Host` header exactly the test's).
async fn raw_exchange(url: &str, request: &str) -> (u16, String) {
    let address = url
        .trim_start_matches("http://")
        .parse()
        .expect("an address");
    let answer = e2e::raw_exchange(address, request.as_bytes()).await;
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn a_request_for_another_host_name_is_refused_before_any_function_runs() {
    // What a DNS-rebinding page sends: our address, its own host name.
    let server = start_server().await;
    let user = e2e::unique("rebound");
    let message = r#"{"message":"hello"}"#;
    let (status, body) = raw_exchange(
        &server.url,
        &format!(
            "POST /chat HTTP/1.1\r\nHost: evil.example:3000\r\nX-Dev-User: {user}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{message}",
            message.len()
        ),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("loopback"), "{body}");
    // Nothing was stored for that user: the function never ran.
    let listed = reqwest::Client::new()
        .get(format!("{}/conversations", server.url))
        .header("X-Dev-User", &user)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(listed["conversations"], serde_json::json!([]));

    // The web client's files are refused the same way; a loopback name is served.
    let (status, _) = raw_exchange(
        &server.url,
        "GET /health HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = raw_exchange(
        &server.url,
        "GET /nope HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 403);
    let (status, body) = raw_exchange(
        &server.url,
        "GET /health HTTP/1.1\r\nHost: localhost:3000\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
}
