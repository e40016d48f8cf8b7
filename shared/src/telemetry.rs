//! Structured JSON logs through `tracing`, CloudWatch metrics as Embedded Metric Format records
//! in the log, the one summary line (and record) of each request, and the cold-start flag.
//!
//! Info-level lines carry ids, routes, statuses and timings; never a secret, never a message body.
//! Metric records are written only once `startup::apply` turned them on (in Lambda, or with
//! `METRICS=emf`); until then [`emit_metrics`] writes nothing.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use tracing_subscriber::EnvFilter;

static COLD: AtomicBool = AtomicBool::new(true);

/// Installs the JSON log subscriber; the level comes from `RUST_LOG` (default `info`).
/// Call once, first thing in `main`.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A second call (tests, the local server hosting several functions) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_ansi(false)
        .with_env_filter(filter)
        .try_init();
}

/// True exactly once per process: for the first invocation of an execution environment.
pub(crate) fn take_cold_start() -> bool {
    COLD.swap(false, Ordering::Relaxed)
}

/// The one summary line of a request.
pub(crate) fn request_summary(
    request_id: &str,
    route: &str,
    status: u16,
    latency: Duration,
    cold_start: bool,
) {
    tracing::info!(
        request_id,
        route,
        status,
        latency_ms = latency.as_secs_f64() * 1_000.0,
        cold_start,
        "request"
    );
    let class = |hundred: u16| f64::from(u8::from(status / 100 == hundred));
    emit_metrics(
        &[("Function", function_name()), ("Route", route)],
        &[
            ("Requests", 1.0, "Count"),
            ("Latency", latency.as_secs_f64() * 1_000.0, "Milliseconds"),
            ("Status2xx", class(2), "Count"),
            ("Status4xx", class(4), "Count"),
            ("Status5xx", class(5), "Count"),
        ],
    );
}

/// The CloudWatch namespace of our metrics.
pub(crate) const METRICS_NAMESPACE: &str = "ServerlessChat";

/// One CloudWatch Embedded Metric Format record: CloudWatch turns the log line into metrics, with
/// no API call from the function.
pub(crate) fn metric_record(
    dimensions: &[(&str, &str)],
    metrics: &[(&str, f64, &str)],
    timestamp_ms: u128,
) -> serde_json::Value {
    let mut record = serde_json::Map::new();
    for (name, value) in dimensions {
        record.insert((*name).to_owned(), serde_json::Value::from(*value));
    }
    for (name, value, _) in metrics {
        record.insert((*name).to_owned(), serde_json::Value::from(*value));
    }
    let names: Vec<&str> = dimensions.iter().map(|(name, _)| *name).collect();
    let definitions: Vec<serde_json::Value> = metrics
        .iter()
        .map(|(name, _, unit)| serde_json::json!({"Name": name, "Unit": unit}))
        .collect();
    record.insert(
        "_aws".to_owned(),
        serde_json::json!({
            "Timestamp": timestamp_ms as u64,
            "CloudWatchMetrics": [{
                "Namespace": METRICS_NAMESPACE,
                "Dimensions": [names],
                "Metrics": definitions,
            }]
        }),
    );
    serde_json::Value::Object(record)
}

/// Where metrics go: `Some(function name)` when records are written, `None` when not.
static METRICS: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// Turns metric records on (`Config::metrics`: in Lambda, where CloudWatch reads them, or when
/// `METRICS=emf` asks for them) for `function_name`, once per process; `startup::apply` calls
/// it. Until then, and when off, no record is written.
pub(crate) fn configure_metrics(enabled: bool, function_name: &str) {
    let _ = METRICS.set(enabled.then(|| function_name.to_owned()));
}

fn function_name() -> &'static str {
    METRICS.get().and_then(Option::as_deref).unwrap_or("local")
}

/// Writes an EMF record to stdout, where Lambda's log capture finds it.
pub fn emit_metrics(dimensions: &[(&str, &str)], metrics: &[(&str, f64, &str)]) {
    if !METRICS.get().is_some_and(Option::is_some) {
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    println!("{}", metric_record(dimensions, metrics, now));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_records_follow_the_embedded_metric_format() {
        let record = metric_record(
            &[("Provider", "openai"), ("Model", "gpt-4o-mini")],
            &[("FeedbackRating", 4.0, "None")],
            1_795_761_612_000,
        );
        let aws = &record["_aws"];
        assert_eq!(aws["Timestamp"], 1_795_761_612_000u64);
        let directive = &aws["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], METRICS_NAMESPACE);
        assert_eq!(
            directive["Dimensions"],
            serde_json::json!([["Provider", "Model"]])
        );
        assert_eq!(
            directive["Metrics"],
            serde_json::json!([{"Name": "FeedbackRating", "Unit": "None"}])
        );
        // Every dimension and metric named in the directive is a member of the record.
        assert_eq!(record["Provider"], "openai");
        assert_eq!(record["Model"], "gpt-4o-mini");
        assert_eq!(record["FeedbackRating"], 4.0);
    }
}
