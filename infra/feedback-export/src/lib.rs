//! The operators' feedback export: every feedback of a range of days as JSON Lines, each with the
//! rated reply and the user message it answered, read from the table's day index (no `Scan`).

use std::io::Write;

use chrono::NaiveDate;
use serde::Serialize;
use sha2::{Digest, Sha256};
use shared::store::{ConversationStore, DayFeedback};

#[derive(Serialize)]
struct Line<'a> {
    day: String,
    user: String,
    conversation_id: &'a str,
    message_id: &'a str,
    rating: u8,
    comment: Option<&'a str>,
    created_at: &'a str,
    updated_at: &'a str,
    provider: Option<&'a str>,
    model: Option<&'a str>,
    /// The user message the rated reply answered.
    prompt: Option<String>,
    /// The rated reply.
    reply: Option<String>,
}

/// The user's pseudonym: hex sha256 of salt and id.
pub fn pseudonym(salt: &str, user: &str) -> String {
    let digest = Sha256::digest(format!("{salt}{user}").as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Writes every feedback of the days `from..=to` to `out` as JSON Lines; returns how many.
/// With a `salt`, user ids are replaced by their pseudonyms.
pub async fn export(
    store: &ConversationStore,
    from: NaiveDate,
    to: NaiveDate,
    salt: Option<&str>,
    out: &mut impl Write,
) -> Result<usize, Box<dyn std::error::Error>> {
    let mut count = 0;
    let mut day = from;
    while day <= to {
        let mut start = None;
        loop {
            let (items, next) = store.feedback_of_day(day, start).await?;
            for item in &items {
                write_line(store, salt, day, item, out).await?;
                count += 1;
            }
            match next {
                Some(next) => start = Some(next),
                None => break,
            }
        }
        day = day.succ_opt().ok_or("date out of range")?;
    }
    out.flush()?;
    Ok(count)
}

async fn write_line(
    store: &ConversationStore,
    salt: Option<&str>,
    day: NaiveDate,
    item: &DayFeedback,
    out: &mut impl Write,
) -> Result<(), Box<dyn std::error::Error>> {
    let feedback = &item.feedback;
    let seq: u64 = feedback.message_id.parse()?;
    let reply = store
        .message_text(&item.user, &feedback.conversation_id, seq)
        .await?;
    let prompt = match seq.checked_sub(1).filter(|seq| *seq >= 1) {
        Some(previous) => {
            store
                .message_text(&item.user, &feedback.conversation_id, previous)
                .await?
        }
        None => None,
    };
    let line = Line {
        day: day.format("%Y-%m-%d").to_string(),
        user: salt.map_or_else(|| item.user.clone(), |salt| pseudonym(salt, &item.user)),
        conversation_id: &feedback.conversation_id,
        message_id: &feedback.message_id,
        rating: feedback.rating,
        comment: feedback.comment.as_deref(),
        created_at: &feedback.created_at,
        updated_at: &feedback.updated_at,
        provider: feedback.provider.as_deref(),
        model: feedback.model.as_deref(),
        prompt,
        reply,
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")?;
    Ok(())
}
