//! Amazon Bedrock's Converse API through the AWS SDK: `Converse` for whole answers,
//! `ConverseStream` for streamed ones (an `application/vnd.amazon.eventstream` body), signed with
//! the function's own credentials (no key in the secret). With a guardrail configured, every call
//! names it; when it intervenes, Bedrock answers with the guardrail's own message (stop reason
//! `guardrail_intervened`), which is the reply shown and stored.

use std::time::Duration;

use aws_sdk_bedrockruntime::{
    error::SdkError,
    types::{
        CachePointBlock, CachePointType, ContentBlock, ConversationRole, ConverseOutput,
        GuardrailConfiguration, GuardrailStreamConfiguration, GuardrailStreamProcessingMode,
        InferenceConfiguration, Message, SystemContentBlock,
    },
    Client,
};
use tokio::sync::OnceCell;

use super::{
    alternating,
    stream::{failure, usage, ConverseSource, Source},
    BoxFuture, Call, Provider, ProviderError, Role, WholeReply,
};

/// Where the client comes from: the SDK's default chain (the function's role, the developer's
/// credentials), in `region` when set (`BEDROCK_REGION`), at `endpoint` when set
/// (`AWS_ENDPOINT_URL_BEDROCK_RUNTIME`).
#[derive(Clone, Debug, Default)]
pub(super) struct BedrockSettings {
    pub(super) region: Option<String>,
    pub(super) endpoint: Option<String>,
    pub(super) connect_timeout: Duration,
    /// A guardrail applied to every call: its id (or ARN) and version.
    pub(super) guardrail: Option<(String, String)>,
    /// `BEDROCK_PROMPT_CACHE`: cache points where the model takes them.
    pub(super) prompt_cache: bool,
}

pub(super) struct Bedrock {
    settings: BedrockSettings,
    /// Built at the first call: loading the SDK's configuration is async, and chat's state is not.
    client: OnceCell<Client>,
}

impl Bedrock {
    pub(super) fn new(settings: BedrockSettings) -> Self {
        Self {
            settings,
            client: OnceCell::new(),
        }
    }

    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async {
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .timeout_config(
                        aws_config::timeout::TimeoutConfig::builder()
                            .connect_timeout(self.settings.connect_timeout)
                            .build(),
                    );
                if let Some(region) = &self.settings.region {
                    loader = loader.region(aws_config::Region::new(region.clone()));
                }
                let sdk = loader.load().await;
                // No retries inside the SDK: each attempt is ours to admit against the turn's
                // budget, and to count in the breaker (`resilient/fallback.rs`).
                let mut config = aws_sdk_bedrockruntime::config::Builder::from(&sdk)
                    .retry_config(aws_config::retry::RetryConfig::disabled());
                if let Some(endpoint) = &self.settings.endpoint {
                    config = config.endpoint_url(endpoint);
                }
                Client::from_conf(config.build())
            })
            .await
    }
}

/// The context as Converse takes it: roles alternating, starting with the user; with
/// `cache_older`, a cache point after the older part (at the end of the message before the new
/// one), so that the next turn reads that prefix from the prompt cache.
fn messages(call: &Call<'_>, cache_older: bool) -> Result<Vec<Message>, ProviderError> {
    let turns = alternating(call.messages);
    let older = turns.len().saturating_sub(1);
    turns
        .into_iter()
        .enumerate()
        .map(|(index, (role, content))| {
            let mut message = Message::builder()
                .role(match role {
                    Role::User => ConversationRole::User,
                    Role::Assistant => ConversationRole::Assistant,
                })
                .content(ContentBlock::Text(content.into_owned()));
            if cache_older && index + 1 == older {
                message = message.content(ContentBlock::CachePoint(cache_point()?));
            }
            message
                .build()
                .map_err(|err| ProviderError::Malformed(format!("a message: {err}")))
        })
        .collect()
}

fn cache_point() -> Result<CachePointBlock, ProviderError> {
    CachePointBlock::builder()
        .r#type(CachePointType::Default)
        .build()
        .map_err(|err| ProviderError::Malformed(format!("a cache point: {err}")))
}

/// Whether a model takes cache points (Bedrock's prompt caching: Anthropic's Claude and Amazon's
/// Nova; other models refuse a request that has them), by its id or inference profile's.
fn caches(model: &str) -> bool {
    model.contains("anthropic.claude") || model.contains("amazon.nova")
}

/// What `Converse` and `ConverseStream` both take: the messages, the system prompt, the cap.
struct Parts {
    messages: Vec<Message>,
    system: Option<Vec<SystemContentBlock>>,
    inference: InferenceConfiguration,
}

impl Parts {
    /// With `cache` (`BEDROCK_PROMPT_CACHE`) and a model that takes them, cache points after the
    /// system prompt and after the older part of the conversation.
    fn of(call: &Call<'_>, cache: bool) -> Result<Self, ProviderError> {
        let cache = cache && caches(call.model);
        let system = match call.system {
            Some(system) if cache => Some(vec![
                SystemContentBlock::Text(system.to_owned()),
                SystemContentBlock::CachePoint(cache_point()?),
            ]),
            Some(system) => Some(vec![SystemContentBlock::Text(system.to_owned())]),
            None => None,
        };
        Ok(Self {
            messages: messages(call, cache)?,
            system,
            inference: InferenceConfiguration::builder()
                .max_tokens(i32::try_from(call.max_output_tokens).unwrap_or(i32::MAX))
                .build(),
        })
    }
}

fn status_of<E>(
    err: &SdkError<E, aws_sdk_bedrockruntime::config::http::HttpResponse>,
) -> Option<u16> {
    err.raw_response()
        .map(|response| response.status().as_u16())
}

impl Provider for Bedrock {
    fn name(&self) -> &str {
        "bedrock"
    }

    /// Builds the client (the SDK's configuration chain) ahead of the first call. Bedrock's
    /// runtime has no request that costs nothing, so no connection is opened.
    fn connect<'a>(
        &'a self,
        _key: Option<&'a secrecy::SecretString>,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            self.client().await;
            Ok(())
        })
    }

    fn key_name(&self) -> Option<&str> {
        None
    }

    fn complete<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<WholeReply, ProviderError>> {
        Box::pin(async move {
            let parts = Parts::of(&call, self.settings.prompt_cache)?;
            let guardrail = self.settings.guardrail.as_ref().map(|(id, version)| {
                GuardrailConfiguration::builder()
                    .guardrail_identifier(id)
                    .guardrail_version(version)
                    .build()
            });
            let request = self
                .client()
                .await
                .converse()
                .model_id(call.model)
                .set_messages(Some(parts.messages))
                .set_system(parts.system)
                .inference_config(parts.inference)
                .set_guardrail_config(guardrail);
            let output = tokio::time::timeout(call.timeout, request.send())
                .await
                .map_err(|_| ProviderError::TimedOut)?
                .map_err(|err| failure(&err, status_of(&err)))?;
            let text: String = match output.output() {
                Some(ConverseOutput::Message(message)) => message
                    .content()
                    .iter()
                    .filter_map(|block| block.as_text().ok())
                    .map(String::as_str)
                    .collect(),
                _ => String::new(),
            };
            if text.is_empty() {
                return Err(ProviderError::Malformed("no text content".to_owned()));
            }
            Ok(WholeReply {
                text,
                usage: output.usage().map(usage),
            })
        })
    }

    fn stream<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<Source, ProviderError>> {
        Box::pin(async move {
            let parts = Parts::of(&call, self.settings.prompt_cache)?;
            // Asynchronous: the reply streams as it comes while the guardrail checks it
            // alongside (a synchronous one would hold every piece until it is checked).
            let guardrail = self.settings.guardrail.as_ref().map(|(id, version)| {
                GuardrailStreamConfiguration::builder()
                    .guardrail_identifier(id)
                    .guardrail_version(version)
                    .stream_processing_mode(GuardrailStreamProcessingMode::Async)
                    .build()
            });
            let request = self
                .client()
                .await
                .converse_stream()
                .model_id(call.model)
                .set_messages(Some(parts.messages))
                .set_system(parts.system)
                .inference_config(parts.inference)
                .set_guardrail_config(guardrail);
            let output = request
                .send()
                .await
                .map_err(|err| failure(&err, status_of(&err)))?;
            Ok(Source::Bedrock(ConverseSource {
                stream: output.stream,
                finished: false,
            }))
        })
    }
}
