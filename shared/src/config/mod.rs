//! Configuration, read from environment variables once per execution environment.
//!
//! A missing or malformed variable fails the cold start with an error that names it, so a
//! misconfigured deployment is visible in the first log line instead of in the first request.
//! Reading is all it does: the settings are plain data, applied by `shared::startup`.

mod budget;
mod chat;
mod feedback;
mod vars;

pub use budget::{budget_policy, BudgetPolicy, DailyBudget};
pub use chat::ChatConfig;
pub use feedback::FeedbackConfig;

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
    /// `CONNECT_AT_INIT_MS`: the longest init waits for what the first call would otherwise
    /// open itself (DynamoDB's connections; chat's provider keys and a connection to its default
    /// provider: `shared::startup::connect_at_init`); `0` opens nothing ahead.
    pub connect_at_init: Duration,
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
            connect_at_init: vars.millis("CONNECT_AT_INIT_MS", 1_000, 0..=5_000)?,
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

/// The variables `pairs` set, as a lookup (the tests' environment).
#[cfg(test)]
fn lookup_of<'a>(pairs: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| {
        pairs
            .iter()
            .find(|(var, _)| *var == name)
            .map(|(_, value)| (*value).to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_lookup(lookup_of(pairs))
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
