//! `history-bench`: what a chat turn costs through the whole chat path (HTTP, the API Gateway
//! event, the chat function, the store, the echo provider) on a conversation with 10 and with
//! 10,000 prior messages.
//!
//! ```text
//! history-bench URL [SERVER_PID]
//! ```
//! URL is a running local API server (echo provider) on the local stack this process also reaches
//! through AWS_ENDPOINT_URL. Both conversations are written first (one turn through the store, the
//! rest batch-written, not measured), so both are measured against the same table. They then take
//! turns, one request at a time, through `POST /chat` (warm-up turns, then measured ones); every answer must carry
//! the next message number and a full context window, and afterwards each conversation is read back
//! through the API: its messages must be exactly 1..=N. Run by `make bench-history`.

use std::time::{Duration, Instant};

use bench::{cpu_seconds, ms, percentile, read_back};
use e2e::{conversation_with_history, stack, unique};
use serde_json::{json, Value};
use shared::{domain::UserId, store::ConversationStore};

const HISTORIES: [u64; 2] = [10, 10_000];
/// Enough turns that the 20-message context window holds only the benchmark's own turns.
const WARM_UP: u64 = 10;
const TURNS: u64 = 40;

/// One conversation's measured turns.
struct Run {
    prior: u64,
    id: String,
    /// The last message number stored.
    seq: u64,
    latencies: Vec<Duration>,
    /// Server CPU seconds over the measured turns.
    cpu: f64,
    context_tokens: Option<u64>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let Some(url) = args.get(1).map(|url| url.trim_end_matches('/').to_owned()) else {
        return Err("usage: history-bench URL [SERVER_PID]".into());
    };
    let server_pid = args.get(2).map(|pid| pid.parse::<u32>()).transpose()?;

    let stack = stack().await;
    let store = ConversationStore::from_config(&stack.config, &stack.clients);
    let user = UserId::parse(&unique("history")).ok_or("a user id")?;
    let mut conversations = Vec::new();
    for prior in HISTORIES {
        let id = conversation_with_history(&store, &stack.config.table_name, &user, prior).await;
        conversations.push((prior, id.as_str().to_owned()));
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;

    println!(
        "POST /chat through the local API server, {TURNS} turns one at a time after {WARM_UP} warm-up turns"
    );
    println!(
        "{:>14} | {:>9} {:>9} {:>9} | {:>16} | {:>15} | read back",
        "prior messages", "p50", "p95", "max", "server CPU/turn", "context tokens"
    );
    // The two conversations take turns, so that both meet the emulator in the same state.
    let mut runs: Vec<Run> = conversations
        .into_iter()
        .map(|(prior, id)| Run {
            prior,
            id,
            seq: prior,
            latencies: Vec::new(),
            cpu: 0.0,
            context_tokens: None,
        })
        .collect();
    for turn in 1..=WARM_UP + TURNS {
        for run in &mut runs {
            let cpu_before = server_pid.and_then(cpu_seconds);
            let started = Instant::now();
            let answer = chat(&client, &url, user.as_str(), &run.id, turn).await?;
            let took = started.elapsed();
            let cpu = cpu_before
                .zip(server_pid.and_then(cpu_seconds))
                .map_or(0.0, |(before, after)| after - before);
            run.seq += 2;
            let message_id = answer["message_id"].as_str().unwrap_or("");
            if message_id.parse::<u64>().ok() != Some(run.seq) {
                return Err(format!(
                    "turn {turn}: answer is message {message_id:?}, expected {}",
                    run.seq
                )
                .into());
            }
            let tokens = answer["usage"]["input_tokens"].as_u64().unwrap_or(0);
            if turn > WARM_UP {
                // The echo provider counts the words it was given: with a full window, every
                // turn sends the same amount whatever the history holds.
                if run.context_tokens.is_some_and(|seen| seen != tokens) {
                    return Err(format!(
                        "turn {turn}: context of {tokens} tokens, earlier {:?}",
                        run.context_tokens
                    )
                    .into());
                }
                run.context_tokens = Some(tokens);
                run.latencies.push(took);
                run.cpu += cpu;
            }
        }
    }
    for run in &mut runs {
        let seqs = read_back(
            &client,
            &url,
            user.as_str(),
            &run.id,
            Duration::from_secs(60),
        )
        .await?;
        let intact = seqs.len() as u64 == run.seq && seqs.iter().map(|m| m.seq).eq(1..=run.seq);
        run.latencies.sort();
        println!(
            "{:>14} | {:>6.1} ms {:>6.1} ms {:>6.1} ms | {:>16} | {:>15} | {} messages, {}",
            run.prior,
            ms(percentile(&run.latencies, 50)),
            ms(percentile(&run.latencies, 95)),
            ms(percentile(&run.latencies, 100)),
            if server_pid.is_some() {
                format!("{:.2} ms", run.cpu * 1_000.0 / TURNS as f64)
            } else {
                "-".to_owned()
            },
            run.context_tokens.map_or("-".to_owned(), |t| t.to_string()),
            seqs.len(),
            if intact {
                "1..=N without a gap"
            } else {
                "NOT 1..=N"
            }
        );
        if !intact {
            return Err(
                format!("conversation {}: expected messages 1..={}", run.id, run.seq).into(),
            );
        }
    }
    Ok(())
}

async fn chat(
    client: &reqwest::Client,
    url: &str,
    user: &str,
    id: &str,
    turn: u64,
) -> Result<Value, Box<dyn std::error::Error>> {
    let response = client
        .post(format!("{url}/chat"))
        .header("x-dev-user", user)
        .json(&json!({"message": format!("question {turn} of a long chat"), "conversation_id": id}))
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if status != 200 {
        return Err(format!("turn {turn}: {status} {body}").into());
    }
    Ok(body)
}
