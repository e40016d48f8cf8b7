//! The per-user budgets' settings (the store's budget enforces them).

use super::{ConfigError, Vars};

/// A user's daily budget, or the deployment's default; 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyBudget {
    pub turns: u64,
    pub tokens: u64,
}

impl DailyBudget {
    /// The largest daily turn budget a deployment or an operator may set.
    pub const MAX_TURNS: u64 = 10_000_000;
    /// The largest daily token budget a deployment or an operator may set.
    pub const MAX_TOKENS: u64 = 1_000_000_000_000;
}

/// The budget rules of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetPolicy {
    /// Every user's daily budget unless an operator set another.
    pub daily: DailyBudget,
    /// Turns that may start in one calendar minute; 0 means unlimited.
    pub per_minute: u64,
}

/// `DAILY_TURN_BUDGET` (default 200), `DAILY_TOKEN_BUDGET` (200,000: input plus output tokens)
/// per user and UTC day, and `TURNS_PER_MINUTE` (10) per user; 0 means unlimited.
pub(super) fn policy<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
) -> Result<BudgetPolicy, ConfigError> {
    Ok(BudgetPolicy {
        daily: DailyBudget {
            turns: vars.number("DAILY_TURN_BUDGET", 200, 0..=DailyBudget::MAX_TURNS)?,
            tokens: vars.number("DAILY_TOKEN_BUDGET", 200_000, 0..=DailyBudget::MAX_TOKENS)?,
        },
        per_minute: vars.number("TURNS_PER_MINUTE", 10, 0..=100_000)?,
    })
}

/// The budgets alone, read through `lookup` (the operator's tool, which needs no other setting).
pub fn budget_policy(lookup: impl Fn(&str) -> Option<String>) -> Result<BudgetPolicy, ConfigError> {
    policy(&Vars(lookup))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_default_to_the_template_s_defaults_and_zero_is_unlimited() {
        let policy = budget_policy(|_| None).unwrap();
        assert_eq!(
            policy,
            BudgetPolicy {
                daily: DailyBudget {
                    turns: 200,
                    tokens: 200_000
                },
                per_minute: 10
            }
        );
        let unlimited = budget_policy(|name| match name {
            "DAILY_TURN_BUDGET" | "DAILY_TOKEN_BUDGET" | "TURNS_PER_MINUTE" => Some("0".to_owned()),
            _ => None,
        })
        .unwrap();
        assert_eq!(unlimited.daily.turns, 0);
        assert!(
            budget_policy(|name| (name == "DAILY_TOKEN_BUDGET").then(|| "-1".to_owned())).is_err()
        );
    }
}
