//! The store's errors, and how an SDK failure becomes one.

use aws_sdk_dynamodb::{
    error::{ProvideErrorMetadata, SdkError},
    operation::{
        delete_item::DeleteItemError, put_item::PutItemError, update_item::UpdateItemError,
    },
};

use super::{InvalidCursor, BACKOFF};
use crate::BoxError;

/// How many times a single-item write is sent while it collides with a transaction.
const CONFLICT_ATTEMPTS: u32 = 4;

/// What can go wrong in the store. The HTTP layer maps each to an answer (`http::error`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The conversation does not exist in the caller's partition (or it is someone else's).
    #[error("conversation not found")]
    NotFound,
    /// The message does not exist, is not a reply, or is in a conversation the caller lacks.
    #[error("message not found")]
    MessageNotFound,
    /// The conversation's active branch changed (a turn was stored, or another switch landed)
    /// between reading it and switching it.
    #[error("the conversation changed while switching branches: a turn was stored or another switch landed; read it again")]
    BranchMoved,
    /// Writers kept colliding after every retry.
    #[error("the write kept conflicting after {attempts} attempts")]
    Conflict { attempts: u32 },
    #[error(transparent)]
    InvalidCursor(#[from] InvalidCursor),
    /// A deletion could not finish before the deadline; a retry continues where it stopped.
    #[error("deleted {deleted} items before the deadline; {remaining} or more remain")]
    Incomplete { deleted: usize, remaining: usize },
    /// DynamoDB throttled us or failed transiently, after the SDK's own retries.
    #[error("the table is unavailable")]
    Unavailable(#[source] BoxError),
    /// A turn's write was sent but never confirmed (it kept timing out, or time ran out): it may
    /// have been stored.
    #[error("the turn's write was not confirmed; it may have been stored")]
    Unconfirmed,
    /// The idempotency key is held by a request that is still running.
    #[error("a request with this Idempotency-Key is still in progress")]
    KeyInProgress,
    /// The idempotency key was used with another request.
    #[error("this Idempotency-Key was used with a different request")]
    KeyReused,
    /// The request's lease on its idempotency key ran out and a retry took the key over; this
    /// request stored nothing.
    #[error("a newer request with this Idempotency-Key took over; this one stored nothing")]
    LeaseLost,
    /// The user's data was erased (`DELETE /history`) after this turn was admitted: it stored
    /// nothing.
    #[error("all data was erased while this turn ran; nothing of it was stored")]
    Erased,
    /// The user's daily budget cannot take this turn; it renews in `retry_after_secs`.
    #[error("the daily budget is spent")]
    QuotaExceeded {
        exhausted: super::Exhausted,
        retry_after_secs: u64,
    },
    /// The user started as many turns this minute as a minute allows.
    #[error("{per_minute} turns a minute is the limit")]
    RateLimited {
        per_minute: u64,
        retry_after_secs: u64,
    },
    /// An item in the table does not have the shape we write.
    #[error("malformed item in the table: {0}")]
    Corrupt(String),
    #[error("the table rejected the request")]
    Internal(#[source] BoxError),
}

impl StoreError {
    /// Whether the failed operation may nevertheless have been stored.
    pub fn may_have_been_stored(&self) -> bool {
        matches!(self, Self::Unconfirmed)
    }
}

/// The store's error for a failed SDK call: throttling and transient failures that outlived the
/// SDK's retries are `Unavailable` (503); anything else is an internal error.
pub(super) fn from_sdk<E, R>(err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let transient = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => is_transient_code(service.err().code()),
        _ => false,
    };
    let cause: BoxError = Box::new(err);
    if transient {
        StoreError::Unavailable(cause)
    } else {
        StoreError::Internal(cause)
    }
}

/// Service error codes worth trying again later.
fn is_transient_code(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "ProvisionedThroughputExceededException"
                | "RequestLimitExceeded"
                | "ThrottlingException"
                | "TransactionConflictException"
                | "InternalServerError"
                | "ServiceUnavailable"
        )
    )
}

/// The error of a single-item write, which says by its type why the write was refused.
pub(super) trait WriteError {
    /// The write's condition did not hold.
    fn condition_failed(&self) -> bool;
    /// A transaction in flight on the same item stood in the way.
    fn transaction_conflict(&self) -> bool;
}

macro_rules! write_error {
    ($($error:ty),*) => {$(
        impl WriteError for $error {
            fn condition_failed(&self) -> bool {
                self.is_conditional_check_failed_exception()
            }
            fn transaction_conflict(&self) -> bool {
                self.is_transaction_conflict_exception()
            }
        }
    )*};
}

write_error!(PutItemError, UpdateItemError, DeleteItemError);

/// A single-item write that collided with a transaction in flight on the same item: the same
/// write may be tried again at once.
pub(super) fn is_transaction_conflict<E: WriteError, R>(err: &SdkError<E, R>) -> bool {
    err.as_service_error().is_some_and(E::transaction_conflict)
}

/// Sends a single-item write, and again while it collides with a transaction in flight on its
/// item (a turn's transaction settles the budget item and checks the conversation's head), with
/// the store's backoff between, at most `CONFLICT_ATTEMPTS` times. A conflict that outlasts them
/// is transient to [`from_sdk`].
pub(super) async fn retry_conflicts<T, E, R, F>(
    mut send: impl FnMut() -> F,
) -> Result<T, SdkError<E, R>>
where
    E: WriteError,
    F: std::future::Future<Output = Result<T, SdkError<E, R>>>,
{
    let mut attempt = 1;
    loop {
        match send().await {
            Err(err) if is_transaction_conflict(&err) && attempt < CONFLICT_ATTEMPTS => {
                tracing::info!(attempt, "a write collided with a transaction; retrying");
                tokio::time::sleep(BACKOFF.pause(attempt)).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// A conditional write whose condition did not hold (nothing was written).
pub(super) fn is_condition_failed<E: WriteError, R>(err: &SdkError<E, R>) -> bool {
    err.as_service_error().is_some_and(E::condition_failed)
}

/// A call whose outcome is unknown: it may or may not have been carried out.
pub(super) fn is_timeout<E, R>(err: &SdkError<E, R>) -> bool {
    match err {
        SdkError::TimeoutError(_) => true,
        SdkError::DispatchFailure(failure) => failure.is_timeout(),
        _ => false,
    }
}
