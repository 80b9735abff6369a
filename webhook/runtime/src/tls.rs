//! TLS identities: a certificate chain and key from PEM files (the operator's, cert-manager's),
//! or a self-signed one made at start for local use.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("{path} holds no PEM private key: {reason}")]
    NoKey { path: String, reason: String },
    #[error("certificate and key do not form a usable TLS identity: {0}")]
    Config(String),
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
    #[error("--tls-cert and --tls-key go together; only one was given")]
    HalfPair,
}

/// A certificate chain with its key, in DER.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| TlsError::Read {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
        };
        Self::from_pem(&read(cert)?, &read(key)?, cert, key)
    }

    pub fn from_pem(
        cert_pem: &[u8],
        key_pem: &[u8],
        cert: &Path,
        key: &Path,
    ) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Read {
                path: cert.display().to_string(),
                reason: e.to_string(),
            })?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate {
                path: cert.display().to_string(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::NoKey {
            path: key.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Identity { chain, key })
    }

    /// A throw-away certificate for local use, valid for the given names and addresses.
    pub fn self_signed(names: &[String]) -> Result<Self, TlsError> {
        let generated = rcgen::generate_simple_self_signed(names.to_vec())
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        let key = PrivateKeyDer::try_from(generated.signing_key.serialize_der())
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        Ok(Identity {
            chain: vec![generated.cert.der().clone()],
            key,
        })
    }

    /// The operator's pair when given, else a self-signed certificate for `names`.
    pub fn load_or_self_signed(
        cert: Option<&Path>,
        key: Option<&Path>,
        names: &[String],
    ) -> Result<Self, TlsError> {
        match (cert, key) {
            (Some(cert), Some(key)) => Self::from_pem_files(cert, key),
            (None, None) => Self::self_signed(names),
            _ => Err(TlsError::HalfPair),
        }
    }

    /// A server configuration offering HTTP/2 and HTTP/1.1, with the process's crypto
    /// provider (ring, installed by `main`).
    pub fn server_config(self) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(self.chain, self.key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Installs ring as the process-wide rustls provider; idempotent.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want either way.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_identity_makes_a_server_config() {
        install_crypto_provider();
        let identity =
            Identity::self_signed(&["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let config = identity.server_config().unwrap();
        assert_eq!(config.alpn_protocols[0], b"h2");
    }

    #[test]
    fn half_a_pair_is_refused() {
        let result = Identity::load_or_self_signed(Some(Path::new("/x.pem")), None, &[]);
        assert!(matches!(result, Err(TlsError::HalfPair)));
    }

    #[test]
    fn garbage_key_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let generated = rcgen::generate_simple_self_signed(vec!["x".to_owned()]).unwrap();
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, "not a key").unwrap();
        let error = Identity::from_pem_files(&cert, &key).err().unwrap();
        assert!(matches!(error, TlsError::NoKey { .. }), "{error}");
        assert!(error.to_string().contains("tls.key"));
    }
}
