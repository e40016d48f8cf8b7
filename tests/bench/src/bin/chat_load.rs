//! `chat-load`: drives `POST /chat` on a running local API server and reports throughput,
//! latency percentiles, statuses, the CPU time each process spent per request, and whether any
//! message was lost or duplicated.
//!
//! ```text
//! chat-load URL CONCURRENCY (REQUESTS | SECONDSs) [SERVER_PID [STACK_PID]]
//! ```
//! Each of the CONCURRENCY workers is its own user and chats in its own conversation, turn after
//! turn, until REQUESTS have been sent in all, or for SECONDS (requests in flight then finish).
//! Run by `make bench-chat` and `make bench-load`.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bench::{conversations_of, cpu_seconds, ms, percentile, read_back, Listed};
use serde_json::{json, Value};

/// How long the read-back waits for the local stack to work through its backlog.
const DRAIN: Duration = Duration::from_secs(180);

struct Worker {
    user: String,
    conversation: Option<String>,
    /// The messages of the turns answered 200: each must be stored exactly once.
    answered: Vec<String>,
    /// The messages of the turns answered 503 "may have been stored": each may be, once.
    unconfirmed: Vec<String>,
    latencies: Vec<Duration>,
    statuses: BTreeMap<u16, usize>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err(
            "usage: chat-load URL CONCURRENCY (REQUESTS | SECONDSs) [SERVER_PID [STACK_PID]]"
                .into(),
        );
    }
    let url = args[1].trim_end_matches('/').to_owned();
    let concurrency: usize = args[2].parse()?;
    // A count of requests, or a time ("30s") during which every user keeps chatting.
    let (requests, stop_at) = match args[3].strip_suffix('s') {
        Some(seconds) => (
            usize::MAX,
            Some(Instant::now() + Duration::from_secs(seconds.parse()?)),
        ),
        None => (args[3].parse()?, None),
    };
    let server_pid = args.get(4).map(|pid| pid.parse::<u32>()).transpose()?;
    let stack_pid = args.get(5).map(|pid| pid.parse::<u32>()).transpose()?;

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        // Longer than any chat may take, so that a slow answer is measured, not cut off.
        .timeout(Duration::from_secs(120))
        .build()?;
    let run = format!("{:x}", std::process::id());
    let remaining = Arc::new(AtomicUsize::new(requests));
    let server_before = server_pid.and_then(cpu_seconds);
    let stack_before = stack_pid.and_then(cpu_seconds);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..concurrency {
        let (client, url, remaining) = (client.clone(), url.clone(), Arc::clone(&remaining));
        let mut worker = Worker {
            user: format!("load-{run}-{index}"),
            conversation: None,
            answered: Vec::new(),
            unconfirmed: Vec::new(),
            latencies: Vec::new(),
            statuses: BTreeMap::new(),
        };
        tasks.spawn(async move {
            let mut turn = 0;
            while stop_at.is_none_or(|stop| Instant::now() < stop)
                && remaining
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
            {
                turn += 1;
                let message = format!("turn {turn} of {}", worker.user);
                let mut body = json!({"message": message});
                if let Some(id) = &worker.conversation {
                    body["conversation_id"] = json!(id);
                }
                let sent = Instant::now();
                let response = client
                    .post(format!("{url}/chat"))
                    .header("x-dev-user", &worker.user)
                    .json(&body)
                    .send()
                    .await;
                let status = match response {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let answer: Value = response.json().await.unwrap_or(Value::Null);
                        if status == 200 {
                            if let Some(id) = answer["conversation_id"].as_str() {
                                worker.conversation = Some(id.to_owned());
                            }
                            worker.answered.push(message);
                        } else if answer["detail"]
                            .as_str()
                            .is_some_and(|detail| detail.contains("may have been stored"))
                        {
                            worker.unconfirmed.push(message);
                        }
                        status
                    }
                    Err(_) => 0,
                };
                worker.latencies.push(sent.elapsed());
                *worker.statuses.entry(status).or_default() += 1;
            }
            worker
        });
    }
    let mut workers = Vec::new();
    while let Some(worker) = tasks.join_next().await {
        workers.push(worker?);
    }
    let elapsed = started.elapsed();
    let server_cpu = server_pid.and_then(cpu_seconds);
    let stack_cpu = stack_pid.and_then(cpu_seconds);

    let mut latencies: Vec<Duration> = workers
        .iter()
        .flat_map(|w| w.latencies.iter().copied())
        .collect();
    latencies.sort();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for worker in &workers {
        for (status, count) in &worker.statuses {
            *statuses.entry(*status).or_default() += count;
        }
    }
    let pct = |p: usize| ms(percentile(&latencies, p));
    println!(
        "concurrency {concurrency}: {} requests in {:.1} s = {:.1} req/s; p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms; statuses {:?}",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(50),
        pct(95),
        pct(99),
        statuses
    );
    if let (Some(before), Some(after)) = (server_before, server_cpu) {
        println!(
            "  server CPU: {:.2} s in all, {:.3} ms per request",
            after - before,
            (after - before) * 1_000.0 / latencies.len().max(1) as f64
        );
    }
    if let (Some(before), Some(after)) = (stack_before, stack_cpu) {
        println!(
            "  local AWS stack CPU: {:.2} s in all, {:.3} ms per request",
            after - before,
            (after - before) * 1_000.0 / latencies.len().max(1) as f64
        );
    }

    // Read every conversation of every user back: each answered turn must be there exactly once,
    // its question followed by its answer; a turn answered "may have been stored" at most once;
    // nothing else. After a saturating run the local stack may still be draining its backlog.
    let mut tally = Tally::default();
    for worker in &workers {
        let mut stored: Vec<Listed> = Vec::new();
        for id in conversations_of(&client, &url, &worker.user, DRAIN).await? {
            let messages = read_back(&client, &url, &worker.user, &id, DRAIN).await?;
            for pair in messages.windows(2) {
                if pair[0].role == "user" && pair[1].role != "assistant" {
                    return Err(format!(
                        "conversation {id}: message {} has no answer after it",
                        pair[0].seq
                    )
                    .into());
                }
            }
            stored.extend(messages.into_iter().filter(|m| m.role == "user"));
        }
        tally.check(worker, &stored);
    }
    println!(
        "  read back: {} answered turns; {} lost, {} duplicated, {} unexpected; {} of {} turns answered 503 \"may have been stored\" were stored",
        tally.answered, tally.lost, tally.duplicated, tally.unexpected, tally.stored_unconfirmed, tally.unconfirmed
    );
    if tally.lost + tally.duplicated + tally.unexpected > 0 {
        return Err("messages were lost, duplicated or stored unexpectedly".into());
    }
    Ok(())
}

/// What the read-back found, over every worker.
#[derive(Default)]
struct Tally {
    answered: usize,
    unconfirmed: usize,
    lost: usize,
    duplicated: usize,
    unexpected: usize,
    stored_unconfirmed: usize,
}

impl Tally {
    fn check(&mut self, worker: &Worker, stored: &[Listed]) {
        let mut copies: BTreeMap<&str, usize> = BTreeMap::new();
        for message in stored {
            *copies.entry(message.content.as_str()).or_default() += 1;
        }
        let stored_count = |messages: &[String]| {
            messages
                .iter()
                .filter(|m| copies.contains_key(m.as_str()))
                .count()
        };
        self.answered += worker.answered.len();
        self.unconfirmed += worker.unconfirmed.len();
        self.lost += worker.answered.len() - stored_count(&worker.answered);
        self.stored_unconfirmed += stored_count(&worker.unconfirmed);
        let sent: BTreeSet<&str> = worker
            .answered
            .iter()
            .chain(&worker.unconfirmed)
            .map(String::as_str)
            .collect();
        for (message, count) in copies {
            self.duplicated += count - 1;
            if !sent.contains(message) {
                self.unexpected += 1;
            }
        }
    }
}
