//! What a turn is charged. The rule: a turn that sent no provider request is refunded whole (its
//! turn and its reservation); a turn that sent any is charged for every request it sent, whatever
//! became of its write, and keeps its turn:
//!
//! - the answered request: the provider's reported usage, or, if it reported none (a stopped or
//!   broken stream, a server that omits it), the admission's byte bound of the input and of the
//!   text generated;
//! - each failed request: nothing if it never reached the provider or was refused
//!   unauthenticated, its input bound if the provider refused it with a status, and its whole
//!   bound (input and output cap) if the provider may have answered it (a timeout, a broken
//!   connection);
//! - at most twice what the turn reserved: a provider that ignores the output cap overdraws the
//!   day by at most one reservation; what it billed beyond that is logged and counted
//!   (`UnchargedTokens`), not charged.
//!
//! Each request after the first (a retry, a fallback) is admitted against the budget before it
//! is sent ([`Account`] is the LLM client's [`Tab`]); a refused one ends the turn with the 429.

use std::sync::{Arc, Mutex, PoisonError};

use shared::{
    domain::TokenUsage,
    llm::{Billed, BoxFuture, RequestBound, Tab},
    store::{ConversationStore, Erasures, Grant, StoreError, Usage},
};

/// A turn's account with the user's budget, from its admission to its settlement.
pub(crate) struct Account {
    store: Arc<ConversationStore>,
    /// The most one request of this turn may be billed.
    bound: RequestBound,
    ledger: Mutex<Ledger>,
}

#[derive(Debug)]
struct Ledger {
    grant: Grant,
    /// Reservations admitted and not yet spent on a request (the turn's admission is the first).
    unspent: u32,
    /// Requests that may have reached a provider.
    sent: u32,
    /// Charged for requests that failed.
    failed: u64,
    /// Charged for the request that answered, once it has.
    answered: Option<u64>,
    /// Why a further request was not admitted.
    refusal: Option<StoreError>,
    /// Whether the account was closed (settled or refunded).
    closed: bool,
}

/// What closing an account does.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Closing {
    /// Nothing was sent: give the turn and its reservation back.
    Refund,
    /// Settle the turn to this many tokens.
    Settle { charge: u64, uncharged: u64 },
}

impl Ledger {
    fn closing(&self) -> Closing {
        let billed = self.failed.saturating_add(self.answered.unwrap_or(0));
        closing(self.sent, billed, self.grant.reserved())
    }
}

/// The rule of this module's header, as numbers: `sent` requests billed `billed` tokens in all,
/// for a turn that reserved `reserved`.
fn closing(sent: u32, billed: u64, reserved: u64) -> Closing {
    if sent == 0 {
        return Closing::Refund;
    }
    let ceiling = reserved.saturating_mul(2);
    Closing::Settle {
        charge: billed.min(ceiling),
        uncharged: billed.saturating_sub(ceiling),
    }
}

impl Account {
    /// The account of an admitted turn whose requests may each be billed up to `bound`.
    pub(crate) fn new(store: Arc<ConversationStore>, grant: Grant, bound: RequestBound) -> Self {
        Self {
            store,
            bound,
            ledger: Mutex::new(Ledger {
                grant,
                unspent: 1,
                sent: 0,
                failed: 0,
                answered: None,
                refusal: None,
                closed: false,
            }),
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The user's erasures counted at the turn's admission.
    pub(crate) fn erasures(&self) -> Erasures {
        self.ledger().grant.erasures()
    }

    /// The user's day as the last admission left it.
    pub(crate) fn usage(&self) -> Usage {
        self.ledger().grant.usage
    }

    /// Records what the answering request was billed: the provider's report, or the bound the
    /// LLM client put in its place.
    pub(crate) fn answered(&self, usage: TokenUsage) {
        self.ledger().answered = Some(usage.total());
    }

    /// Why a further request was refused, if one was: the turn's answer in place of the LLM
    /// client's.
    pub(crate) fn take_refusal(&self) -> Option<StoreError> {
        self.ledger().refusal.take()
    }

    /// Settles or refunds the turn by the rule, once; later calls do nothing.
    pub(crate) async fn close(&self) {
        let (grant, closing) = {
            let mut ledger = self.ledger();
            if ledger.closed {
                return;
            }
            ledger.closed = true;
            (ledger.grant.clone(), ledger.closing())
        };
        match closing {
            Closing::Refund => self.store.refund(&grant).await,
            Closing::Settle { charge, uncharged } => {
                if uncharged > 0 {
                    tracing::warn!(
                        charge,
                        uncharged,
                        "the provider billed more than twice the turn's reservation; the excess is not charged"
                    );
                    shared::telemetry::emit_metrics(
                        &[("Operation", "chat")],
                        &[("UnchargedTokens", uncharged as f64, "Count")],
                    );
                }
                self.store.settle(&grant, charge).await;
            }
        }
    }
}

impl Tab for Account {
    fn admit(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let mut grant = {
                let mut ledger = self.ledger();
                ledger.sent += 1;
                if ledger.unspent > 0 {
                    ledger.unspent -= 1;
                    return true;
                }
                ledger.grant.clone()
            };
            let admitted = self
                .store
                .admit_request(&mut grant, self.bound.whole())
                .await;
            let mut ledger = self.ledger();
            match admitted {
                Ok(()) => {
                    ledger.grant = grant;
                    true
                }
                Err(refusal) => {
                    ledger.sent -= 1;
                    ledger.refusal = Some(refusal);
                    false
                }
            }
        })
    }

    fn failed(&self, billed: Billed) {
        let mut ledger = self.ledger();
        match billed {
            // Not sent after all: its reservation serves the next request.
            Billed::Nothing => {
                ledger.sent -= 1;
                ledger.unspent += 1;
            }
            Billed::Input => ledger.failed = ledger.failed.saturating_add(self.bound.input),
            Billed::Whole => ledger.failed = ledger.failed.saturating_add(self.bound.whole()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_turn_that_sent_nothing_is_refunded() {
        assert_eq!(closing(0, 0, 500), Closing::Refund);
        // Sent, and billed nothing we know of: charged nothing beyond its turn.
        assert_eq!(
            closing(1, 0, 500),
            Closing::Settle {
                charge: 0,
                uncharged: 0
            }
        );
    }

    #[test]
    fn a_turn_is_charged_what_it_was_billed_up_to_twice_its_reservation() {
        assert_eq!(
            closing(3, 740, 1_000),
            Closing::Settle {
                charge: 740,
                uncharged: 0
            }
        );
        assert_eq!(
            closing(1, 5_000, 1_000),
            Closing::Settle {
                charge: 2_000,
                uncharged: 3_000
            }
        );
    }
}
