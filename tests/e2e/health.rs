//! The health function against the local stack: every sample event, readiness failures, and the
//! bounded time of a hung dependency.

use std::time::{Duration, Instant};

use e2e::{event, stack, unique};
use health::{handle, handle_event, EventError, State};
use lambda_http::http::StatusCode;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::Value;
use shared::{aws::AwsClients, config::Config};

fn body(response: &lambda_http::Response<lambda_http::Body>) -> Value {
    serde_json::from_slice(response.body().as_ref()).expect("a JSON body")
}

fn request(name: &str) -> lambda_http::Request {
    lambda_http::request::from_str(&event(name)).expect("a valid API Gateway event")
}

fn lambda_event(name: &str) -> LambdaEvent<Value> {
    let payload = serde_json::from_str(&event(name)).expect("valid JSON");
    LambdaEvent::new(payload, Context::default())
}

async fn state_with(adjust: impl FnOnce(&mut Config)) -> State {
    let stack = stack().await;
    let mut config = stack.config;
    adjust(&mut config);
    State::new(config, stack.clients)
}

/// Clients whose endpoint is `endpoint` instead of the local stack's.
async fn clients_at(endpoint: &str, config: &Config) -> AwsClients {
    e2e::clients_at(
        Some(endpoint),
        config.aws_operation_timeout,
        None::<e2e::NoInterceptor>,
    )
    .await
}

#[tokio::test]
async fn liveness_event_answers_without_touching_dependencies() {
    // A table and secret that do not exist: liveness must not care.
    let state = state_with(|config| {
        config.table_name = unique("no-table");
        config.secret_id = unique("no-secret");
    })
    .await;
    let response = handle(&state, request("health-get.json")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = body(&response);
    assert_eq!(body["status"], "ok");
    let service = std::env::var("SERVICE_NAME").unwrap_or_else(|_| "serverless-chat".to_owned());
    assert_eq!(body["service"], service);
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    // AWS_LAMBDA_FUNCTION_NAME in Lambda; outside it, "local".
    assert_eq!(body["function"], "local");
    assert!(body["cold_start"].is_boolean());
    assert_eq!(response.headers()["content-type"], "application/json");
}

#[tokio::test]
async fn readiness_event_passes_both_checks_against_the_local_stack() {
    let state = state_with(|_| {}).await;
    let response = handle(&state, request("health-ready.json")).await;
    let body = body(&response);
    assert_eq!(response.status(), StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["failed"], serde_json::json!([]));
    let checks = body["checks"].as_array().expect("checks");
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["dynamodb", "secretsmanager"]);
    for check in checks {
        assert_eq!(check["ok"], true, "{check}");
        assert!(check["latency_ms"].is_u64(), "{check}");
    }
    // The secret's value is never part of the answer.
    assert!(!body.to_string().contains("SecretString"));
}

#[tokio::test]
async fn readiness_names_a_missing_table() {
    let state = state_with(|config| config.table_name = unique("missing-table")).await;
    let response = handle(&state, request("health-ready.json")).await;
    let body = body(&response);
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["failed"], serde_json::json!(["dynamodb"]));
    assert_eq!(body["checks"][0]["error"], "not_found");
    assert_eq!(body["checks"][1]["ok"], true);
}

#[tokio::test]
async fn readiness_names_a_missing_secret() {
    let state = state_with(|config| config.secret_id = unique("missing-secret")).await;
    let response = handle(&state, request("health-ready.json")).await;
    let body = body(&response);
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["failed"], serde_json::json!(["secretsmanager"]));
    assert_eq!(body["checks"][1]["error"], "not_found");
}

#[tokio::test]
async fn an_unreachable_stack_fails_readiness_quickly() {
    let base = stack().await.config;
    // A port that was just free: nothing listens there.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let clients = clients_at(&format!("http://127.0.0.1:{port}"), &base).await;
    let state = State::new(base.clone(), clients);
    let started = Instant::now();
    let response = handle(&state, request("health-ready.json")).await;
    let elapsed = started.elapsed();
    let body = body(&response);
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        body["failed"],
        serde_json::json!(["dynamodb", "secretsmanager"])
    );
    assert!(
        elapsed <= base.health_check_timeout + Duration::from_secs(1),
        "took {elapsed:?}"
    );
}

#[tokio::test]
async fn a_hung_dependency_fails_its_check_within_the_timeout() {
    // A server that accepts connections and never answers.
    let (address, hold) = e2e::hung_endpoint().await;
    let mut config = stack().await.config;
    config.health_check_timeout = Duration::from_millis(500);
    let clients = clients_at(&format!("http://{address}"), &config).await;
    let state = State::new(config, clients);
    let started = Instant::now();
    let response = handle(&state, request("health-ready.json")).await;
    let elapsed = started.elapsed();
    hold.abort();
    let body = body(&response);
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["checks"][0]["error"], "timeout", "{body}");
    assert_eq!(body["checks"][1]["error"], "timeout", "{body}");
    assert!(elapsed >= Duration::from_millis(500), "took {elapsed:?}");
    assert!(elapsed < Duration::from_millis(1_500), "took {elapsed:?}");
}

#[tokio::test]
async fn the_lambda_entry_point_answers_api_gateway_in_its_own_shape() {
    let state = state_with(|_| {}).await;
    let output = handle_event(&state, lambda_event("health-get.json"))
        .await
        .expect("an HTTP answer");
    assert_eq!(output["statusCode"], 200, "{output}");
    let body: Value = serde_json::from_str(output["body"].as_str().expect("a body")).unwrap();
    assert_eq!(body["status"], "ok");

    let output = handle_event(&state, lambda_event("health-ready.json"))
        .await
        .expect("an HTTP answer");
    assert_eq!(output["statusCode"], 200, "{output}");
}

#[tokio::test]
async fn the_scheduled_probe_succeeds_when_ready_and_fails_naming_the_check() {
    let ready = state_with(|_| {}).await;
    let report = handle_event(&ready, lambda_event("health-schedule.json"))
        .await
        .expect("the probe passes against the local stack");
    assert_eq!(report["status"], "ok", "{report}");

    let broken = state_with(|config| config.table_name = unique("missing-table")).await;
    let err = handle_event(&broken, lambda_event("health-schedule.json"))
        .await
        .expect_err("the probe must fail the invocation");
    assert!(matches!(&err, EventError::ProbeFailed { failed } if failed == &["dynamodb"]));
    let diagnostic = lambda_runtime::Diagnostic::from(err);
    assert_eq!(diagnostic.error_type, "ReadinessProbeFailed");
    assert!(diagnostic.error_message.contains("dynamodb"));
}

#[tokio::test]
async fn an_unknown_event_is_an_error_not_a_panic() {
    let state = state_with(|_| {}).await;
    let event = LambdaEvent::new(serde_json::json!({"hello": "world"}), Context::default());
    let err = handle_event(&state, event).await.expect_err("unsupported");
    assert!(matches!(err, EventError::Unsupported(_)));
}

#[tokio::test]
async fn other_methods_and_routes_get_problem_answers() {
    let state = state_with(|_| {}).await;
    let mut event: Value = serde_json::from_str(&event("health-get.json")).unwrap();
    event["httpMethod"] = "POST".into();
    event["requestContext"]["httpMethod"] = "POST".into();
    let response = handle(
        &state,
        lambda_http::request::from_str(&event.to_string()).unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "GET");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );

    event["resource"] = "/healthz".into();
    event["requestContext"]["resourcePath"] = "/healthz".into();
    let response = handle(
        &state,
        lambda_http::request::from_str(&event.to_string()).unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        body(&response)["request_id"],
        "5b0f7a2e-1c3d-4e5f-8a9b-0c1d2e3f4a5b"
    );
}

#[tokio::test]
async fn readiness_describes_the_secret_and_serves_a_recent_result() {
    // The route is anonymous: it must never read the keys, and a flood of calls must not become
    // a flood of AWS calls.
    let (clients, recorder) = e2e::recording_clients().await;
    let config = stack().await.config;
    assert_eq!(config.readiness_cache, Duration::from_secs(5));
    let state = State::new(config, clients);
    for _ in 0..10 {
        let response = handle(&state, request("health-ready.json")).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let actions: Vec<String> = recorder
        .calls()
        .into_iter()
        .map(|call| call.action)
        .collect();
    assert_eq!(
        actions.len(),
        2,
        "one check of each dependency for ten calls: {actions:?}"
    );
    assert!(actions.contains(&"secretsmanager:DescribeSecret".to_owned()));
    assert!(actions.contains(&"dynamodb:DescribeTable".to_owned()));
}

#[tokio::test]
async fn the_scheduled_probe_checks_afresh_every_time() {
    let (clients, recorder) = e2e::recording_clients().await;
    let state = State::new(stack().await.config, clients);
    for _ in 0..2 {
        handle_event(&state, lambda_event("health-schedule.json"))
            .await
            .expect("ready");
    }
    assert_eq!(recorder.calls().len(), 4, "two checks per probe");
}
