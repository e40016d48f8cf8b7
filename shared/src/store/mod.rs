//! The conversation store: DynamoDB, one table, one partition per user.
//!
//! Writers never lock and never overwrite each other. A turn reserves its two sequence numbers
//! with an atomic `ADD` on the conversation head, then puts both messages in one transaction with
//! `attribute_not_exists(SK)`; concurrent turns therefore never conflict, and each user message
//! is directly followed by its own reply. Every read is a `Query` on the caller's partition.

mod conversations;
mod feedback;
mod idempotency;
pub mod keys;

use std::time::Duration;

use serde::Serialize;

pub use conversations::{Consumption, ConversationStore};
pub use feedback::{DayFeedback, Feedback, IndexPosition, Rating, Written, DAY_INDEX};
pub use idempotency::{Claim, IdempotencyKey, Lease};
pub use keys::{ConversationId, Cursor, InvalidCursor};

use crate::http::{ApiError, BoxError};

/// Page sizes of the listings.
pub const DEFAULT_PAGE_SIZE: u16 = 20;
pub const MAX_PAGE_SIZE: u16 = 100;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "user" => Some(Self::User),
            "assistant" => Some(Self::Assistant),
            _ => None,
        }
    }
}

/// Tokens an LLM call consumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TokenUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// The assistant's side of a turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub content: String,
    pub provider: String,
    pub model: String,
    pub usage: TokenUsage,
}

/// Where a turn goes: a new conversation (its head is created with the turn) or an existing one.
#[derive(Debug, Clone)]
pub enum TurnTarget {
    New { id: ConversationId, title: String },
    Existing(ConversationId),
}

impl TurnTarget {
    pub fn id(&self) -> &ConversationId {
        match self {
            Self::New { id, .. } | Self::Existing(id) => id,
        }
    }
}

/// A turn as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTurn {
    pub conversation_id: ConversationId,
    pub user_seq: u64,
    pub assistant_seq: u64,
    pub created_at: String,
}

/// A conversation's head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conversation {
    pub id: String,
    pub title: String,
    pub created_at: String,
    pub updated_at: String,
    pub message_count: u64,
}

/// One message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub id: String,
    pub seq: u64,
    pub role: Role,
    pub content: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<TokenUsage>,
}

/// The order of a message listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    Oldest,
    Newest,
}

/// Which page of a listing to read.
#[derive(Debug, Clone)]
pub struct PageRequest {
    /// 1..=[`MAX_PAGE_SIZE`].
    pub limit: u16,
    pub cursor: Option<Cursor>,
}

impl PageRequest {
    /// Reads the `limit` and `cursor` query parameters; a bad value is a 400 naming it.
    pub fn from_params(limit: Option<&str>, cursor: Option<&str>) -> Result<Self, ApiError> {
        let limit = match limit {
            None => DEFAULT_PAGE_SIZE,
            Some(text) => text
                .parse::<u16>()
                .ok()
                .filter(|limit| (1..=MAX_PAGE_SIZE).contains(limit))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "limit",
                        format!("must be a whole number from 1 to {MAX_PAGE_SIZE}"),
                    )
                })?,
        };
        let cursor = cursor
            .map(Cursor::decode)
            .transpose()
            .map_err(|err| ApiError::bad_request("cursor", err.to_string()))?;
        Ok(Self { limit, cursor })
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            limit: DEFAULT_PAGE_SIZE,
            cursor: None,
        }
    }
}

/// One page of a listing; `next` is absent on the last page.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Cursor>,
}

/// The store's errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The conversation does not exist in the caller's partition (or it is someone else's).
    #[error("conversation not found")]
    NotFound,
    /// Writers kept colliding after every retry.
    #[error("the write kept conflicting after {attempts} attempts")]
    Conflict { attempts: u32 },
    #[error(transparent)]
    InvalidCursor(#[from] InvalidCursor),
    /// A deletion could not finish before the deadline; a retry continues where it stopped.
    #[error("deleted {deleted} items before the deadline; {remaining} or more remain")]
    Incomplete { deleted: usize, remaining: usize },
    /// DynamoDB throttled us or failed transiently, after the SDK's own retries.
    #[error("the table is unavailable")]
    Unavailable(#[source] BoxError),
    /// A turn's write was sent but never confirmed (it kept timing out, or time ran out): it may
    /// have been stored.
    #[error("the turn's write was not confirmed; it may have been stored")]
    Unconfirmed,
    /// An item in the table does not have the shape we write.
    #[error("malformed item in the table: {0}")]
    Corrupt(String),
    #[error("the table rejected the request")]
    Internal(#[source] BoxError),
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => ApiError::NotFound("conversation not found".to_owned()),
            StoreError::InvalidCursor(err) => ApiError::bad_request("cursor", err.to_string()),
            StoreError::Conflict { .. } => ApiError::Unavailable {
                detail: "too many concurrent writes to this conversation; retry shortly".to_owned(),
                retry_after_secs: 1,
                cause: Some(Box::new(err)),
            },
            StoreError::Incomplete { .. } => ApiError::Unavailable {
                detail: format!("{err}; repeat the request to finish"),
                retry_after_secs: 1,
                cause: None,
            },
            StoreError::Unavailable(_) => ApiError::Unavailable {
                detail: "the conversation store is unavailable; retry shortly".to_owned(),
                retry_after_secs: 2,
                cause: Some(Box::new(err)),
            },
            StoreError::Unconfirmed => ApiError::Unavailable {
                detail:
                    "the conversation store did not confirm the turn; it may have been stored: \
                         retry with the same Idempotency-Key"
                        .to_owned(),
                retry_after_secs: 1,
                cause: None,
            },
            StoreError::Corrupt(_) | StoreError::Internal(_) => ApiError::internal(err),
        }
    }
}

/// How long items live: `RETENTION_DAYS`, or forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Option<Duration>);
