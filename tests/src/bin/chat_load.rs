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
    collections::BTreeMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};

struct Worker {
    user: String,
    conversation: Option<String>,
    stored_turns: u64,
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
    let server_before = server_pid.map(cpu_seconds).transpose()?;
    let stack_before = stack_pid.map(cpu_seconds).transpose()?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..concurrency {
        let (client, url, remaining) = (client.clone(), url.clone(), Arc::clone(&remaining));
        let mut worker = Worker {
            user: format!("load-{run}-{index}"),
            conversation: None,
            stored_turns: 0,
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
                let mut body = json!({"message": format!("turn {turn} of {}", worker.user)});
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
                        if status == 200 {
                            let answer: Value = response.json().await.unwrap_or(Value::Null);
                            if let Some(id) = answer["conversation_id"].as_str() {
                                worker.conversation = Some(id.to_owned());
                            }
                            worker.stored_turns += 1;
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
    let server_cpu = server_pid.map(cpu_seconds).transpose()?;
    let stack_cpu = stack_pid.map(cpu_seconds).transpose()?;

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
    let ok = statuses.get(&200).copied().unwrap_or(0);
    let pct = |p: usize| {
        let index = (latencies.len() * p).div_ceil(100).saturating_sub(1);
        latencies
            .get(index)
            .map_or(0.0, |d| d.as_secs_f64() * 1_000.0)
    };
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

    // Read every conversation back: each answered turn must be there exactly once.
    let (mut lost, mut extra) = (0u64, 0u64);
    for worker in &workers {
        let Some(id) = &worker.conversation else {
            continue;
        };
        let stored = count_messages(&client, &url, &worker.user, id).await?;
        let expected = 2 * worker.stored_turns;
        lost += expected.saturating_sub(stored);
        extra += stored.saturating_sub(expected);
    }
    println!(
        "  read back: {ok} answered turns; {lost} messages lost, {extra} duplicated or unexpected"
    );
    if lost + extra > 0 {
        return Err("messages were lost or duplicated".into());
    }
    Ok(())
}

async fn count_messages(
    client: &reqwest::Client,
    url: &str,
    user: &str,
    id: &str,
) -> Result<u64, Box<dyn std::error::Error>> {
    let mut count = 0;
    let mut cursor: Option<String> = None;
    let mut last_seq = 0;
    loop {
        // Cursors are URL-safe base64: they need no escaping.
        let after = cursor
            .as_deref()
            .map_or(String::new(), |c| format!("&cursor={c}"));
        let address = format!("{url}/conversations/{id}/messages?limit=100{after}");
        let page = read_page(client, &address, user).await?;
        for message in page["messages"].as_array().cloned().unwrap_or_default() {
            let seq = message["seq"].as_u64().unwrap_or(0);
            if seq <= last_seq {
                return Err(format!("sequence not increasing at {seq}").into());
            }
            last_seq = seq;
            count += 1;
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(count),
        }
    }
}

/// One page of a listing; the local stack may still be draining a saturated run, so a failed read
/// is tried again a few times.
async fn read_page(
    client: &reqwest::Client,
    url: &str,
    user: &str,
) -> Result<Value, Box<dyn std::error::Error>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = async {
            client
                .get(url)
                .header("x-dev-user", user)
                .send()
                .await?
                .error_for_status()?
                .json::<Value>()
                .await
        }
        .await;
        match result {
            Ok(page) => return Ok(page),
            Err(err) if attempt >= 5 => return Err(err.into()),
            Err(_) => tokio::time::sleep(Duration::from_secs(5)).await,
        }
    }
}

/// User plus system CPU time of a process, from /proc (USER_HZ is 100 on Linux).
fn cpu_seconds(pid: u32) -> Result<f64, Box<dyn std::error::Error>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may contain spaces; fields after its closing parenthesis are fixed.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("unreadable /proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11).ok_or("no utime")?.parse()?;
    let stime: f64 = fields.get(12).ok_or("no stime")?.parse()?;
    Ok((utime + stime) / 100.0)
}
