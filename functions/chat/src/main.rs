// The streaming runner nests deep async types.
#![recursion_limit = "256"]

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let state = chat::State::from_env().await?;
    shared::http::event::run_streaming(|req| chat::handle(&state, req)).await
}
