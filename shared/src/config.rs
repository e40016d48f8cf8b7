//! Configuration, read from environment variables once per execution environment.
//!
//! A missing or malformed variable fails the cold start with an error that names it, so a
//! misconfigured deployment is visible in the first log line instead of in the first request.

use std::time::Duration;

/// A configuration problem, naming the variable concerned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("environment variable {var} is required but not set")]
    Missing { var: &'static str },
    #[error("environment variable {var} is invalid: {reason}")]
    Invalid { var: &'static str, reason: String },
}

/// Settings every function shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `TABLE_NAME`: the DynamoDB table holding every user's data.
    pub table_name: String,
    /// `SECRET_ID`: name or ARN of the Secrets Manager secret with the provider keys.
    pub secret_id: String,
    /// `SERVICE_NAME`: reported by the health routes and in logs.
    pub service_name: String,
    /// `HEALTH_CHECK_TIMEOUT_MS`: how long one readiness check may take before it counts as failed.
    pub health_check_timeout: Duration,
    /// `AWS_CONNECT_TIMEOUT_MS`: connect timeout of the AWS SDK clients.
    pub aws_connect_timeout: Duration,
    /// `RETENTION_DAYS`: how long conversations are kept; 0 keeps them forever.
    pub retention_days: u64,
}

impl Config {
    /// How long stored items live, or `None` to keep them forever.
    pub fn retention(&self) -> Option<Duration> {
        (self.retention_days > 0).then(|| Duration::from_secs(self.retention_days * 86_400))
    }
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, which returns a variable's value if it is set.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars(lookup);
        Ok(Self {
            table_name: vars.required("TABLE_NAME")?,
            secret_id: vars.required("SECRET_ID")?,
            service_name: vars
                .optional("SERVICE_NAME")?
                .unwrap_or_else(|| "serverless-chat".to_owned()),
            health_check_timeout: vars.millis("HEALTH_CHECK_TIMEOUT_MS", 2_000, 50..=20_000)?,
            aws_connect_timeout: vars.millis("AWS_CONNECT_TIMEOUT_MS", 1_000, 50..=10_000)?,
            retention_days: vars.number("RETENTION_DAYS", 0, 0..=36_500)?,
        })
    }
}

/// Typed access to environment-like variables; every error names the variable.
pub struct Vars<F>(pub F);

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    /// A variable that is set to something other than blanks, trimmed.
    pub fn optional(&self, var: &'static str) -> Result<Option<String>, ConfigError> {
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
    pub fn required(&self, var: &'static str) -> Result<String, ConfigError> {
        self.optional(var)?.ok_or(ConfigError::Missing { var })
    }

    /// A whole number within `range`, or `default` when unset.
    pub fn number(
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

    /// A duration given in milliseconds.
    pub fn millis(
        &self,
        var: &'static str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        self.number(var, default, range).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_apply_when_only_required_variables_are_set() {
        let config = config(&[("TABLE_NAME", "chat"), ("SECRET_ID", "keys")]).unwrap();
        assert_eq!(config.table_name, "chat");
        assert_eq!(config.secret_id, "keys");
        assert_eq!(config.service_name, "serverless-chat");
        assert_eq!(config.health_check_timeout, Duration::from_secs(2));
        assert_eq!(config.retention(), None);
    }

    #[test]
    fn retention_is_given_in_days() {
        let config = config(&[
            ("TABLE_NAME", "chat"),
            ("SECRET_ID", "keys"),
            ("RETENTION_DAYS", "30"),
        ])
        .unwrap();
        assert_eq!(config.retention(), Some(Duration::from_secs(30 * 86_400)));
    }

    #[test]
    fn a_missing_variable_is_named() {
        let err = config(&[("SECRET_ID", "keys")]).unwrap_err();
        assert_eq!(err, ConfigError::Missing { var: "TABLE_NAME" });
        assert!(err.to_string().contains("TABLE_NAME"));
    }

    #[test]
    fn blank_and_malformed_values_are_named() {
        let blank = config(&[("TABLE_NAME", "  "), ("SECRET_ID", "keys")]).unwrap_err();
        assert!(matches!(
            blank,
            ConfigError::Invalid {
                var: "TABLE_NAME",
                ..
            }
        ));

        let word = config(&[
            ("TABLE_NAME", "chat"),
            ("SECRET_ID", "keys"),
            ("HEALTH_CHECK_TIMEOUT_MS", "soon"),
        ])
        .unwrap_err();
        assert!(word.to_string().contains("HEALTH_CHECK_TIMEOUT_MS"));
        assert!(word.to_string().contains("soon"));

        let too_big = config(&[
            ("TABLE_NAME", "chat"),
            ("SECRET_ID", "keys"),
            ("HEALTH_CHECK_TIMEOUT_MS", "60000"),
        ])
        .unwrap_err();
        assert!(matches!(
            too_big,
            ConfigError::Invalid {
                var: "HEALTH_CHECK_TIMEOUT_MS",
                ..
            }
        ));
    }
}
