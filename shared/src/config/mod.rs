//! Configuration, read from environment variables once per execution environment.
//!
//! A missing or malformed variable fails the cold start with an error that names it, so a
//! misconfigured deployment is visible in the first log line instead of in the first request.
//! Reading is all it does: the settings are plain data, applied by `shared::startup`.

mod budget;
mod vars;

pub use budget::{budget_policy, BudgetPolicy, DailyBudget};

use std::time::Duration;

use vars::Vars;

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
    /// `READINESS_CACHE_MS`: how long a readiness result is served before the dependencies are
    /// checked again (the route is anonymous: a flood of calls must not become a flood of checks).
    pub readiness_cache: Duration,
    /// `AWS_CONNECT_TIMEOUT_MS`: connect timeout of the AWS SDK clients.
    pub aws_connect_timeout: Duration,
    /// `AWS_OPERATION_TIMEOUT_MS`: the longest one AWS call may take, its retries included, so
    /// that a saturated dependency becomes a 503 instead of a request that never ends.
    pub aws_operation_timeout: Duration,
    /// `RETENTION_DAYS`: how long conversations are kept; 0 keeps them forever.
    pub retention_days: u64,
    /// `WORK_BUDGET_MS`: the time an invocation's work may take (reads, the provider); the rest
    /// of the invocation, up to API Gateway's 29 s or the Lambda deadline, is for finishing a
    /// write and answering.
    pub work_budget: Duration,
    /// `CORS_ALLOW_ORIGIN`: the one browser origin the API answers (never `*`); none when unset.
    pub cors_allow_origin: Option<String>,
    /// Whether CloudWatch metric records are written: in Lambda (`AWS_LAMBDA_FUNCTION_NAME` is
    /// set) or when `METRICS=emf` asks for them elsewhere.
    pub metrics: bool,
    /// `AWS_LAMBDA_FUNCTION_NAME`, or `local` outside Lambda.
    pub function_name: String,
    /// `DAILY_TURN_BUDGET`, `DAILY_TOKEN_BUDGET`, `TURNS_PER_MINUTE`: every user's budgets.
    pub budget: BudgetPolicy,
}

impl Config {
    /// How long stored items live, or `None` to keep them forever.
    pub fn retention(&self) -> Option<Duration> {
        (self.retention_days > 0).then(|| Duration::from_secs(self.retention_days * 86_400))
    }
}

impl Config {
    /// Reads the configuration from the process environment. It changes nothing: the
    /// process-wide parts (the CORS origin, the metric records) are applied by
    /// `shared::startup::apply`.
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
            readiness_cache: vars.millis("READINESS_CACHE_MS", 5_000, 0..=300_000)?,
            aws_connect_timeout: vars.millis("AWS_CONNECT_TIMEOUT_MS", 1_000, 50..=10_000)?,
            aws_operation_timeout: vars.millis("AWS_OPERATION_TIMEOUT_MS", 5_000, 100..=60_000)?,
            retention_days: vars.number("RETENTION_DAYS", 0, 0..=36_500)?,
            work_budget: vars.millis("WORK_BUDGET_MS", 25_000, 1_000..=900_000)?,
            cors_allow_origin: vars.optional("CORS_ALLOW_ORIGIN")?,
            metrics: vars.optional("AWS_LAMBDA_FUNCTION_NAME")?.is_some()
                || vars.optional("METRICS")?.as_deref() == Some("emf"),
            function_name: vars
                .optional("AWS_LAMBDA_FUNCTION_NAME")?
                .unwrap_or_else(|| "local".to_owned()),
            budget: budget::policy(&vars)?,
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
    /// `ECHO_LATENCY_MS`: an artificial delay of the echo provider, standing in for an LLM
    /// (when streaming: the delay before the first word).
    pub echo_latency: Duration,
    /// `ECHO_TOKEN_DELAY_MS`: when the echo provider streams, a delay before each word, standing
    /// in for an LLM's generation time.
    pub echo_token_delay: Duration,
    /// `STREAM_WORK_BUDGET_MS`: the time a streamed answer's work may take (API Gateway lets a
    /// streamed answer run up to 15 minutes; the function's timeout, less the time to store the
    /// turn, bounds this).
    pub stream_budget: Duration,
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
    /// `MAX_OUTPUT_TOKENS`: the most tokens a provider may generate for one reply, sent with
    /// every call, so that a turn's worst case (its input and this cap) is known beforehand.
    pub max_output_tokens: u32,
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
            echo_token_delay: vars.millis("ECHO_TOKEN_DELAY_MS", 0, 0..=60_000)?,
            stream_budget: vars.millis("STREAM_WORK_BUDGET_MS", 170_000, 1_000..=900_000)?,
            system_prompt: vars.optional("SYSTEM_PROMPT")?,
            max_message_chars: vars.number("MAX_MESSAGE_CHARS", 8_000, 1..=100_000)? as usize,
            max_body_bytes: vars.number("MAX_BODY_BYTES", 32 * 1024, 1_024..=1_048_576)? as usize,
            context_messages: vars.number("HISTORY_CONTEXT_MESSAGES", 20, 0..=100)? as u16,
            context_chars: vars.number("HISTORY_CONTEXT_CHARS", 16_000, 0..=1_000_000)? as usize,
            max_output_tokens: vars.number("MAX_OUTPUT_TOKENS", 2_048, 1..=65_536)? as u32,
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
        assert_eq!(config.work_budget, Duration::from_secs(25));
        assert_eq!(config.cors_allow_origin, None);
        assert!(!config.metrics);
        assert_eq!(config.function_name, "local");
    }

    #[test]
    fn metrics_are_on_in_lambda_or_when_asked_for() {
        let required = [("TABLE_NAME", "chat"), ("SECRET_ID", "keys")];
        let with = |extra: (&'static str, &'static str)| {
            let mut pairs = required.to_vec();
            pairs.push(extra);
            config(&pairs).unwrap()
        };
        let lambda = with(("AWS_LAMBDA_FUNCTION_NAME", "chat-fn"));
        assert!(lambda.metrics);
        assert_eq!(lambda.function_name, "chat-fn");
        assert!(with(("METRICS", "emf")).metrics);
        assert!(!with(("METRICS", "off")).metrics);
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
        assert_eq!(config.max_output_tokens, 2_048);
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
