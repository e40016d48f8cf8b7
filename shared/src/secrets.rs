//! LLM provider keys: one Secrets Manager secret holding a JSON object
//! (`{"openai_api_key": "...", "gemini_api_key": "..."}`), cached for a TTL.
//!
//! Keys are held as [`SecretString`]s, which never print. A key rejected by its provider is
//! refreshed at once (`refresh`), so a rotated key is picked up on the next call, not after the TTL.
//! When a refresh fails transiently, the last good keys keep serving.
//!
//! Why not AWS's `aws_secretsmanager_caching` crate: it depends on `aws-config` with its default
//! features (SSO, credential processes), which added 2.8 MB to every function's binary (health:
//! 10.2 MB to 13.0 MB), and its errors are not `Send`. This cache is a few lines.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use secrecy::SecretString;
use tokio::sync::Mutex;

/// Why the keys could not be read. Never carries a key.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("the provider keys secret could not be read: {0}")]
    Unavailable(String),
    #[error("the provider keys secret is not a JSON object of strings")]
    Malformed,
}

/// The provider keys of one secret version, by name.
#[derive(Clone, Default)]
pub(crate) struct Keys(Arc<HashMap<String, SecretString>>);

impl Keys {
    pub(crate) fn get(&self, name: &str) -> Option<&SecretString> {
        self.0.get(name)
    }

    fn parse(text: &str) -> Result<Self, SecretsError> {
        let map: HashMap<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|_| SecretsError::Malformed)?;
        let mut keys = HashMap::new();
        for (name, value) in map {
            match value {
                serde_json::Value::String(key) if !key.trim().is_empty() => {
                    keys.insert(name, SecretString::from(key.trim().to_owned()));
                }
                // An empty value means "no key": the provider stays disabled.
                serde_json::Value::String(_) | serde_json::Value::Null => {}
                _ => return Err(SecretsError::Malformed),
            }
        }
        Ok(Self(Arc::new(keys)))
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.0.keys().collect();
        names.sort();
        f.debug_struct("Keys")
            .field("names", &names)
            .finish_non_exhaustive()
    }
}

/// The cached reader of the provider keys secret. Build once per execution environment.
pub struct ProviderKeys {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
    ttl: Duration,
    cached: Mutex<Option<(Instant, Keys)>>,
}

impl ProviderKeys {
    /// `ttl`: how long a read value is served before Secrets Manager is asked again.
    pub fn new(
        client: aws_sdk_secretsmanager::Client,
        secret_id: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        Self {
            client,
            secret_id: secret_id.into(),
            ttl,
            cached: Mutex::new(None),
        }
    }

    /// The current keys; `refresh` bypasses the cache (after a provider rejected a key).
    pub(crate) async fn get(&self, refresh: bool) -> Result<Keys, SecretsError> {
        // One reader at a time: concurrent callers wait for one fetch instead of each making one.
        let mut cached = self.cached.lock().await;
        if let Some((fetched, keys)) = cached.as_ref() {
            if !refresh && fetched.elapsed() < self.ttl {
                return Ok(keys.clone());
            }
        }
        match self.fetch().await {
            Ok(keys) => {
                *cached = Some((Instant::now(), keys.clone()));
                Ok(keys)
            }
            Err(SecretsError::Unavailable(reason)) if cached.is_some() => {
                tracing::warn!(
                    reason,
                    "could not refresh the provider keys; serving the cached ones"
                );
                Ok(cached
                    .as_ref()
                    .map(|(_, keys)| keys.clone())
                    .unwrap_or_default())
            }
            Err(err) => Err(err),
        }
    }

    async fn fetch(&self) -> Result<Keys, SecretsError> {
        let output = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|err| {
                SecretsError::Unavailable(
                    aws_sdk_secretsmanager::error::DisplayErrorContext(&err).to_string(),
                )
            })?;
        Keys::parse(output.secret_string().ok_or(SecretsError::Malformed)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn keys_parse_and_never_print() {
        let keys = Keys::parse(r#"{"openai_api_key":"sk-live-123","gemini_api_key":""}"#).unwrap();
        assert_eq!(
            keys.get("openai_api_key").unwrap().expose_secret(),
            "sk-live-123"
        );
        assert!(
            keys.get("gemini_api_key").is_none(),
            "an empty key is no key"
        );
        let printed = format!("{keys:?}");
        assert!(!printed.contains("sk-live-123"), "{printed}");
        assert!(printed.contains("openai_api_key"));
    }

    #[test]
    fn a_secret_that_is_not_an_object_of_strings_is_malformed() {
        assert!(matches!(
            Keys::parse("sk-123"),
            Err(SecretsError::Malformed)
        ));
        assert!(matches!(
            Keys::parse(r#"{"k": 5}"#),
            Err(SecretsError::Malformed)
        ));
        assert!(matches!(Keys::parse("[]"), Err(SecretsError::Malformed)));
    }
}
