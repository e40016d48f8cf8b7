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
    #[error("could not initialise {what}: {reason}")]
    Init { what: &'static str, reason: String },
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
    /// `AWS_OPERATION_TIMEOUT_MS`: the longest one AWS call may take, its retries included, so
    /// that a saturated dependency becomes a 503 instead of a request that never ends.
    pub aws_operation_timeout: Duration,
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
            aws_operation_timeout: vars.millis("AWS_OPERATION_TIMEOUT_MS", 5_000, 100..=60_000)?,
            retention_days: vars.number("RETENTION_DAYS", 0, 0..=36_500)?,
        })
    }
}

/// Settings of the chat function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatConfig {
    /// `LLM_PROVIDERS`: the enabled providers, comma-separated (`openai`, `gemini`, `echo`).
    pub providers: Vec<String>,
    /// `LLM_DEFAULT_PROVIDER`: used when a request names none (default: the first enabled).
    pub default_provider: String,
    /// `PROVIDER_FALLBACK`: tried in order when the chosen provider fails.
    pub fallback: Vec<String>,
    /// `OPENAI_BASE_URL`: any OpenAI-compatible server (Ollama, vLLM, llama.cpp).
    pub openai_base_url: String,
    /// `OPENAI_MODELS`: the models clients may ask for; the first is the default.
    pub openai_models: Vec<String>,
    /// `GEMINI_BASE_URL`.
    pub gemini_base_url: String,
    /// `GEMINI_MODELS`.
    pub gemini_models: Vec<String>,
    /// `ECHO_MODELS`.
    pub echo_models: Vec<String>,
    /// `ECHO_LATENCY_MS`: an artificial delay of the echo provider, standing in for an LLM.
    pub echo_latency: Duration,
    /// `SYSTEM_PROMPT`.
    pub system_prompt: Option<String>,
    /// `MAX_MESSAGE_CHARS`.
    pub max_message_chars: usize,
    /// `MAX_BODY_BYTES`: larger request bodies are refused before parsing.
    pub max_body_bytes: usize,
    /// `HISTORY_CONTEXT_MESSAGES`: how many earlier messages go to the LLM.
    pub context_messages: u16,
    /// `HISTORY_CONTEXT_CHARS`: the most characters of earlier messages sent.
    pub context_chars: usize,
    /// `CHAT_DEADLINE_MS`: the longest a chat request may take (under API Gateway's 29 s).
    pub deadline: Duration,
    /// `LLM_CONNECT_TIMEOUT_MS` and `LLM_REQUEST_TIMEOUT_MS`.
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// `LLM_MAX_ATTEMPTS`, `LLM_BACKOFF_BASE_MS`, `LLM_BACKOFF_CAP_MS`.
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// `BREAKER_FAILURES` and `BREAKER_COOLDOWN_MS`.
    pub breaker_failures: u32,
    pub breaker_cool_down: Duration,
    /// `SECRET_CACHE_TTL_SECS`.
    pub secret_ttl: Duration,
}

const KNOWN_PROVIDERS: [&str; 3] = ["openai", "gemini", "echo"];

impl ChatConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars(lookup);
        let providers = vars.list("LLM_PROVIDERS", "openai,gemini")?;
        for provider in &providers {
            if !KNOWN_PROVIDERS.contains(&provider.as_str()) {
                return Err(ConfigError::Invalid {
                    var: "LLM_PROVIDERS",
                    reason: format!(
                        "unknown provider {provider:?}; known: {}",
                        KNOWN_PROVIDERS.join(", ")
                    ),
                });
            }
        }
        let enabled = |var: &'static str, name: &String| {
            if providers.contains(name) {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    var,
                    reason: format!("{name:?} is not in LLM_PROVIDERS"),
                })
            }
        };
        let default_provider = match vars.optional("LLM_DEFAULT_PROVIDER")? {
            Some(name) => {
                enabled("LLM_DEFAULT_PROVIDER", &name)?;
                name
            }
            None => providers.first().cloned().unwrap_or_default(),
        };
        let fallback = vars.list("PROVIDER_FALLBACK", "")?;
        for name in &fallback {
            enabled("PROVIDER_FALLBACK", name)?;
        }
        Ok(Self {
            default_provider,
            fallback,
            openai_base_url: vars.url("OPENAI_BASE_URL", "https://api.openai.com/v1")?,
            openai_models: vars.list("OPENAI_MODELS", "gpt-4o-mini,gpt-4o")?,
            gemini_base_url: vars.url(
                "GEMINI_BASE_URL",
                "https://generativelanguage.googleapis.com/v1beta",
            )?,
            gemini_models: vars.list("GEMINI_MODELS", "gemini-2.0-flash,gemini-2.5-pro")?,
            echo_models: vars.list("ECHO_MODELS", "echo-1")?,
            echo_latency: vars.millis("ECHO_LATENCY_MS", 0, 0..=60_000)?,
            system_prompt: vars.optional("SYSTEM_PROMPT")?,
            max_message_chars: vars.number("MAX_MESSAGE_CHARS", 8_000, 1..=100_000)? as usize,
            max_body_bytes: vars.number("MAX_BODY_BYTES", 32 * 1024, 1_024..=1_048_576)? as usize,
            context_messages: vars.number("HISTORY_CONTEXT_MESSAGES", 20, 0..=100)? as u16,
            context_chars: vars.number("HISTORY_CONTEXT_CHARS", 16_000, 0..=1_000_000)? as usize,
            deadline: vars.millis("CHAT_DEADLINE_MS", 25_000, 1_000..=900_000)?,
            connect_timeout: vars.millis("LLM_CONNECT_TIMEOUT_MS", 2_000, 50..=30_000)?,
            request_timeout: vars.millis("LLM_REQUEST_TIMEOUT_MS", 20_000, 100..=900_000)?,
            max_attempts: vars.number("LLM_MAX_ATTEMPTS", 3, 1..=10)? as u32,
            backoff_base: vars.millis("LLM_BACKOFF_BASE_MS", 200, 1..=60_000)?,
            backoff_cap: vars.millis("LLM_BACKOFF_CAP_MS", 2_000, 1..=60_000)?,
            breaker_failures: vars.number("BREAKER_FAILURES", 5, 1..=1_000)? as u32,
            breaker_cool_down: vars.millis("BREAKER_COOLDOWN_MS", 30_000, 1..=3_600_000)?,
            secret_ttl: Duration::from_secs(vars.number(
                "SECRET_CACHE_TTL_SECS",
                300,
                1..=86_400,
            )?),
            providers,
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

    /// A comma-separated list, without blanks; `default` when unset.
    pub fn list(&self, var: &'static str, default: &str) -> Result<Vec<String>, ConfigError> {
        let text = (self.0)(var).unwrap_or_else(|| default.to_owned());
        Ok(text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// An http(s) URL.
    pub fn url(&self, var: &'static str, default: &str) -> Result<String, ConfigError> {
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

    fn chat(pairs: &[(&str, &str)]) -> Result<ChatConfig, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ChatConfig::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn chat_defaults_enable_the_real_providers_only() {
        let config = chat(&[]).unwrap();
        assert_eq!(config.providers, ["openai", "gemini"]);
        assert_eq!(config.default_provider, "openai");
        assert!(config.fallback.is_empty());
        assert_eq!(config.max_message_chars, 8_000);
        assert_eq!(config.context_messages, 20);
        assert_eq!(config.deadline, Duration::from_secs(25));
    }

    #[test]
    fn chat_provider_settings_are_checked_against_each_other() {
        let unknown = chat(&[("LLM_PROVIDERS", "openai,claude")]).unwrap_err();
        assert!(matches!(
            unknown,
            ConfigError::Invalid {
                var: "LLM_PROVIDERS",
                ..
            }
        ));
        let fallback =
            chat(&[("LLM_PROVIDERS", "openai"), ("PROVIDER_FALLBACK", "gemini")]).unwrap_err();
        assert!(matches!(
            fallback,
            ConfigError::Invalid {
                var: "PROVIDER_FALLBACK",
                ..
            }
        ));
        let default = chat(&[
            ("LLM_PROVIDERS", "echo"),
            ("LLM_DEFAULT_PROVIDER", "openai"),
        ])
        .unwrap_err();
        assert!(matches!(
            default,
            ConfigError::Invalid {
                var: "LLM_DEFAULT_PROVIDER",
                ..
            }
        ));
        let url = chat(&[("OPENAI_BASE_URL", "localhost:11434")]).unwrap_err();
        assert!(matches!(
            url,
            ConfigError::Invalid {
                var: "OPENAI_BASE_URL",
                ..
            }
        ));
        let echo = chat(&[("LLM_PROVIDERS", "echo")]).unwrap();
        assert_eq!(echo.default_provider, "echo");
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
