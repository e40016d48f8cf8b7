//! The functions' Lambda loop (`shared::http::runtime`) against a Runtime API emulator whose
//! receiver delays its acknowledgements as a default Linux stack does: answers in both formats,
//! errors, and a streamed answer whose pieces leave as they are produced.

use std::{convert::Infallible, time::Duration};

use e2e::{Acks, Report, ReportKind, RuntimeApiEmulator};
use lambda_runtime::{Config, Diagnostic, FunctionResponse, LambdaEvent};
use serde_json::{json, Value};
use shared::http::{
    event_stream,
    runtime::{self, Answer, Environment, RuntimeApi},
};

const WAIT: Duration = Duration::from_secs(10);

fn api(emulator: &RuntimeApiEmulator) -> RuntimeApi {
    RuntimeApi::new(Environment {
        runtime_api: emulator.address(),
        config: Config {
            function_name: "emulated".to_owned(),
            memory: 128,
            version: "$LATEST".to_owned(),
            ..Config::default()
        },
    })
    .expect("a client of the emulator")
    .leaving_the_environment()
}

/// A streamed answer of `count` server-sent events, one every `every`, written by a producer
/// that runs after the handler has answered (as the chat function's stream does).
fn streamed_events(count: usize, every: Duration) -> Answer {
    let (sink, response) = event_stream();
    tokio::spawn(async move {
        for n in 0..count {
            if sink.send("delta", &json!({ "n": n })).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
    runtime::streamed_answer(response)
}

/// Invocation `id` with `event`, and its report, which must be of `kind`.
async fn invoke(
    emulator: &mut RuntimeApiEmulator,
    id: &str,
    event: &str,
    kind: ReportKind,
) -> Report {
    let (_, report) = emulator.invoke(id, event, WAIT).await.expect("a report");
    assert_eq!((report.kind, report.id.as_deref()), (kind, Some(id)));
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_leaves_piece_by_piece_without_waiting_for_acknowledgements() {
    let mut emulator = RuntimeApiEmulator::start(Acks::Delayed)
        .await
        .expect("emulator");
    let every = Duration::from_millis(2);
    let functions = tokio::spawn(runtime::run(api(&emulator), move |_event| async move {
        Ok::<_, Infallible>(streamed_events(6, every))
    }));
    // Per invocation: how long after the prelude the first delta arrived (the producer writes
    // it at once), and the last (written 5 × 2 ms later).
    let (mut firsts, mut lasts) = (Vec::new(), Vec::new());
    for n in 0..8 {
        let id = format!("stream-{n}");
        let report = invoke(&mut emulator, &id, "{}", ReportKind::Response).await;
        assert!(report.is_streamed());
        let prelude = report.prelude().expect("a prelude");
        assert_eq!(prelude["statusCode"], 200);
        assert_eq!(prelude["headers"]["content-type"], "text/event-stream");
        let payload = String::from_utf8(report.payload()).expect("text");
        assert_eq!(payload.matches("event: delta\n").count(), 6, "{payload}");
        let prelude_at = report.prelude_at().expect("prelude's end");
        let deltas = report.arrivals(b"event: delta\n");
        firsts.push(deltas[0] - prelude_at);
        lasts.push(deltas[5] - prelude_at);
    }
    functions.abort();
    firsts.sort();
    lasts.sort();
    // A piece held for the receiver's delayed acknowledgement arrives about 40 ms late, and the
    // pieces written meanwhile with it.
    let (first, last) = (firsts[firsts.len() / 2], lasts[lasts.len() / 2]);
    assert!(
        first < Duration::from_millis(10) && last < 5 * every + Duration::from_millis(10),
        "median after the prelude: first delta {first:?}, last {last:?} (firsts {firsts:?})"
    );
}

#[tokio::test]
async fn whole_answers_errors_and_bad_events_are_reported_and_the_loop_goes_on() {
    let mut emulator = RuntimeApiEmulator::start(Acks::Delayed)
        .await
        .expect("emulator");
    let functions = tokio::spawn(runtime::run(
        api(&emulator),
        |event: LambdaEvent<Value>| async move {
            match event.payload["ask"].as_str() {
                Some("fail") => Err(Diagnostic {
                    error_type: "Refused".to_owned(),
                    error_message: "asked to fail".to_owned(),
                }),
                _ => Ok(FunctionResponse::BufferedResponse(json!({
                    "echo": event.payload,
                    "request": event.context.request_id,
                    "trace": event.context.xray_trace_id,
                }))),
            }
        },
    ));

    let whole = invoke(
        &mut emulator,
        "whole-1",
        r#"{"ask":"hello"}"#,
        ReportKind::Response,
    )
    .await;
    assert!(!whole.is_streamed());
    let body: Value = serde_json::from_slice(&whole.payload()).expect("JSON");
    assert_eq!(body["echo"], json!({"ask": "hello"}));
    assert_eq!(body["request"], "whole-1");
    assert_eq!(
        body["trace"],
        "Root=1-00000000-000000000000000000000000;Sampled=0"
    );

    let failed = invoke(
        &mut emulator,
        "fail-1",
        r#"{"ask":"fail"}"#,
        ReportKind::Error,
    )
    .await;
    assert_eq!(
        failed.headers["lambda-runtime-function-error-type"],
        "unhandled"
    );
    let diagnostic: Value = serde_json::from_slice(&failed.body()).expect("JSON");
    assert_eq!(
        diagnostic,
        json!({"errorType": "Refused", "errorMessage": "asked to fail"})
    );

    let bad = invoke(&mut emulator, "bad-1", "not json", ReportKind::Error).await;
    let diagnostic: Value = serde_json::from_slice(&bad.body()).expect("JSON");
    assert_eq!(diagnostic["errorType"], "InvalidEvent");

    // The loop goes on after errors.
    let after = invoke(
        &mut emulator,
        "whole-2",
        r#"{"ask":"again"}"#,
        ReportKind::Response,
    )
    .await;
    let body: Value = serde_json::from_slice(&after.payload()).expect("JSON");
    assert_eq!(body["request"], "whole-2");
    functions.abort();
}

#[tokio::test]
async fn a_function_that_cannot_start_reports_its_init_error() {
    let mut emulator = RuntimeApiEmulator::start(Acks::Delayed)
        .await
        .expect("emulator");
    let diagnostic = Diagnostic {
        error_type: "InitError".to_owned(),
        error_message: "TABLE_NAME is not set".to_owned(),
    };
    api(&emulator)
        .init_failed(&diagnostic)
        .await
        .expect("reported");
    let report = emulator.report(WAIT).await.expect("a report");
    assert_eq!(
        (report.kind, report.id.as_deref()),
        (ReportKind::InitError, None)
    );
    assert_eq!(
        report.headers["lambda-runtime-function-error-type"],
        "Runtime.InitError"
    );
    let body: Value = serde_json::from_slice(&report.body()).expect("JSON");
    assert_eq!(
        body,
        json!({"errorType": "InitError", "errorMessage": "TABLE_NAME is not set"})
    );
}
