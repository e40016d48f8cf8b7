//! After admission: a further provider request of the same turn (a retry, a fallback) is
//! admitted against what is left ([`ConversationStore::admit_request`]); a turn that sent a
//! provider request is settled to what it was charged ([`ConversationStore::settle`]); a turn that
//! sent none gives everything back ([`ConversationStore::refund`]). Each is one `UpdateItem` of the
//! user's budget item, outside the turn's transaction, so that what a turn is charged never
//! depends on whether its messages were stored.

use aws_sdk_dynamodb::{
    operation::update_item::{builders::UpdateItemFluentBuilder, UpdateItemError},
    types::{ReturnValue, ReturnValuesOnConditionCheckFailure},
};

use super::{seconds_to_next_day, Exhausted, Grant};
use crate::domain::UserId;
use crate::store::{
    error::{from_sdk, is_condition_failed, retry_conflicts},
    items::{n, number, s, signed},
    keys,
    meter::{ask, Work},
    ConversationStore, StoreError,
};

impl ConversationStore {
    /// Admits `cost` more tokens for a turn already admitted (its next provider request), or
    /// refuses with [`StoreError::QuotaExceeded`] when fewer are left. It takes no turn and no
    /// minute slot: those were the turn's. It is taken from whatever day the item holds: after
    /// midnight, the new day once a turn has opened it.
    pub async fn admit_request(&self, grant: &mut Grant, cost: u64) -> Result<(), StoreError> {
        let update = self
            .usage_update(&grant.user)
            .update_expression("ADD tokens :cost, tokens_left :minus_cost")
            .condition_expression("attribute_exists(#day) AND tokens_left >= :cost")
            .expression_attribute_names("#day", "day")
            .expression_attribute_values(":cost", n(cost))
            .expression_attribute_values(":minus_cost", n(-i128::from(cost)))
            .return_values(ReturnValue::UpdatedNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(ask());
        match retry_conflicts(|| update.clone().send()).await {
            Ok(output) => {
                self.meter.record(Work::Write, output.consumed_capacity());
                grant.reserved = grant.reserved.saturating_add(cost);
                if let Some(item) = output.attributes() {
                    grant.usage.tokens.used = number(item, "tokens").unwrap_or(0);
                    grant.usage.tokens.remaining = grant.usage.tokens.remaining.map(|_| {
                        u64::try_from(signed(item, "tokens_left").unwrap_or(0)).unwrap_or(0)
                    });
                }
                Ok(())
            }
            Err(err) => match err.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    let old = failed.item();
                    let of = |name| old.and_then(|item| number(item, name).ok()).unwrap_or(0);
                    Err(StoreError::QuotaExceeded {
                        exhausted: Exhausted::Tokens {
                            limit: of("token_limit"),
                            remaining: of("tokens_left"),
                            needed: cost,
                        },
                        retry_after_secs: seconds_to_next_day(self.now()),
                    })
                }
                _ => Err(from_sdk(err)),
            },
        }
    }

    /// Settles a turn that sent a provider request to `charge` tokens: the difference to what
    /// it reserved. A credit (charged less than reserved) goes only to the day the turn was
    /// admitted on: after midnight nothing is given back to the new day. An excess is charged to
    /// whatever day is open. The turn itself stays counted. Minute windows older than the
    /// last two that admission found are removed. Best effort: a failure is logged; a lost
    /// credit errs on the side of the budget, a lost excess goes uncharged.
    pub async fn settle(&self, grant: &Grant, charge: u64) {
        let difference = i128::from(charge) - i128::from(grant.reserved);
        if difference == 0 && grant.stale_windows.is_empty() {
            return;
        }
        let mut expression = String::from("ADD tokens :difference, tokens_left :back");
        let mut update = self.usage_update(&grant.user);
        if !grant.stale_windows.is_empty() {
            let mut names = Vec::with_capacity(grant.stale_windows.len());
            for (index, name) in grant.stale_windows.iter().enumerate() {
                let placeholder = format!("#stale{index}");
                update = update.expression_attribute_names(&placeholder, name);
                names.push(placeholder);
            }
            expression.push_str(&format!(" REMOVE {}", names.join(", ")));
        }
        let update = update
            .update_expression(expression)
            .expression_attribute_names("#day", "day")
            .expression_attribute_values(":difference", n(difference))
            .expression_attribute_values(":back", n(-difference))
            .return_consumed_capacity(ask());
        let update = if difference < 0 {
            update
                .condition_expression("#day = :day")
                .expression_attribute_values(":day", s(grant.day.to_string()))
        } else {
            update.condition_expression("attribute_exists(#day)")
        };
        match retry_conflicts(|| update.clone().send()).await {
            Ok(output) => self.meter.record(Work::Write, output.consumed_capacity()),
            // The turn's day is over: its credit is not carried to the next.
            Err(err) if is_condition_failed(&err) => {
                tracing::info!(
                    credit = -difference,
                    "the turn's day is over; its unused reservation is not given back"
                );
            }
            Err(err) => {
                tracing::warn!(error = %from_sdk(err), difference, "could not settle a turn; its reservation stands as it was")
            }
        }
    }

    /// Gives back a turn that sent no provider request: its turn and its whole reservation, on
    /// the day it was taken from (nothing if that day is over). Best effort: a failure is logged,
    /// and the reservation stays spent, which errs on the side of the budget.
    pub async fn refund(&self, grant: &Grant) {
        let update = self
            .usage_update(&grant.user)
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
            .return_consumed_capacity(ask());
        match retry_conflicts(|| update.clone().send()).await {
            Ok(output) => self.meter.record(Work::Write, output.consumed_capacity()),
            Err(err) if is_condition_failed(&err) => {}
            Err(err) => {
                tracing::warn!(error = %from_sdk(err), "could not give a reservation back; it stays spent")
            }
        }
    }
}

impl ConversationStore {
    /// An update of the user's budget item.
    pub(in crate::store) fn usage_update(&self, user: &UserId) -> UpdateItemFluentBuilder {
        self.db
            .update_item()
            .table_name(&self.table)
            .key("PK", s(keys::partition(user)))
            .key("SK", s(keys::usage()))
    }
}

impl Grant {
    /// The tokens reserved so far: at admission, and for each further request admitted.
    pub fn reserved(&self) -> u64 {
        self.reserved
    }
}
