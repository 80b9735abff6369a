//! Helpers every test crate uses, written once: free loopback ports, a Redfish session
//! login with the real curl, the workspace's built binaries, the captured fixtures, a child
//! process that dies with the test, and the webhook started against the fake cluster.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fake_apiserver::FakeApiServer;
use crate::fake_apiserver::admission::MutatingWebhook;

/// A process killed (and reaped) when the test lets go of it, passing or failing.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A binary of the workspace, built next to the running test (`target/debug/deps/<test>` ->
/// `target/debug/<name>`): `e2e/test-all.sh` builds them before the tests.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (e2e/test-all.sh does)",
        path.display()
    );
    path
}

/// One of the captures from a real kube-apiserver (`e2e/testdata/fixtures`).
pub fn fixture(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/fixtures")
        .join(name);
    serde_json::from_slice(&std::fs::read(&path).expect("fixture readable")).expect("fixture JSON")
}

/// A TCP port free right now on loopback (a race with other processes is possible: callers
/// that spawn a server on it retry on a bind error).
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free TCP port on loopback")
        .port()
}

/// A UDP port free right now on loopback (same race as [`free_tcp_port`]).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port on loopback")
        .port()
}

/// What a Redfish session login answered.
#[derive(Debug, Clone)]
pub struct RedfishLogin {
    pub token: Option<String>,
    /// The session's URI from `Location`, as sent (absolute or a path).
    pub location: Option<String>,
    /// Every response header, for assertion messages.
    pub headers: String,
}

/// POSTs a login to `{base}/redfish/v1/SessionService/Sessions` with curl (`-k`: the tests'
/// BMCs have self-signed certificates).
pub fn redfish_login(base: &str, user: &str, password: &str) -> RedfishLogin {
    let body = serde_json::json!({"UserName": user, "Password": password}).to_string();
    let output = Command::new("curl")
        .args(["-sk", "-D", "-", "-o", "/dev/null"])
        .args(["-H", "Content-Type: application/json", "-d", &body])
        .arg(format!("{base}/redfish/v1/SessionService/Sessions"))
        .output()
        .expect("curl runs (e2e/setup.sh installs it)");
    let headers = String::from_utf8_lossy(&output.stdout).into_owned();
    let header = |name: &str| {
        headers.lines().find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_owned())
        })
    };
    RedfishLogin {
        token: header("x-auth-token"),
        location: header("location"),
        headers: headers.clone(),
    }
}

/// Polls `check` every 50 ms until it holds; fails the test naming `what` after `timeout`.
pub async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The webhook's serving certificate, self-signed, written into `dir` as `tls.crt`, `tls.key`
/// and `ca.crt` (being its own CA): for its Service name, which the API server checks, and
/// `extra` names. Its PEM, for the fake API server's caBundle.
pub fn webhook_tls(dir: &Path, extra: &[&str]) -> String {
    let mut names = vec!["kubevirt-bmc-webhook.kubevirt-bmc.svc".to_owned()];
    names.extend(extra.iter().map(|n| n.to_string()));
    let cert = rcgen::generate_simple_self_signed(names).expect("a self-signed certificate");
    let pem = cert.cert.pem();
    std::fs::write(dir.join("tls.crt"), &pem).expect("write tls.crt");
    std::fs::write(dir.join("tls.key"), cert.signing_key.serialize_pem()).expect("write tls.key");
    std::fs::write(dir.join("ca.crt"), &pem).expect("write ca.crt");
    pem
}

/// The installed MutatingWebhookConfiguration (`manifests/base/webhooks.yaml`), calling the
/// webhook on loopback `port` and trusting `ca_pem` (what cert-manager's injector would add).
pub fn installed_webhook(port: u16, ca_pem: &str) -> MutatingWebhook {
    let manifest = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/base/webhooks.yaml"),
    )
    .expect("manifests/base/webhooks.yaml");
    MutatingWebhook::from_manifest(
        &manifest,
        SocketAddr::from(([127, 0, 0, 1], port)),
        ca_pem.as_bytes(),
    )
    .expect("the manifest's mutating webhook")
}

/// `kubevirt-bmc-webhook` (at `binary`) as every run against the fake cluster starts it: on
/// loopback `port` with the certificate `webhook_tls` wrote into `dir`, the kubeconfig, an
/// example sidecar image, and its controller on. Callers add what their run needs.
pub fn webhook_command(binary: &Path, dir: &Path, port: u16, kubeconfig: &Path) -> Command {
    let mut command = Command::new(binary);
    command
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--tls-cert")
        .arg(dir.join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.join("tls.key"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--sidecar-image", "registry.example.org/kubevirt-bmc:e2e"])
        .env_remove("KUBEVIRT_BMC_WEBHOOK_NO_CONTROLLER");
    command
}

/// The workspace's `kubevirt-bmc-webhook` as one controller replica (no leader election)
/// against `fake`, its TLS files and kubeconfig in `dir`, with `extra` flags; it dies with the
/// returned guard. Its log goes to the test's stderr.
pub fn spawn_controller(fake: &FakeApiServer, dir: &Path, extra: &[&str]) -> Kill {
    webhook_tls(dir, &[]);
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig("token", "kubevirt-bmc")).expect("kubeconfig");
    Kill(
        webhook_command(
            &workspace_binary("kubevirt-bmc-webhook"),
            dir,
            free_tcp_port(),
            &kubeconfig,
        )
        .args(["--leader-elect", "false"])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("kubevirt-bmc-webhook starts"),
    )
}
