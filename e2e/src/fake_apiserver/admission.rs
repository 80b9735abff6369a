//! Mutating admission as kube-apiserver does it for Pod CREATE: the webhook is configured from
//! the MutatingWebhookConfiguration in `manifests/` (objectSelector, path, timeout, caBundle),
//! called over real HTTPS with an AdmissionReview v1, its JSONPatch applied; then the Pod's
//! service account must exist (checked after the webhook, as the real server does).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Full};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("manifest: {0}")]
    Manifest(String),
    #[error("calling webhook {url}: {message}")]
    Call { url: String, message: String },
}

/// One mutating webhook, as the API server holds it.
#[derive(Debug, Clone)]
pub struct MutatingWebhook {
    pub name: String,
    pub address: SocketAddr,
    /// The DNS name the serving certificate must carry (`<service>.<namespace>.svc`).
    pub server_name: String,
    pub path: String,
    pub timeout: Duration,
    pub match_labels: BTreeMap<String, String>,
    pub ca_bundle_pem: Vec<u8>,
    /// `Ignore`: a failed call admits the object unchanged; `Fail`: refuses it.
    pub fail_open: bool,
}

impl MutatingWebhook {
    /// The first webhook of the MutatingWebhookConfiguration found in the YAML `text`. The
    /// service is reached at `address`; `ca_bundle_pem` stands in for what cert-manager's
    /// CA injector writes when the manifest carries no `caBundle`.
    pub fn from_manifest(
        text: &str,
        address: SocketAddr,
        ca_bundle_pem: &[u8],
    ) -> Result<MutatingWebhook, AdmissionError> {
        let docs: Vec<Value> = serde_saphyr::from_multiple(text)
            .map_err(|e| AdmissionError::Manifest(e.to_string()))?;
        let config = docs
            .iter()
            .find(|d| d["kind"] == "MutatingWebhookConfiguration")
            .ok_or_else(|| AdmissionError::Manifest("no MutatingWebhookConfiguration".into()))?;
        let hook = &config["webhooks"][0];
        let service = &hook["clientConfig"]["service"];
        let (Some(svc), Some(ns)) = (service["name"].as_str(), service["namespace"].as_str())
        else {
            return Err(AdmissionError::Manifest(
                "clientConfig.service name/namespace missing".into(),
            ));
        };
        let ca_bundle_pem = match hook["clientConfig"]["caBundle"].as_str() {
            Some(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| AdmissionError::Manifest(format!("caBundle: {e}")))?,
            None => ca_bundle_pem.to_vec(),
        };
        let match_labels = hook["objectSelector"]["matchLabels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(MutatingWebhook {
            name: hook["name"].as_str().unwrap_or_default().to_owned(),
            address,
            server_name: format!("{svc}.{ns}.svc"),
            path: service["path"].as_str().unwrap_or("/").to_owned(),
            timeout: Duration::from_secs(hook["timeoutSeconds"].as_u64().unwrap_or(10)),
            match_labels,
            ca_bundle_pem,
            fail_open: hook["failurePolicy"].as_str() != Some("Fail"),
        })
    }

    pub fn selects(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        self.match_labels
            .iter()
            .all(|(k, v)| labels[k].as_str() == Some(v.as_str()))
    }

    /// Sends the AdmissionReview; returns the object with the returned patch applied, or
    /// the webhook's refusal message as `Ok(Err(..))`.
    pub async fn admit(
        &self,
        namespace: &str,
        object: &Value,
    ) -> Result<Result<Value, String>, AdmissionError> {
        let review = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": uuid::Uuid::new_v4().to_string(),
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                "name": object["metadata"]["name"].as_str().unwrap_or_default(),
                "namespace": namespace,
                "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kubevirt:kubevirt-controller"},
                "object": object,
                "oldObject": null,
                "dryRun": false,
                "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
            }
        });
        let url = format!(
            "https://{}{}?timeout={}s",
            self.server_name,
            self.path,
            self.timeout.as_secs()
        );
        let call = |message: String| AdmissionError::Call {
            url: url.clone(),
            message,
        };
        let response = tokio::time::timeout(self.timeout, self.post(&review))
            .await
            .map_err(|_| call(format!("no answer within {:?}", self.timeout)))?
            .map_err(call)?;
        let answer = &response["response"];
        if answer["allowed"] != true {
            return Ok(Err(answer["status"]["message"]
                .as_str()
                .unwrap_or("denied by the webhook")
                .to_owned()));
        }
        let mut patched = object.clone();
        if let Some(b64) = answer["patch"].as_str() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| call(format!("patch is not base64: {e}")))?;
            let patch: json_patch::Patch = serde_json::from_slice(&bytes)
                .map_err(|e| call(format!("patch is not a JSONPatch: {e}")))?;
            json_patch::patch(&mut patched, &patch)
                .map_err(|e| call(format!("patch does not apply: {e}")))?;
        }
        Ok(Ok(patched))
    }

    async fn post(&self, review: &Value) -> Result<Value, String> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.ca_bundle_pem) {
            let cert = cert.map_err(|e| format!("caBundle: {e}"))?;
            roots.add(cert).map_err(|e| format!("caBundle: {e}"))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(self.address)
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from(self.server_name.clone()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let request =
            http::Request::post(format!("{}?timeout={}s", self.path, self.timeout.as_secs()))
                .header(http::header::HOST, &self.server_name)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(bytes::Bytes::from(review.to_string())))
                .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("response is not JSON: {e}"))
    }
}
