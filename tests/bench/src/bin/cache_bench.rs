//! `cache-bench`: one long conversation through a running local API server whose provider is
//! `provider-stub`'s Bedrock (which models Claude's prompt cache), then the stub's usage of
//! those turns: how many input tokens each turn sent, read from the cache and wrote to it, and
//! what that input costs at Claude's prices on Bedrock relative to uncached input (a cache write
//! costs 1.25 times an input token, a cache read 0.1 times).
//!
//! ```text
//! cache-bench URL STUB_URL TURNS MESSAGE_CHARS
//! ```
//! `LABEL` names the run (`cache on` by default). Run by `make bench-cache`.

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{json, Value};

/// What a turn's input costs, in uncached input tokens' worth.
fn price(input: u64, read: u64, written: u64) -> f64 {
    input as f64 + 1.25 * written as f64 + 0.1 * read as f64
}

fn count(usage: &Value, field: &str) -> u64 {
    usage[field].as_u64().unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, stub, turns, chars] = args.as_slice() else {
        return Err("usage: cache-bench URL STUB_URL TURNS MESSAGE_CHARS".into());
    };
    let (turns, chars): (usize, usize) = (turns.parse()?, chars.parse()?);
    let label = std::env::var("LABEL").unwrap_or_else(|_| "cache on".to_owned());
    let client = reqwest::Client::new();
    let user = format!("cache-bench-{}", std::process::id());
    let before = client
        .get(format!("{stub}/usage"))
        .send()
        .await?
        .json::<Vec<Value>>()
        .await?
        .len();

    let mut conversation: Option<String> = None;
    for turn in 0..turns {
        // A different message each turn, of the same length.
        let words = format!("turn {turn} ")
            .chars()
            .chain("lorem ipsum ".chars().cycle())
            .take(chars)
            .collect::<String>();
        let mut body = json!({"message": words});
        if let Some(id) = &conversation {
            body["conversation_id"] = json!(id);
        }
        let response = client
            .post(format!("{url}/chat"))
            .header("x-dev-user", &user)
            .header("accept", "text/event-stream")
            .json(&body)
            .send()
            .await?;
        if response.status() != 200 {
            return Err(format!("turn {turn}: HTTP {}", response.status()).into());
        }
        let mut events = response.bytes_stream().eventsource();
        let mut done = false;
        while let Some(event) = events.next().await {
            let event = event?;
            match event.event.as_str() {
                "start" => {
                    let start: Value = serde_json::from_str(&event.data)?;
                    conversation = start["conversation_id"].as_str().map(str::to_owned);
                }
                "done" => done = true,
                "error" => return Err(format!("turn {turn}: {}", event.data).into()),
                _ => {}
            }
        }
        if !done {
            return Err(format!("turn {turn}: the stream ended without done").into());
        }
    }

    let usage: Vec<Value> = client
        .get(format!("{stub}/usage"))
        .send()
        .await?
        .json()
        .await?;
    let usage = usage.get(before..).unwrap_or_default();
    if usage.len() != turns {
        return Err(format!("{} provider calls for {turns} turns", usage.len()).into());
    }
    println!("{label}: {turns} turns of {chars}-character messages");
    println!("  turns   | input sent | uncached | cache read | cache write | priced as input");
    let (mut all, mut priced) = ((0, 0, 0, 0), 0.0);
    for (index, group) in usage.chunks(5).enumerate() {
        let mut sums = (0, 0, 0, 0);
        for turn in group {
            let (input, read, written) = (
                count(turn, "inputTokens"),
                count(turn, "cacheReadInputTokens"),
                count(turn, "cacheWriteInputTokens"),
            );
            sums.0 += input + read + written;
            sums.1 += input;
            sums.2 += read;
            sums.3 += written;
        }
        let cost = price(sums.1, sums.2, sums.3);
        println!(
            "  {:>3}-{:<3} | {:>10} | {:>8} | {:>10} | {:>11} | {:>8.0} ({:.0} %)",
            index * 5 + 1,
            index * 5 + group.len(),
            sums.0,
            sums.1,
            sums.2,
            sums.3,
            cost,
            100.0 * cost / sums.0.max(1) as f64
        );
        all = (
            all.0 + sums.0,
            all.1 + sums.1,
            all.2 + sums.2,
            all.3 + sums.3,
        );
        priced += cost;
    }
    println!(
        "  all     | {:>10} | {:>8} | {:>10} | {:>11} | {:>8.0} ({:.0} %)",
        all.0,
        all.1,
        all.2,
        all.3,
        priced,
        100.0 * priced / all.0.max(1) as f64
    );
    Ok(())
}
