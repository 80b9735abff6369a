//! The BMC's serving certificate from the installation's CA: a key made in memory (it never
//! leaves the process), a CSR for the VM's Service names and the Pod's IP sent to the
//! controller with the sidecar's own ServiceAccount token, renewal at two thirds of the
//! lifetime, and the old certificate kept serving while a renewal fails. Without any
//! certificate from the CA the BMC serves a self-signed one and says so: it must stay
//! reachable.
//!
//! The timing is pure ([`renew_at`], [`next_attempt`]): the caller passes the clock.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum_server::tls_rustls::RustlsConfig;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kubevirt_bmc_contract::certificate::{SignRequest, SignResponse, requested_names};
use kubevirt_bmc_runtime::tls::Identity;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("the CA bundle for {url} holds no certificate")]
    NoTrust { url: String },
    #[error("cannot make a key or CSR: {0}")]
    Csr(String),
    #[error("no token to ask with ({path}): {reason}")]
    Token { path: PathBuf, reason: String },
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} refused the certificate request ({status}): {message}")]
    Refused {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{url} answered with no usable certificate: {reason}")]
    BadAnswer { url: String, reason: String },
}

/// When a certificate valid `not_before`..`not_after` is renewed: at two thirds of its
/// lifetime, as kubelet's certificate manager aims for (70-90 % jittered, kubernetes
/// `staging/src/k8s.io/client-go/util/certificate/certificate_manager.go` `nextRotationDeadline`)
/// and cert-manager's default `renewBefore` of a third does.
pub fn renew_at(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    not_before + lifetime * 2 / 3
}

/// How long to wait before the next attempt: until the renewal time, or after `failures`
/// failed attempts past it a doubling wait from 2 s up to 5 minutes (never so long that a
/// certificate with minutes left expires unnoticed).
pub fn next_attempt(now: SystemTime, renew: SystemTime, failures: u32) -> Duration {
    if failures == 0 {
        if let Ok(wait) = renew.duration_since(now) {
            return wait;
        }
        return Duration::ZERO;
    }
    let backoff = Duration::from_secs(2u64.saturating_pow(failures.min(16)));
    backoff.min(Duration::from_secs(300))
}

/// Where and how to ask.
#[derive(Debug, Clone)]
pub struct Signer {
    pub url: String,
    pub ca_pem: String,
    pub token_file: PathBuf,
    pub namespace: String,
    pub vm: String,
    pub cluster_domain: String,
    pub pod_ip: Option<IpAddr>,
}

/// A certificate from the CA with its key, and when to renew it.
pub struct Issued {
    pub identity: Identity,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

type HttpsClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

impl Signer {
    fn client(&self) -> Result<HttpsClient, CertificateError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()).flatten() {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(CertificateError::NoTrust {
                url: self.url.clone(),
            });
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        // HTTPS only: the token goes to no one the CA bundle does not vouch for.
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .enable_http1()
            .build();
        Ok(Client::builder(TokioExecutor::new()).build(connector))
    }

    /// One request: a fresh key and CSR, the token read now (it rotates), the answer checked.
    pub async fn request(&self) -> Result<Issued, CertificateError> {
        let csr_error = |e: rcgen::Error| CertificateError::Csr(e.to_string());
        let (dns, ips) =
            requested_names(&self.vm, &self.namespace, &self.cluster_domain, self.pod_ip);
        let key = rcgen::KeyPair::generate().map_err(csr_error)?;
        let mut params = rcgen::CertificateParams::new(dns).map_err(csr_error)?;
        params
            .subject_alt_names
            .extend(ips.into_iter().map(rcgen::SanType::IpAddress));
        let csr = params.serialize_request(&key).map_err(csr_error)?;
        let token =
            std::fs::read_to_string(&self.token_file).map_err(|e| CertificateError::Token {
                path: self.token_file.clone(),
                reason: e.to_string(),
            })?;
        let body = serde_json::to_vec(&SignRequest {
            namespace: self.namespace.clone(),
            vm: self.vm.clone(),
            csr: csr.pem().map_err(csr_error)?,
        })
        .unwrap_or_default();
        let unreachable = |reason: String| CertificateError::Unreachable {
            url: self.url.clone(),
            reason,
        };
        let request = http::Request::post(&self.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", token.trim()),
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| unreachable(e.to_string()))?;
        let response =
            tokio::time::timeout(Duration::from_secs(10), self.client()?.request(request))
                .await
                .map_err(|_| unreachable("no answer within 10 s".to_owned()))?
                .map_err(|e| unreachable(error_chain(&e)))?;
        let status = response.status().as_u16();
        let bytes = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
            .await
            .map_err(|_| unreachable("the answer did not finish within 10 s".to_owned()))?
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        if status != 200 {
            let message: String = String::from_utf8_lossy(&bytes).chars().take(300).collect();
            return Err(CertificateError::Refused {
                url: self.url.clone(),
                status,
                message,
            });
        }
        let bad = |reason: String| CertificateError::BadAnswer {
            url: self.url.clone(),
            reason,
        };
        let signed: SignResponse =
            serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        let mut chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(signed.certificate.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| bad(e.to_string()))?;
        if chain.is_empty() {
            return Err(bad("no certificate in it".to_owned()));
        }
        // The CA goes along so a client holding only an intermediate's parent still verifies.
        chain.extend(CertificateDer::pem_slice_iter(signed.ca.as_bytes()).flatten());
        let key = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| bad(e.to_owned()))?;
        let unix = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        Ok(Issued {
            identity: Identity { chain, key },
            not_before: unix(signed.not_before),
            not_after: unix(signed.not_after),
        })
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Renews for as long as the process runs, swapping each new certificate into `tls` (new
/// connections get it; open ones keep theirs). `issued` is the validity of what serves now,
/// `None` for a self-signed stand-in (asked for again at once, then with backoff).
pub async fn renew_forever(
    signer: Arc<Signer>,
    tls: RustlsConfig,
    mut issued: Option<(SystemTime, SystemTime)>,
) {
    let mut failures: u32 = if issued.is_none() { 1 } else { 0 };
    loop {
        let renew = issued
            .map(|(from, until)| renew_at(from, until))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        tokio::time::sleep(next_attempt(SystemTime::now(), renew, failures)).await;
        match signer.request().await {
            Ok(new) => match new.identity.server_config() {
                Ok(config) => {
                    tls.reload_from_config(config);
                    tracing::info!(
                        url = %signer.url,
                        valid_until = new.not_after.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs(),
                        "serving a certificate from the installation's CA"
                    );
                    issued = Some((new.not_before, new.not_after));
                    failures = 0;
                }
                Err(error) => {
                    tracing::warn!(%error, "the new certificate does not load; still serving the previous one");
                    failures += 1;
                }
            },
            Err(error) => {
                failures += 1;
                match issued {
                    Some((_, until)) if until > SystemTime::now() => tracing::warn!(
                        %error,
                        "certificate renewal failed; still serving the current certificate"
                    ),
                    Some(_) => tracing::error!(
                        %error,
                        "certificate renewal failed and the current certificate has expired; clients that verify will refuse it"
                    ),
                    None => tracing::warn!(
                        %error,
                        "no certificate from the installation's CA yet; still serving a self-signed one"
                    ),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn renewal_is_due_at_two_thirds_of_the_lifetime() {
        // 24 h from t=1000: renew at 16 h.
        assert_eq!(renew_at(at(1000), at(1000 + 86_400)), at(1000 + 57_600));
        // Before that, wait exactly until then; at or past it, at once.
        assert_eq!(
            next_attempt(at(1000), at(1000 + 57_600), 0),
            Duration::from_secs(57_600)
        );
        assert_eq!(next_attempt(at(60_000), at(57_600), 0), Duration::ZERO);
        // A certificate whose validity is backwards renews at once.
        assert_eq!(renew_at(at(2000), at(1000)), at(2000));
    }

    #[test]
    fn failed_renewals_back_off_doubling_up_to_five_minutes() {
        let renew = at(100);
        let waits: Vec<u64> = (1..=10)
            .map(|n| next_attempt(at(200), renew, n).as_secs())
            .collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(next_attempt(at(200), renew, u32::MAX).as_secs(), 300);
    }

    #[tokio::test]
    async fn an_unreadable_ca_bundle_or_token_is_a_clear_error() {
        kubevirt_bmc_runtime::tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer {
            url: "https://127.0.0.1:1/bmc-certificate".to_owned(),
            ca_pem: "not pem".to_owned(),
            token_file: dir.path().join("token"),
            namespace: "vms".to_owned(),
            vm: "vm1".to_owned(),
            cluster_domain: "cluster.local".to_owned(),
            pod_ip: None,
        };
        let error = signer.request().await.err().unwrap();
        assert!(matches!(error, CertificateError::Token { .. }), "{error}");
        std::fs::write(dir.path().join("token"), "t").unwrap();
        let error = signer.request().await.err().unwrap();
        assert!(matches!(error, CertificateError::NoTrust { .. }), "{error}");
    }
}
