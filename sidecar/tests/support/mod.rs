//! Shared setup for the KubeVirt scenario tests: the fake API server with vm1 from the
//! fixtures, a kube client with the VM's own scoped token, and a KubeVirt machine on it.
#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kubevirt_bmc::machine::kubevirt::{KubevirtConfig, KubevirtMachine};
use kubevirt_bmc_e2e::fake_apiserver::{FakeApiServer, Gvr, RequestRecord};
use kubevirt_bmc_e2e::testkit::{free_tcp_port, free_udp_port};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const NS: &str = "vms";
pub const VM: &str = "vm1";
pub const TOKEN: &str = "vm1-bmc-token";
pub const USER: &str = "system:serviceaccount:vms:vm1-bmc";

pub fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../e2e/testdata/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
        .unwrap()
}

/// The fake with vm1 as captured (runStrategy Always, startStrategy Paused), whose VMI the
/// simulated virt-controller creates paused, and a token limited to vm1.
pub async fn fake() -> FakeApiServer {
    let fake = FakeApiServer::start().await.expect("fake API server");
    fake.grant(TOKEN, USER, &[VM]);
    let mut vm = fixture("vm-vm1.json");
    vm["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("managedFields");
    fake.put(Gvr::vm(), NS, VM, vm);
    fake
}

pub fn client(fake: &FakeApiServer, token: &str) -> kube::Client {
    kubevirt_bmc_runtime::tls::install_crypto_provider();
    let mut config = kube::Config::new(fake.url().parse().unwrap());
    config.default_namespace = NS.to_owned();
    config.auth_info.token = Some(token.to_owned().into());
    kube::Client::try_from(config).expect("kube client")
}

pub fn start_machine(fake: &FakeApiServer, token: &str) -> KubevirtMachine {
    KubevirtMachine::start(
        client(fake, token),
        KubevirtConfig {
            namespace: NS.to_owned(),
            vm_name: VM.to_owned(),
            credentials_dir: None,
        },
    )
}

/// A machine whose cache has synced.
pub async fn machine(fake: &FakeApiServer) -> KubevirtMachine {
    let machine = start_machine(fake, TOKEN);
    assert!(
        machine.wait_synced(Duration::from_secs(10)).await,
        "cache never synced"
    );
    machine
}

/// Polls `check` until it holds (10 s at most).
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_within(what, Duration::from_secs(10), check).await
}

/// A failed watch waits up to 1.5 x the sidecar's 8 s retry cap before it tries again, so
/// whatever needs a watch back after an outage may take that long on top of the outage.
pub const WATCH_BACK_WITHIN: Duration = Duration::from_secs(30);

/// Polls `check` until it holds (`timeout` at most).
pub async fn eventually_within<F, Fut>(what: &str, timeout: Duration, check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

pub fn vmi(fake: &FakeApiServer) -> Value {
    fake.vmi(NS, VM).expect("VMI exists")
}

pub fn vmi_uid(fake: &FakeApiServer) -> String {
    vmi(fake)["metadata"]["uid"].as_str().unwrap().to_owned()
}

pub fn paused(vmi: &Value) -> bool {
    kubevirt_bmc_e2e::fake_apiserver::kubevirt::vmi_paused(vmi)
}

pub fn annotation(fake: &FakeApiServer, key: &str) -> Option<String> {
    fake.vm(NS, VM)?["metadata"]["annotations"][key]
        .as_str()
        .map(str::to_owned)
}

/// Subresource calls (pause, unpause, reset, ...) in the order they were made.
pub fn calls(requests: &[RequestRecord]) -> Vec<String> {
    requests
        .iter()
        .filter_map(|r| r.subresource().map(str::to_owned))
        .collect()
}

/// Requests other than the watches' own (long-running) ones.
pub fn non_watch(requests: &[RequestRecord]) -> Vec<RequestRecord> {
    requests.iter().filter(|r| !r.is_watch()).cloned().collect()
}

/// The real `kubevirt-bmc serve` process, as the injected container runs it.
pub struct Serve {
    pub child: Child,
    pub health: u16,
    pub ipmi: u16,
    pub redfish: u16,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spawn_serve(kubeconfig: &Path, credentials: &Path, stderr: Stdio) -> Serve {
    spawn_serve_with(kubeconfig, credentials, stderr, &[])
}

/// `spawn_serve` with more environment (e.g. the webhook's `KUBEVIRT_BMC_USER_CREDENTIALS`).
pub fn spawn_serve_with(
    kubeconfig: &Path,
    credentials: &Path,
    stderr: Stdio,
    env: &[(&str, &str)],
) -> Serve {
    let health = free_tcp_port();
    let ipmi = free_udp_port();
    let redfish = free_tcp_port();
    let child = Command::new(env!("CARGO_BIN_EXE_kubevirt-bmc"))
        .arg("serve")
        .env_clear()
        .env("POD_NAMESPACE", NS)
        .env("VM_NAME", VM)
        .env("POD_NAME", "virt-launcher-vm1-abcde")
        .env("POD_IP", "127.0.0.1")
        .env("KUBEVIRT_BMC_IPMI_PORT", ipmi.to_string())
        .env("KUBEVIRT_BMC_REDFISH_PORT", redfish.to_string())
        .env("KUBEVIRT_BMC_HEALTH_LISTEN", format!("127.0.0.1:{health}"))
        .env("KUBEVIRT_BMC_CREDENTIALS_DIR", credentials)
        .env("KUBECONFIG", kubeconfig)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn kubevirt-bmc serve");
    Serve {
        child,
        health,
        ipmi,
        redfish,
    }
}

pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

pub fn setup_files(fake: &kubevirt_bmc_e2e::fake_apiserver::FakeApiServer) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kubeconfig"), fake.kubeconfig(TOKEN, NS)).unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(credentials.join("username"), "admin\n").unwrap();
    std::fs::write(credentials.join("password"), "s3cret\n").unwrap();
    dir
}
