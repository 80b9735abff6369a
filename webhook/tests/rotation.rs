//! Certificate rotation the way Kubernetes does it (a `..data` symlink swap): the new
//! certificate is served; a broken one keeps the old one serving.

mod common;

use std::time::Duration;

use common::tls::{Ca, Client, SecretDir, start};
use hyper::body::Bytes;

async fn served_eventually(
    addr: std::net::SocketAddr,
    ca: &Ca,
    want: &rustls_pki_types::CertificateDer<'static>,
) -> bool {
    for _ in 0..100 {
        if Client::connect(addr, &ca.der).await.peer == *want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn a_rotated_certificate_is_served_and_a_broken_one_keeps_the_old() {
    let ca = Ca::new();
    let (cert1, key1, der1) = ca.serving("first");
    let mut dir = SecretDir::new(&cert1, &key1);
    let server = start(&dir.cert(), &dir.key(), Duration::from_millis(50)).await;
    assert_eq!(Client::connect(server.addr, &ca.der).await.peer, der1);

    let (cert2, key2, der2) = ca.serving("second");
    dir.swap(&cert2, &key2);
    assert!(
        served_eventually(server.addr, &ca, &der2).await,
        "the rotated certificate is served"
    );

    // Broken: a certificate with a key that is not its own, then plain garbage.
    let (cert3, _, _) = ca.serving("third");
    let (_, other_key, _) = ca.serving("other");
    dir.swap(&cert3, &other_key);
    tokio::time::sleep(Duration::from_millis(400)).await;
    dir.swap("not a certificate", "not a key");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut client = Client::connect(server.addr, &ca.der).await;
    assert_eq!(client.peer, der2, "still the last good certificate");
    let (status, _) = client.request("GET", "/healthz", Bytes::new()).await;
    assert_eq!(status, 200);
    let metrics = server.metrics.render();
    assert!(
        metrics.contains("kubevirt_bmc_tls_reload_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kubevirt_bmc_tls_reload_total{result=\"rejected\"} 2"),
        "{metrics}"
    );

    // And a good one after the broken ones is picked up again.
    let (cert4, key4, der4) = ca.serving("fourth");
    dir.swap(&cert4, &key4);
    assert!(served_eventually(server.addr, &ca, &der4).await);
}

#[tokio::test]
async fn a_bad_certificate_fails_the_start() {
    kubevirt_bmc_runtime::tls::install_crypto_provider();
    let dir = SecretDir::new("garbage", "garbage");
    let ctx = std::sync::Arc::new(kubevirt_bmc_webhook::server::Context {
        injection: kubevirt_bmc_webhook::inject::InjectionConfig::test(),
        metrics: Default::default(),
        signer: None,
    });
    let config = kubevirt_bmc_webhook::server::ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        files: kubevirt_bmc_runtime::tls_reload::CertFiles {
            cert: dir.cert(),
            key: dir.key(),
        },
        reload_interval: Duration::from_secs(1),
    };
    let err = kubevirt_bmc_webhook::server::serve(config, ctx, axum_server::Handle::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("tls.crt"), "{err}");
}
