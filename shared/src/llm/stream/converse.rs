//! Bedrock's `ConverseStream` answer, read through the AWS SDK's event receiver (the frames of
//! `application/vnd.amazon.eventstream`); and how Bedrock's failures sort into
//! [`ProviderError`]s, before the stream or within it.

use aws_sdk_bedrockruntime::{
    error::{ProvideErrorMetadata, SdkError},
    types::{ContentBlockDelta, ConverseStreamOutput},
};

use super::Piece;
use crate::{
    domain::TokenUsage,
    llm::{Billed, ProviderError},
};

pub(in crate::llm) fn usage(usage: &aws_sdk_bedrockruntime::types::TokenUsage) -> TokenUsage {
    let count = |n: i32| u64::try_from(n).unwrap_or(0);
    TokenUsage {
        // Input read from and written to the prompt cache is input too.
        input_tokens: count(usage.input_tokens())
            + count(usage.cache_read_input_tokens().unwrap_or(0))
            + count(usage.cache_write_input_tokens().unwrap_or(0)),
        output_tokens: count(usage.output_tokens()),
    }
}

/// Sorts an SDK failure: throttling, unavailability, internal and model errors are transient
/// (retried, then the fallback); validation, access denied and an unknown model are Bedrock
/// refusing the request; a request that never left is billed nothing.
pub(in crate::llm) fn failure<E: ProvideErrorMetadata, R>(
    err: &SdkError<E, R>,
    status: Option<u16>,
) -> ProviderError {
    match err {
        SdkError::TimeoutError(_) => ProviderError::TimedOut,
        SdkError::DispatchFailure(failure) => ProviderError::Transient {
            reason: "connect error".to_owned(),
            retry_after: None,
            billed: if failure.is_io() || failure.is_timeout() {
                Billed::Nothing
            } else {
                Billed::Whole
            },
        },
        SdkError::ResponseError(_) => {
            ProviderError::Malformed("the answer is not what Converse returns".to_owned())
        }
        _ => {
            let code = err.code().unwrap_or("an unnamed error");
            match code {
                "ThrottlingException"
                | "ServiceUnavailableException"
                | "InternalServerException"
                | "ModelNotReadyException"
                | "ModelTimeoutException"
                | "ModelErrorException"
                | "ModelStreamErrorException" => ProviderError::Transient {
                    reason: code.to_owned(),
                    retry_after: None,
                    billed: Billed::Input,
                },
                "AccessDeniedException" | "UnrecognizedClientException" => {
                    ProviderError::Rejected { status: 403 }
                }
                _ => ProviderError::Rejected {
                    status: status.unwrap_or(400),
                },
            }
        }
    }
}

/// A `ConverseStream` answer being read.
pub(in crate::llm) struct ConverseSource {
    pub(in crate::llm) stream: aws_sdk_bedrockruntime::primitives::event_stream::EventReceiver<
        ConverseStreamOutput,
        aws_sdk_bedrockruntime::types::error::ConverseStreamOutputError,
    >,
    /// `messageStop` came: the end of the body is then the normal end.
    pub(in crate::llm) finished: bool,
}

impl ConverseSource {
    /// The next piece; `Ok(None)` at the normal end. `messageStop` says the reply is complete;
    /// `metadata` (after it) carries the usage.
    pub(in crate::llm) async fn next(&mut self) -> Result<Option<Piece>, ProviderError> {
        loop {
            let event = match self.stream.recv().await {
                Ok(Some(event)) => event,
                Ok(None) if self.finished => return Ok(None),
                Ok(None) => {
                    return Err(ProviderError::Transient {
                        reason: "the stream ended before the reply was complete".to_owned(),
                        retry_after: None,
                        billed: Billed::Whole,
                    })
                }
                Err(err) => {
                    return Err(match failure(&err, None) {
                        // Midway, whatever the model produced is billed.
                        ProviderError::Transient { reason, .. } => ProviderError::Transient {
                            reason,
                            retry_after: None,
                            billed: Billed::Whole,
                        },
                        other => other,
                    });
                }
            };
            let piece = match event {
                ConverseStreamOutput::ContentBlockDelta(delta) => match delta.delta {
                    Some(ContentBlockDelta::Text(text)) => Piece {
                        text,
                        ..Piece::default()
                    },
                    _ => continue,
                },
                ConverseStreamOutput::MessageStop(_) => {
                    self.finished = true;
                    Piece {
                        finished: true,
                        ..Piece::default()
                    }
                }
                ConverseStreamOutput::Metadata(metadata) => Piece {
                    usage: metadata.usage.as_ref().map(usage),
                    finished: self.finished,
                    ..Piece::default()
                },
                _ => continue,
            };
            return Ok(Some(piece));
        }
    }
}
