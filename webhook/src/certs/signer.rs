//! The I/O around [`super::decide`] and [`super::ca`]: the CA Secret (created once, then read
//! by name only), its certificate published in a ConfigMap, the TokenReview of a sidecar's
//! token, the VM's launcher Pod addresses, and the HTTPS handler the sidecars call.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kubevirt_bmc_contract::certificate::{CA_CONFIGMAP_KEY, CA_NAME, SignRequest, SignResponse};
use kubevirt_bmc_contract::names;

use super::ca::{self, Ca, CaPem};
use super::decide::{self, Refusal};

#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("{0}")]
    BadRequest(String),
    #[error("the certificate authority is not available yet; retry")]
    NoCa,
    #[error("the Kubernetes API did not answer: {0}")]
    Api(String),
}

impl SignerError {
    /// The HTTP status the sidecar sees.
    pub fn status(&self) -> u16 {
        match self {
            SignerError::Refused(Refusal::Unauthenticated) => 401,
            SignerError::Refused(_) => 403,
            SignerError::BadRequest(_) => 400,
            SignerError::NoCa | SignerError::Api(_) => 503,
        }
    }

    /// A low-cardinality label for the metric.
    pub fn label(&self) -> &'static str {
        match self {
            SignerError::Refused(Refusal::Unauthenticated) => "unauthenticated",
            SignerError::Refused(_) => "refused",
            SignerError::BadRequest(_) => "bad_request",
            SignerError::NoCa => "no_ca",
            SignerError::Api(_) => "api_error",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SignerConfig {
    /// The controller's namespace, where the CA Secret and ConfigMap live.
    pub namespace: String,
    /// Make the CA Secret when it is missing (`false` where cert-manager issues it).
    pub create_ca: bool,
    pub lifetime: Duration,
    pub cluster_domain: String,
}

/// Signs sidecar certificates; shared by the HTTPS handlers.
pub struct Signer {
    client: kube::Client,
    config: SignerConfig,
    /// The CA PEM last published in the ConfigMap, to patch only on a change.
    published: Mutex<Option<String>>,
}

fn api_error(e: kube::Error) -> SignerError {
    SignerError::Api(e.to_string())
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == code)
}

fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

impl Signer {
    pub fn new(client: kube::Client, config: SignerConfig) -> Arc<Signer> {
        Arc::new(Signer {
            client,
            config,
            published: Mutex::new(None),
        })
    }

    /// The CA Secret, read by its name only (the Role allows nothing else). When it is missing
    /// and we may, it is created; of two replicas racing, the loser's create gets 409 and it
    /// reads the winner's.
    async fn load_ca(&self) -> Result<Ca, SignerError> {
        let secrets = Api::<Secret>::namespaced(self.client.clone(), &self.config.namespace);
        let secret = match secrets.get_opt(CA_NAME).await.map_err(api_error)? {
            Some(secret) => secret,
            None if self.config.create_ca => {
                let pem =
                    ca::generate(SystemTime::now()).map_err(|e| SignerError::Api(e.to_string()))?;
                let data = BTreeMap::from([
                    (
                        "tls.crt".to_owned(),
                        ByteString(pem.cert.clone().into_bytes()),
                    ),
                    (
                        "tls.key".to_owned(),
                        ByteString(pem.key.clone().into_bytes()),
                    ),
                    (
                        "ca.crt".to_owned(),
                        ByteString(pem.cert.clone().into_bytes()),
                    ),
                ]);
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(CA_NAME.to_owned()),
                        ..Default::default()
                    },
                    type_: Some("kubernetes.io/tls".to_owned()),
                    data: Some(data),
                    ..Default::default()
                };
                match secrets.create(&PostParams::default(), &secret).await {
                    Ok(made) => {
                        tracing::info!(
                            secret = CA_NAME,
                            "made the sidecars' certificate authority"
                        );
                        made
                    }
                    Err(e) if is_status(&e, 409) => {
                        secrets.get(CA_NAME).await.map_err(api_error)?
                    }
                    Err(e) => return Err(api_error(e)),
                }
            }
            None => return Err(SignerError::NoCa),
        };
        let (Some(cert), Some(key)) = (
            secret_text(&secret, "tls.crt"),
            secret_text(&secret, "tls.key"),
        ) else {
            return Err(SignerError::NoCa);
        };
        Ca::from_pem(&CaPem { cert, key }).map_err(|e| {
            tracing::warn!(error = %e, secret = CA_NAME, "the CA Secret does not load");
            SignerError::NoCa
        })
    }

    /// Publishes the CA certificate in the ConfigMap users read, when it changed.
    async fn publish(&self, ca_pem: &str) -> Result<(), SignerError> {
        if self
            .published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_deref()
            == Some(ca_pem)
        {
            return Ok(());
        }
        let maps = Api::<ConfigMap>::namespaced(self.client.clone(), &self.config.namespace);
        let map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(CA_NAME.to_owned()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                CA_CONFIGMAP_KEY.to_owned(),
                ca_pem.to_owned(),
            )])),
            ..Default::default()
        };
        match maps.create(&PostParams::default(), &map).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 409) => {
                let patch = serde_json::json!({"data": {CA_CONFIGMAP_KEY: ca_pem}});
                maps.patch(CA_NAME, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(api_error)?;
            }
            Err(e) => return Err(api_error(e)),
        }
        *self.published.lock().unwrap_or_else(|p| p.into_inner()) = Some(ca_pem.to_owned());
        Ok(())
    }

    /// At start (retried by the caller until it works): the CA exists and is published.
    pub async fn prepare(&self) -> Result<(), SignerError> {
        let ca = self.load_ca().await?;
        self.publish(&ca.cert_pem).await
    }

    /// Who the token belongs to, as the API server says (authentication.k8s.io/v1 TokenReview,
    /// kubernetes `pkg/registry/authentication/tokenreview/storage.go`).
    async fn review(&self, token: &str) -> Result<String, SignerError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(api_error)?;
        let status = reviewed.status.unwrap_or_default();
        match (status.authenticated, status.user.and_then(|u| u.username)) {
            (Some(true), Some(user)) => Ok(user),
            _ => Err(Refusal::Unauthenticated.into()),
        }
    }

    /// The addresses of the VM's running launcher Pods (two during a live migration).
    async fn pod_ips(&self, namespace: &str, vm: &str) -> Result<Vec<IpAddr>, SignerError> {
        let selector = format!(
            "{}={},{}={}",
            names::LAUNCHER_LABEL,
            names::LAUNCHER_VALUE,
            names::VM_LABEL,
            names::vm_label(vm)
        );
        let pods = Api::<Pod>::namespaced(self.client.clone(), namespace)
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(api_error)?;
        Ok(pods
            .items
            .iter()
            .filter(|pod| {
                pod.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(names::DOMAIN_ANNOTATION))
                    .is_some_and(|d| d == vm)
                    && pod.metadata.deletion_timestamp.is_none()
            })
            .filter_map(|pod| pod.status.as_ref())
            .filter(|s| !matches!(s.phase.as_deref(), Some("Succeeded" | "Failed")))
            .flat_map(|s| {
                s.pod_ip
                    .iter()
                    .cloned()
                    .chain(s.pod_ips.iter().flatten().map(|p| p.ip.clone()))
                    .collect::<Vec<_>>()
            })
            .filter_map(|ip| ip.parse().ok())
            .collect())
    }

    /// One signing: the token is checked first, so an unauthenticated caller learns nothing
    /// about VMs or Pods.
    pub async fn sign(&self, token: &str, body: &[u8]) -> Result<SignResponse, SignerError> {
        let user = self.review(token).await?;
        let request: SignRequest = serde_json::from_slice(body)
            .map_err(|e| SignerError::BadRequest(format!("not a certificate request: {e}")))?;
        let (csr, asked) =
            ca::parse_csr(&request.csr).map_err(|e| SignerError::BadRequest(e.to_string()))?;
        let pod_ips = if asked.ips.is_empty() {
            Vec::new()
        } else {
            self.pod_ips(&request.namespace, &request.vm).await?
        };
        decide::authorize(
            &user,
            &request.namespace,
            &request.vm,
            &asked,
            &pod_ips,
            &self.config.cluster_domain,
        )?;
        let ca = self.load_ca().await?;
        // A rotated CA (cert-manager's) reaches the ConfigMap with the first signing after it.
        if let Err(error) = self.publish(&ca.cert_pem).await {
            tracing::warn!(%error, "cannot publish the CA certificate");
        }
        let now = SystemTime::now();
        let validity = decide::validity(now, self.config.lifetime);
        let certificate = ca
            .issue(&csr, &asked, validity)
            .map_err(|e| SignerError::Api(e.to_string()))?;
        let unix = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
        };
        tracing::info!(
            namespace = %request.namespace,
            vm = %request.vm,
            names = ?asked.dns,
            ips = ?asked.ips,
            "signed a BMC serving certificate"
        );
        Ok(SignResponse {
            certificate,
            ca: ca.cert_pem,
            not_before: unix(validity.0),
            not_after: unix(validity.1),
        })
    }
}
