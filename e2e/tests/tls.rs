//! TLS that clients can verify (issue 12, point 5): the real `kubevirt-bmc-webhook` (controller
//! included) and `kubevirt-bmc serve` against the fake API server. The sidecar makes its key in
//! memory, sends a CSR with its own `vm1-bmc` token to the controller's HTTPS server, the
//! controller asks the API server whose token it is (TokenReview) and signs with the CA it made
//! in Secret `kubevirt-bmc-ca`, published in the ConfigMap of that name. Then:
//!
//! * `curl --cacert ca.pem --resolve vm1-bmc.vms.svc:PORT:127.0.0.1` and the Pod IP both
//!   verify; plain `curl` (system roots) and a name of another VM do not;
//! * sushy with `verify=ca.pem` reads the System; with `verify=True` (system roots) it fails;
//! * another VM's token asking for vm1's certificate is refused (403), an unknown token 401,
//!   vm1's token asking for vm2's names 403.
//!
//! Before this change the sidecar served a fresh self-signed certificate at every start: no CA
//! existed to verify it with, and nothing answered at `/bmc-certificate`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use kubevirt_bmc_e2e::fake_apiserver::{FakeApiServer, Gvr};
use kubevirt_bmc_e2e::kubelet::{Kubelet, SidecarConfig};
use kubevirt_bmc_e2e::testkit::{
    Kill, fixture, free_tcp_port, free_udp_port, installed_webhook, wait_for, webhook_command,
    webhook_tls, workspace_binary,
};
use serde_json::{Value, json};

const NS: &str = "vms";
const VM: &str = "vm1";
const ADMIN_TOKEN: &str = "controller-token";

fn user_vm() -> Value {
    let mut vm = fixture("vm-vm1.json");
    vm.as_object_mut().unwrap().remove("status");
    vm["metadata"] =
        json!({"name": VM, "namespace": NS, "annotations": {"bmc.kubevirt.io/enabled": "true"}});
    vm["spec"]["runStrategy"] = json!("Halted");
    vm["spec"]["template"]["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("bmc.kubevirt.io/enabled");
    vm
}

/// curl's exit code and body; `args` go before the URL.
fn curl(args: &[&str], url: &str) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "-o", "-"])
        .args(args)
        .arg(url)
        .stderr(Stdio::piped())
        .output()
        .expect("curl runs");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn secret_text(fake: &FakeApiServer, name: &str, key: &str) -> String {
    let secret = fake.get(Gvr::new("", "v1", "secrets"), NS, name).unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(secret["data"][key].as_str().unwrap())
        .unwrap();
    String::from_utf8(bytes).unwrap().trim().to_owned()
}

/// sushy (the venv's) reading the System, with `verify` as requests takes it.
fn sushy_power(url: &str, user: &str, password: &str, verify: &str) -> Result<String, String> {
    let python = kubevirt_bmc_e2e::sushy::venv().join("bin/python");
    assert!(
        python.exists(),
        "no venv at {}: run e2e/setup.sh",
        python.display()
    );
    let script = r#"
import sys, warnings
warnings.filterwarnings("ignore")
import sushy
from sushy import auth
url, user, password, vm, verify = sys.argv[1:6]
verify = True if verify == "system" else verify
root = sushy.Sushy(url + "/redfish/v1", auth=auth.BasicAuth(user, password), verify=verify)
print(root.get_system("/redfish/v1/Systems/" + vm).power_state)
"#;
    let out = Command::new(python)
        .args(["-c", script, url, user, password, VM, verify])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn csr_for(names: &[&str]) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.serialize_request(&key).unwrap().pem().unwrap()
}

/// POSTs a certificate request to the controller as a sidecar would: (HTTP status, body).
fn ask(
    webhook_port: u16,
    webhook_ca: &Path,
    token: &str,
    vm: &str,
    names: &[&str],
) -> (u16, String) {
    let body = json!({"namespace": NS, "vm": vm, "csr": csr_for(names)}).to_string();
    let auth = format!("Authorization: Bearer {token}");
    let (code, text) = curl(
        &[
            "--cacert",
            webhook_ca.to_str().unwrap(),
            "-w",
            "\n%{http_code}",
            "-H",
            &auth,
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body,
        ],
        &format!("https://127.0.0.1:{webhook_port}/bmc-certificate"),
    );
    assert_eq!(code, 0, "curl to the controller failed: {text}");
    let (body, status) = text
        .trim_end()
        .rsplit_once('\n')
        .unwrap_or(("", text.trim()));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_serves_a_certificate_clients_verify_with_the_published_ca() {
    let fake = Arc::new(FakeApiServer::start().await.unwrap());
    fake.grant_all(
        ADMIN_TOKEN,
        "system:serviceaccount:kubevirt-bmc:kubevirt-bmc-webhook",
    );
    fake.put(
        Gvr::new("", "v1", "namespaces"),
        "",
        NS,
        json!({"metadata": {}}),
    );
    fake.put(Gvr::vm(), NS, VM, user_vm());

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig(ADMIN_TOKEN, "kubevirt-bmc")).unwrap();
    // The webhook's own serving certificate: its Service name for the API server, loopback
    // for the sidecar (which reaches it here instead of through the Service).
    let cert_pem = webhook_tls(dir.path(), &["127.0.0.1"]);
    let webhook_port = free_tcp_port();
    fake.set_mutating_webhook(installed_webhook(webhook_port, &cert_pem));
    fake.run_launcher_pods(fixture("pod-a-vm1-optin.json"));
    let webhook_ca = dir.path().join("ca.crt");
    let child = webhook_command(
        &workspace_binary("kubevirt-bmc-webhook"),
        dir.path(),
        webhook_port,
        &kubeconfig,
    )
    .args(["--leader-elect", "false"])
    .arg("--sidecar-certificate-url")
    .arg(format!("https://127.0.0.1:{webhook_port}/bmc-certificate"))
    .arg("--sidecar-certificate-url-ca")
    .arg(&webhook_ca)
    .env_remove("POD_NAMESPACE")
    .stdout(Stdio::null())
    .stderr(Stdio::inherit())
    .spawn()
    .unwrap();
    let _webhook = Kill(child);

    // The controller made the CA and published its certificate for every authenticated user.
    let configmaps = Gvr::new("", "v1", "configmaps");
    wait_for("the CA ConfigMap", Duration::from_secs(30), || {
        fake.get(configmaps.clone(), "kubevirt-bmc", "kubevirt-bmc-ca")
            .is_some()
    })
    .await;
    let ca_pem = fake
        .get(configmaps, "kubevirt-bmc", "kubevirt-bmc-ca")
        .unwrap()["data"]["ca.crt"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        ca_pem.starts_with("-----BEGIN CERTIFICATE-----"),
        "{ca_pem}"
    );
    let ca_secret = fake
        .get(
            Gvr::new("", "v1", "secrets"),
            "kubevirt-bmc",
            "kubevirt-bmc-ca",
        )
        .expect("the CA Secret");
    assert!(ca_secret["data"]["tls.key"].is_string());
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();

    // The launcher Pod with the sidecar, its IP as the kubelet reports it.
    let pods = Gvr::new("", "v1", "pods");
    wait_for(
        "the launcher Pod with the bmc sidecar",
        Duration::from_secs(30),
        || {
            fake.list(pods.clone(), NS).iter().any(|p| {
                p["spec"]["initContainers"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["name"] == "bmc"))
            })
        },
    )
    .await;
    let pod = fake.list(pods.clone(), NS).into_iter().next().unwrap();
    let pod_name = pod["metadata"]["name"].as_str().unwrap().to_owned();
    let bmc = pod["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "bmc")
        .unwrap()
        .clone();
    let env = |name: &str| {
        bmc["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    assert_eq!(
        env("KUBEVIRT_BMC_CERTIFICATE_URL"),
        Some(json!(format!(
            "https://127.0.0.1:{webhook_port}/bmc-certificate"
        )))
    );
    assert_eq!(
        env("KUBEVIRT_BMC_CERTIFICATE_URL_CA"),
        Some(json!(cert_pem))
    );
    fake.modify(pods.clone(), NS, &pod_name, |p| {
        p["status"]["podIP"] = json!("127.0.0.1");
        p["status"]["podIPs"] = json!([{"ip": "127.0.0.1"}]);
        p["status"]["phase"] = json!("Running");
    });

    let redfish_port = free_tcp_port();
    let serve_dir = tempfile::tempdir().unwrap();
    let kubelet = Kubelet::start(
        fake.clone(),
        SidecarConfig {
            binary: workspace_binary("kubevirt-bmc"),
            default_program: "kubevirt-bmc".to_owned(),
            namespace: NS.to_owned(),
            vm: VM.to_owned(),
            container: "bmc".to_owned(),
            env_overrides: [
                ("KUBEVIRT_BMC_IPMI_PORT", free_udp_port().to_string()),
                ("KUBEVIRT_BMC_REDFISH_PORT", redfish_port.to_string()),
                (
                    "KUBEVIRT_BMC_HEALTH_LISTEN",
                    format!("127.0.0.1:{}", free_tcp_port()),
                ),
                ("KUBEVIRT_BMC_API_SERVER", format!("http://{}", fake.addr())),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
            root: serve_dir.path().join("pods"),
        },
    );

    let user = secret_text(&fake, "vm1-bmc-credentials", "username");
    let password = secret_text(&fake, "vm1-bmc-credentials", "password");
    let service = format!("vm1-bmc.{NS}.svc");
    let resolve = format!("{service}:{redfish_port}:127.0.0.1");
    let by_name = format!("https://{service}:{redfish_port}/redfish/v1/");
    let cacert = ca_file.to_str().unwrap();
    let mut last = String::new();
    wait_for(
        "curl verifying the BMC with the CA",
        Duration::from_secs(60),
        || {
            let (code, text) = curl(&["--cacert", cacert, "--resolve", &resolve], &by_name);
            last = text;
            code == 0
        },
    )
    .await;
    assert!(last.contains("\"@odata.id\""), "{last}");
    assert_eq!(kubelet.error(), None);
    // The Pod IP is in the certificate too; the other Service names as well.
    let (code, text) = curl(
        &["--cacert", cacert],
        &format!("https://127.0.0.1:{redfish_port}/redfish/v1/"),
    );
    assert_eq!(code, 0, "{text}");
    let long = format!("{service}.cluster.local");
    let (code, text) = curl(
        &[
            "--cacert",
            cacert,
            "--resolve",
            &format!("{long}:{redfish_port}:127.0.0.1"),
        ],
        &format!("https://{long}:{redfish_port}/redfish/v1/"),
    );
    assert_eq!(code, 0, "{text}");
    // Without the CA (system roots only) verification fails: curl 60, "SSL certificate problem".
    let (code, text) = curl(&["--resolve", &resolve], &by_name);
    assert_eq!(code, 60, "{text}");
    // Another VM's name is not in the certificate: the name check fails (curl 60, or 51 on
    // older versions).
    let other = format!("vm2-bmc.{NS}.svc");
    let (code, text) = curl(
        &[
            "--cacert",
            cacert,
            "--resolve",
            &format!("{other}:{redfish_port}:127.0.0.1"),
        ],
        &format!("https://{other}:{redfish_port}/redfish/v1/"),
    );
    assert!(
        code == 60 || code == 51,
        "another VM's name verified: {code} {text}"
    );

    // sushy, as Ironic runs it with `redfish_verify_ca` set to the CA file.
    let url = format!("https://127.0.0.1:{redfish_port}");
    let power = tokio::task::block_in_place(|| sushy_power(&url, &user, &password, cacert));
    assert!(power.is_ok(), "sushy with verify=ca.pem: {power:?}");
    let refused = tokio::task::block_in_place(|| sushy_power(&url, &user, &password, "system"));
    let error = refused.expect_err("sushy verified the BMC without the CA");
    assert!(
        error.contains("CERTIFICATE_VERIFY_FAILED") || error.contains("SSLError"),
        "{error}"
    );

    // Tokens: another VM's account is refused vm1's certificate; an unknown token is not
    // authenticated; vm1's own token gets nothing for vm2's names.
    fake.grant("vm2-token", "system:serviceaccount:vms:vm2-bmc", &["vm2"]);
    let (status, body) = ask(webhook_port, &webhook_ca, "vm2-token", VM, &[&service]);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("vm1-bmc"), "{body}");
    let (status, body) = ask(webhook_port, &webhook_ca, "no-such-token", VM, &[&service]);
    assert_eq!(status, 401, "{body}");
    let vm1_token = secret_text(&fake, "vm1-bmc-token", "token");
    let (status, body) = ask(webhook_port, &webhook_ca, &vm1_token, VM, &[&other]);
    assert_eq!(status, 403, "{body}");
    let (status, body) = ask(webhook_port, &webhook_ca, &vm1_token, "vm2", &[&other]);
    assert_eq!(status, 403, "{body}");
    // And the sidecar's own request shape succeeds with its own token.
    let (status, body) = ask(webhook_port, &webhook_ca, &vm1_token, VM, &[&service]);
    assert_eq!(status, 200, "{body}");
    let signed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(signed["ca"], ca_pem.as_str());
}
