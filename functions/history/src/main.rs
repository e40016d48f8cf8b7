#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let state = match history::State::from_env().await {
        Ok(state) => state,
        Err(err) => return Err(shared::http::event::init_failed(err).await),
    };
    state.connect_at_init().await;
    shared::http::event::run(|req| history::handle(&state, req)).await
}
