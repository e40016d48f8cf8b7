//! The feedback function's settings.

use super::{ConfigError, Vars};

/// Settings of the feedback function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackConfig {
    /// `MAX_COMMENT_CHARS`: the longest comment on a reply.
    pub max_comment_chars: usize,
    /// `FEEDBACK_MAX_BODY_BYTES`: larger feedback bodies are refused before parsing.
    pub max_body_bytes: usize,
}

impl FeedbackConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars(lookup);
        Ok(Self {
            max_comment_chars: vars.number("MAX_COMMENT_CHARS", 2_000, 1..=100_000)? as usize,
            max_body_bytes: vars.number("FEEDBACK_MAX_BODY_BYTES", 16 * 1024, 1_024..=1_048_576)?
                as usize,
        })
    }
}
