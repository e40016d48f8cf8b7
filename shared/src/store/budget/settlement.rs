//! Settlement: a stored turn's reservation is corrected to what it used, in the turn's own
//! transaction; a turn that stored nothing gives its reservation back.

use aws_sdk_dynamodb::types::Update;

use super::Grant;
use crate::store::{
    error::{from_sdk, is_condition_failed},
    items::{n, s},
    keys,
    meter::{ask, Work},
    ConversationStore, StoreError,
};

impl ConversationStore {
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
    pub(in crate::store) fn settlement(
        &self,
        grant: &Grant,
        used: u64,
    ) -> Result<Update, StoreError> {
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
}
