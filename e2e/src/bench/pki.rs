//! A throwaway CA and a serving certificate for 127.0.0.1, so every HTTPS server in a run
//! (ours, sushy-emulator, the webhook) serves a chain the Rust clients verify.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair};

use super::BenchError;

pub struct Pki {
    _dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client: Arc<rustls::ClientConfig>,
}

fn tls(e: impl std::fmt::Display) -> BenchError {
    BenchError::Tls(e.to_string())
}

impl Pki {
    pub fn new() -> Result<Pki, BenchError> {
        let ca_key = KeyPair::generate().map_err(tls)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
        ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "kubevirt-bmc bench CA");
        let ca_cert = ca.self_signed(&ca_key).map_err(tls)?;
        let issuer = Issuer::new(ca, ca_key);

        let key = KeyPair::generate().map_err(tls)?;
        let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .map_err(tls)?;
        leaf.distinguished_name
            .push(DnType::CommonName, "kubevirt-bmc bench");
        let cert = leaf.signed_by(&key, &issuer).map_err(tls)?;

        let dir = tempfile::tempdir().map_err(BenchError::io("temporary directory"))?;
        let cert_path = dir.path().join("tls.crt");
        let key_path = dir.path().join("tls.key");
        std::fs::write(&cert_path, cert.pem()).map_err(BenchError::io("writing tls.crt"))?;
        std::fs::write(&key_path, key.serialize_pem())
            .map_err(BenchError::io("writing tls.key"))?;

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).map_err(tls)?;
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Pki {
            _dir: dir,
            cert: cert_path,
            key: key_path,
            client: Arc::new(client),
        })
    }
}
