//! What a request may choose: the enabled providers that have a key, and their models.

use super::{Choice, Llm, LlmError, Slot};
use crate::secrets::{Keys, SecretsError};

/// A provider clients may choose, and its models (the first is its default).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Offer {
    pub provider: String,
    pub models: Vec<String>,
}

impl Llm {
    /// What clients may choose: the enabled providers that have a key, each with its models (the
    /// first is its default), and the default provider first if it is offered. Nothing secret.
    pub async fn offered(&self) -> Result<Vec<Offer>, LlmError> {
        let keys = self.keys_if_needed().await?;
        let mut offers: Vec<Offer> = self
            .slots
            .iter()
            .filter(|slot| self.has_key(slot, &keys))
            .map(|slot| Offer {
                provider: slot.settings.provider.name().to_owned(),
                models: slot.settings.models.clone(),
            })
            .collect();
        if let Some(at) = offers
            .iter()
            .position(|offer| offer.provider == self.config.default_provider)
        {
            offers[..=at].rotate_right(1);
        }
        Ok(offers)
    }

    /// Checks a request's provider and model against what is enabled and has a key.
    pub async fn choose(
        &self,
        provider: Option<&str>,
        model: Option<&str>,
    ) -> Result<Choice, LlmError> {
        let name = provider.unwrap_or(&self.config.default_provider);
        let enabled = || self.providers().collect::<Vec<_>>().join(", ");
        let (index, slot) = self.slot(name).ok_or_else(|| LlmError::Invalid {
            field: "provider",
            detail: format!("unknown or disabled provider; enabled: {}", enabled()),
        })?;
        let models = &slot.settings.models;
        let model = match model {
            None => models.first().cloned().unwrap_or_default(),
            Some(model) if models.iter().any(|allowed| allowed == model) => model.to_owned(),
            Some(_) => {
                return Err(LlmError::Invalid {
                    field: "model",
                    detail: format!("not allowed for {name}; allowed: {}", models.join(", ")),
                })
            }
        };
        let keys = self.keys_if_needed().await?;
        if !self.has_key(slot, &keys) {
            return Err(LlmError::Invalid {
                field: "provider",
                detail: format!("{name} has no API key configured"),
            });
        }
        Ok(Choice {
            index,
            provider: name.to_owned(),
            model,
            keys,
        })
    }

    /// Reads the keys only if some enabled provider needs one.
    async fn keys_if_needed(&self) -> Result<Keys, SecretsError> {
        if self
            .slots
            .iter()
            .any(|slot| slot.settings.provider.key_name().is_some())
        {
            self.keys.get(false).await
        } else {
            Ok(Keys::default())
        }
    }

    pub(super) fn has_key(&self, slot: &Slot, keys: &Keys) -> bool {
        slot.settings
            .provider
            .key_name()
            .is_none_or(|name| keys.get(name).is_some())
    }
}
