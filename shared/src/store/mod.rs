//! The conversation store: DynamoDB, one table, one partition per user. It knows nothing of HTTP;
//! its errors are [`StoreError`]s, which the HTTP layer maps to answers in one place.
//!
//! Writers never lock and never overwrite each other. A turn reserves its sequence numbers with
//! an atomic `ADD` on the conversation head, then puts its messages in one transaction with
//! `attribute_not_exists(SK)`, the head's new active leaf (on a condition that it still exists),
//! and (with an idempotency key) the completion of the request's idempotency record: concurrent
//! turns never conflict, each user message is directly followed by its own reply, a deleted
//! conversation takes no new turn, and a turn is stored at most once per key. Messages form a
//! tree (each names its parent; `branch.rs` reads it), and nothing is ever overwritten by an edit
//! or a regeneration: an alternative is a new sibling. Every read is a `Query` or `GetItem` on the caller's
//! partition. See `docs/ARCHITECTURE.md` for the whole picture.

mod branch;
mod budget;
mod deletion;
mod error;
mod feedback;
mod idempotency;
mod items;
pub mod keys;
mod meter;
mod paging;
mod titles;
mod turns;

use std::{sync::Arc, time::Duration};

use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};

pub use branch::BranchEnd;
pub use budget::{Counter, Erasures, Exhausted, Grant, Usage};
pub use error::StoreError;
pub use feedback::Written;
pub use idempotency::{Claim, IdempotencyKey, Lease};
pub use keys::{Cursor, InvalidCursor};
#[cfg(feature = "metering")]
pub use meter::Consumption;
pub use turns::{ReplayText, Reservation, Shape, TurnKind, TurnWrite};

use crate::{
    backoff::Backoff,
    domain::{ConversationId, MessageId, MessageText, Rating, Role, TokenUsage},
};

/// Page sizes of the listings.
pub const DEFAULT_PAGE_SIZE: u16 = 20;
pub const MAX_PAGE_SIZE: u16 = 100;

/// The pause before the store tries a call again: a write that collided with another, a batch's
/// unprocessed items.
const BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(20),
    cap: Duration::from_millis(500),
};

/// What "now" is for the store: the system clock, or a fixed time in tests and tools.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The conversation store. Build it once per execution environment; it borrows nothing per call.
pub struct ConversationStore {
    db: Client,
    table: String,
    retention: Option<Duration>,
    clock: Clock,
    meter: meter::Meter,
}

impl std::fmt::Debug for ConversationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConversationStore")
            .field("table", &self.table)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl ConversationStore {
    /// `retention`: how long stored items are kept (`None`: forever).
    pub fn new(db: Client, table: impl Into<String>, retention: Option<Duration>) -> Self {
        Self {
            db,
            table: table.into(),
            retention,
            clock: Arc::new(Utc::now),
            meter: meter::Meter::default(),
        }
    }

    /// The store of a function's configuration: its table and retention.
    pub fn from_config(config: &crate::config::Config, clients: &crate::aws::AwsClients) -> Self {
        Self::new(
            clients.dynamodb.clone(),
            &config.table_name,
            config.retention(),
        )
    }

    /// The same store with another clock (tests and tools that need another day).
    pub fn with_clock(mut self, clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The DynamoDB work this store has done so far (benchmarks only).
    #[cfg(feature = "metering")]
    pub fn consumption(&self) -> Consumption {
        self.meter.consumption()
    }

    /// Opens a connection to DynamoDB ahead of the first call (`CONNECT_AT_INIT_MS`) with an
    /// eventually consistent read of a key no user has (half a read unit). A failure is logged
    /// and left to the first call.
    pub async fn connect(&self) {
        let read = self
            .db
            .get_item()
            .table_name(&self.table)
            .key("PK", items::s(keys::CONNECT))
            .key("SK", items::s(keys::CONNECT))
            .projection_expression("PK")
            .send()
            .await;
        if let Err(err) = read {
            tracing::warn!(
                error = %aws_sdk_dynamodb::error::DisplayErrorContext(&err),
                "could not open a connection to DynamoDB ahead of the first call"
            );
        }
    }

    fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// When an item written at `now` expires, if the store has a retention.
    fn expires_at(&self, now: DateTime<Utc>) -> Option<i64> {
        self.retention
            .map(|keep| now.timestamp() + i64::try_from(keep.as_secs()).unwrap_or(i64::MAX / 2))
    }
}

/// The assistant's side of a turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub content: String,
    pub provider: String,
    pub model: String,
    pub usage: TokenUsage,
    pub ending: Ending,
}

impl Reply {
    /// The most a reply's text may take, in bytes of UTF-8: far above any reply within the
    /// output cap (2,048 tokens are about 8 KB), and far below DynamoDB's 400 KB item, which also
    /// holds the idempotency record's copy of the answer (as JSON, whose escapes may double it).
    pub const MAX_CONTENT_BYTES: usize = 128 * 1024;

    /// What ends a reply cut at [`Self::MAX_CONTENT_BYTES`].
    pub const CUT_NOTICE: &'static str =
        "\n\n[The reply was cut here: it is longer than a message can be stored.]";

    /// Adds `piece` to a reply's `text`, or, if the two would not leave room for
    /// [`Self::CUT_NOTICE`] within [`Self::MAX_CONTENT_BYTES`], as much of it as fits (cut at a
    /// character boundary) and the notice. Returns what was added, and whether the reply is now
    /// cut (then nothing more may be added).
    pub fn extend(text: &mut String, piece: &str) -> (usize, bool) {
        let before = text.len();
        let room = (Self::MAX_CONTENT_BYTES - Self::CUT_NOTICE.len()).saturating_sub(before);
        if piece.len() <= room {
            text.push_str(piece);
            return (before, false);
        }
        let mut end = room;
        while !piece.is_char_boundary(end) {
            end -= 1;
        }
        text.push_str(&piece[..end]);
        text.push_str(Self::CUT_NOTICE);
        (before, true)
    }
}

#[cfg(test)]
mod reply_tests {
    use super::Reply;

    #[test]
    fn a_reply_is_cut_at_a_character_boundary_and_says_so() {
        let mut text = String::new();
        let wide = "日".repeat(Reply::MAX_CONTENT_BYTES / 3);
        assert_eq!(Reply::extend(&mut text, "hello"), (0, false));
        assert_eq!(Reply::extend(&mut text, &wide), (5, true));
        assert!(text.len() <= Reply::MAX_CONTENT_BYTES);
        assert!(text.starts_with("hello日"));
        assert!(text.ends_with(Reply::CUT_NOTICE));
        let small = "a".repeat(100);
        let mut text = String::new();
        assert_eq!(Reply::extend(&mut text, &small), (0, false));
        assert_eq!(text, small);
    }
}

/// How a reply ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ending {
    /// The provider finished it.
    #[default]
    Complete,
    /// The client went away (a Stop button, a lost connection): what was generated until then.
    Stopped,
    /// The provider failed or stalled after it had begun: what was generated until then; or
    /// the reply was cut at [`Reply::MAX_CONTENT_BYTES`] (its text then ends with
    /// [`Reply::CUT_NOTICE`]).
    Incomplete,
}

impl Ending {
    /// The `ending` attribute of a stored reply; absent for a complete one.
    fn as_stored(self) -> Option<&'static str> {
        match self {
            Self::Complete => None,
            Self::Stopped => Some("stopped"),
            Self::Incomplete => Some("incomplete"),
        }
    }

    fn from_stored(text: Option<&str>) -> Option<Self> {
        match text {
            None => Some(Self::Complete),
            Some("stopped") => Some(Self::Stopped),
            Some("incomplete") => Some(Self::Incomplete),
            Some(_) => None,
        }
    }

    pub fn is_complete(&self) -> bool {
        *self == Self::Complete
    }
}

/// Where a turn goes: a new conversation (its head is created with the turn) or an existing one.
#[derive(Debug, Clone)]
pub enum TurnTarget {
    New { id: ConversationId, title: String },
    Existing(ConversationId),
}

impl TurnTarget {
    /// A new conversation for a first message, titled by it.
    pub fn new_for(message: &MessageText) -> Self {
        Self::New {
            id: ConversationId::generate(),
            title: message.title(),
        }
    }

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
    pub user_message: MessageId,
    pub reply_message: MessageId,
    pub created_at: String,
}

/// A conversation's head, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub id: ConversationId,
    pub title: String,
    pub created_at: String,
    pub updated_at: String,
    /// How many message ids the conversation has used (ids only grow; an abandoned turn's stay
    /// unused).
    pub message_count: u64,
    /// The end of the active branch; absent on conversations stored before branches, whose
    /// active branch ends at their newest message.
    pub leaf: Option<MessageId>,
    /// Whether any message has an alternative (an edit, a regeneration, or two turns sent from
    /// the same message at once).
    pub branched: bool,
}

/// One message, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: MessageId,
    /// The message this one follows; `None` for a root.
    pub parent: Option<MessageId>,
    /// The children of its parent, this one among them, oldest first (a message without
    /// alternatives is its only sibling).
    pub siblings: Vec<MessageId>,
    pub role: Role,
    pub content: String,
    pub created_at: String,
    /// Who produced a reply (absent on the user's messages).
    pub provider: Option<String>,
    pub model: Option<String>,
    pub usage: Option<TokenUsage>,
    /// How a reply ended (always complete for the user's messages).
    pub ending: Ending,
}

/// Feedback on one reply, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback {
    pub conversation_id: ConversationId,
    pub message_id: MessageId,
    pub rating: Rating,
    pub comment: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Who produced the rated reply.
    pub provider: Option<String>,
    pub model: Option<String>,
}

/// The order of a listing, by sort key: for messages and conversations, by creation.
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
