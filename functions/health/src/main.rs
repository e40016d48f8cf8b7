use lambda_runtime::{Error, FunctionResponse};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let state = match health::State::from_env().await {
        Ok(state) => state,
        Err(err) => return Err(shared::http::event::init_failed(err).await),
    };
    shared::http::event::serve_events(|event| async {
        health::handle_event(&state, event)
            .await
            .map(FunctionResponse::BufferedResponse)
    })
    .await
}
