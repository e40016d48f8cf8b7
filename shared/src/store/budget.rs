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
//! - **Settlement**: the difference between the reservation and the provider's reported usage
//!   rides in the turn's transaction (`settlement`), so a stored turn is always settled. A turn
//!   that stores nothing gives its reservation back ([`ConversationStore::refund`]).
//! - **The minute window**: a counter attribute named after the minute (`w<minute>`), so a new
//!   minute needs no reset; the update removes the two minutes before it, and the day's opening
//!   put drops any left over. At most `per_minute` turns start in any calendar minute.
//! - The item is kept by erasure (`DELETE /history`) so that erasing data resets nothing; it
//!   expires by TTL two days after its day unless it carries an override.

use aws_sdk_dynamodb::{
    operation::update_item::UpdateItemError,
    types::{ReturnValue, ReturnValuesOnConditionCheckFailure, Update},
};
use chrono::{DateTime, Duration as Days, NaiveDate, Utc};

use super::{
    error::{from_sdk, is_condition_failed},
    items::{n, number, s, signed, text, Item},
    keys,
    meter::{ask, Work},
    ConversationStore, StoreError,
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
    /// Admits a turn that may use up to `cost` tokens, or says which budget refuses it
    /// ([`StoreError::QuotaExceeded`], [`StoreError::RateLimited`]); a refusal writes nothing.
    pub async fn admit_turn(
        &self,
        user: &UserId,
        cost: u64,
        policy: &BudgetPolicy,
    ) -> Result<Grant, StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let now = self.now();
            match self.take(user, cost, policy, now).await? {
                Taken::Granted(usage) => return Ok(self.grant(user, cost, usage)),
                Taken::Refused(old) => {
                    if old.as_ref().and_then(day_of) == Some(now.date_naive()) {
                        let old = old.unwrap_or_default();
                        return Err(refusal(&old, cost, policy, now));
                    }
                    match self.open_day(user, cost, policy, now, old.as_ref()).await? {
                        Some(usage) => return Ok(self.grant(user, cost, usage)),
                        // Another turn opened the day first: take from it.
                        None => continue,
                    }
                }
            }
        }
        Err(StoreError::Conflict {
            attempts: MAX_ATTEMPTS,
        })
    }

    fn grant(&self, user: &UserId, cost: u64, usage: Usage) -> Grant {
        Grant {
            user: user.clone(),
            day: usage.day,
            reserved: cost,
            usage,
        }
    }

    /// The admission update on a day that is open.
    async fn take(
        &self,
        user: &UserId,
        cost: u64,
        policy: &BudgetPolicy,
        now: DateTime<Utc>,
    ) -> Result<Taken, StoreError> {
        let minute = minute_of(now);
        let mut condition =
            "#day = :today AND turns_left >= :one AND tokens_left >= :cost".to_owned();
        if policy.per_minute > 0 {
            condition.push_str(" AND (attribute_not_exists(#w) OR #w < :per_minute)");
        }
        let update = self
            .db
            .update_item()
            .table_name(&self.table)
            .key("PK", s(keys::partition(user)))
            .key("SK", s(keys::usage()))
            .update_expression(
                "ADD turns :one, tokens :cost, turns_left :minus_one, tokens_left :minus_cost, #w :one \
                 REMOVE #w1, #w2",
            )
            .condition_expression(condition)
            .expression_attribute_names("#day", "day")
            .expression_attribute_names("#w", window(minute))
            .expression_attribute_names("#w1", window(minute - 1))
            .expression_attribute_names("#w2", window(minute - 2))
            .expression_attribute_values(":today", s(now.date_naive().to_string()))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":minus_one", n(-1))
            .expression_attribute_values(":cost", n(cost))
            .expression_attribute_values(":minus_cost", n(-i128::from(cost)))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(ask());
        let update = if policy.per_minute > 0 {
            update.expression_attribute_values(":per_minute", n(policy.per_minute))
        } else {
            update
        };
        match update.send().await {
            Ok(output) => {
                self.meter.record(Work::Write, output.consumed_capacity());
                let item = output.attributes.unwrap_or_default();
                Ok(Taken::Granted(usage_of(&item, now, policy)))
            }
            Err(err) => match err.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    Ok(Taken::Refused(failed.item().cloned()))
                }
                _ => Err(from_sdk(err)),
            },
        }
    }

    /// Opens today for a user whose item is from another day (or absent), taking this turn:
    /// `None` if another turn opened it first. Refuses a turn that today's budget cannot hold.
    async fn open_day(
        &self,
        user: &UserId,
        cost: u64,
        policy: &BudgetPolicy,
        now: DateTime<Utc>,
        old: Option<&Item>,
    ) -> Result<Option<Usage>, StoreError> {
        let overridden = old.and_then(override_of);
        let budget = overridden.unwrap_or(policy.daily);
        let (turns, tokens) = (stored(budget.turns), stored(budget.tokens));
        if turns < 1 {
            return Err(StoreError::QuotaExceeded {
                exhausted: Exhausted::Turns { limit: 0 },
                retry_after_secs: seconds_to_next_day(now),
            });
        }
        if tokens < cost {
            return Err(StoreError::QuotaExceeded {
                exhausted: Exhausted::Tokens {
                    limit: budget.tokens,
                    remaining: budget.tokens,
                    needed: cost,
                },
                retry_after_secs: seconds_to_next_day(now),
            });
        }
        let today = now.date_naive();
        let mut item = Item::from([
            ("PK".to_owned(), s(keys::partition(user))),
            ("SK".to_owned(), s(keys::usage())),
            ("day".to_owned(), s(today.to_string())),
            ("turns".to_owned(), n(1)),
            ("tokens".to_owned(), n(cost)),
            ("turns_left".to_owned(), n(turns - 1)),
            ("tokens_left".to_owned(), n(tokens - cost)),
            ("turn_limit".to_owned(), n(budget.turns)),
            ("token_limit".to_owned(), n(budget.tokens)),
            (window(minute_of(now)), n(1)),
        ]);
        match overridden {
            Some(budget) => {
                item.insert("override_turns".to_owned(), n(budget.turns));
                item.insert("override_tokens".to_owned(), n(budget.tokens));
            }
            None => {
                item.insert("expires_at".to_owned(), n(expiry_of(today, now)));
            }
        }
        let put = self
            .db
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item.clone()))
            .return_consumed_capacity(ask());
        // The day is opened once: only over the item as this turn saw it.
        let old_day = old.and_then(|item| item.get("day")).cloned();
        let put = match old_day {
            Some(day) => put
                .condition_expression("#day = :seen")
                .expression_attribute_names("#day", "day")
                .expression_attribute_values(":seen", day),
            None => put
                .condition_expression("attribute_not_exists(SK) OR attribute_not_exists(#day)")
                .expression_attribute_names("#day", "day"),
        };
        match put.send().await {
            Ok(output) => {
                self.meter.record(Work::Write, output.consumed_capacity());
                Ok(Some(usage_of(&item, now, policy)))
            }
            Err(err) if is_condition_failed(&err) => Ok(None),
            Err(err) => Err(from_sdk(err)),
        }
    }

    /// Gives back a turn that stored nothing: its turn and its whole reservation, on the day it
    /// was taken from (nothing if that day is over). Best effort: a failure is logged, and the
    /// reservation stays spent, which errs on the side of the budget.
    pub async fn refund(&self, grant: &Grant) {
        let result = self
            .db
            .update_item()
            .table_name(&self.table)
            .key("PK", s(keys::partition(&grant.user)))
            .key("SK", s(keys::usage()))
            .update_expression(
                "ADD turns :minus_one, turns_left :one, tokens :minus_cost, tokens_left :cost",
            )
            .condition_expression("#day = :day")
            .expression_attribute_names("#day", "day")
            .expression_attribute_values(":day", s(grant.day.to_string()))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":minus_one", n(-1))
            .expression_attribute_values(":cost", n(grant.reserved))
            .expression_attribute_values(":minus_cost", n(-i128::from(grant.reserved)))
            .return_consumed_capacity(ask())
            .send()
            .await;
        match result {
            Ok(output) => self.meter.record(Work::Write, output.consumed_capacity()),
            Err(err) if is_condition_failed(&err) => {}
            Err(err) => {
                tracing::warn!(error = %from_sdk(err), "could not give a reservation back; it stays spent")
            }
        }
    }

    /// The update that settles a stored turn to what it used, for the turn's transaction: the
    /// reservation's difference to `used` (the provider's report; what was generated for a
    /// stopped or broken reply). Unconditional, so that it can never cancel the turn: a turn that
    /// spans midnight settles on the new day.
    pub(super) fn settlement(&self, grant: &Grant, used: u64) -> Result<Update, StoreError> {
        let difference = i128::from(used) - i128::from(grant.reserved);
        Update::builder()
            .table_name(&self.table)
            .key("PK", s(keys::partition(&grant.user)))
            .key("SK", s(keys::usage()))
            .update_expression("ADD tokens :difference, tokens_left :back")
            .expression_attribute_values(":difference", n(difference))
            .expression_attribute_values(":back", n(-difference))
            .build()
            .map_err(|err| StoreError::Internal(Box::new(err)))
    }

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

    /// Sets (or with `None` clears) a user's budget, from today on (the operator's tool). Today's
    /// remaining turns and tokens follow the new budget at once.
    pub async fn set_budget(
        &self,
        user: &UserId,
        budget: Option<DailyBudget>,
        policy: &BudgetPolicy,
    ) -> Result<Usage, StoreError> {
        let now = self.now();
        let today = now.date_naive();
        let effective = budget.unwrap_or(policy.daily);
        // An override is kept (no TTL); without one the item expires as a day's item does.
        let (keep, drop, values) = match budget {
            Some(budget) => (
                "override_turns = :ot, override_tokens = :ok",
                "REMOVE expires_at",
                vec![(":ot", n(budget.turns)), (":ok", n(budget.tokens))],
            ),
            None => (
                "expires_at = :exp",
                "REMOVE override_turns, override_tokens",
                vec![(":exp", n(expiry_of(today, now)))],
            ),
        };
        let update = || {
            values.iter().fold(
                self.db
                    .update_item()
                    .table_name(&self.table)
                    .key("PK", s(keys::partition(user)))
                    .key("SK", s(keys::usage()))
                    .expression_attribute_names("#day", "day")
                    .expression_attribute_values(":today", s(today.to_string()))
                    .return_values(ReturnValue::AllNew),
                |update, (name, value)| update.expression_attribute_values(*name, value.clone()),
            )
        };
        for _ in 0..MAX_ATTEMPTS {
            // Today open: what is left moves with the limit.
            let today_open = update()
                .update_expression(format!(
                    "SET {keep}, turn_limit = :tl, token_limit = :kl, \
                     turns_left = :tls - turns, tokens_left = :kls - tokens {drop}"
                ))
                .condition_expression("#day = :today")
                .expression_attribute_values(":tl", n(effective.turns))
                .expression_attribute_values(":kl", n(effective.tokens))
                .expression_attribute_values(":tls", n(stored(effective.turns)))
                .expression_attribute_values(":kls", n(stored(effective.tokens)))
                .send()
                .await;
            match today_open {
                Ok(output) => {
                    return Ok(usage_of(
                        &output.attributes.unwrap_or_default(),
                        now,
                        policy,
                    ))
                }
                Err(err) if !is_condition_failed(&err) => return Err(from_sdk(err)),
                Err(_) => {}
            }
            // Not open today: the override waits for the day's opening.
            let later = update()
                .update_expression(format!("SET {keep} {drop}"))
                .condition_expression("attribute_not_exists(#day) OR #day <> :today")
                .send()
                .await;
            match later {
                Ok(_) => return self.usage(user, policy).await,
                // Opened meanwhile: again, as an open day.
                Err(err) if is_condition_failed(&err) => continue,
                Err(err) => return Err(from_sdk(err)),
            }
        }
        Err(StoreError::Conflict {
            attempts: MAX_ATTEMPTS,
        })
    }
}

/// What the admission update found.
enum Taken {
    Granted(Usage),
    /// The condition failed; the item as it was (`None`: no item).
    Refused(Option<Item>),
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

/// Why an open day refused a turn: the minute window first (it renews soonest).
fn refusal(old: &Item, cost: u64, policy: &BudgetPolicy, now: DateTime<Utc>) -> StoreError {
    let this_minute = number(old, &window(minute_of(now))).unwrap_or(0);
    if policy.per_minute > 0 && this_minute >= policy.per_minute {
        return StoreError::RateLimited {
            per_minute: policy.per_minute,
            retry_after_secs: seconds_to_next_minute(now),
        };
    }
    let retry_after_secs = seconds_to_next_day(now);
    if signed(old, "turns_left").unwrap_or(0) < 1 {
        return StoreError::QuotaExceeded {
            exhausted: Exhausted::Turns {
                limit: number(old, "turn_limit").unwrap_or(0),
            },
            retry_after_secs,
        };
    }
    StoreError::QuotaExceeded {
        exhausted: Exhausted::Tokens {
            limit: number(old, "token_limit").unwrap_or(0),
            remaining: number(old, "tokens_left").unwrap_or(0),
            needed: cost,
        },
        retry_after_secs,
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
