use lambda_http::{service_fn, Error, Request};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let state = feedback::State::from_env().await?;
    lambda_http::run(service_fn(|req: Request| async {
        Ok::<_, std::convert::Infallible>(feedback::handle(&state, req).await)
    }))
    .await
}
