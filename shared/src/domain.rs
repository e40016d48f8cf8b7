//! The domain's values. Each validates on construction, so a value that exists is valid; the HTTP
//! layer turns request input into these (naming the field when it cannot), the store writes and
//! reads them, the LLM layer sends them.

use serde::Serialize;

/// Why an input is not a valid value; the text says what is expected and is shown to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// An authenticated user's id (the `sub` claim).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(String);

impl UserId {
    /// The longest user id accepted; Cognito's `sub` is a 36-character UUID.
    pub const MAX_LEN: usize = 128;

    /// Non-empty, at most [`Self::MAX_LEN`] bytes, no control characters, no whitespace, no `#`
    /// (the key separator of the table).
    pub fn parse(raw: &str) -> Option<Self> {
        let valid = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && !raw
                .chars()
                .any(|c| c.is_control() || c == '#' || c.is_whitespace());
        valid.then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for UserId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A conversation's id: a ULID in its canonical 26-character form, so ids sort by creation time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConversationId(String);

impl ConversationId {
    /// The form the API documents (`infra/openapi.yaml` carries the same pattern; a test compares).
    pub const PATTERN: &'static str = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$";

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
}

impl std::fmt::Display for ConversationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for ConversationId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// A message's id within its conversation: its sequence number, 1 for the first message. The API
/// shows it zero-padded to 12 digits; leading zeros are optional on input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(u64);

impl MessageId {
    /// Digits of the padded form.
    pub const DIGITS: usize = 12;
    pub const PATTERN: &'static str = "^0{0,11}[1-9][0-9]{0,11}$";

    /// A sequence number as an id; 0 is not a message.
    pub fn new(seq: u64) -> Option<Self> {
        (seq >= 1 && seq < 10u64.pow(Self::DIGITS as u32)).then_some(Self(seq))
    }

    /// 1 to 12 digits, not all zeros.
    pub fn parse(raw: &str) -> Option<Self> {
        if raw.is_empty() || raw.len() > Self::DIGITS || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        raw.parse().ok().and_then(Self::new)
    }

    pub fn seq(self) -> u64 {
        self.0
    }

    /// The first message of a conversation.
    pub const FIRST: Self = Self(1);

    /// The message before this one, if any.
    pub fn previous(self) -> Option<Self> {
        Self::new(self.0 - 1)
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:0width$}", self.0, width = Self::DIGITS)
    }
}

impl Serialize for MessageId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// What a user wrote: trimmed, not empty, at most the configured number of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageText(String);

impl MessageText {
    pub fn parse(raw: &str, max_chars: usize) -> Result<Self, Invalid> {
        let text = raw.trim();
        if text.is_empty() {
            return Err(Invalid("must not be empty".to_owned()));
        }
        let chars = text.chars().count();
        if chars > max_chars {
            return Err(Invalid(format!(
                "is {chars} characters long; the limit is {max_chars}"
            )));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A conversation's title from its first message: its first words, at most 60 characters,
    /// without Markdown's markers (headings, emphasis, quotes, code marks, a leading list marker
    /// or task box, a link's address). The web client's `derivedTitle` does the same; both are
    /// tested on `web/test/title-cases.json`.
    pub fn title(&self) -> String {
        const MAX: usize = 60;
        let mut title = String::new();
        for raw in self.0.split_whitespace() {
            let word = plain_word(raw);
            if word.is_empty() || (title.is_empty() && starts_a_list(raw)) {
                continue;
            }
            if title.chars().count() + word.chars().count() + 1 > MAX {
                break;
            }
            if !title.is_empty() {
                title.push(' ');
            }
            title.push_str(word);
        }
        if title.is_empty() {
            title = self.0.chars().take(MAX).collect();
        }
        title
    }
}

/// A word without the Markdown markers around it, and a link's or image's text without its
/// address.
fn plain_word(word: &str) -> &str {
    let word = word.trim_start_matches(['#', '>', '*', '_', '`', '~', '!', '[']);
    let word = word.find("](").map_or(word, |at| &word[..at]);
    word.trim_end_matches(['*', '_', '`', '~', ']'])
}

/// A list item's marker or a task box, which a title leaves out at its start.
fn starts_a_list(word: &str) -> bool {
    if matches!(word, "-" | "+" | "*" | "[x]" | "[X]") {
        return true;
    }
    word.strip_suffix(['.', ')'])
        .is_some_and(|number| !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()))
}

/// A conversation's title as a user sets it: trimmed, not empty, at most [`Title::MAX_CHARS`]
/// characters, on one line (no control characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Title(String);

impl Title {
    pub const MAX_CHARS: usize = 120;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let text = raw.trim();
        if text.is_empty() {
            return Err(Invalid("must not be empty".to_owned()));
        }
        let chars = text.chars().count();
        if chars > Self::MAX_CHARS {
            return Err(Invalid(format!(
                "is {chars} characters long; the limit is {}",
                Self::MAX_CHARS
            )));
        }
        if text.chars().any(char::is_control) {
            return Err(Invalid(
                "must be one line without control characters".to_owned(),
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A comment on a reply: trimmed, at most the configured number of characters; blank is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment(String);

impl Comment {
    /// `Ok(None)` for a blank comment.
    pub fn parse(raw: &str, max_chars: usize) -> Result<Option<Self>, Invalid> {
        let text = raw.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let chars = text.chars().count();
        if chars > max_chars {
            return Err(Invalid(format!(
                "is {chars} characters long; the limit is {max_chars}"
            )));
        }
        Ok(Some(Self(text.to_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A rating, 1 to 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rating(u8);

impl Rating {
    pub fn new(value: u64) -> Result<Self, Invalid> {
        u8::try_from(value)
            .ok()
            .filter(|value| (1..=5).contains(value))
            .map(Self)
            .ok_or_else(|| Invalid("must be a whole number from 1 to 5".to_owned()))
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

/// Who wrote a message: the store keeps it, the LLM layer sends it.
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

    pub fn parse(text: &str) -> Option<Self> {
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

impl TokenUsage {
    /// What a budget counts: input plus output.
    pub fn total(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_ulids_are_conversation_ids() {
        let id = ConversationId::generate();
        assert_eq!(ConversationId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(ConversationId::parse(&id.as_str().to_lowercase()), None);
        assert_eq!(ConversationId::parse("not-an-id"), None);
        assert_eq!(ConversationId::parse(""), None);
        assert_eq!(ConversationId::parse(&format!("{id}#MSG")), None);
        // The largest ULID starts with 7; an 8 overflows 128 bits.
        assert_eq!(ConversationId::parse("80000000000000000000000000"), None);
    }

    #[test]
    fn message_ids_are_one_to_twelve_digits_and_print_padded() {
        assert_eq!(MessageId::parse("7").map(MessageId::seq), Some(7));
        assert_eq!(MessageId::parse("000000000007"), MessageId::new(7));
        assert_eq!(MessageId::new(7).unwrap().to_string(), "000000000007");
        for bad in ["", "0", "000", "-1", "+1", "1.0", "0000000000001", "x"] {
            assert_eq!(MessageId::parse(bad), None, "{bad:?}");
        }
        assert_eq!(MessageId::new(1).unwrap().previous(), None);
    }

    #[test]
    fn texts_are_trimmed_and_bounded_in_characters() {
        assert_eq!(MessageText::parse("  hi  ", 10).unwrap().as_str(), "hi");
        assert!(MessageText::parse(" \n ", 10).is_err());
        assert!(MessageText::parse(&"é".repeat(10), 10).is_ok());
        let err = MessageText::parse(&"é".repeat(11), 10).unwrap_err();
        assert!(err.0.contains("11 characters"), "{err}");
        assert_eq!(Comment::parse("   ", 5), Ok(None));
        assert!(Comment::parse("123456", 5).is_err());
    }

    #[test]
    fn set_titles_are_one_trimmed_line_within_the_limit() {
        assert_eq!(
            Title::parse("  Trip plans ").unwrap().as_str(),
            "Trip plans"
        );
        assert!(Title::parse("   ").is_err());
        assert!(Title::parse("two\nlines").is_err());
        assert!(Title::parse(&"é".repeat(Title::MAX_CHARS)).is_ok());
        assert!(Title::parse(&"é".repeat(Title::MAX_CHARS + 1)).is_err());
    }

    #[test]
    fn titles_are_the_first_words() {
        let title = |text: &str| MessageText::parse(text, 10_000).unwrap().title();
        assert_eq!(title("How do I bake bread?"), "How do I bake bread?");
        let long = title(&"word ".repeat(40));
        assert!(long.chars().count() <= 60 && long.starts_with("word word"));
        assert_eq!(title(&"x".repeat(100)).chars().count(), 60);
    }

    #[test]
    fn titles_leave_markdown_out_as_the_web_client_does() {
        let cases: Vec<(String, String)> =
            serde_json::from_str(include_str!("../../web/test/title-cases.json")).unwrap();
        for (text, expected) in cases {
            let title = MessageText::parse(&text, 10_000).unwrap().title();
            assert_eq!(title, expected, "{text:?}");
        }
    }

    #[test]
    fn ratings_are_one_to_five() {
        assert_eq!(Rating::new(5).map(Rating::get), Ok(5));
        assert!(Rating::new(0).is_err());
        assert!(Rating::new(6).is_err());
        assert!(Rating::new(256 + 3).is_err(), "no wrapping");
    }

    #[test]
    fn user_ids_cannot_break_the_key_scheme() {
        assert!(UserId::parse("user-a").is_some());
        assert!(UserId::parse("a#CONV#b").is_none());
        assert!(UserId::parse(&"x".repeat(129)).is_none());
        assert!(UserId::parse("line\nbreak").is_none());
        assert!(UserId::parse("").is_none());
    }
}
