//! `local-api`: the functions on http://127.0.0.1:3000 (or `LOCAL_API_ADDR`), for `make dev`.

// One thread, as in a Lambda execution environment: requests interleave at their awaits, and no
// CPU goes to handing work between threads (a chat turn spends its time waiting on I/O).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    shared::telemetry::init();
    let addr = std::env::var("LOCAL_API_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let functions = local_api::Functions::from_env().await?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!(url = %format!("http://{}", listener.local_addr()?), "local API server listening");
    local_api::serve(listener, functions, local_api::shutdown_signal()).await?;
    tracing::info!("local API server stopped");
    Ok(())
}
