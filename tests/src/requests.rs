//! API Gateway requests, built exactly as the local API server builds them, and their answers.

use crate::stack::unique;

/// A request for `resource` without a body; `user` becomes the authorizer's claims.
pub fn api_request(
    method: &str,
    resource: &str,
    path_parameters: &[(&str, &str)],
    query: Option<&str>,
    user: Option<&str>,
) -> lambda_http::Request {
    request_with(method, resource, path_parameters, query, user, &[], b"")
}

/// A request for `resource` with a JSON body, as `user`.
pub fn json_request(
    method: &str,
    resource: &str,
    path_parameters: &[(&str, &str)],
    user: Option<&str>,
    body: &str,
) -> lambda_http::Request {
    let headers = [("content-type", "application/json")];
    request_with(
        method,
        resource,
        path_parameters,
        None,
        user,
        &headers,
        body.as_bytes(),
    )
}

/// `POST /chat` with a JSON body, as `user`, with extra headers.
pub fn chat_request(
    user: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> lambda_http::Request {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    request_with("POST", "/chat", &[], None, user, &all, body.as_bytes())
}

/// Any API Gateway request, built as the local API server builds it.
pub fn request_with(
    method: &str,
    resource: &str,
    path_parameters: &[(&str, &str)],
    query: Option<&str>,
    user: Option<&str>,
    extra_headers: &[(&str, &str)],
    body: &[u8],
) -> lambda_http::Request {
    use lambda_http::http::{HeaderMap, HeaderName, HeaderValue, Method};
    let mut path = resource.to_owned();
    for (name, value) in path_parameters {
        path = path.replace(&format!("{{{name}}}"), value);
    }
    let mut headers = HeaderMap::new();
    if let Some(user) = user {
        let value = HeaderValue::from_str(user).expect("a header-safe user id");
        headers.insert(local_api::DEV_USER_HEADER, value);
    }
    for (name, value) in extra_headers {
        headers.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
            HeaderValue::from_str(value).expect("a header value"),
        );
    }
    let method = Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let path_parameters = path_parameters
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let event = local_api::proxy_event(&local_api::ProxyRequest {
        method: &method,
        path: &path,
        resource,
        headers: &headers,
        query,
        path_parameters: &path_parameters,
        body,
        request_id: &unique("req"),
    });
    lambda_http::request::from_str(&event.to_string()).expect("lambda_http parses the event")
}

/// The JSON body of a response.
pub fn json_body<B: AsRef<[u8]>>(response: &lambda_http::Response<B>) -> serde_json::Value {
    serde_json::from_slice(response.body().as_ref()).unwrap_or(serde_json::Value::Null)
}

/// Sends `request` as raw bytes to a server that closes after answering, and reads the whole
/// answer: for what a client library would not send (a hostile or foreign `Host`).
pub async fn raw_exchange(address: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    socket.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        socket.read_to_end(&mut answer),
    )
    .await
    .expect("the server answers")
    .expect("the connection is not dropped");
    String::from_utf8_lossy(&answer).into_owned()
}
