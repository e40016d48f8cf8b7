//! Faulty dependencies: an endpoint that never answers, and a proxy in front of the local stack
//! that hangs, loses, holds back or refuses one DynamoDB operation.

use crate::stack::{clients_at, NoInterceptor};

/// An address that accepts connections and never answers: a hung dependency. The listener lives
/// until the returned task is aborted.
pub async fn hung_endpoint() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = listener.local_addr().expect("its address");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (address, task)
}

/// A TCP relay to `target` that counts the connections made to it (`relay.connections()`):
/// the test sees how many connections a client opened, and when. Lives until dropped.
pub struct CountingRelay {
    pub address: std::net::SocketAddr,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingRelay {
    pub async fn start(target: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let address = listener.local_addr().expect("its address");
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = std::sync::Arc::clone(&connections);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self {
            address,
            connections,
            task,
        }
    }

    /// The connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for CountingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a fault-injecting [`proxy`] does to one DynamoDB operation.
#[derive(Clone)]
pub enum Fault {
    /// Accept it and never answer: it never reaches the table.
    Hang,
    /// Forward it, then never answer: the write lands, its answer is lost.
    LoseAnswer,
    /// Hold it until the gate opens, then forward it: the test orders it after other work.
    Gate(Gate),
    /// The first call as [`Fault::LoseAnswer`]; every later one refused with a
    /// `ValidationException` (an error that is neither a cancellation nor retried by the SDK).
    LoseAnswerThenRefuse(std::sync::Arc<std::sync::atomic::AtomicUsize>),
    /// The first call whose body contains `on` (an item's key) answered as DynamoDB answers a
    /// write on an item that a transaction in flight holds (`TransactionConflictException`, which
    /// the local stack never produces); every other call forwarded. `answered` counts the
    /// conflicts answered.
    ConflictOnce {
        on: String,
        answered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    },
}

/// Holds requests until opened; tells when one has arrived.
#[derive(Clone)]
pub struct Gate {
    arrived: std::sync::Arc<tokio::sync::Semaphore>,
    open: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            arrived: std::sync::Arc::new(tokio::sync::Semaphore::new(0)),
            open: std::sync::Arc::new(tokio::sync::watch::channel(false).0),
        }
    }
}

impl Gate {
    /// Waits until a request has arrived at the gate (each arrival is waited for once).
    pub async fn arrived(&self) {
        if let Ok(permit) = self.arrived.acquire().await {
            permit.forget();
        }
    }

    /// Lets every held request, and every later one, through.
    pub fn open(&self) {
        self.open.send_replace(true);
    }
}

/// A proxy in front of the local stack that forwards every request, but does `fault` to the
/// DynamoDB operation `operation` (e.g. `TransactWriteItems`). Lives until the returned task is
/// aborted.
pub async fn proxy(
    operation: &str,
    fault: Fault,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use std::sync::atomic::Ordering;

    use axum::{body::Bytes, http::HeaderMap, response::IntoResponse};
    let target = std::env::var("AWS_ENDPOINT_URL").expect("the local stack's endpoint");
    let faulty = format!("DynamoDB_20120810.{operation}");
    let client = reqwest::Client::new();
    let forward = move |method: axum::http::Method, headers: HeaderMap, body: Bytes| {
        let (client, target, faulty, fault) = (
            client.clone(),
            target.clone(),
            faulty.clone(),
            fault.clone(),
        );
        async move {
            let operation = headers.get("x-amz-target").and_then(|v| v.to_str().ok());
            let fault = (operation == Some(faulty.as_str())).then_some(fault);
            match &fault {
                Some(Fault::LoseAnswerThenRefuse(calls))
                    if calls.fetch_add(1, Ordering::SeqCst) > 0 =>
                {
                    return refusal("com.amazon.coral.validate#ValidationException", "injected");
                }
                Some(Fault::ConflictOnce { on, answered })
                    if String::from_utf8_lossy(&body).contains(on.as_str())
                        && answered
                            .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                            .is_ok() =>
                {
                    return refusal(
                        "com.amazonaws.dynamodb.v20120810#TransactionConflictException",
                        "Transaction is ongoing for the item",
                    );
                }
                _ => {}
            }
            match &fault {
                Some(Fault::Hang) => std::future::pending::<()>().await,
                Some(Fault::Gate(gate)) => {
                    gate.arrived.add_permits(1);
                    let _ = gate.open.subscribe().wait_for(|open| *open).await;
                }
                _ => {}
            }
            let mut request = client.request(method, &target).body(body);
            for (name, value) in &headers {
                if name != "host" && name != "content-length" {
                    request = request.header(name, value);
                }
            }
            let response = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    let body = response.bytes().await.unwrap_or_default();
                    (status, headers, body).into_response()
                }
                Err(_) => axum::http::StatusCode::BAD_GATEWAY.into_response(),
            };
            if matches!(
                fault,
                Some(Fault::LoseAnswer | Fault::LoseAnswerThenRefuse(_))
            ) {
                std::future::pending::<()>().await;
            }
            response
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = listener.local_addr().expect("its address");
    let app = axum::Router::new().fallback(forward);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (address, task)
}

/// DynamoDB's answer refusing a call with the error `kind` (`namespace#Name`), as on the wire.
fn refusal(kind: &'static str, message: &str) -> axum::response::Response {
    use axum::{http::HeaderValue, response::IntoResponse};
    let body = serde_json::json!({"__type": kind, "message": message}).to_string();
    let mut refused = (axum::http::StatusCode::BAD_REQUEST, body).into_response();
    let name = kind.rsplit_once('#').map_or(kind, |(_, name)| name);
    let headers = refused.headers_mut();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    headers.insert("x-amzn-errortype", HeaderValue::from_static(name));
    refused
}

/// A DynamoDB client for the endpoint at `address` (a hung or proxied table), each call bounded by
/// `operation_timeout`.
pub async fn dynamodb_at(
    address: std::net::SocketAddr,
    operation_timeout: std::time::Duration,
) -> aws_sdk_dynamodb::Client {
    let endpoint = format!("http://{address}");
    clients_at(Some(&endpoint), operation_timeout, None::<NoInterceptor>)
        .await
        .dynamodb
}
