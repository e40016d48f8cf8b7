//! `cold-start`: a minimal AWS Lambda Runtime API on loopback that starts a function's release
//! binary the way Lambda does and measures it: init time (process start to its first `next`
//! request), first response time, warm invocation p50/p99, and peak RSS.
//!
//! ```text
//! cold-start BOOTSTRAP EVENT_FILE [INVOCATIONS]
//! ```
//! The function's configuration (TABLE_NAME, ...) comes from the environment; `make bench-cold`
//! runs it for every function against the local stack.

use std::{
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::IntoResponse,
    routing::{get, post},
    Router,
};
use bench::{cpu_seconds, ms, percentile};
use tokio::sync::{mpsc, Mutex};

/// What the runtime reported for one invocation.
#[derive(Debug)]
enum Outcome {
    Response { id: String, body: String },
    Error { id: String, body: String },
    InitError(String),
}

struct Emulator {
    events: Mutex<mpsc::Receiver<(String, String)>>,
    /// When the function first asked for work.
    first_next: Mutex<Option<Instant>>,
    outcomes: mpsc::Sender<(Instant, Outcome)>,
}

async fn next(State(emulator): State<Arc<Emulator>>) -> impl IntoResponse {
    emulator
        .first_next
        .lock()
        .await
        .get_or_insert_with(Instant::now);
    let Some((id, event)) = emulator.events.lock().await.recv().await else {
        // No more events: keep the function waiting, as Lambda freezes it.
        match std::future::pending::<std::convert::Infallible>().await {}
    };
    let deadline = std::time::SystemTime::now() + Duration::from_secs(30);
    let deadline_ms = deadline
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let mut headers = HeaderMap::new();
    let header =
        |value: &str| HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static("-"));
    headers.insert("lambda-runtime-aws-request-id", header(&id));
    headers.insert(
        "lambda-runtime-deadline-ms",
        header(&deadline_ms.to_string()),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        HeaderValue::from_static("arn:aws:lambda:us-east-1:000000000000:function:bench"),
    );
    headers.insert(
        "lambda-runtime-trace-id",
        HeaderValue::from_static("Root=1-00000000-000000000000000000000000;Sampled=0"),
    );
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    (StatusCode::OK, headers, event)
}

async fn response(
    State(emulator): State<Arc<Emulator>>,
    Path(id): Path<String>,
    body: String,
) -> StatusCode {
    report(&emulator, Outcome::Response { id, body }).await
}

async fn error(
    State(emulator): State<Arc<Emulator>>,
    Path(id): Path<String>,
    body: String,
) -> StatusCode {
    report(&emulator, Outcome::Error { id, body }).await
}

async fn init_error(State(emulator): State<Arc<Emulator>>, body: String) -> StatusCode {
    report(&emulator, Outcome::InitError(body)).await
}

/// Hands what the runtime reported to the harness, stamped with its arrival.
async fn report(emulator: &Emulator, outcome: Outcome) -> StatusCode {
    let _ = emulator.outcomes.send((Instant::now(), outcome)).await;
    StatusCode::ACCEPTED
}

/// Peak resident set size of a process, in kB (VmHWM).
fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One execution environment's life: its cold start, then `invocations` warm invocations.
struct Run {
    init: Duration,
    first_response: Duration,
    latencies: Vec<Duration>,
    rss_kb: u64,
    /// CPU seconds the function spent on its warm invocations.
    warm_cpu: f64,
    errors: usize,
}

async fn run(
    bootstrap: &str,
    name: &str,
    event: &str,
    invocations: usize,
) -> Result<Run, Box<dyn std::error::Error>> {
    let event = event.to_owned();
    let (event_tx, event_rx) = mpsc::channel::<(String, String)>(1);
    let (outcome_tx, mut outcome_rx) = mpsc::channel::<(Instant, Outcome)>(16);
    let emulator = Arc::new(Emulator {
        events: Mutex::new(event_rx),
        first_next: Mutex::new(None),
        outcomes: outcome_tx,
    });
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state(Arc::clone(&emulator));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    let spawned = Instant::now();
    let mut child = tokio::process::Command::new(bootstrap)
        .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().ok_or("the function exited at once")?;

    let mut latencies = Vec::with_capacity(invocations);
    let mut first_response = None;
    let mut errors = 0;
    let mut cpu_before_warm = 0.0;
    for n in 0..=invocations {
        if n == 1 {
            cpu_before_warm = cpu_seconds(pid).unwrap_or(0.0);
        }
        let id = format!("bench-{n}");
        event_tx.send((id.clone(), event.clone())).await?;
        let handed = Instant::now();
        let (at, outcome) = tokio::time::timeout(Duration::from_secs(60), outcome_rx.recv())
            .await?
            .ok_or("the emulator stopped")?;
        match outcome {
            Outcome::Response { id: got, body } => {
                if n == 0 && !body.contains("statusCode") {
                    eprintln!("{name}: unexpected first response: {body}");
                }
                if body.contains("\"statusCode\":5") {
                    errors += 1;
                }
                assert_eq!(got, id);
            }
            Outcome::Error { id: got, body } => {
                assert_eq!(got, id);
                errors += 1;
                if errors == 1 {
                    eprintln!("{name}: invocation error: {body}");
                }
            }
            Outcome::InitError(body) => return Err(format!("{name}: init error: {body}").into()),
        }
        if n == 0 {
            first_response = Some(at - spawned);
        } else {
            latencies.push(at - handed);
        }
    }
    let init = emulator
        .first_next
        .lock()
        .await
        .map(|at| at - spawned)
        .ok_or("no next request")?;
    let rss = peak_rss_kb(pid);
    let warm_cpu = cpu_seconds(pid).unwrap_or(0.0) - cpu_before_warm;
    child.kill().await?;
    Ok(Run {
        init,
        first_response: first_response.ok_or("no first response")?,
        latencies,
        rss_kb: rss.unwrap_or(0),
        warm_cpu,
        errors,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: cold-start BOOTSTRAP EVENT_FILE [INVOCATIONS [COLD_STARTS]]".into());
    }
    let (bootstrap, event_file) = (&args[1], &args[2]);
    let invocations: usize = args.get(3).map(|n| n.parse()).transpose()?.unwrap_or(1_000);
    let cold_starts: usize = args
        .get(4)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(5)
        .max(1);
    let event = std::fs::read_to_string(event_file)?;
    let name = std::path::Path::new(bootstrap)
        .parent()
        .and_then(|dir| dir.file_name())
        .and_then(|name| name.to_str())
        .unwrap_or("function")
        .to_owned();

    // The first environment also serves the warm invocations; the others only start.
    let mut runs = Vec::with_capacity(cold_starts);
    for index in 0..cold_starts {
        let warm = if index == 0 { invocations } else { 0 };
        runs.push(run(bootstrap, &name, &event, warm).await?);
    }
    let mut inits: Vec<Duration> = runs.iter().map(|run| run.init).collect();
    let mut firsts: Vec<Duration> = runs.iter().map(|run| run.first_response).collect();
    inits.sort();
    firsts.sort();
    let median = |values: &[Duration]| values[values.len() / 2];
    let mut latencies = runs[0].latencies.clone();
    let errors: usize = runs.iter().map(|run| run.errors).sum();
    let rss_kb = runs.iter().map(|run| run.rss_kb).max().unwrap_or(0);
    latencies.sort();
    let pct = |p: usize| ms(percentile(&latencies, p));
    println!(
        "{name:>9} | init median {:>5.1} ms, max {:>5.1} ms | first response median {:>5.1} ms | warm p50 {:>6.2} ms, p99 {:>6.2} ms over {} | CPU {:.3} ms/invocation | peak RSS {:>5.1} MB | errors {errors} | {cold_starts} cold starts",
        ms(median(&inits)),
        ms(inits[inits.len() - 1]),
        ms(median(&firsts)),
        pct(50),
        pct(99),
        latencies.len(),
        runs[0].warm_cpu * 1_000.0 / latencies.len().max(1) as f64,
        rss_kb as f64 / 1024.0,
    );
    Ok(())
}
