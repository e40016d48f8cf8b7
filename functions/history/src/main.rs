#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let state = history::State::from_env().await?;
    shared::http::event::run(|req| history::handle(&state, req)).await
}
