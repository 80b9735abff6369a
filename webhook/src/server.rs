//! The HTTPS server the API server calls: admission routes, health and metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kube::core::DynamicObject;
use kube::core::admission::AdmissionReview;

use crate::admission;
use crate::inject::InjectionConfig;
use crate::metrics::Metrics;
use crate::names;
use kubevirt_bmc_runtime::tls_reload::{self, CertFiles};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Tls(#[from] kubevirt_bmc_runtime::tls::TlsError),
    #[error("cannot serve on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Shared by every request.
pub struct Context {
    pub injection: InjectionConfig,
    pub metrics: Arc<Metrics>,
    /// Signs the sidecars' serving certificates; `None` without the controller (no API access).
    pub signer: Option<Arc<crate::certs::signer::Signer>>,
}

/// A CSR with a few names is about 1 KiB; anything near this is not one.
const SIGN_BODY_LIMIT: usize = 64 * 1024;

/// An AdmissionReview is at most two objects of etcd's 1.5 MiB limit plus envelope.
const BODY_LIMIT: usize = 8 * 1024 * 1024;

pub fn router(ctx: Arc<Context>) -> Router {
    Router::new()
        // The API server appends `?timeout=5s`; routing is on the path alone.
        .route(names::MUTATE_PODS_PATH, post(mutate))
        .route(names::VALIDATE_VMS_PATH, post(validate))
        .route(
            kubevirt_bmc_contract::certificate::SIGN_PATH,
            post(sign).layer(DefaultBodyLimit::max(SIGN_BODY_LIMIT)),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(ctx)
}

fn json(review: &AdmissionReview<DynamicObject>) -> Response {
    match admission::encode(review) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn mutate(State(ctx): State<Arc<Context>>, body: Bytes) -> Response {
    let start = Instant::now();
    let (review, outcome) = admission::mutate_pods(&body, &ctx.injection);
    ctx.metrics
        .admission(admission::MUTATE, &outcome, start.elapsed());
    json(&review)
}

async fn validate(State(ctx): State<Arc<Context>>, body: Bytes) -> Response {
    let start = Instant::now();
    let (review, outcome) = admission::validate_vms(&body);
    ctx.metrics
        .admission(admission::VALIDATE, &outcome, start.elapsed());
    json(&review)
}

/// A sidecar's CSR, with its ServiceAccount token as bearer. Refusals carry their reason
/// (which names no token); API failures are logged and answered 503.
async fn sign(
    State(ctx): State<Arc<Context>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let Some(signer) = ctx.signer.as_ref() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "this server signs no certificates (--no-controller)",
        )
            .into_response();
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        ctx.metrics.certificate("unauthenticated");
        return (
            StatusCode::UNAUTHORIZED,
            "a ServiceAccount bearer token is required",
        )
            .into_response();
    };
    match signer.sign(token, &body).await {
        Ok(signed) => {
            ctx.metrics.certificate("signed");
            (
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::to_vec(&signed).unwrap_or_default(),
            )
                .into_response()
        }
        Err(error) => {
            ctx.metrics.certificate(error.label());
            tracing::warn!(%error, "certificate request not signed");
            let code =
                StatusCode::from_u16(error.status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let text = match error {
                crate::certs::signer::SignerError::Api(_) => {
                    "the Kubernetes API did not answer; retry".to_owned()
                }
                other => other.to_string(),
            };
            (code, text).into_response()
        }
    }
}

async fn metrics(State(ctx): State<Arc<Context>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ctx.metrics.render(),
    )
        .into_response()
}

pub struct ServeConfig {
    pub listen: SocketAddr,
    pub files: CertFiles,
    pub reload_interval: Duration,
}

/// Loads the certificate before binding so a bad one fails the start, then follows rotations.
/// `handle` reports the bound address (tests listen on port 0) and stops the server.
pub async fn serve(
    config: ServeConfig,
    ctx: Arc<Context>,
    handle: axum_server::Handle<SocketAddr>,
) -> Result<(), ServerError> {
    let (rustls, current) = config.files.initial()?;
    let metrics = ctx.metrics.clone();
    let follower = tokio::spawn(tls_reload::follow(
        config.files,
        rustls.clone(),
        current,
        config.reload_interval,
        move |reload| metrics.tls_reload(reload.as_str()),
    ));
    let addr = config.listen;
    tracing::info!(%addr, "serving admission over HTTPS");
    let mut server = axum_server::bind_rustls(addr, rustls).handle(handle);
    // Idle scanners and half-open connections must not pin tasks forever.
    server
        .http_builder()
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    let result = server
        .serve(router(ctx).into_make_service())
        .await
        .map_err(|source| ServerError::Serve { addr, source });
    follower.abort();
    result
}
