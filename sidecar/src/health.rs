//! `/healthz`, `/readyz` and `/metrics` on their own plain-HTTP port, for the kubelet's probes
//! and Prometheus. Readiness means the protocol listeners are bound, independent of the VM:
//! KubeVirt waits for the sidecar to be Ready before it starts QEMU.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

/// What the health server reports on.
pub struct HealthState {
    /// The Redfish TCP address; a connect to it tells whether the listener is bound.
    pub redfish: SocketAddr,
    /// Prometheus text from the machine.
    pub metrics: Box<dyn Fn() -> String + Send + Sync>,
    /// Once bound, the listener stays bound until shutdown: remember it.
    pub ready: AtomicBool,
    /// What the BMC waits for before it can serve (a Secret not mounted yet, no consent).
    pub waiting: std::sync::Mutex<Option<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("cannot listen for health probes on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("health server stopped: {0}")]
    Stopped(std::io::Error),
}

/// Binds now (so a taken port fails the start), then serves until `shutdown`.
pub async fn bind(
    addr: SocketAddr,
    state: Arc<HealthState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<impl Future<Output = Result<(), HealthError>>, HealthError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HealthError::Bind { addr, source })?;
    tracing::info!(%addr, "health probes listening");
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    Ok(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(HealthError::Stopped)
    })
}

fn local(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    }
}

async fn readyz(State(state): State<Arc<HealthState>>) -> (StatusCode, String) {
    if state.ready.load(Ordering::Relaxed) {
        return (StatusCode::OK, "ready\n".into());
    }
    if let Some(why) = state
        .waiting
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
    {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"));
    }
    let target = local(state.redfish);
    let connect = tokio::net::TcpStream::connect(target);
    match tokio::time::timeout(Duration::from_millis(500), connect).await {
        Ok(Ok(_)) => {
            state.ready.store(true, Ordering::Relaxed);
            (StatusCode::OK, "ready\n".into())
        }
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the Redfish listener on {} is not bound yet\n",
                state.redfish
            ),
        ),
    }
}

async fn metrics(State(state): State<Arc<HealthState>>) -> String {
    let mut text = (state.metrics)();
    text.push_str("# TYPE kubevirt_bmc_ready gauge\n");
    text.push_str(&format!(
        "kubevirt_bmc_ready {}\n",
        u8::from(state.ready.load(Ordering::Relaxed))
    ));
    text
}
