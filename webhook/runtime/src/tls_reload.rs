//! Follows a serving certificate on disk. Kubernetes updates a Secret volume by swapping the
//! `..data` symlink, which a watch on the file itself misses; we re-read the files through
//! their paths on a short interval, so any swap (symlink, rename, in-place write) is seen.
//! A new pair that does not load keeps the old one serving, and the reason is logged once.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;

use crate::tls::{Identity, TlsError};

/// The PEM bytes of the certificate and key last loaded.
pub type Pem = (Vec<u8>, Vec<u8>);

/// What became of a changed pair, for a caller's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    Ok,
    Rejected,
}

impl Reload {
    pub fn as_str(self) -> &'static str {
        match self {
            Reload::Ok => "ok",
            Reload::Rejected => "rejected",
        }
    }
}

pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    fn read(&self) -> std::io::Result<Pem> {
        Ok((std::fs::read(&self.cert)?, std::fs::read(&self.key)?))
    }

    fn load(&self, cert: &[u8], key: &[u8]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        Identity::from_pem(cert, key, &self.cert, &self.key)?.server_config()
    }

    /// Fails the start on a bad pair rather than the first client's handshake.
    pub fn initial(&self) -> Result<(RustlsConfig, Pem), TlsError> {
        let (cert, key) = self.read().map_err(|e| TlsError::Read {
            path: self.cert.display().to_string(),
            reason: e.to_string(),
        })?;
        let config = self.load(&cert, &key)?;
        Ok((RustlsConfig::from_config(config), (cert, key)))
    }
}

/// Runs until the task is dropped; `on_change` hears of every changed pair once.
pub async fn follow(
    files: CertFiles,
    rustls: RustlsConfig,
    mut current: Pem,
    interval: Duration,
    on_change: impl Fn(Reload),
) {
    let mut rejected: Option<Pem> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let seen = match files.read() {
            Ok(seen) => seen,
            // Mid-swap reads can fail briefly; the next tick sees the finished state.
            Err(e) => {
                tracing::debug!(error = %e, "serving certificate not readable right now");
                continue;
            }
        };
        if seen == current || rejected.as_ref() == Some(&seen) {
            continue;
        }
        match files.load(&seen.0, &seen.1) {
            Ok(config) => {
                rustls.reload_from_config(config);
                tracing::info!(cert = %files.cert.display(), "serving certificate reloaded");
                on_change(Reload::Ok);
                current = seen;
                rejected = None;
            }
            Err(e) => {
                tracing::warn!(cert = %files.cert.display(), error = %e, "new serving certificate rejected; still serving the previous one");
                on_change(Reload::Rejected);
                rejected = Some(seen);
            }
        }
    }
}
