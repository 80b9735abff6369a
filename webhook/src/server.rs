//! The HTTPS server the API server calls.

use std::net::SocketAddr;
use std::path::Path;

use axum::Router;
use axum::routing::get;
use axum_server::tls_rustls::RustlsConfig;
use kubevirt_bmc::tls::Identity;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Tls(#[from] kubevirt_bmc::tls::TlsError),
    #[error("cannot serve on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

pub fn router() -> Router {
    Router::new().route("/healthz", get(|| async { "ok" }))
}

/// Loads the certificate before binding so a bad one fails the start, not the first call.
pub async fn serve(addr: SocketAddr, cert: &Path, key: &Path) -> Result<(), ServerError> {
    let config = Identity::from_pem_files(cert, key)?.server_config()?;
    tracing::info!(%addr, "serving admission over HTTPS");
    axum_server::bind_rustls(addr, RustlsConfig::from_config(config))
        .serve(router().into_make_service())
        .await
        .map_err(|source| ServerError::Serve { addr, source })
}
