//! `stream-bench`: streamed chat turns through a running local API server (echo provider, or a
//! provider stub, `provider-stub`, with a fixed delay per token) read by an SSE client; reports our added time to the first `delta`,
//! the server's CPU per streamed token, and its peak memory.
//!
//! ```text
//! stream-bench URL TOKENS TURNS TOKEN_DELAY_MS SERVER_PID
//! ```
//! `LABEL` names the line (the provider; `echo` by default).
//! Each turn starts a new conversation without an Idempotency-Key, so no table call precedes
//! the provider: the time to the first `delta`, less the echo provider's own delay before its
//! first piece, is the time our code adds. Run by `make bench-stream`.

use std::time::{Duration, Instant};

use bench::{cpu_seconds, ms, percentile};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;

/// The process's peak resident memory (VmHWM), in MB.
fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, tokens, turns, delay, pid] = args.as_slice() else {
        return Err("usage: stream-bench URL TOKENS TURNS TOKEN_DELAY_MS SERVER_PID".into());
    };
    let (tokens, turns): (usize, usize) = (tokens.parse()?, turns.parse()?);
    let delay = Duration::from_millis(delay.parse()?);
    let pid: u32 = pid.parse()?;
    // Echo answers "echo: w1 … wN": N+1 pieces, each after the delay.
    let message = vec!["w"; tokens.saturating_sub(1).max(1)].join(" ");
    let body = serde_json::json!({"message": message}).to_string();
    let client = reqwest::Client::new();

    let mut added = Vec::new();
    let mut pieces = 0usize;
    let cpu_before = cpu_seconds(pid).unwrap_or_default();
    for turn in 0..turns {
        let started = Instant::now();
        let response = client
            .post(format!("{url}/chat"))
            .header("x-dev-user", format!("stream-bench-{turn}"))
            .header("accept", "text/event-stream")
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await?;
        if response.status() != 200 {
            return Err(format!("turn {turn}: HTTP {}", response.status()).into());
        }
        let mut events = response.bytes_stream().eventsource();
        let mut first = None;
        let mut done = false;
        while let Some(event) = events.next().await {
            let event = event?;
            match event.event.as_str() {
                "delta" => {
                    pieces += 1;
                    first.get_or_insert_with(|| started.elapsed());
                }
                "done" => done = true,
                "error" => return Err(format!("turn {turn}: {}", event.data).into()),
                _ => {}
            }
        }
        if !done {
            return Err(format!("turn {turn}: the stream ended without done").into());
        }
        if let Some(first) = first {
            added.push(first.saturating_sub(delay));
        }
    }
    let cpu = cpu_seconds(pid).unwrap_or_default() - cpu_before;
    added.sort();
    let label = std::env::var("LABEL").unwrap_or_else(|_| "echo".to_owned());
    println!(
        "{label:>9} | {tokens:>5} tokens x {turns} turns, {} ms/token | added time to first delta p50 {:.2} ms, p99 {:.2} ms | server CPU {:.1} µs/token | server peak RSS {:.1} MB | {pieces} deltas",
        delay.as_millis(),
        ms(percentile(&added, 50)),
        ms(percentile(&added, 99)),
        cpu * 1e6 / pieces.max(1) as f64,
        peak_rss_mb(pid).unwrap_or_default(),
    );
    Ok(())
}
