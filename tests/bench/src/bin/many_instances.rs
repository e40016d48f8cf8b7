//! `many-instances`: several local API servers (standing in for Lambda execution environments)
//! take turns on ONE conversation at once; afterwards the conversation must hold every turn exactly
//! once, numbered without gaps, each question directly followed by its own answer.
//!
//! ```text
//! many-instances URL[,URL...] TURNS IN_FLIGHT
//! ```
//! Run by `make bench-instances` with four servers and 400 turns.

use std::{sync::Arc, time::Instant};

use serde_json::{json, Value};
use tokio::sync::Semaphore;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: many-instances URL[,URL...] TURNS IN_FLIGHT".into());
    }
    let urls: Vec<String> = args[1]
        .split(',')
        .map(|u| u.trim_end_matches('/').to_owned())
        .collect();
    let turns: usize = args[2].parse()?;
    let in_flight: usize = args[3].parse()?;
    let client = reqwest::Client::new();
    let user = format!("instances-{:x}", std::process::id());

    let first: Value = client
        .post(format!("{}/chat", urls[0]))
        .header("x-dev-user", &user)
        .json(&json!({"message": "turn 0"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let conversation = first["conversation_id"]
        .as_str()
        .ok_or("no conversation id")?
        .to_owned();

    let permits = Arc::new(Semaphore::new(in_flight));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for turn in 1..=turns {
        let (client, url, user, conversation, permits) = (
            client.clone(),
            urls[turn % urls.len()].clone(),
            user.clone(),
            conversation.clone(),
            Arc::clone(&permits),
        );
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.ok()?;
            let response = client
                .post(format!("{url}/chat"))
                .header("x-dev-user", &user)
                .json(&json!({"message": format!("turn {turn}"), "conversation_id": conversation}))
                .send()
                .await
                .ok()?;
            Some(response.status().as_u16())
        });
    }
    let mut ok = 0;
    let mut other = std::collections::BTreeMap::<String, usize>::new();
    while let Some(status) = tasks.join_next().await {
        match status? {
            Some(200) => ok += 1,
            Some(status) => *other.entry(status.to_string()).or_default() += 1,
            None => *other.entry("transport error".to_owned()).or_default() += 1,
        }
    }
    let elapsed = started.elapsed();

    // Read the conversation back, oldest first.
    let mut messages: Vec<Value> = Vec::new();
    let mut cursor = String::new();
    loop {
        let page: Value = client
            .get(format!(
                "{}/conversations/{conversation}/messages?limit=100{cursor}",
                urls[0]
            ))
            .header("x-dev-user", &user)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        messages.extend(page["messages"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    let seqs: Vec<u64> = messages.iter().filter_map(|m| m["seq"].as_u64()).collect();
    let gapless = seqs.iter().copied().eq(1..=seqs.len() as u64);
    let paired = messages.chunks(2).all(|pair| {
        pair.len() == 2
            && pair[0]["role"] == "user"
            && pair[1]["role"] == "assistant"
            && pair[1]["content"].as_str()
                == pair[0]["content"]
                    .as_str()
                    .map(|q| format!("echo: {q}"))
                    .as_deref()
    });
    let mut questions: Vec<&str> = messages
        .iter()
        .filter(|m| m["role"] == "user")
        .filter_map(|m| m["content"].as_str())
        .collect();
    questions.sort_unstable();
    let before = questions.len();
    questions.dedup();
    let duplicates = before - questions.len();
    println!(
        "{} servers, {turns} turns on one conversation, {in_flight} in flight: {ok} answered in {:.1} s ({:.1} turns/s), other outcomes {other:?}",
        urls.len(),
        elapsed.as_secs_f64(),
        ok as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  stored {} messages (expected {}), sequence 1..={} without gaps: {gapless}, each question followed by its answer: {paired}, duplicated turns: {duplicates}",
        messages.len(),
        2 * (ok + 1),
        seqs.len()
    );
    if messages.len() != 2 * (ok + 1) || !gapless || !paired || duplicates > 0 || ok != turns {
        return Err("the conversation is not exactly what was answered".into());
    }
    Ok(())
}
