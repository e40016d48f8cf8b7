//! The benchmark tools (`src/bin`, run by the Makefile's `bench-*` targets) and what they share:
//! process CPU time, percentiles, and reading a conversation back through the API to prove that
//! no message was lost or duplicated.
//!
//! This crate alone turns on `shared`'s feature `metering` (the store counts the capacity it
//! consumes): `make test` leaves it out of the build, so the tests compile the store as it ships.

use std::time::{Duration, Instant};

use serde_json::Value;

/// User plus system CPU time of a process, from /proc (USER_HZ is 100 on Linux).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; the fields after its closing parenthesis are fixed.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The `p`th percentile (nearest rank) of samples sorted in ascending order; zero when empty.
pub fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let index = (sorted.len() * p).div_ceil(100).saturating_sub(1);
    sorted.get(index).copied().unwrap_or_default()
}

/// Milliseconds, for printing.
pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

/// One stored message, as the API lists it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub seq: u64,
    pub role: String,
    pub content: String,
}

/// Every message of a conversation, oldest first, read through
/// `GET /conversations/{id}/messages` of the API at `url` as `user`. Fails if the sequence numbers
/// do not strictly increase. A page that fails is asked again until `drain` has passed: after a
/// saturating run the local stack may still be working through its backlog.
pub async fn read_back(
    client: &reqwest::Client,
    url: &str,
    user: &str,
    id: &str,
    drain: Duration,
) -> Result<Vec<Listed>, String> {
    let mut messages: Vec<Listed> = Vec::new();
    for page in pages(
        client,
        &format!("{url}/conversations/{id}/messages"),
        user,
        drain,
    )
    .await?
    {
        for message in page["messages"].as_array().into_iter().flatten() {
            let seq = message["seq"].as_u64().unwrap_or(0);
            if messages.last().is_some_and(|last| seq <= last.seq) {
                return Err(format!(
                    "conversation {id}: sequence not increasing at {seq}"
                ));
            }
            let text = |field: &str| message[field].as_str().unwrap_or_default().to_owned();
            messages.push(Listed {
                seq,
                role: text("role"),
                content: text("content"),
            });
        }
    }
    Ok(messages)
}

/// The ids of every conversation of `user`, through `GET /conversations`.
pub async fn conversations_of(
    client: &reqwest::Client,
    url: &str,
    user: &str,
    drain: Duration,
) -> Result<Vec<String>, String> {
    let pages = pages(client, &format!("{url}/conversations"), user, drain).await?;
    Ok(pages
        .iter()
        .flat_map(|page| page["conversations"].as_array().into_iter().flatten())
        .filter_map(|conversation| conversation["id"].as_str().map(str::to_owned))
        .collect())
}

/// Every page of a listing, 100 items at a time, each page retried until `drain` has passed.
async fn pages(
    client: &reqwest::Client,
    listing: &str,
    user: &str,
    drain: Duration,
) -> Result<Vec<Value>, String> {
    let give_up = Instant::now() + drain;
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        // Cursors are URL-safe base64: they need no escaping.
        let after = cursor
            .as_deref()
            .map_or(String::new(), |c| format!("&cursor={c}"));
        let address = format!("{listing}?limit=100{after}");
        let page = loop {
            match read_page(client, &address, user).await {
                Ok(page) => break page,
                Err(err) if Instant::now() >= give_up => {
                    return Err(format!("reading {address} back: {err}"))
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
            }
        };
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        pages.push(page);
        if cursor.is_none() {
            return Ok(pages);
        }
    }
}

async fn read_page(client: &reqwest::Client, url: &str, user: &str) -> reqwest::Result<Value> {
    client
        .get(url)
        .header("x-dev-user", user)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await
}
