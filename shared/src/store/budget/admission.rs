//! Admission: one conditional `UpdateItem` takes a turn and its worst case from what is left of
//! the day and the minute, or opens a new day with one conditional `PutItem`.

use aws_sdk_dynamodb::{
    operation::update_item::UpdateItemError,
    types::{ReturnValue, ReturnValuesOnConditionCheckFailure},
};
use chrono::{DateTime, Utc};

use super::{
    day_of, expiry_of, minute_of, override_of, seconds_to_next_day, seconds_to_next_minute, stored,
    usage_of, window, windows_before, Exhausted, Grant, Usage, MAX_ATTEMPTS,
};
use crate::{
    config::BudgetPolicy,
    domain::UserId,
    store::{
        error::{from_sdk, is_condition_failed, retry_conflicts},
        items::{n, number, s, signed, Item},
        keys,
        meter::{ask, Work},
        ConversationStore, StoreError,
    },
};

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
                Taken::Granted(item, usage) => return Ok(self.grant(user, cost, usage, &item, now)),
                Taken::Refused(old) => {
                    if old.as_ref().and_then(day_of) == Some(now.date_naive()) {
                        let old = old.unwrap_or_default();
                        return Err(refusal(&old, cost, policy, now));
                    }
                    match self.open_day(user, cost, policy, now, old.as_ref()).await? {
                        Some((item, usage)) => return Ok(self.grant(user, cost, usage, &item, now)),
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

    /// The grant of a turn admitted into `item` (as the admission left it).
    fn grant(
        &self,
        user: &UserId,
        cost: u64,
        usage: Usage,
        item: &Item,
        now: DateTime<Utc>,
    ) -> Grant {
        Grant {
            user: user.clone(),
            day: usage.day,
            reserved: cost,
            usage,
            stale_windows: windows_before(item, minute_of(now)),
            erasures: number(item, "erasures").unwrap_or(0),
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
            .usage_update(user)
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
        match retry_conflicts(|| update.clone().send()).await {
            Ok(output) => {
                self.meter.record(Work::Write, output.consumed_capacity());
                let item = output.attributes.unwrap_or_default();
                let usage = usage_of(&item, now, policy);
                Ok(Taken::Granted(item, usage))
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
    ) -> Result<Option<(Item, Usage)>, StoreError> {
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
        // The count of erasures outlives the day: a turn admitted before one must not land.
        if let Some(erasures) = old.and_then(|item| item.get("erasures")) {
            item.insert("erasures".to_owned(), erasures.clone());
        }
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
                let usage = usage_of(&item, now, policy);
                Ok(Some((item, usage)))
            }
            Err(err) if is_condition_failed(&err) => Ok(None),
            Err(err) => Err(from_sdk(err)),
        }
    }
}

/// What the admission update found.
enum Taken {
    /// The item as the admission left it.
    Granted(Item, Usage),
    /// The condition failed; the item as it was (`None`: no item).
    Refused(Option<Item>),
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
