//! A Lambda Runtime API on loopback, for the tests and the benchmarks: it hands a function's
//! runtime one event at a time, as Lambda does, and records each report (an invocation's response
//! or error, an init error) piece by piece, with the moment each piece arrived.
//!
//! Its receiving side acknowledges the way a default Linux TCP stack does once a connection is
//! past its first few segments: it delays each acknowledgement (by up to 40 ms) in the hope of
//! carrying it on data of its own. That is what shows a sender that leaves Nagle's algorithm on:
//! its second small write waits for the acknowledgement of its first. [`Acks::AtOnce`] instead
//! acknowledges every segment at once, for the figures beside it.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::IntoResponse,
    routing::{get, post},
    Router,
};
use futures_util::StreamExt;
use lambda_http::http::header::HeaderName;
use serde_json::Value;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{mpsc, Mutex},
};

/// How the emulator's side of a connection acknowledges what it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// Delayed, as a default Linux stack past its first segments.
    Delayed,
    /// Every segment at once (`TCP_QUICKACK`).
    AtOnce,
}

/// What a report was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    Response,
    Error,
    InitError,
}

/// One report from the function's runtime, as it arrived.
#[derive(Debug)]
pub struct Report {
    pub kind: ReportKind,
    /// The invocation it is about (none for an init error).
    pub id: Option<String>,
    pub headers: HeaderMap,
    /// The body's pieces, each with the moment it was read.
    pub pieces: Vec<(Instant, bytes::Bytes)>,
}

/// Between a streamed answer's prelude and its body.
const PRELUDE_END: [u8; 8] = [0; 8];

impl Report {
    /// The whole body as sent.
    pub fn body(&self) -> Vec<u8> {
        self.pieces
            .iter()
            .flat_map(|(_, piece)| piece.iter().copied())
            .collect()
    }

    /// Whether the answer came in Lambda's streaming format.
    pub fn is_streamed(&self) -> bool {
        self.headers
            .get("lambda-runtime-function-response-mode")
            .is_some_and(|mode| mode == "streaming")
    }

    /// A streamed answer's prelude (status code and headers), parsed.
    pub fn prelude(&self) -> Option<Value> {
        let body = self.body();
        let end = find(&body, &PRELUDE_END, 0)?;
        serde_json::from_slice(&body[..end]).ok()
    }

    /// What the client gets: a streamed answer's body after its prelude, or the whole body.
    pub fn payload(&self) -> Vec<u8> {
        let body = self.body();
        if !self.is_streamed() {
            return body;
        }
        match find(&body, &PRELUDE_END, 0) {
            Some(end) => body[end + PRELUDE_END.len()..].to_vec(),
            None => Vec::new(),
        }
    }

    /// When the end of a streamed answer's prelude arrived.
    pub fn prelude_at(&self) -> Option<Instant> {
        self.arrivals(&PRELUDE_END).first().copied()
    }

    /// When the last piece arrived.
    pub fn ended_at(&self) -> Option<Instant> {
        self.pieces.last().map(|(at, _)| *at)
    }

    /// When each occurrence of `needle` in the body had arrived whole, in order.
    pub fn arrivals(&self, needle: &[u8]) -> Vec<Instant> {
        let mut seen = Vec::new();
        let mut arrivals = Vec::new();
        let mut from = 0;
        for (at, piece) in &self.pieces {
            seen.extend_from_slice(piece);
            while let Some(found) = find(&seen, needle, from) {
                arrivals.push(*at);
                from = found + needle.len();
            }
        }
        arrivals
    }
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|at| at + from)
}

struct Shared {
    /// Connections accepted so far.
    connections: AtomicUsize,
    events: Mutex<mpsc::Receiver<(String, String)>>,
    first_next: Mutex<Option<Instant>>,
    reports: mpsc::Sender<Report>,
}

/// A running Runtime API; it stops when dropped.
pub struct RuntimeApiEmulator {
    address: SocketAddr,
    events: mpsc::Sender<(String, String)>,
    reports: mpsc::Receiver<Report>,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for RuntimeApiEmulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl RuntimeApiEmulator {
    /// Starts one on a free loopback port.
    pub async fn start(acks: Acks) -> io::Result<Self> {
        let (events_tx, events_rx) = mpsc::channel(1);
        let (reports_tx, reports_rx) = mpsc::channel(16);
        let shared = Arc::new(Shared {
            connections: AtomicUsize::new(0),
            events: Mutex::new(events_rx),
            first_next: Mutex::new(None),
            reports: reports_tx,
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(
                    |State(shared): State<Arc<Shared>>, Path(id): Path<String>, headers, body| {
                        record(shared, ReportKind::Response, Some(id), headers, body)
                    },
                ),
            )
            .route(
                "/2018-06-01/runtime/invocation/{id}/error",
                post(
                    |State(shared): State<Arc<Shared>>, Path(id): Path<String>, headers, body| {
                        record(shared, ReportKind::Error, Some(id), headers, body)
                    },
                ),
            )
            .route(
                "/2018-06-01/runtime/init/error",
                post(|State(shared): State<Arc<Shared>>, headers, body| {
                    record(shared, ReportKind::InitError, None, headers, body)
                }),
            )
            .with_state(Arc::clone(&shared));
        let listener = AckingListener {
            listener: TcpListener::bind("127.0.0.1:0").await?,
            acks,
            shared: Arc::clone(&shared),
        };
        let address = listener.listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            address,
            events: events_tx,
            reports: reports_rx,
            shared,
            server,
        })
    }

    /// What `AWS_LAMBDA_RUNTIME_API` is set to for the function.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// How many connections the function has opened.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// When the function first asked for an event (the end of its init).
    pub async fn first_next(&self) -> Option<Instant> {
        *self.shared.first_next.lock().await
    }

    /// Hands `event` to the function as invocation `id` and waits (up to `timeout`) for its
    /// report. Returns when the event was handed over, and the report.
    pub async fn invoke(
        &mut self,
        id: &str,
        event: &str,
        timeout: Duration,
    ) -> Result<(Instant, Report), String> {
        self.events
            .send((id.to_owned(), event.to_owned()))
            .await
            .map_err(|_| "the emulator has stopped".to_owned())?;
        let handed = Instant::now();
        let report = self.report(timeout).await?;
        Ok((handed, report))
    }

    /// The next report, whatever it is about (an init error comes without an event).
    pub async fn report(&mut self, timeout: Duration) -> Result<Report, String> {
        tokio::time::timeout(timeout, self.reports.recv())
            .await
            .map_err(|_| format!("no report within {timeout:?}"))?
            .ok_or_else(|| "the emulator has stopped".to_owned())
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    shared
        .first_next
        .lock()
        .await
        .get_or_insert_with(Instant::now);
    let Some((id, event)) = shared.events.lock().await.recv().await else {
        // No more events: the function waits, as Lambda freezes it.
        match std::future::pending::<std::convert::Infallible>().await {}
    };
    let deadline = SystemTime::now() + Duration::from_secs(30);
    let deadline_ms = deadline
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    set("lambda-runtime-aws-request-id", id);
    set("lambda-runtime-deadline-ms", deadline_ms.to_string());
    set(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:000000000000:function:emulated".to_owned(),
    );
    set(
        "lambda-runtime-trace-id",
        "Root=1-00000000-000000000000000000000000;Sampled=0".to_owned(),
    );
    set("content-type", "application/json".to_owned());
    (StatusCode::OK, headers, event)
}

/// Reads a report's body piece by piece, stamping each, and hands the report on.
async fn record(
    shared: Arc<Shared>,
    kind: ReportKind,
    id: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> StatusCode {
    let mut pieces = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(piece) = stream.next().await {
        match piece {
            Ok(piece) => pieces.push((Instant::now(), piece)),
            Err(_) => return StatusCode::BAD_REQUEST,
        }
    }
    let _ = shared
        .reports
        .send(Report {
            kind,
            id,
            headers,
            pieces,
        })
        .await;
    StatusCode::ACCEPTED
}

/// Accepts connections whose reads set the acknowledgement mode again after each read (the
/// kernel may leave either mode on its own).
struct AckingListener {
    listener: TcpListener,
    acks: Acks,
    shared: Arc<Shared>,
}

impl axum::serve::Listener for AckingListener {
    type Io = AckingStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if let Ok((stream, address)) = self.listener.accept().await {
                self.shared.connections.fetch_add(1, Ordering::Relaxed);
                let stream = AckingStream {
                    stream,
                    quickack: self.acks == Acks::AtOnce,
                };
                stream.set_mode();
                return (stream, address);
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

struct AckingStream {
    stream: TcpStream,
    quickack: bool,
}

impl AckingStream {
    fn set_mode(&self) {
        let _ = self.stream.set_quickack(self.quickack);
    }
}

impl AsyncRead for AckingStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if read.is_ready() {
            self.set_mode();
        }
        read
    }
}

impl AsyncWrite for AckingStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
