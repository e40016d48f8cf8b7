//! `budget-admin`: an operator shows, sets or clears one user's daily budget (turns and LLM
//! tokens per UTC day). The budget is stored in the user's budget item; it applies at once (today's
//! remaining turns and tokens follow it) and on every later day, until cleared. Erasing the user's
//! data (`DELETE /history`) keeps it.
//!
//! ```text
//! budget-admin show  USER
//! budget-admin set   USER --turns N --tokens N     (0 = unlimited)
//! budget-admin clear USER                          (back to the deployment's default)
//! ```
//! The table is `TABLE_NAME` (or `--table`); the deployment's defaults are read from the same
//! variables as the chat function's (`DAILY_TURN_BUDGET`, `DAILY_TOKEN_BUDGET`,
//! `TURNS_PER_MINUTE`): set them to the stack's parameters when those are not the defaults.

use serde_json::{json, Value};
use shared::{
    config::{BudgetPolicy, DailyBudget},
    domain::UserId,
    store::{ConversationStore, Counter, StoreError, Usage},
};

pub const USAGE: &str =
    "usage: budget-admin [--table NAME] (show USER | set USER --turns N --tokens N | clear USER)";

/// What the operator asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Show(UserId),
    Set(UserId, DailyBudget),
    Clear(UserId),
}

/// The command line (without the program name), and the table it names, if any.
pub fn parse_args(args: &[String]) -> Result<(Command, Option<String>), String> {
    let mut table = None;
    let mut words = Vec::new();
    let (mut turns, mut tokens) = (None, None);
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let mut value = || iter.next().cloned().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--table" => table = Some(value()?),
            "--turns" => turns = Some(value()?),
            "--tokens" => tokens = Some(value()?),
            flag if flag.starts_with("--") => return Err(format!("unknown argument {flag}")),
            word => words.push(word.to_owned()),
        }
    }
    // The range the deployment's own settings allow: a larger value would not survive the store.
    let number = |text: Option<String>, name: &str, max: u64| -> Result<u64, String> {
        let text = text.ok_or(format!("set needs --{name}"))?;
        text.parse().ok().filter(|n| *n <= max).ok_or(format!(
            "--{name} must be a whole number from 0 to {max} (0 = unlimited)"
        ))
    };
    let user = |raw: Option<&String>| {
        let raw = raw.ok_or("which user? give their id (the token's sub)")?;
        UserId::parse(raw).ok_or(format!("{raw:?} is not a valid user id"))
    };
    let flags_given = turns.is_some() || tokens.is_some();
    let command = match words.first().map(String::as_str) {
        Some("show") if words.len() == 2 => Command::Show(user(words.get(1))?),
        Some("clear") if words.len() == 2 => Command::Clear(user(words.get(1))?),
        Some("set") if words.len() == 2 => Command::Set(
            user(words.get(1))?,
            DailyBudget {
                turns: number(turns, "turns", DailyBudget::MAX_TURNS)?,
                tokens: number(tokens, "tokens", DailyBudget::MAX_TOKENS)?,
            },
        ),
        _ => return Err("expected show USER, set USER --turns N --tokens N, or clear USER".into()),
    };
    if !matches!(command, Command::Set(..)) && flags_given {
        return Err("--turns and --tokens go with set".to_owned());
    }
    Ok((command, table))
}

/// Runs `command`; returns the user's day as JSON.
pub async fn run(
    store: &ConversationStore,
    policy: &BudgetPolicy,
    command: &Command,
) -> Result<Value, StoreError> {
    let (user, usage) = match command {
        Command::Show(user) => (user, store.usage(user, policy).await?),
        Command::Set(user, budget) => (user, store.set_budget(user, Some(*budget), policy).await?),
        Command::Clear(user) => (user, store.set_budget(user, None, policy).await?),
    };
    Ok(report(user, &usage))
}

fn report(user: &UserId, usage: &Usage) -> Value {
    let counter = |counter: Counter| json!({"used": counter.used, "limit": counter.limit, "remaining": counter.remaining});
    json!({
        "user": user.as_str(),
        "day": usage.day.to_string(),
        "custom_budget": usage.overridden,
        "turns": counter(usage.turns),
        "tokens": counter(usage.tokens),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<(Command, Option<String>), String> {
        let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        parse_args(&args)
    }

    #[test]
    fn commands_are_parsed_strictly() {
        let alice = UserId::parse("alice").unwrap();
        assert_eq!(parse("show alice").unwrap().0, Command::Show(alice.clone()));
        assert_eq!(
            parse("--table t set alice --turns 5 --tokens 0").unwrap(),
            (
                Command::Set(
                    alice.clone(),
                    DailyBudget {
                        turns: 5,
                        tokens: 0
                    }
                ),
                Some("t".to_owned())
            )
        );
        assert_eq!(parse("clear alice").unwrap().0, Command::Clear(alice));
        for bad in [
            "",
            "set alice --turns 5",
            "set alice --turns -1 --tokens 3",
            "show",
            "show alice bob",
            "clear alice --turns 3",
            "drop alice",
            "show alice --force",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_budget_outside_the_deployment_s_range_is_refused() {
        // Above i64::MAX the store could not read it back: it was dropped the next day.
        let refused = parse("set alice --turns 5 --tokens 9223372036854775808").unwrap_err();
        assert!(refused.contains("from 0 to 1000000000000"), "{refused}");
        assert!(parse("set alice --turns 10000001 --tokens 5").is_err());
        let largest = format!(
            "set alice --turns {} --tokens {}",
            DailyBudget::MAX_TURNS,
            DailyBudget::MAX_TOKENS
        );
        assert!(parse(&largest).is_ok());
    }
}
