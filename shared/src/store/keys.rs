//! The table's key scheme, and pagination cursors. Every key is built and parsed here, nowhere
//! else:
//!
//! ```text
//! PK = USER#<user>   SK = CONV#<conversation>                   conversation head
//! PK = USER#<user>   SK = MSG#<conversation>#<message id>         one message
//! PK = USER#<user>   SK = MSG#<conversation>#<parent id>#children the later children of a message
//! PK = USER#<user>   SK = FB#<conversation>#<message id>          feedback on one message
//! PK = USER#<user>   SK = IDEM#<key>                              idempotency record
//! PK = USER#<user>   SK = USAGE                                    the user's budget and day's use
//! GSI1PK = FB#<yyyy-mm-dd>   GSI1SK = <updated_at>#<user>#<conversation>#<message id>   feedback by day
//! ```
//! Message ids are zero-padded to 12 digits, so that key order is numeric order. A message's
//! children item sorts right after it (and before the next message), so a walk down a branch
//! reads it on the way; the conversation's root messages are the children of id 0.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde::{Deserialize, Serialize};

use super::IdempotencyKey;
use crate::domain::{ConversationId, MessageId, UserId};

const USER: &str = "USER#";
const HEAD: &str = "CONV#";
const MESSAGE: &str = "MSG#";
const FEEDBACK: &str = "FB#";
const IDEMPOTENCY: &str = "IDEM#";
const CHILDREN: &str = "#children";
const USAGE: &str = "USAGE";

/// The key (partition and sort) that `ConversationStore::connect` reads: outside every user's
/// partition, never written.
pub const CONNECT: &str = "CONNECT";

/// The index that lists feedback by day, and its key attributes.
pub const DAY_INDEX: &str = "GSI1";
pub const DAY_INDEX_PK: &str = "GSI1PK";
pub const DAY_INDEX_SK: &str = "GSI1SK";

/// A user's partition.
pub fn partition(user: &UserId) -> String {
    format!("{USER}{user}")
}

/// The user whose partition this is.
pub fn user_of(partition: &str) -> Option<UserId> {
    partition.strip_prefix(USER).and_then(UserId::parse)
}

/// The prefix of every conversation head.
pub fn heads() -> &'static str {
    HEAD
}

pub fn head(conversation: &ConversationId) -> String {
    format!("{HEAD}{conversation}")
}

/// The conversation whose head this sort key is.
pub fn conversation_of_head(sort_key: &str) -> Option<ConversationId> {
    sort_key.strip_prefix(HEAD).and_then(ConversationId::parse)
}

/// The prefix of a conversation's messages.
pub fn messages(conversation: &ConversationId) -> String {
    format!("{MESSAGE}{conversation}#")
}

pub fn message(conversation: &ConversationId, id: MessageId) -> String {
    format!("{MESSAGE}{conversation}#{id}")
}

/// The item that lists the children of `parent` (0: the conversation's roots) that do not
/// directly follow it.
pub fn children(conversation: &ConversationId, parent: u64) -> String {
    format!(
        "{MESSAGE}{conversation}#{parent:0width$}{CHILDREN}",
        width = MessageId::DIGITS
    )
}

/// What a sort key under a conversation's message prefix names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKey {
    Message(MessageId),
    /// The children item of this parent (0: the roots).
    Children(u64),
}

/// What a sort key under a conversation's message prefix names, if anything.
pub fn message_key_of(sort_key: &str) -> Option<MessageKey> {
    if let Some(rest) = sort_key.strip_suffix(CHILDREN) {
        let (_, digits) = rest.rsplit_once('#')?;
        return (digits.len() == MessageId::DIGITS && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse().ok().map(MessageKey::Children))
            .flatten();
    }
    message_id_of(sort_key).map(MessageKey::Message)
}

/// The prefix of the caller's feedback: on one conversation, or on all of them.
pub fn feedback_on(conversation: Option<&ConversationId>) -> String {
    match conversation {
        Some(conversation) => format!("{FEEDBACK}{conversation}#"),
        None => FEEDBACK.to_owned(),
    }
}

pub fn feedback(conversation: &ConversationId, id: MessageId) -> String {
    format!("{FEEDBACK}{conversation}#{id}")
}

/// The prefix of every idempotency record.
pub fn idempotency_records() -> &'static str {
    IDEMPOTENCY
}

pub fn idempotency(key: &IdempotencyKey) -> String {
    format!("{IDEMPOTENCY}{}", key.as_str())
}

/// The user's budget item (kept by erasure).
pub fn usage() -> &'static str {
    USAGE
}

/// The message id at the end of a message or feedback sort key.
pub fn message_id_of(sort_key: &str) -> Option<MessageId> {
    let (_, digits) = sort_key.rsplit_once('#')?;
    (digits.len() == MessageId::DIGITS)
        .then(|| MessageId::parse(digits))
        .flatten()
}

/// The day index's partition for feedback given on `day`.
pub fn feedback_day(day: chrono::NaiveDate) -> String {
    format!("{FEEDBACK}{}", day.format("%Y-%m-%d"))
}

/// The day index's sort key: by time, then whose and on what.
pub fn feedback_day_order(
    updated_at: &str,
    user: &UserId,
    conversation: &ConversationId,
    id: MessageId,
) -> String {
    format!("{updated_at}#{user}#{conversation}#{id}")
}

/// An opaque pagination cursor: where a listing resumes.
///
/// It carries only the sort key of the last item returned. The partition key is always the
/// caller's own, taken from their identity, and the sort key must belong to the listing it is
/// used with, so a cursor can never reach outside the caller's partition or listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    sort_key: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CursorWire {
    v: u8,
    sk: String,
}

/// A cursor that was not made by us, or not for this listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the cursor is malformed or does not belong to this listing")]
pub struct InvalidCursor;

impl Cursor {
    /// The form the API documents (`infra/openapi.yaml` carries the same pattern; a test compares):
    /// URL-safe base64 that begins as every cursor's JSON does (`{"v":1,"sk":"`), so a client's
    /// schema already refuses what was never a cursor of ours (`0`, `abc`).
    pub const PATTERN: &'static str = "^eyJ2IjoxLCJzayI6I[A-Za-z0-9_-]+$";
    pub const MAX_LEN: usize = 512;

    pub(crate) fn after(sort_key: String) -> Self {
        Self { sort_key }
    }

    /// Decodes a cursor from its text: URL-safe base64 of a small JSON object.
    pub fn decode(text: &str) -> Result<Self, InvalidCursor> {
        if text.is_empty() || text.len() > Self::MAX_LEN {
            return Err(InvalidCursor);
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| InvalidCursor)?;
        // Serde would also build the struct from a JSON array; a cursor is an object.
        if bytes.first() != Some(&b'{') {
            return Err(InvalidCursor);
        }
        let wire: CursorWire = serde_json::from_slice(&bytes).map_err(|_| InvalidCursor)?;
        if wire.v != 1 {
            return Err(InvalidCursor);
        }
        Ok(Self { sort_key: wire.sk })
    }

    pub fn encode(&self) -> String {
        let wire = CursorWire {
            v: 1,
            sk: self.sort_key.clone(),
        };
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wire).unwrap_or_default())
    }

    /// The sort key to resume after, if it is a head key.
    pub(crate) fn head_key(&self) -> Result<&str, InvalidCursor> {
        conversation_of_head(&self.sort_key).ok_or(InvalidCursor)?;
        Ok(&self.sort_key)
    }

    /// The sort key to resume after, if it is a message or feedback key under `prefix`.
    pub(crate) fn within(&self, prefix: &str) -> Result<&str, InvalidCursor> {
        let rest = self.sort_key.strip_prefix(prefix).ok_or(InvalidCursor)?;
        // Directly under the prefix: `<conversation>#<id>` for all feedback, `<id>` for one
        // conversation's items.
        let id = rest.rsplit_once('#').map_or(rest, |(conversation, id)| {
            if ConversationId::parse(conversation).is_some() {
                id
            } else {
                ""
            }
        });
        (id.len() == MessageId::DIGITS && MessageId::parse(id).is_some())
            .then_some(self.sort_key.as_str())
            .ok_or(InvalidCursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seq: u64) -> MessageId {
        MessageId::new(seq).unwrap()
    }

    #[test]
    fn message_keys_sort_numerically_and_parse_back() {
        let c = ConversationId::generate();
        assert!(message(&c, id(9)) < message(&c, id(10)));
        assert!(message(&c, id(99_999)) < message(&c, id(100_000)));
        assert_eq!(message_id_of(&message(&c, id(42))), Some(id(42)));
        assert_eq!(message_id_of(&feedback(&c, id(42))), Some(id(42)));
        assert!(message(&c, id(1)).starts_with(&messages(&c)));
        assert!(feedback(&c, id(1)).starts_with(&feedback_on(Some(&c))));
        assert!(feedback_on(Some(&c)).starts_with(&feedback_on(None)));
        // A message's children item sorts between it and the next message.
        assert!(message(&c, id(9)) < children(&c, 9));
        assert!(children(&c, 9) < message(&c, id(10)));
        assert!(children(&c, 0) < message(&c, id(1)));
        assert!(children(&c, 0).starts_with(&messages(&c)));
        assert_eq!(
            message_key_of(&children(&c, 9)),
            Some(MessageKey::Children(9))
        );
        assert_eq!(
            message_key_of(&children(&c, 0)),
            Some(MessageKey::Children(0))
        );
        assert_eq!(
            message_key_of(&message(&c, id(9))),
            Some(MessageKey::Message(id(9)))
        );
        assert_eq!(message_id_of(&children(&c, 9)), None);
        assert_eq!(conversation_of_head(&head(&c)), Some(c.clone()));
        let user = UserId::parse("u-1").unwrap();
        assert_eq!(user_of(&partition(&user)), Some(user));
    }

    #[test]
    fn cursors_round_trip_and_stay_in_their_listing() {
        let a = ConversationId::generate();
        let b = ConversationId::generate();
        let cursor = Cursor::after(message(&a, id(5)));
        let decoded = Cursor::decode(&cursor.encode()).unwrap();
        assert_eq!(decoded, cursor);
        // Every cursor made begins with the documented pattern's fixed part.
        let prefix = "eyJ2IjoxLCJzayI6I";
        assert!(Cursor::PATTERN.starts_with(&format!("^{prefix}[")));
        for made in [cursor.encode(), Cursor::after(String::new()).encode()] {
            assert!(made.starts_with(prefix), "{made}");
        }
        assert_eq!(
            decoded.within(&messages(&a)),
            Ok(message(&a, id(5)).as_str())
        );
        assert_eq!(decoded.within(&messages(&b)), Err(InvalidCursor));
        assert_eq!(decoded.head_key(), Err(InvalidCursor));

        let head_cursor = Cursor::decode(&Cursor::after(head(&a)).encode()).unwrap();
        assert!(head_cursor.head_key().is_ok());
        assert_eq!(head_cursor.within(&messages(&a)), Err(InvalidCursor));

        let all_feedback = Cursor::after(feedback(&a, id(2)));
        assert!(all_feedback.within(&feedback_on(None)).is_ok());
        assert!(all_feedback.within(&feedback_on(Some(&a))).is_ok());
        assert!(all_feedback.within(&feedback_on(Some(&b))).is_err());
    }

    #[test]
    fn tampered_cursors_are_refused() {
        assert_eq!(Cursor::decode("%%%"), Err(InvalidCursor));
        assert_eq!(Cursor::decode(""), Err(InvalidCursor));
        let encode = |json: &[u8]| URL_SAFE_NO_PAD.encode(json);
        assert_eq!(Cursor::decode(&encode(b"hello")), Err(InvalidCursor));
        // A well-formed cursor naming another user's partition still only carries a sort key;
        // one that names something other than a head is refused for the conversation listing.
        let forged = Cursor::decode(&encode(br#"{"v":1,"sk":"USER#victim"}"#)).unwrap();
        assert_eq!(forged.head_key(), Err(InvalidCursor));
        assert_eq!(
            Cursor::decode(&encode(br#"{"v":2,"sk":"CONV#x"}"#)),
            Err(InvalidCursor)
        );
        // Serde reads structs from arrays too; a cursor must be an object.
        let head = head(&ConversationId::generate());
        let array = format!(r#"[1,"{head}"]"#);
        assert_eq!(
            Cursor::decode(&encode(array.as_bytes())),
            Err(InvalidCursor)
        );
        let extra = format!(r#"{{"v":1,"sk":"{head}","x":0}}"#);
        assert_eq!(
            Cursor::decode(&encode(extra.as_bytes())),
            Err(InvalidCursor)
        );
    }
}
