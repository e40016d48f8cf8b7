//! `local-api`: the functions on http://127.0.0.1:3000 (or `LOCAL_API_ADDR`), for `make dev`.

// One thread, as in a Lambda execution environment: requests interleave at their awaits, and no
// CPU goes to handing work between threads (a chat turn spends its time waiting on I/O).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    shared::telemetry::init();
    let addr = std::env::var("LOCAL_API_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let functions = local_api::Functions::from_env().await?;
    // The web client, when it has been built (`make web`).
    let web_root = std::path::PathBuf::from(
        std::env::var("WEB_ROOT").unwrap_or_else(|_| "web/dist".to_owned()),
    );
    let web_root = if web_root.join("index.html").is_file() {
        tracing::info!(root = %web_root.display(), "serving the web client at /");
        Some(web_root)
    } else {
        tracing::warn!(root = %web_root.display(), "no web client built there (make web): API only");
        None
    };
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!(url = %format!("http://{}", listener.local_addr()?), "local API server listening");
    local_api::serve(
        listener,
        local_api::router(functions, web_root),
        local_api::shutdown_signal(),
    )
    .await?;
    tracing::info!("local API server stopped");
    Ok(())
}
