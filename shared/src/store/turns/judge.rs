//! What a cancelled turn transaction means, read from its cancellation reasons by slot.

use aws_sdk_dynamodb::{
    error::SdkError, operation::transact_write_items::TransactWriteItemsError,
    types::CancellationReason,
};

use super::super::StoreError;

/// What a conditional put of a turn found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Stored,
    /// An item with one of our keys exists and was written by someone else.
    Taken,
    /// A transient collision (`TransactionConflict`, throttling): the same write may be retried.
    Retry,
    /// The write timed out: it may or may not have landed; the same write is retried.
    TimedOut,
}

/// The layout of a turn's transaction: the head (put, or updated when it exists), the user's
/// message (none for a regeneration), the reply, then the idempotency completion if any, then
/// the check of the user's erasures if any, then the update of the parent's children item if
/// any (unconditional, so never a reason of its own).
pub(super) struct Slots {
    /// Whether the head is an update of an existing conversation (else a put of a new one).
    pub(super) existing_head: bool,
    /// 2, or 1 for a regeneration.
    pub(super) messages: usize,
    pub(super) completion: bool,
    pub(super) erasures: bool,
}

/// One slot's reason: its code and, for a failed put, the item that was there.
#[derive(Clone, Copy)]
pub(super) struct Reason<'a>(Option<&'a CancellationReason>);

impl Reason<'_> {
    fn failed(self) -> bool {
        self.0
            .and_then(CancellationReason::code)
            .is_some_and(|code| code == "ConditionalCheckFailed")
    }

    /// Whether the item that failed the condition was written by the turn holding `token`.
    fn written_by(self, token: &str) -> bool {
        self.0
            .and_then(CancellationReason::item)
            .and_then(|item| item.get("turn"))
            .and_then(|existing| existing.as_s().ok())
            .is_some_and(|existing| existing == token)
    }
}

/// A cancelled turn transaction, slot by slot.
pub(super) struct Cancelled<'a> {
    existing_head: bool,
    head: Reason<'a>,
    messages: Vec<Reason<'a>>,
    completion: Option<Reason<'a>>,
    erasures: Option<Reason<'a>>,
    /// Some slot failed for a reason other than its condition (a conflict, throttling).
    transient: bool,
}

impl Slots {
    pub(super) fn decode<'a>(&self, reasons: &'a [CancellationReason]) -> Cancelled<'a> {
        let slot = |index: usize| Reason(reasons.get(index));
        Cancelled {
            existing_head: self.existing_head,
            head: slot(0),
            messages: (1..=self.messages).map(slot).collect(),
            completion: self.completion.then(|| slot(1 + self.messages)),
            erasures: self
                .erasures
                .then(|| slot(1 + self.messages + usize::from(self.completion))),
            transient: reasons
                .iter()
                .filter_map(CancellationReason::code)
                .any(|code| code != "None" && code != "ConditionalCheckFailed"),
        }
    }
}

/// A failed check of the user's erasures means all data was erased since the turn's admission;
/// the head of an existing conversation gone means it was deleted; a failed completion means a
/// retry took the idempotency key over; our own items already there mean an earlier attempt
/// whose answer was lost succeeded; someone else's mean the numbers are taken.
pub(super) fn judge(cancelled: &Cancelled<'_>, token: &str) -> Result<Outcome, StoreError> {
    if cancelled.erasures.is_some_and(Reason::failed) {
        return Err(StoreError::Erased);
    }
    if cancelled.existing_head && cancelled.head.failed() {
        return Err(StoreError::NotFound);
    }
    if cancelled.completion.is_some_and(Reason::failed) {
        return Err(StoreError::LeaseLost);
    }
    let puts = std::iter::once(&cancelled.head).chain(&cancelled.messages);
    if puts
        .into_iter()
        .any(|reason| reason.failed() && !reason.written_by(token))
    {
        return Ok(Outcome::Taken);
    }
    Ok(if cancelled.transient {
        Outcome::Retry
    } else {
        Outcome::Stored
    })
}

pub(super) fn cancellation_reasons<R>(
    err: &SdkError<TransactWriteItemsError, R>,
) -> Option<&[CancellationReason]> {
    match err.as_service_error()? {
        TransactWriteItemsError::TransactionCanceledException(cancelled) => {
            Some(cancelled.cancellation_reasons())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::types::AttributeValue;

    use super::*;

    const TOKEN: &str = "ours";

    fn none() -> CancellationReason {
        CancellationReason::builder().code("None").build()
    }

    fn failed(by: Option<&str>) -> CancellationReason {
        let reason = CancellationReason::builder().code("ConditionalCheckFailed");
        match by {
            Some(token) => reason
                .item("turn", AttributeValue::S(token.to_owned()))
                .build(),
            None => reason.build(),
        }
    }

    fn conflict() -> CancellationReason {
        CancellationReason::builder()
            .code("TransactionConflict")
            .build()
    }

    fn verdict(
        existing_head: bool,
        completion: bool,
        reasons: &[CancellationReason],
    ) -> Result<Outcome, StoreError> {
        let slots = Slots {
            existing_head,
            messages: 2,
            completion,
            erasures: false,
        };
        judge(&slots.decode(reasons), TOKEN)
    }

    #[test]
    fn a_failed_check_of_the_erasures_means_the_data_was_erased_whatever_else_failed() {
        let erased = |existing_head, completion, reasons: &[CancellationReason]| {
            let slots = Slots {
                existing_head,
                messages: 2,
                completion,
                erasures: true,
            };
            matches!(
                judge(&slots.decode(reasons), TOKEN),
                Err(StoreError::Erased)
            )
        };
        // The head (gone with the erasure) and the check, after a completion.
        let reasons = [failed(None), none(), none(), none(), failed(None)];
        assert!(erased(true, true, &reasons));
        // Without a completion, the check is slot 3.
        let reasons = [none(), none(), none(), failed(None)];
        assert!(erased(false, false, &reasons));
    }

    #[test]
    fn an_existing_conversation_whose_head_is_gone_was_deleted() {
        let reasons = [failed(None), none(), none()];
        assert!(matches!(
            verdict(true, false, &reasons),
            Err(StoreError::NotFound)
        ));
        // A new conversation's head taken by someone else: the id is taken, not deleted.
        assert_eq!(verdict(false, false, &reasons).ok(), Some(Outcome::Taken));
    }

    #[test]
    fn a_failed_completion_means_the_lease_was_lost() {
        let reasons = [none(), none(), none(), failed(None)];
        assert!(matches!(
            verdict(true, true, &reasons),
            Err(StoreError::LeaseLost)
        ));
        // Without a completion there is no slot 3: whatever a fourth reason says is no lost
        // lease.
        assert_eq!(verdict(true, false, &reasons).ok(), Some(Outcome::Stored));
    }

    #[test]
    fn our_own_messages_mean_an_earlier_attempt_landed_and_others_mean_taken() {
        let ours = [none(), failed(Some(TOKEN)), failed(Some(TOKEN))];
        assert_eq!(verdict(true, false, &ours).ok(), Some(Outcome::Stored));
        let theirs = [none(), failed(Some("someone else")), none()];
        assert_eq!(verdict(true, false, &theirs).ok(), Some(Outcome::Taken));
    }

    #[test]
    fn a_regeneration_has_one_message_slot() {
        let slots = Slots {
            existing_head: true,
            messages: 1,
            completion: true,
            erasures: false,
        };
        let lost = [none(), none(), failed(None)];
        assert!(matches!(
            judge(&slots.decode(&lost), TOKEN),
            Err(StoreError::LeaseLost)
        ));
        let theirs = [none(), failed(Some("someone else")), none()];
        assert_eq!(
            judge(&slots.decode(&theirs), TOKEN).ok(),
            Some(Outcome::Taken)
        );
    }

    #[test]
    fn a_transient_cancellation_is_retried() {
        let reasons = [none(), conflict(), none()];
        assert_eq!(verdict(true, false, &reasons).ok(), Some(Outcome::Retry));
    }
}
