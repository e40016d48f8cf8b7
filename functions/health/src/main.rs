use lambda_runtime::{Error, FunctionResponse};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let state = health::State::from_env().await?;
    shared::http::event::serve_events(|event| async {
        health::handle_event(&state, event)
            .await
            .map(FunctionResponse::BufferedResponse)
    })
    .await
}
