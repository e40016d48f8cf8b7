//! The operator's override of a user's daily budget (`infra/budget-admin`).

use aws_sdk_dynamodb::types::ReturnValue;

use super::{expiry_of, stored, usage_of, Usage, MAX_ATTEMPTS};
use crate::{
    config::{BudgetPolicy, DailyBudget},
    domain::UserId,
    store::{
        error::{from_sdk, is_condition_failed},
        items::{n, s},
        keys, ConversationStore, StoreError,
    },
};

impl ConversationStore {
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
