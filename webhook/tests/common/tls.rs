//! Test PKI (rcgen), a Secret-volume-like certificate directory, the server under test, and a
//! keep-alive HTTPS client. Shared by the integration tests and the admission benchmark.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use kubevirt_bmc_runtime::tls_reload::CertFiles;
use kubevirt_bmc_webhook::inject::InjectionConfig;
use kubevirt_bmc_webhook::metrics::Metrics;
use kubevirt_bmc_webhook::server::{Context, ServeConfig, serve};
use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub der: CertificateDer<'static>,
}

impl Ca {
    pub fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "kubevirt-bmc test CA");
        let cert = params.self_signed(&key).unwrap();
        Ca {
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A serving pair for localhost; returns (cert PEM, key PEM, cert DER).
    pub fn serving(&self, cn: &str) -> (String, String, CertificateDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().clone())
    }
}

/// Lays files out like a Kubernetes Secret volume: `..<version>/` directories, a `..data`
/// symlink to the current one, and `tls.crt`/`tls.key` symlinks through `..data`.
pub struct SecretDir {
    pub dir: tempfile::TempDir,
    version: u32,
}

impl SecretDir {
    pub fn new(cert: &str, key: &str) -> SecretDir {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SecretDir { dir, version: 0 };
        s.swap(cert, key);
        for name in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), s.dir.path().join(name)).unwrap();
        }
        s
    }

    /// What the kubelet does: write a new version directory, then atomically rename a fresh
    /// symlink over `..data`.
    pub fn swap(&mut self, cert: &str, key: &str) {
        self.version += 1;
        let root = self.dir.path();
        let version = format!("..2026_11_21_{}", self.version);
        std::fs::create_dir(root.join(&version)).unwrap();
        std::fs::write(root.join(&version).join("tls.crt"), cert).unwrap();
        std::fs::write(root.join(&version).join("tls.key"), key).unwrap();
        let tmp = root.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &tmp).unwrap();
        std::fs::rename(&tmp, root.join("..data")).unwrap();
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("tls.crt")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("tls.key")
    }
}

pub struct Running {
    pub addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    handle: axum_server::Handle<SocketAddr>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

pub async fn start(cert: &Path, key: &Path, reload: Duration) -> Running {
    kubevirt_bmc_runtime::tls::install_crypto_provider();
    let metrics = Arc::new(Metrics::default());
    let ctx = Arc::new(Context {
        injection: InjectionConfig::test(),
        metrics: metrics.clone(),
        signer: None,
    });
    let handle = axum_server::Handle::new();
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        files: CertFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
        },
        reload_interval: reload,
    };
    let server_handle = handle.clone();
    tokio::spawn(async move {
        if let Err(e) = serve(config, ctx, server_handle).await {
            panic!("server failed: {e}");
        }
    });
    let addr = handle.listening().await.expect("server bound");
    Running {
        addr,
        metrics,
        handle,
    }
}

/// One keep-alive HTTP/1.1 connection over TLS, trusting only `ca`.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    pub peer: CertificateDer<'static>,
}

impl Client {
    pub async fn connect(addr: SocketAddr, ca: &CertificateDer<'static>) -> Client {
        Self::connect_as(addr, ca, "localhost").await
    }

    /// Connects verifying the server's certificate for `name` (SNI and SAN check).
    pub async fn connect_as(addr: SocketAddr, ca: &CertificateDer<'static>, name: &str) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let tls = connector
            .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
            .await
            .expect("TLS handshake");
        let peer = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        Client { sender, peer }
    }

    pub async fn request(&mut self, method: &str, path: &str, body: Bytes) -> (u16, Bytes) {
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(body))
            .unwrap();
        // The previous response may still be finishing on the connection task.
        self.sender.ready().await.unwrap();
        let resp = self.sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    }

    pub async fn post_json(&mut self, path: &str, body: Bytes) -> serde_json::Value {
        let (status, body) = self.request("POST", path, body).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }
}
