//! The built binary, configured only through its environment (as the Deployment does):
//! serves the fixture over HTTPS and injects the configured image.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use common::tls::{Ca, Client, SecretDir};
use hyper::body::Bytes;
use kubevirt_bmc_e2e::testkit::{Kill, free_tcp_port};

#[tokio::test]
async fn binary_serves_admission_configured_by_env() {
    kubevirt_bmc_runtime::tls::install_crypto_provider();
    let ca = Ca::new();
    let (cert, key, _) = ca.serving("binary");
    let dir = SecretDir::new(&cert, &key);
    let port = free_tcp_port();
    let child = Command::new(env!("CARGO_BIN_EXE_kubevirt-bmc-webhook"))
        .env("KUBEVIRT_BMC_WEBHOOK_LISTEN", format!("127.0.0.1:{port}"))
        .env("KUBEVIRT_BMC_WEBHOOK_TLS_CERT", dir.cert())
        .env("KUBEVIRT_BMC_WEBHOOK_TLS_KEY", dir.key())
        .env("KUBEVIRT_BMC_WEBHOOK_NO_CONTROLLER", "true")
        .env(
            "KUBEVIRT_BMC_SIDECAR_IMAGE",
            "registry.example.org/kubevirt-bmc:v1",
        )
        .env("KUBEVIRT_BMC_SIDECAR_MEMORY", "96Mi")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let _child = Kill(child);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut up = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "webhook did not listen on {addr}");
    let mut client = Client::connect(addr, &ca.der).await;
    let body = std::fs::read(common::fixture_path("admissionreview-a-vm1-optin.json")).unwrap();
    let review = client
        .post_json("/mutate-pods?timeout=5s", Bytes::from(body))
        .await;
    let patch = base64::engine::general_purpose::STANDARD
        .decode(review["response"]["patch"].as_str().unwrap())
        .unwrap();
    let patch: serde_json::Value = serde_json::from_slice(&patch).unwrap();
    let container = &patch[0]["value"];
    assert_eq!(container["image"], "registry.example.org/kubevirt-bmc:v1");
    assert_eq!(container["resources"]["limits"]["memory"], "96Mi");
    assert_eq!(container["resources"]["requests"]["memory"], "96Mi");
}

#[test]
fn binary_refuses_to_start_without_a_sidecar_image() {
    let out = Command::new(env!("CARGO_BIN_EXE_kubevirt-bmc-webhook"))
        .env_remove("KUBEVIRT_BMC_SIDECAR_IMAGE")
        .arg("--no-controller")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--sidecar-image"), "{stderr}");
}
