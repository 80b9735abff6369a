//! The whole flow on this machine, as far as it is wired today: the real
//! `kubevirt-bmc-webhook` binary (controller included) runs as a process against the fake
//! API server, exactly as it would against a cluster (kubeconfig, server-side apply,
//! cluster-wide watches with label selectors).
//!
//! Steps that pass, in order: create VM → annotate it → the controller creates the
//! ServiceAccount, Role, RoleBinding, credentials Secret and Service and prepares the VM
//! (runStrategy Always, startStrategy Paused, template opted in) → an opted-in launcher Pod
//! whose ServiceAccount does not exist yet is refused with kube-apiserver's message → the
//! simulated virt-controller starts a paused VMI and creates its launcher Pod → the fake API
//! server calls the real webhook over HTTPS as `manifests/` configures it and applies its
//! JSONPatch (native `bmc` sidecar, serviceAccountName vm1-bmc) → `kubevirt-bmc serve` starts
//! from the injected container spec (env, Secret volume, the vm1-bmc token limited by the
//! controller's Role) → `ipmitool -I lanplus -C 17 power on` unpauses the VMI → Ironic's
//! reboot (power off, raw 0x00 0x08 0x03 0x08, raw 0x00 0x08 0x05 0xa0 0x04 0 0 0, power on)
//! boots a new unpaused VMI from the network in UEFI mode, then the template is restored →
//! Redfish (curl over HTTPS) ComputerSystem.Reset ForceOff then On, PowerState following →
//! the vm1-bmc token gets 403 on vm2 → opt-out restores the VM and deletes every child.
//!
//! Not yet here: the serve process is not restarted with the new launcher Pod after the
//! reboot (one process carries on); sushy, virtual media and DataVolumes.
//!
//! The binary is found next to this test's binary (`target/debug`); `e2e/test-all.sh`
//! builds every binary before the tests run. A missing binary fails the test loudly.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use kubevirt_bmc_e2e::fake_apiserver::admission::MutatingWebhook;
use kubevirt_bmc_e2e::fake_apiserver::kubevirt::vmi_paused;
use kubevirt_bmc_e2e::fake_apiserver::{FakeApiServer, Gvr};
use kubevirt_bmc_e2e::launcher::{self, PodRuntime};
use serde_json::{Value, json};

const NS: &str = "vms";
const VM: &str = "vm1";
const ADMIN_TOKEN: &str = "controller-token";
const SA_TOKEN: &str = "vm1-bmc-token";

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn workspace_binary(name: &str) -> PathBuf {
    // target/debug/deps/whole_flow-<hash> → target/debug/<name>
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

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/fixtures")
        .join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn gvr(group: &str, version: &str, resource: &str) -> Gvr {
    Gvr::new(group, version, resource)
}

/// The VM as a user creates it: the fixture without server-set fields and without our
/// annotation (the test adds it as the user would, with `kubectl annotate`).
fn user_vm() -> Value {
    let mut vm = fixture("vm-vm1.json");
    vm.as_object_mut().unwrap().remove("status");
    vm["metadata"] = json!({"name": VM, "namespace": NS});
    vm["spec"]["runStrategy"] = json!("Halted");
    let template_annotations = vm["spec"]["template"]["metadata"]["annotations"]
        .as_object_mut()
        .unwrap();
    template_annotations.remove("bmc.kubevirt.io/enabled");
    vm
}

/// A plain HTTP/1.1 GET with a bearer token: (status, body).
async fn http_get(addr: std::net::SocketAddr, path: &str, token: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let code = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_flow_annotate_inject_serve_ipmi_reboot_and_opt_out() {
    let webhook = workspace_binary("kubevirt-bmc-webhook");
    let fake = FakeApiServer::start().await.unwrap();
    fake.grant_all(
        ADMIN_TOKEN,
        "system:serviceaccount:kubevirt-bmc:kubevirt-bmc-webhook",
    );
    fake.put(gvr("", "v1", "namespaces"), "", NS, json!({"metadata": {}}));
    fake.put(Gvr::vm(), NS, VM, user_vm());

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig(ADMIN_TOKEN, "kubevirt-bmc")).unwrap();
    // The name kube-apiserver checks: the webhook Service's DNS name from the manifest.
    let cert = rcgen::generate_simple_self_signed(vec![
        "kubevirt-bmc-webhook.kubevirt-bmc.svc".to_owned(),
    ])
    .unwrap();
    let webhook_port = free_port();
    let manifest = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/base/webhooks.yaml"),
    )
    .unwrap();
    let hook = MutatingWebhook::from_manifest(
        &manifest,
        format!("127.0.0.1:{webhook_port}").parse().unwrap(),
        cert.cert.pem().as_bytes(),
    )
    .unwrap();
    assert_eq!(hook.path, "/mutate-pods");
    assert_eq!(hook.timeout, Duration::from_secs(5));
    assert_eq!(hook.match_labels["kubevirt.io"], "virt-launcher");
    fake.set_mutating_webhook(hook);
    fake.run_launcher_pods(fixture("pod-a-vm1-optin.json"));
    std::fs::write(dir.path().join("tls.crt"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("tls.key"), cert.signing_key.serialize_pem()).unwrap();
    let child = Command::new(webhook)
        .arg("--listen")
        .arg(format!("127.0.0.1:{webhook_port}"))
        .arg("--tls-cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--sidecar-image")
        .arg("registry.example.org/kubevirt-bmc:e2e")
        .env_remove("KUBEVIRT_BMC_WEBHOOK_NO_CONTROLLER")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let _webhook = Kill(child);

    // Not opted in: the controller leaves the VM alone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sa = gvr("", "v1", "serviceaccounts");
    assert!(fake.get(sa.clone(), NS, "vm1-bmc").is_none());

    // An opted-in launcher Pod before its ServiceAccount exists: the webhook injects
    // serviceAccountName vm1-bmc, and the API server refuses the Pod (fixture message).
    let mut early = fixture("pod-a-vm1-optin.json");
    early["metadata"] = json!({
        "generateName": "virt-launcher-vm1-",
        "labels": {"kubevirt.io": "virt-launcher", "vm.kubevirt.io/name": VM},
        "annotations": {"bmc.kubevirt.io/enabled": "true", "kubevirt.io/domain": VM},
    });
    let refusal = fake.create_pod(NS, early).await.unwrap_err();
    let expected = fixture("status-403-pod-serviceaccount-missing.json");
    assert_eq!(refusal, expected["message"].as_str().unwrap());

    // kubectl annotate vm vm1 bmc.kubevirt.io/enabled=true
    fake.modify(Gvr::vm(), NS, VM, |vm| {
        vm["metadata"]["annotations"]["bmc.kubevirt.io/enabled"] = json!("true");
    });

    let children = [
        (sa.clone(), "vm1-bmc"),
        (gvr("rbac.authorization.k8s.io", "v1", "roles"), "vm1-bmc"),
        (
            gvr("rbac.authorization.k8s.io", "v1", "rolebindings"),
            "vm1-bmc",
        ),
        (gvr("", "v1", "secrets"), "vm1-bmc-credentials"),
        (gvr("", "v1", "services"), "vm1-bmc"),
    ];
    for (g, name) in &children {
        wait_for(
            &format!("{}/{name}", g.resource),
            Duration::from_secs(30),
            || fake.get(g.clone(), NS, name).is_some(),
        )
        .await;
    }
    wait_for("the VM prepared", Duration::from_secs(30), || {
        let vm = fake.vm(NS, VM).unwrap();
        vm["spec"]["runStrategy"] == "Always"
            && vm["spec"]["template"]["spec"]["startStrategy"] == "Paused"
            && vm["spec"]["template"]["metadata"]["annotations"]["bmc.kubevirt.io/enabled"]
                == "true"
    })
    .await;

    // What the controller made, checked as the sidecar will rely on it.
    let role = fake
        .get(
            gvr("rbac.authorization.k8s.io", "v1", "roles"),
            NS,
            "vm1-bmc",
        )
        .unwrap();
    let rules = role["rules"].to_string();
    assert!(
        rules.contains("\"vm1\""),
        "Role not limited to vm1: {rules}"
    );
    let binding = fake
        .get(
            gvr("rbac.authorization.k8s.io", "v1", "rolebindings"),
            NS,
            "vm1-bmc",
        )
        .unwrap();
    assert_eq!(binding["subjects"][0]["name"], "vm1-bmc");
    assert_eq!(binding["roleRef"]["name"], "vm1-bmc");
    let secret = fake
        .get(gvr("", "v1", "secrets"), NS, "vm1-bmc-credentials")
        .unwrap();
    assert!(
        secret["data"]["username"].is_string() && secret["data"]["password"].is_string(),
        "credentials Secret without username/password: {}",
        secret["data"]
            .as_object()
            .map(|d| d.keys().cloned().collect::<Vec<_>>().join(","))
            .unwrap_or_default()
    );
    let service = fake.get(gvr("", "v1", "services"), NS, "vm1-bmc").unwrap();
    assert_eq!(service["spec"]["type"], "ClusterIP");

    // The simulated virt-controller starts the VMI, paused.
    wait_for("a paused VMI", Duration::from_secs(10), || {
        fake.vmi(NS, VM).is_some_and(|vmi| {
            vmi["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["type"] == "Paused"))
                || vmi["spec"]["startStrategy"] == "Paused"
        })
    })
    .await;

    // virt-controller creates the launcher Pod; the webhook (called over HTTPS by the fake
    // API server, as configured in manifests/) injected the `bmc` sidecar into it.
    let pods = gvr("", "v1", "pods");
    wait_for(
        "the launcher Pod with the bmc sidecar",
        Duration::from_secs(15),
        || {
            fake.list(pods.clone(), NS).iter().any(|p| {
                p["spec"]["initContainers"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["name"] == "bmc"))
            })
        },
    )
    .await;
    let pod = fake
        .list(pods.clone(), NS)
        .into_iter()
        .find(|p| p["metadata"]["labels"]["vm.kubevirt.io/name"] == VM)
        .unwrap();
    assert_eq!(pod["spec"]["serviceAccountName"], "vm1-bmc");
    // A native sidecar: an init container that keeps running.
    let bmc = pod["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "bmc")
        .unwrap()
        .clone();
    assert_eq!(bmc["image"], "registry.example.org/kubevirt-bmc:e2e");
    assert_eq!(bmc["args"], json!(["serve"]));
    assert_eq!(bmc["restartPolicy"], "Always");
    let env_names: Vec<&str> = bmc["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    for name in [
        "POD_NAME",
        "POD_NAMESPACE",
        "VM_NAME",
        "KUBEVIRT_BMC_CREDENTIALS_DIR",
    ] {
        assert!(
            env_names.contains(&name),
            "{name} missing from {env_names:?}"
        );
    }

    // The kubelet's part: start `kubevirt-bmc serve` exactly as the injected container
    // says (args and env from the patched Pod), with the Secret volume materialised and the
    // token the API server issues for the `vm1-bmc` ServiceAccount, limited by its Role.
    let serve_dir = tempfile::tempdir().unwrap();
    let plan = launcher::plan_container(
        &pod,
        "bmc",
        &PodRuntime {
            name: pod["metadata"]["name"].as_str().unwrap().to_owned(),
            uid: "launcher-uid".to_owned(),
            ip: "127.0.0.1".to_owned(),
            node_name: "node1".to_owned(),
        },
        "kubevirt-bmc",
    )
    .unwrap();
    assert_eq!(plan.program, "kubevirt-bmc");
    assert_eq!(plan.args, ["serve"]);
    let mut env = plan.env.clone();
    let credentials_mount = env["KUBEVIRT_BMC_CREDENTIALS_DIR"].clone();
    let credentials_dir = serve_dir.path().join("credentials");
    std::fs::create_dir(&credentials_dir).unwrap();
    let mount = plan
        .mounts
        .iter()
        .find(|m| m.mount_path == credentials_mount)
        .expect("credentials directory is a mounted volume");
    let secret_name = mount.volume["secret"]["secretName"].as_str().unwrap();
    assert_eq!(secret_name, "vm1-bmc-credentials");
    let secret = fake.get(gvr("", "v1", "secrets"), NS, secret_name).unwrap();
    let mut user = String::new();
    let mut password = String::new();
    for (key, value) in secret["data"].as_object().unwrap() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value.as_str().unwrap())
            .unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        match key.as_str() {
            "username" => user = text.trim().to_owned(),
            "password" => password = text.trim().to_owned(),
            _ => {}
        }
        std::fs::write(credentials_dir.join(key), bytes).unwrap();
    }
    assert!(!user.is_empty() && !password.is_empty());
    let role = fake
        .get(
            gvr("rbac.authorization.k8s.io", "v1", "roles"),
            NS,
            "vm1-bmc",
        )
        .unwrap();
    let mut allowed: Vec<String> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["resourceNames"].as_array().cloned().unwrap_or_default())
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect();
    allowed.sort();
    allowed.dedup();
    let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
    fake.grant(SA_TOKEN, "system:serviceaccount:vms:vm1-bmc", &allowed);
    let sa_kubeconfig = serve_dir.path().join("kubeconfig");
    std::fs::write(&sa_kubeconfig, fake.kubeconfig(SA_TOKEN, NS)).unwrap();
    // Free high ports on loopback instead of 623/443 on the Pod IP.
    let ipmi_port = free_udp_port();
    env.insert("KUBEVIRT_BMC_IPMI_PORT".into(), ipmi_port.to_string());
    let redfish_port = free_port();
    env.insert("KUBEVIRT_BMC_REDFISH_PORT".into(), redfish_port.to_string());
    env.insert(
        "KUBEVIRT_BMC_HEALTH_LISTEN".into(),
        format!("127.0.0.1:{}", free_port()),
    );
    env.insert(
        "KUBEVIRT_BMC_CREDENTIALS_DIR".into(),
        credentials_dir.display().to_string(),
    );
    env.insert("KUBECONFIG".into(), sa_kubeconfig.display().to_string());
    let serve = Command::new(workspace_binary(&plan.program))
        .args(&plan.args)
        .env_clear()
        .envs(&env)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let _serve = Kill(serve);

    // Ironic's first call: power on, which unpauses the paused VMI.
    let ipmitool = |args: &[&str]| {
        let out = Command::new("ipmitool")
            .args(["-I", "lanplus", "-C", "17", "-H", "127.0.0.1", "-p"])
            .arg(ipmi_port.to_string())
            .args(["-U", &user, "-P", &password, "-R", "3", "-N", "1"])
            .args(args)
            .output()
            .expect("ipmitool not found: run e2e/setup.sh");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let mut answer = (false, String::new());
    for _ in 0..40 {
        answer = ipmitool(&["power", "on"]);
        if answer.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(answer.0, "ipmitool power on failed: {}", answer.1);
    wait_for("the VMI unpaused", Duration::from_secs(15), || {
        fake.vmi(NS, VM).is_some_and(|vmi| !vmi_paused(&vmi))
    })
    .await;
    let (ok, status) = ipmitool(&["power", "status"]);
    assert!(ok && status.contains("Chassis Power is on"), "{status}");

    // Ironic's reboot sequence, its exact ipmitool calls: off, boot device PXE once in
    // UEFI mode (set, then the boot-info acknowledge), on.
    let template_before = fake.vm(NS, VM).unwrap()["spec"]["template"]["spec"]["domain"].clone();
    let old_vmi = fake.vmi(NS, VM).unwrap()["metadata"]["uid"].clone();
    for args in [
        &["power", "off"][..],
        &["raw", "0x00", "0x08", "0x03", "0x08"][..],
        &["raw", "0x00", "0x08", "0x05", "0xa0", "0x04", "0", "0", "0"][..],
    ] {
        let (ok, out) = ipmitool(args);
        assert!(ok, "ipmitool {args:?} failed: {out}");
    }
    let domain = fake.vm(NS, VM).unwrap()["spec"]["template"]["spec"]["domain"].clone();
    assert_eq!(
        domain["devices"]["interfaces"][0]["bootOrder"], 1,
        "PXE first"
    );
    let (ok, out) = ipmitool(&["power", "on"]);
    assert!(ok, "ipmitool power on failed: {out}");
    wait_for("a new unpaused VMI", Duration::from_secs(20), || {
        fake.vmi(NS, VM)
            .is_some_and(|vmi| vmi["metadata"]["uid"] != old_vmi && !vmi_paused(&vmi))
    })
    .await;
    let booted = fake.vmi(NS, VM).unwrap();
    assert_eq!(
        booted["spec"]["domain"]["devices"]["interfaces"][0]["bootOrder"], 1,
        "the new VMI boots from the network"
    );
    assert!(booted["spec"]["domain"]["firmware"]["bootloader"]["efi"].is_object());
    wait_for("the template restored", Duration::from_secs(20), || {
        fake.vm(NS, VM).unwrap()["spec"]["template"]["spec"]["domain"] == template_before
    })
    .await;

    // Redfish (curl, as sushy sends it): ForceOff, then On, on the same BMC.
    let system_url = format!("https://127.0.0.1:{redfish_port}/redfish/v1/Systems/{VM}");
    let auth = format!("{user}:{password}");
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-sk", "-w", "\n%{http_code}", "-u", &auth])
            .args(args)
            .output()
            .expect("curl not found");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse::<u16>().unwrap_or(0), body.to_owned())
    };
    let power_state = || {
        let (code, body) = curl(&[&system_url]);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()["PowerState"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(power_state(), "On");
    let reset_url = format!("{system_url}/Actions/ComputerSystem.Reset");
    for (reset, state) in [("ForceOff", "Off"), ("On", "On")] {
        let (code, body) = curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            &format!("{{\"ResetType\": \"{reset}\"}}"),
            &reset_url,
        ]);
        assert!((200..300).contains(&code), "Reset {reset}: {code} {body}");
        wait_for(
            &format!("PowerState {state} after {reset}"),
            Duration::from_secs(15),
            || power_state() == state,
        )
        .await;
    }
    assert!(!vmi_paused(&fake.vmi(NS, VM).unwrap()));

    // The sidecar's token works on its own VM only: vm2 answers 403.
    fake.put(Gvr::vm(), NS, "vm2", {
        let mut vm = user_vm();
        vm["metadata"]["name"] = json!("vm2");
        vm
    });
    let (code, body) = http_get(
        fake.addr(),
        "/apis/kubevirt.io/v1/namespaces/vms/virtualmachines/vm2",
        SA_TOKEN,
    )
    .await;
    assert_eq!(code, 403, "{body}");
    let expected = fixture("status-403-get-vm2.json");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["message"], expected["message"]);
    let (code, _) = http_get(
        fake.addr(),
        "/apis/kubevirt.io/v1/namespaces/vms/virtualmachines/vm1",
        SA_TOKEN,
    )
    .await;
    assert_eq!(code, 200);

    // Opt-out: the VM gets its own settings back and every child goes.
    fake.modify(Gvr::vm(), NS, VM, |vm| {
        vm["metadata"]["annotations"]["bmc.kubevirt.io/enabled"] = json!("false");
    });
    for (g, name) in &children {
        wait_for(
            &format!("{}/{name} deleted", g.resource),
            Duration::from_secs(30),
            || fake.get(g.clone(), NS, name).is_none(),
        )
        .await;
    }
    wait_for("the VM restored", Duration::from_secs(30), || {
        let vm = fake.vm(NS, VM).unwrap();
        vm["spec"]["runStrategy"] == "Halted"
            && vm["metadata"]["annotations"]
                .get("bmc.kubevirt.io/original")
                .is_none()
    })
    .await;
}
