//! `GET /usage`: the caller's day so far and their budgets; and the `RateLimit-*` headers that
//! every chat answer carries.

use lambda_http::{
    http::{HeaderMap, StatusCode},
    Response,
};
use serde::Serialize;
use shared::{
    domain::UserId,
    http::{self, AnswerBody, ApiError},
    store::{Counter, Usage},
};

use crate::State;

#[derive(Serialize)]
struct UsageView {
    day: String,
    turns: CounterView,
    tokens: CounterView,
    minute: CounterView,
    custom_budget: bool,
    resets_in_seconds: u64,
}

/// One budget's counter; `limit` and `remaining` are `null` when it is unlimited.
#[derive(Serialize)]
struct CounterView {
    used: u64,
    limit: Option<u64>,
    remaining: Option<u64>,
}

impl From<Counter> for CounterView {
    fn from(counter: Counter) -> Self {
        Self {
            used: counter.used,
            limit: counter.limit,
            remaining: counter.remaining,
        }
    }
}

pub(crate) async fn show(state: &State, user: &UserId) -> Result<Response<AnswerBody>, ApiError> {
    let usage = state.store.usage(user, &state.budgets).await?;
    let view = UsageView {
        day: usage.day.to_string(),
        turns: usage.turns.into(),
        tokens: usage.tokens.into(),
        minute: usage.minute.into(),
        custom_budget: usage.overridden,
        resets_in_seconds: usage.day_resets_in,
    };
    Ok(http::json(StatusCode::OK, &view).map(AnswerBody::from))
}

/// The `RateLimit-*` headers of the budget closest to refusing: this minute's turns or today's.
pub(crate) fn rate_limit_headers(headers: &mut HeaderMap, usage: Option<&Usage>) {
    let Some(usage) = usage else { return };
    let candidates = [
        (usage.minute, usage.minute_resets_in),
        (usage.turns, usage.day_resets_in),
    ];
    let closest = candidates
        .iter()
        .filter_map(|(counter, reset)| Some((counter.limit?, counter.remaining?, *reset)))
        .min_by_key(|(_, remaining, _)| *remaining);
    if let Some((limit, remaining, reset)) = closest {
        http::rate_limit_headers(headers, limit, remaining, reset);
    }
}
