//! Ids, the table's key scheme, and pagination cursors.
//!
//! ```text
//! PK = USER#<user>   SK = CONV#<conversation>                 conversation head
//! PK = USER#<user>   SK = MSG#<conversation>#<seq, 12 digits>   one message
//! PK = USER#<user>   SK = FB#<conversation>#<seq, 12 digits>    feedback on one message
//! PK = USER#<user>   SK = IDEM#<key>                            idempotency record
//! ```
//! Sequence numbers are zero-padded so that key order is numeric order.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde::{Deserialize, Serialize};

use crate::identity::UserId;

/// Digits of a zero-padded sequence number in a sort key.
const SEQ_DIGITS: usize = 12;

/// A conversation's id: a ULID in its canonical 26-character form, so ids sort by creation time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConversationId(String);

impl ConversationId {
    /// A new, time-sortable id.
    pub fn generate() -> Self {
        Self(ulid::Ulid::generate().to_string())
    }

    /// Accepts only the canonical form (upper-case Crockford base32), so that one conversation
    /// has exactly one key.
    pub fn parse(raw: &str) -> Option<Self> {
        let parsed = ulid::Ulid::from_string(raw).ok()?;
        let canonical = parsed.to_string();
        (canonical == raw).then_some(Self(canonical))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// [`Self::parse`] for a request input: a 400 naming `field` when it is not an id.
    pub fn from_input(raw: &str, field: &str) -> Result<Self, crate::http::ApiError> {
        Self::parse(raw).ok_or_else(|| {
            crate::http::ApiError::bad_request(
                field,
                "must be a conversation id (26 characters, as returned by the API)",
            )
        })
    }
}

impl std::fmt::Display for ConversationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn partition(user: &UserId) -> String {
    format!("USER#{user}")
}

pub const HEAD_PREFIX: &str = "CONV#";

pub fn head(conversation: &ConversationId) -> String {
    format!("{HEAD_PREFIX}{conversation}")
}

pub fn message_prefix(conversation: &ConversationId) -> String {
    format!("MSG#{conversation}#")
}

pub fn message(conversation: &ConversationId, seq: u64) -> String {
    format!("MSG#{conversation}#{seq:0SEQ_DIGITS$}")
}

pub fn feedback_prefix(conversation: &ConversationId) -> String {
    format!("FB#{conversation}#")
}

/// The id of a message as the API shows it: its sequence number, zero-padded.
pub fn message_id(seq: u64) -> String {
    format!("{seq:0SEQ_DIGITS$}")
}

/// The sequence number at the end of a message or feedback sort key.
pub fn seq_of(sort_key: &str) -> Option<u64> {
    let (_, digits) = sort_key.rsplit_once('#')?;
    (digits.len() == SEQ_DIGITS && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
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
struct CursorWire {
    v: u8,
    sk: String,
}

/// A cursor that was not made by us, or not for this listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the cursor is malformed or does not belong to this listing")]
pub struct InvalidCursor;

impl Cursor {
    pub(crate) fn after(sort_key: String) -> Self {
        Self { sort_key }
    }

    /// Decodes a cursor from its text (URL-safe base64 of a small JSON document).
    pub fn decode(text: &str) -> Result<Self, InvalidCursor> {
        if text.is_empty() || text.len() > 512 {
            return Err(InvalidCursor);
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| InvalidCursor)?;
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
        let id = self
            .sort_key
            .strip_prefix(HEAD_PREFIX)
            .ok_or(InvalidCursor)?;
        ConversationId::parse(id).ok_or(InvalidCursor)?;
        Ok(&self.sort_key)
    }

    /// The sort key to resume after, if it is a feedback or message key under `prefix`.
    pub(crate) fn within(&self, prefix: &str) -> Result<&str, InvalidCursor> {
        if self.sort_key.starts_with(prefix) && seq_of(&self.sort_key).is_some() {
            Ok(&self.sort_key)
        } else {
            Err(InvalidCursor)
        }
    }

    /// The sort key to resume after, if it is a message key of `conversation`.
    pub(crate) fn message_key(&self, conversation: &ConversationId) -> Result<&str, InvalidCursor> {
        let rest = self
            .sort_key
            .strip_prefix(&message_prefix(conversation))
            .ok_or(InvalidCursor)?;
        (rest.len() == SEQ_DIGITS && rest.bytes().all(|b| b.is_ascii_digit()))
            .then_some(self.sort_key.as_str())
            .ok_or(InvalidCursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_keys_sort_numerically() {
        let id = ConversationId::generate();
        assert!(message(&id, 9) < message(&id, 10));
        assert!(message(&id, 99_999) < message(&id, 100_000));
        assert_eq!(seq_of(&message(&id, 42)), Some(42));
        assert_eq!(message_id(7), "000000000007");
    }

    #[test]
    fn only_canonical_ulids_are_conversation_ids() {
        let id = ConversationId::generate();
        assert_eq!(ConversationId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(ConversationId::parse(&id.as_str().to_lowercase()), None);
        assert_eq!(ConversationId::parse("not-an-id"), None);
        assert_eq!(ConversationId::parse(""), None);
        assert_eq!(ConversationId::parse(&format!("{id}#MSG")), None);
    }

    #[test]
    fn cursors_round_trip_and_stay_in_their_listing() {
        let a = ConversationId::generate();
        let b = ConversationId::generate();
        let cursor = Cursor::after(message(&a, 5));
        let decoded = Cursor::decode(&cursor.encode()).unwrap();
        assert_eq!(decoded, cursor);
        assert_eq!(decoded.message_key(&a), Ok(message(&a, 5).as_str()));
        assert_eq!(decoded.message_key(&b), Err(InvalidCursor));
        assert_eq!(decoded.head_key(), Err(InvalidCursor));

        let head_cursor = Cursor::decode(&Cursor::after(head(&a)).encode()).unwrap();
        assert!(head_cursor.head_key().is_ok());
        assert_eq!(head_cursor.message_key(&a), Err(InvalidCursor));
    }

    #[test]
    fn tampered_cursors_are_refused() {
        assert_eq!(Cursor::decode("%%%"), Err(InvalidCursor));
        assert_eq!(Cursor::decode(""), Err(InvalidCursor));
        let not_json = URL_SAFE_NO_PAD.encode(b"hello");
        assert_eq!(Cursor::decode(&not_json), Err(InvalidCursor));
        // A well-formed cursor naming another user's partition still only carries a sort key;
        // one that names something other than a head is refused for the conversation listing.
        let forged = URL_SAFE_NO_PAD.encode(br#"{"v":1,"sk":"USER#victim"}"#);
        assert_eq!(
            Cursor::decode(&forged).unwrap().head_key(),
            Err(InvalidCursor)
        );
        let future = URL_SAFE_NO_PAD.encode(br#"{"v":2,"sk":"CONV#x"}"#);
        assert_eq!(Cursor::decode(&future), Err(InvalidCursor));
    }
}
