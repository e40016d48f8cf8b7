//! The operators' feedback export: every feedback of a range of days as JSON Lines, each with the
//! rated reply and the user message it answered, read from the table's day index (no `Scan`).
//!
//! These reads are for operators only, so they live here and not in the library the Lambda
//! functions link.

use std::io::Write;

use aws_sdk_dynamodb::{types::AttributeValue, Client};
use chrono::NaiveDate;
use serde::Serialize;
use shared::{
    domain::{ConversationId, MessageId, UserId},
    store::{keys, Feedback},
};

#[derive(Serialize)]
struct Line<'a> {
    day: String,
    user: String,
    conversation_id: &'a ConversationId,
    message_id: MessageId,
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
pub fn pseudonym(salt: &str, user: &UserId) -> String {
    shared::tokens::sha256_hex(format!("{salt}{user}").as_bytes())
}

/// What the export reads: the table, through its own client.
pub struct Table {
    pub db: Client,
    pub name: String,
}

type Error = Box<dyn std::error::Error>;

impl Table {
    /// One page of a day's feedback of every user, from the day index; `start` is where the
    /// previous page ended.
    async fn feedback_of_day(
        &self,
        day: NaiveDate,
        start: Option<std::collections::HashMap<String, AttributeValue>>,
    ) -> Result<
        (
            Vec<(UserId, Feedback)>,
            Option<std::collections::HashMap<String, AttributeValue>>,
        ),
        Error,
    > {
        let output = self
            .db
            .query()
            .table_name(&self.name)
            .index_name(keys::DAY_INDEX)
            .key_condition_expression("#day = :day")
            .expression_attribute_names("#day", keys::DAY_INDEX_PK)
            .expression_attribute_values(":day", AttributeValue::S(keys::feedback_day(day)))
            .set_exclusive_start_key(start)
            .limit(500)
            .send()
            .await?;
        let mut items = Vec::new();
        for item in output.items() {
            let partition = item.get("PK").and_then(|pk| pk.as_s().ok());
            let user = partition
                .and_then(|pk| keys::user_of(pk))
                .ok_or("a feedback item without a user's partition")?;
            items.push((user, Feedback::from_item(item)?));
        }
        Ok((items, output.last_evaluated_key().cloned()))
    }

    /// The text of a message, if it exists.
    async fn message_text(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        id: MessageId,
    ) -> Result<Option<String>, Error> {
        let output = self
            .db
            .get_item()
            .table_name(&self.name)
            .key("PK", AttributeValue::S(keys::partition(user)))
            .key("SK", AttributeValue::S(keys::message(conversation, id)))
            .projection_expression("content")
            .send()
            .await?;
        Ok(output
            .item()
            .and_then(|item| item.get("content"))
            .and_then(|content| content.as_s().ok())
            .cloned())
    }
}

/// Writes every feedback of the days `from..=to` to `out` as JSON Lines; returns how many.
/// With a `salt`, user ids are replaced by their pseudonyms.
pub async fn export(
    table: &Table,
    from: NaiveDate,
    to: NaiveDate,
    salt: Option<&str>,
    out: &mut impl Write,
) -> Result<usize, Error> {
    let mut count = 0;
    let mut day = from;
    while day <= to {
        let mut start = None;
        loop {
            let (items, next) = table.feedback_of_day(day, start).await?;
            for (user, feedback) in &items {
                write_line(table, salt, day, user, feedback, out).await?;
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
    table: &Table,
    salt: Option<&str>,
    day: NaiveDate,
    user: &UserId,
    feedback: &Feedback,
    out: &mut impl Write,
) -> Result<(), Error> {
    let conversation = &feedback.conversation_id;
    let reply = table
        .message_text(user, conversation, feedback.message_id)
        .await?;
    let prompt = match feedback.message_id.previous() {
        Some(previous) => table.message_text(user, conversation, previous).await?,
        None => None,
    };
    let line = Line {
        day: day.format("%Y-%m-%d").to_string(),
        user: salt.map_or_else(|| user.to_string(), |salt| pseudonym(salt, user)),
        conversation_id: conversation,
        message_id: feedback.message_id,
        rating: feedback.rating.get(),
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
