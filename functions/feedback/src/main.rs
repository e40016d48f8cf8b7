#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let state = feedback::State::from_env().await?;
    shared::http::event::run(|req| feedback::handle(&state, req)).await
}
