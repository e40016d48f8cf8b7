//! What a turn's provider requests cost: [`Llm`](super::Llm) asks its caller's [`Tab`] before
//! every request it would send, and tells it what each failed one may be billed. The caller
//! keeps the account (in the chat function, against the user's budget).

use super::BoxFuture;

/// What a provider may bill for a request that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Billed {
    /// The request never reached a provider, or reached it unauthenticated.
    Nothing,
    /// The provider refused it with a status: its input, at most.
    Input,
    /// The provider may have generated a whole reply before the answer was lost (a timeout, a
    /// broken connection, a malformed body).
    Whole,
}

/// The account of one turn's provider requests.
pub trait Tab: Send + Sync {
    /// Asked before each request: whether it may be sent. A retry or a fallback beyond what the
    /// turn was admitted for is sent only once the tab has admitted it; `false` ends the call
    /// with [`LlmError::NotAdmitted`](super::LlmError::NotAdmitted).
    fn admit(&self) -> BoxFuture<'_, bool>;
    /// Told after each request that failed.
    fn failed(&self, billed: Billed);
}

/// A tab that admits every request and keeps no account: for tools and tests that spend no
/// user's budget.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unmetered;

impl Tab for Unmetered {
    fn admit(&self) -> BoxFuture<'_, bool> {
        Box::pin(std::future::ready(true))
    }

    fn failed(&self, _: Billed) {}
}
