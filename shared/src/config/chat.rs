//! The chat function's settings: its providers, their models and limits, and the LLM client's
//! timeouts, retries and breakers.

use std::time::Duration;

use super::{ConfigError, Vars};

/// Settings of the chat function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatConfig {
    /// `LLM_PROVIDERS`: the enabled providers, comma-separated (`openai`, `gemini`, `anthropic`, `bedrock`, `echo`).
    pub providers: Vec<String>,
    /// `LLM_DEFAULT_PROVIDER`: used when a request names none (default: the first enabled).
    pub default_provider: String,
    /// `PROVIDER_FALLBACK`: tried in order when the chosen provider fails.
    pub fallback: Vec<String>,
    /// `OPENAI_BASE_URL`: any OpenAI-compatible server (Ollama, vLLM, llama.cpp).
    pub openai_base_url: String,
    /// `OPENAI_MODELS`: the models clients may ask for; the first is the default.
    pub openai_models: Vec<String>,
    /// `ANTHROPIC_BASE_URL`: up to and including `/v1`.
    pub anthropic_base_url: String,
    /// `ANTHROPIC_MODELS`.
    pub anthropic_models: Vec<String>,
    /// `BEDROCK_MODELS`: foundation-model or inference-profile ids (`us.`, `eu.`, `global.`).
    pub bedrock_models: Vec<String>,
    /// `BEDROCK_REGION`: Bedrock's region when it is not the function's.
    pub bedrock_region: Option<String>,
    /// `BEDROCK_GUARDRAIL_ID` and `BEDROCK_GUARDRAIL_VERSION`: a Bedrock guardrail every Bedrock
    /// call names; none when the id is unset.
    pub bedrock_guardrail: Option<(String, String)>,
    /// `BEDROCK_PROMPT_CACHE` (`true` or `false`, the default): cache points after the system
    /// prompt and the older part of the conversation, for the models that take them.
    pub bedrock_prompt_cache: bool,
    /// `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`: another Bedrock endpoint (a stub in tests).
    pub bedrock_endpoint: Option<String>,
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
    /// `LLM_TLS_ROOTS`: what the providers' certificates are checked against: `bundled`
    /// (Mozilla's roots, compiled in; the default) or `system` (the platform's store, which
    /// honours `SSL_CERT_FILE` and `SSL_CERT_DIR`: for a private CA in front of a provider).
    pub system_tls_roots: bool,
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

const KNOWN_PROVIDERS: [&str; 5] = ["openai", "gemini", "anthropic", "bedrock", "echo"];

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
            anthropic_base_url: vars.url("ANTHROPIC_BASE_URL", "https://api.anthropic.com/v1")?,
            anthropic_models: vars
                .list("ANTHROPIC_MODELS", "claude-sonnet-4-5,claude-haiku-4-5")?,
            bedrock_models: vars.list(
                "BEDROCK_MODELS",
                "us.anthropic.claude-sonnet-4-5-20250929-v1:0,us.amazon.nova-lite-v1:0",
            )?,
            bedrock_region: vars.optional("BEDROCK_REGION")?,
            bedrock_guardrail: match vars.optional("BEDROCK_GUARDRAIL_ID")? {
                Some(id) => Some((
                    id,
                    vars.optional("BEDROCK_GUARDRAIL_VERSION")?
                        .ok_or(ConfigError::Invalid {
                            var: "BEDROCK_GUARDRAIL_VERSION",
                            reason: "BEDROCK_GUARDRAIL_ID names a guardrail; its version (a number, or DRAFT) is missing".to_owned(),
                        })?,
                )),
                None => None,
            },
            bedrock_endpoint: vars.optional("AWS_ENDPOINT_URL_BEDROCK_RUNTIME")?,
            bedrock_prompt_cache: match vars.optional("BEDROCK_PROMPT_CACHE")?.as_deref() {
                None | Some("false") => false,
                Some("true") => true,
                Some(other) => {
                    return Err(ConfigError::Invalid {
                        var: "BEDROCK_PROMPT_CACHE",
                        reason: format!("{other:?} is neither true nor false"),
                    })
                }
            },
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
            system_tls_roots: match vars.optional("LLM_TLS_ROOTS")?.as_deref() {
                None | Some("bundled") => false,
                Some("system") => true,
                Some(other) => {
                    return Err(ConfigError::Invalid {
                        var: "LLM_TLS_ROOTS",
                        reason: format!("{other:?} is neither bundled nor system"),
                    })
                }
            },
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

    fn chat(pairs: &[(&str, &str)]) -> Result<ChatConfig, ConfigError> {
        ChatConfig::from_lookup(super::super::lookup_of(pairs))
    }

    #[test]
    fn bedrock_s_guardrail_needs_its_version_and_its_prompt_cache_is_true_or_false() {
        assert_eq!(chat(&[]).unwrap().bedrock_guardrail, None);
        let guarded = chat(&[
            ("BEDROCK_GUARDRAIL_ID", "gr4x1y2z3abc"),
            ("BEDROCK_GUARDRAIL_VERSION", "DRAFT"),
        ])
        .unwrap();
        assert_eq!(
            guarded.bedrock_guardrail,
            Some(("gr4x1y2z3abc".to_owned(), "DRAFT".to_owned()))
        );
        assert!(!chat(&[]).unwrap().bedrock_prompt_cache);
        assert!(
            chat(&[("BEDROCK_PROMPT_CACHE", "true")])
                .unwrap()
                .bedrock_prompt_cache
        );
        assert!(chat(&[("BEDROCK_PROMPT_CACHE", "yes")]).is_err());
        let err = chat(&[("BEDROCK_GUARDRAIL_ID", "gr4x1y2z3abc")]).unwrap_err();
        assert!(
            err.to_string().contains("BEDROCK_GUARDRAIL_VERSION"),
            "{err}"
        );
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
    fn the_providers_tls_roots_are_bundled_unless_the_system_store_is_asked_for() {
        assert!(!chat(&[]).unwrap().system_tls_roots);
        assert!(
            !chat(&[("LLM_TLS_ROOTS", "bundled")])
                .unwrap()
                .system_tls_roots
        );
        assert!(
            chat(&[("LLM_TLS_ROOTS", "system")])
                .unwrap()
                .system_tls_roots
        );
        let err = chat(&[("LLM_TLS_ROOTS", "mozilla")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("LLM_TLS_ROOTS") && err.contains("\"mozilla\""),
            "{err}"
        );
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
}
