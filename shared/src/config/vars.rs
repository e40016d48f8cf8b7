//! Typed reading of environment-like variables.

use std::time::Duration;

use super::ConfigError;

/// Typed access to environment-like variables; every error names the variable.
pub(super) struct Vars<F>(pub(super) F);

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    /// A variable that is set to something other than blanks, trimmed.
    pub(super) fn optional(&self, var: &'static str) -> Result<Option<String>, ConfigError> {
        match (self.0)(var) {
            None => Ok(None),
            Some(value) if value.trim().is_empty() => Err(ConfigError::Invalid {
                var,
                reason: "is empty".to_owned(),
            }),
            Some(value) => Ok(Some(value.trim().to_owned())),
        }
    }

    /// A variable that must be set and non-empty.
    pub(super) fn required(&self, var: &'static str) -> Result<String, ConfigError> {
        self.optional(var)?.ok_or(ConfigError::Missing { var })
    }

    /// A whole number within `range`, or `default` when unset.
    pub(super) fn number(
        &self,
        var: &'static str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, ConfigError> {
        let Some(text) = self.optional(var)? else {
            return Ok(default);
        };
        let value: u64 = text.parse().map_err(|_| ConfigError::Invalid {
            var,
            reason: format!("{text:?} is not a whole number"),
        })?;
        if !range.contains(&value) {
            return Err(ConfigError::Invalid {
                var,
                reason: format!("{value} is outside {}..={}", range.start(), range.end()),
            });
        }
        Ok(value)
    }

    /// A comma-separated list, without blanks; `default` when unset.
    pub(super) fn list(
        &self,
        var: &'static str,
        default: &str,
    ) -> Result<Vec<String>, ConfigError> {
        let text = (self.0)(var).unwrap_or_else(|| default.to_owned());
        Ok(text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// An http(s) URL.
    pub(super) fn url(&self, var: &'static str, default: &str) -> Result<String, ConfigError> {
        let url = self.optional(var)?.unwrap_or_else(|| default.to_owned());
        if url.starts_with("https://") || url.starts_with("http://") {
            Ok(url)
        } else {
            Err(ConfigError::Invalid {
                var,
                reason: format!("{url:?} is not an http(s) URL"),
            })
        }
    }

    /// A duration given in milliseconds.
    pub(super) fn millis(
        &self,
        var: &'static str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        self.number(var, default, range).map(Duration::from_millis)
    }
}
