//! Per-user budgets: turns and LLM tokens per UTC day, and turns per minute.
//!
//! One item per user (`USAGE`, see `keys.rs`) holds the day's counters, the day's budget, and the
//! operator's override if any. Admission is one conditional `UpdateItem` before the provider is
//! called: it takes a turn and the turn's worst-case tokens (input + the output cap) from what is
//! left, and counts the turn in the current minute, only if all three fit. No lock, no read
//! first: DynamoDB applies concurrent updates of one item one at a time, so of N concurrent
//! turns with k left exactly k pass, and no day can be overdrawn by a reservation.
//!
//! - **A new day** (or a new user): the update's `day = :today` fails, and the failure returns
//!   the old item. The day is then opened with one conditional put (`day` still the old one),
//!   which takes this turn too and carries the override over. The first turn of a user's day
//!   therefore costs one call more; a racing opener loses the condition and retries the update.
//! - **Further requests, settlement, refunds**: a turn's retry or fallback takes its own worst
//!   case before it is sent ([`ConversationStore::admit_request`]); a turn that sent any provider
//!   request is settled to what it was charged, whatever became of its write
//!   ([`ConversationStore::settle`]); only a turn that sent none is refunded
//!   ([`ConversationStore::refund`]). What a turn is charged is the chat function's rule.
//! - **The minute window**: a counter attribute named after the minute (`w<minute>`), so a new
//!   minute needs no reset; the update removes the two minutes before it, the turn's settlement
//!   any older one it found, and the day's opening put drops any left over. At most `per_minute` turns start in any calendar minute.
//! - The item is kept by erasure (`DELETE /history`) so that erasing data resets nothing; it
//!   expires by TTL two days after its day unless it carries an override. It counts the user's
//!   erasures (`erasures`), which a turn's write checks against the count at its admission, so
//!   that nothing of a turn admitted before an erasure lands after it.
//!
//! Here: the item's shape and the user's day read from it (`GET /usage`); admission in
//! `admission.rs`, settlement and refunds in `settlement.rs`, the operator's override in
//! `operator.rs`.

mod admission;
mod operator;
mod settlement;

use chrono::{DateTime, Duration as Days, NaiveDate, Utc};

use super::{
    items::{number, signed, text, Item},
    keys, ConversationStore, StoreError,
};
use crate::{
    config::{BudgetPolicy, DailyBudget},
    domain::UserId,
};

/// What "unlimited" is stored as: larger than any day's use, small enough for DynamoDB numbers.
const UNLIMITED: u64 = 1 << 50;
/// How long a day's item is kept after its day (for `GET /usage` around midnight, and support).
const KEEP_DAYS: i64 = 2;
/// How often admission goes round (update, day opening lost to a racer, update again).
const MAX_ATTEMPTS: u32 = 4;

/// Which budget refused a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// No turn is left today.
    Turns { limit: u64 },
    /// Fewer tokens are left today than this turn may use.
    Tokens {
        limit: u64,
        remaining: u64,
        needed: u64,
    },
}

/// One counter of a budget, as the `RateLimit-*` headers and `GET /usage` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    pub used: u64,
    /// `None`: unlimited.
    pub limit: Option<u64>,
    /// `None`: unlimited.
    pub remaining: Option<u64>,
}

impl Counter {
    fn of(used: u64, limit: u64, left: i64) -> Self {
        let unlimited = limit == 0;
        Self {
            used,
            limit: (!unlimited).then_some(limit),
            remaining: (!unlimited).then(|| u64::try_from(left).unwrap_or(0)),
        }
    }

    /// A counter of a day or minute with nothing used yet.
    fn unused(limit: u64) -> Self {
        Self::of(0, limit, i64::try_from(limit).unwrap_or(i64::MAX))
    }
}

/// A user's day so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub day: NaiveDate,
    pub turns: Counter,
    /// Tokens used, with the reservations of turns still running.
    pub tokens: Counter,
    /// This minute's turns.
    pub minute: Counter,
    /// Whether an operator set this user's budget.
    pub overridden: bool,
    /// Seconds until the day's budget renews (00:00 UTC), and until the minute's does.
    pub day_resets_in: u64,
    pub minute_resets_in: u64,
}

impl Usage {
    /// A day with nothing used yet, under `budget`.
    fn fresh(
        budget: DailyBudget,
        overridden: bool,
        policy: &BudgetPolicy,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            day: now.date_naive(),
            turns: Counter::unused(budget.turns),
            tokens: Counter::unused(budget.tokens),
            minute: Counter::unused(policy.per_minute),
            overridden,
            day_resets_in: seconds_to_next_day(now),
            minute_resets_in: seconds_to_next_minute(now),
        }
    }
}

/// An admitted turn: what it reserved, and the user's day after the reservation.
#[derive(Debug, Clone)]
pub struct Grant {
    user: UserId,
    day: NaiveDate,
    reserved: u64,
    pub usage: Usage,
    /// Windows of minutes before the last two that the item still held: the settlement removes
    /// them, so that a day's item does not grow with each pause.
    stale_windows: Vec<String>,
    /// How many erasures the user's item had counted at admission.
    erasures: u64,
}

/// How many times a user's data had been erased when a turn was admitted: the turn's write
/// lands only if no erasure began since ([`super::TurnWrite::admitted`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Erasures(pub(in crate::store) u64);

impl Grant {
    /// The erasures counted when the turn was admitted.
    pub fn erasures(&self) -> Erasures {
        Erasures(self.erasures)
    }
}

/// Seconds from `now` to the next UTC midnight (when a day's budget renews).
fn seconds_to_next_day(now: DateTime<Utc>) -> u64 {
    let next = now.date_naive() + Days::days(1);
    let midnight = next.and_hms_opt(0, 0, 0).map(|at| at.and_utc());
    midnight.map_or(86_400, |at| {
        u64::try_from((at - now).num_seconds().max(1)).unwrap_or(1)
    })
}

/// Seconds from `now` to the next minute (when the minute window renews).
fn seconds_to_next_minute(now: DateTime<Utc>) -> u64 {
    60 - u64::try_from(now.timestamp().rem_euclid(60)).unwrap_or(0)
}

/// When a day's item (without an override) expires: `KEEP_DAYS` after its day.
fn expiry_of(day: NaiveDate, now: DateTime<Utc>) -> i64 {
    (day + Days::days(1 + KEEP_DAYS))
        .and_hms_opt(0, 0, 0)
        .map_or(now.timestamp(), |at| at.and_utc().timestamp())
}

/// The day an item counts.
fn day_of(item: &Item) -> Option<NaiveDate> {
    text(item, "day").ok()?.parse().ok()
}

fn minute_of(now: DateTime<Utc>) -> i64 {
    now.timestamp().div_euclid(60)
}

fn window(minute: i64) -> String {
    format!("w{minute}")
}

/// The window attributes of `item` older than `minute` (at most 32: one update's worth).
fn windows_before(item: &Item, minute: i64) -> Vec<String> {
    item.keys()
        .filter(|name| {
            name.strip_prefix('w')
                .and_then(|rest| rest.parse::<i64>().ok())
                .is_some_and(|at| at < minute)
        })
        .take(32)
        .cloned()
        .collect()
}

fn stored(limit: u64) -> u64 {
    if limit == 0 {
        UNLIMITED
    } else {
        limit
    }
}

/// The operator's override stored in a user's item, if any.
fn override_of(item: &Item) -> Option<DailyBudget> {
    Some(DailyBudget {
        turns: number(item, "override_turns").ok()?,
        tokens: number(item, "override_tokens").ok()?,
    })
}

impl ConversationStore {
    /// The user's day so far (`GET /usage`).
    pub async fn usage(&self, user: &UserId, policy: &BudgetPolicy) -> Result<Usage, StoreError> {
        let now = self.now();
        let item = self.live_item(user, keys::usage().to_owned()).await?;
        Ok(match item {
            Some(item) if day_of(&item) == Some(now.date_naive()) => usage_of(&item, now, policy),
            // Nothing used today: the override, if any, or the default.
            other => {
                let overridden = other.as_ref().and_then(override_of);
                Usage::fresh(
                    overridden.unwrap_or(policy.daily),
                    overridden.is_some(),
                    policy,
                    now,
                )
            }
        })
    }
}

/// A user's day from their item.
fn usage_of(item: &Item, now: DateTime<Utc>, policy: &BudgetPolicy) -> Usage {
    let day = day_of(item).unwrap_or_else(|| now.date_naive());
    let this_minute = number(item, &window(minute_of(now))).unwrap_or(0);
    let minute_left = i64::try_from(policy.per_minute.saturating_sub(this_minute)).unwrap_or(0);
    Usage {
        day,
        turns: Counter::of(
            number(item, "turns").unwrap_or(0),
            number(item, "turn_limit").unwrap_or(0),
            signed(item, "turns_left").unwrap_or(0),
        ),
        tokens: Counter::of(
            number(item, "tokens").unwrap_or(0),
            number(item, "token_limit").unwrap_or(0),
            signed(item, "tokens_left").unwrap_or(0),
        ),
        minute: Counter::of(this_minute, policy.per_minute, minute_left),
        overridden: override_of(item).is_some(),
        day_resets_in: seconds_to_next_day(now),
        minute_resets_in: seconds_to_next_minute(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn budgets_renew_at_utc_midnight_and_windows_each_minute() {
        assert_eq!(seconds_to_next_day(at("2026-11-27T23:59:30Z")), 30);
        assert_eq!(seconds_to_next_day(at("2026-11-27T00:00:00Z")), 86_400);
        assert_eq!(seconds_to_next_minute(at("2026-11-27T10:00:45Z")), 15);
        assert_eq!(seconds_to_next_minute(at("2026-11-27T10:00:00Z")), 60);
    }

    #[test]
    fn unlimited_is_stored_as_a_number_no_day_reaches() {
        assert_eq!(stored(0), UNLIMITED);
        assert_eq!(stored(200), 200);
        let counter = Counter::of(5, 0, 1 << 40);
        assert_eq!((counter.limit, counter.remaining), (None, None));
        let counter = Counter::of(5, 10, -3);
        assert_eq!((counter.limit, counter.remaining), (Some(10), Some(0)));
    }
}
