//! The whole flow on this machine: the real `kubevirt-bmc-webhook` binary (controller
//! included) and the real `kubevirt-bmc serve` run as processes against the fake API server,
//! exactly as they would against a cluster (kubeconfig, server-side apply, cluster-wide
//! watches with label selectors), driven by ipmitool and sushy as Ironic drives them.
//!
//! Steps that pass, in order: create VM → annotate it → the controller creates the
//! ServiceAccount, Role, RoleBinding, credentials Secret and Service and prepares the VM
//! (runStrategy Always, startStrategy Paused, template opted in) → an opted-in launcher Pod
//! whose ServiceAccount does not exist yet is refused with kube-apiserver's message → the
//! simulated virt-controller starts a paused VMI and creates its launcher Pod → the fake API
//! server calls the real webhook over HTTPS as `manifests/` configures it and applies its
//! JSONPatch (native `bmc` sidecar, serviceAccountName vm1-bmc) → the simulated kubelet
//! (`kubelet.rs`) runs `kubevirt-bmc serve` from the injected container spec (env, Secret
//! volume, the vm1-bmc token limited by the controller's Role) → `ipmitool -I lanplus -C 17
//! power on` unpauses the VMI → a sushy session is opened → Ironic's reboot (power off,
//! raw 0x00 0x08 0x03 0x08, raw 0x00 0x08 0x05 0xa0 0x04 0 0 0, power on) with serve
//! SIGKILLed right after `power off` and restarted in the same Pod: off and the boot device
//! survive → the new VMI boots unpaused from the network in UEFI mode (booted by the old
//! sidecar in its grace period or by the new one, whichever sees it first), its new launcher
//! Pod gets a new serve process (the old one stopped with its Pod), the template is restored →
//! the session token from before the restart still works → sushy reset_system ForceOff / On
//! with PowerState read back → sushy set_system_boot_options PXE once UEFI read back exactly
//! → sushy ForceRestart with serve SIGKILLed half-way (intent written, restart call not yet
//! made): sushy's retry completes it on the restarted process and exactly one VMI boots
//! from PXE, then the template is restored → with every watch broken just before, sushy
//! VirtualMedia.insert_media → the controller creates the CDI DataVolume → simulated CDI
//! (ImportScheduled, ImportInProgress with progress, Succeeded) → the `bmc-media` CD-ROM on
//! the VM → sushy reads it Inserted with the image → ForceRestart puts it on the new VMI →
//! eject removes the CD-ROM and the DataVolume → an image that answers 404 ends in CDI
//! phase Failed and reads Health Critical, NotConnected → the API server down while serve
//! runs: reads from the cache, changes refused clearly (IPMI completion code, Redfish 503
//! naming the unreachable API), a serve restarted meanwhile answers 503 "the BMC is
//! starting" (it used to exit), all works again once the API is back → the vm1-bmc token
//! gets 403 on vm2 → opt-out keeps it running (the last power asked was On), restores its
//! start strategy and deletes every child.
//!
//! What `sidecar/tests/kubevirt_faults.rs` already proves on the machine alone (and this
//! test does not repeat): a broken watch resumes from its resourceVersion without relisting,
//! a slow API, forbidden tokens and KubeVirt's 409 refusals with their messages.
//!
//! Not here: a real listener closed and reopened (the fake's "down" accepts and drops
//! connections); CrashLoopBackOff delays; a real PVC behind the DataVolume.
//!
//! The binaries are found next to this test's binary (`target/debug`); `e2e/test-all.sh`
//! builds every binary before the tests run. A missing binary fails the test loudly. sushy
//! comes from the test venv (`KUBEVIRT_BMC_VENV`, else `target/venv`).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use kubevirt_bmc_e2e::fake_apiserver::cdi;
use kubevirt_bmc_e2e::fake_apiserver::kubevirt::vmi_paused;
use kubevirt_bmc_e2e::fake_apiserver::store::EventType;
use kubevirt_bmc_e2e::fake_apiserver::{FakeApiServer, Gvr};
use kubevirt_bmc_e2e::images::{IMAGE_BYTES, ImageServer};
use kubevirt_bmc_e2e::kubelet::{Kubelet, SidecarConfig};
use kubevirt_bmc_e2e::launcher::{self, PodRuntime};
use kubevirt_bmc_e2e::sushy::Sushy;
use kubevirt_bmc_e2e::testkit::{
    Kill, fixture, free_tcp_port, free_udp_port, installed_webhook, wait_for, webhook_command,
    webhook_tls, workspace_binary,
};
use serde_json::{Value, json};

const NS: &str = "vms";
const VM: &str = "vm1";
const ADMIN_TOKEN: &str = "controller-token";

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

/// Every per-VM child made (`present`) or gone.
async fn wait_for_children(fake: &FakeApiServer, children: &[(Gvr, &str)], present: bool) {
    for (g, name) in children {
        let what = format!(
            "{}/{name} {}",
            g.resource,
            if present { "made" } else { "deleted" }
        );
        wait_for(&what, Duration::from_secs(30), || {
            fake.get(g.clone(), NS, name).is_some() == present
        })
        .await;
    }
}

/// The VMI after `old_uid`, once it runs unpaused.
async fn wait_for_boot_of_successor(fake: &FakeApiServer, old_uid: &str) -> Value {
    wait_for("a new unpaused VMI", SECS_20, || {
        fake.vmi(NS, VM)
            .is_some_and(|vmi| vmi["metadata"]["uid"] != old_uid && !vmi_paused(&vmi))
    })
    .await;
    fake.vmi(NS, VM).unwrap()
}

/// The VM template's domain back as it was before a one-time boot override.
async fn wait_for_template(fake: &FakeApiServer, domain_before: &Value) {
    wait_for("the template restored", SECS_20, || {
        fake.vm(NS, VM).unwrap()["spec"]["template"]["spec"]["domain"] == *domain_before
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_flow_annotate_inject_serve_ipmi_sushy_media_faults_and_opt_out() {
    let webhook = workspace_binary("kubevirt-bmc-webhook");
    let fake = Arc::new(FakeApiServer::start().await.unwrap());
    fake.run_cdi(Duration::from_millis(100));
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
    let cert_pem = webhook_tls(dir.path(), &[]);
    let webhook_port = free_tcp_port();
    let hook = installed_webhook(webhook_port, &cert_pem);
    assert_eq!(hook.path, "/mutate-pods");
    assert_eq!(hook.timeout, Duration::from_secs(5));
    assert_eq!(hook.match_labels["kubevirt.io"], "virt-launcher");
    fake.set_mutating_webhook(hook);
    fake.run_launcher_pods(fixture("pod-a-vm1-optin.json"));
    let child = webhook_command(&webhook, dir.path(), webhook_port, &kubeconfig)
        // The image server and every fake listen on loopback, which the BMC refuses by
        // default; the installation's allow list reaches the sidecar through its env.
        .args(["--egress-allow", "127.0.0.0/8"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let _webhook = Kill(child);

    // Not opted in: the controller leaves the VM alone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sa = gvr("", "v1", "serviceaccounts");
    assert!(fake.get(sa.clone(), NS, "vm1-bmc").is_none());

    // An opted-in launcher Pod before its ServiceAccount exists (a stale opt-in): admitted
    // with the sidecar and the Pod's own account, never blocked (issue 12). Before, the webhook
    // set serviceAccountName vm1-bmc and the API server refused the Pod with
    // fixtures/status-403-pod-serviceaccount-missing.json.
    let mut early = fixture("pod-a-vm1-optin.json");
    early["metadata"] = json!({
        "generateName": "virt-launcher-vm1-",
        // As KubeVirt makes it from a prepared VM: the template's labels copied on.
        "labels": {"kubevirt.io": "virt-launcher", "vm.kubevirt.io/name": VM, "bmc.kubevirt.io/enabled": "true"},
        "annotations": {"bmc.kubevirt.io/enabled": "true", "kubevirt.io/domain": VM},
    });
    let admitted = fake.create_pod(NS, early).await.unwrap();
    assert_eq!(admitted["spec"]["serviceAccountName"], "default");
    assert!(
        admitted["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "bmc")
    );
    let early_name = admitted["metadata"]["name"].as_str().unwrap().to_owned();
    fake.remove(gvr("", "v1", "pods"), NS, &early_name);

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
        (gvr("", "v1", "secrets"), "vm1-bmc-token"),
        (gvr("", "v1", "services"), "vm1-bmc"),
    ];
    wait_for_children(&fake, &children, true).await;
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
    // The Pod keeps KubeVirt's account (before issue 12: vm1-bmc).
    assert_eq!(pod["spec"]["serviceAccountName"], "default");
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

    // The kubelet's part: run `kubevirt-bmc serve` exactly as the injected container says
    // (args and env from the patched Pod, the Secret volume materialised), with the token the
    // API server issues for the `vm1-bmc` ServiceAccount, limited by its Role; stop it with
    // its Pod and start the next Pod's.
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
    let credentials_mount = plan.env["KUBEVIRT_BMC_CREDENTIALS_DIR"].clone();
    let mount = plan
        .mounts
        .iter()
        .find(|m| m.mount_path == credentials_mount)
        .expect("credentials directory is a mounted volume");
    assert_eq!(mount.volume["secret"]["secretName"], "vm1-bmc-credentials");
    let secret = fake
        .get(gvr("", "v1", "secrets"), NS, "vm1-bmc-credentials")
        .unwrap();
    let secret_text = |key: &str| {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(secret["data"][key].as_str().unwrap())
            .unwrap();
        String::from_utf8(bytes).unwrap().trim().to_owned()
    };
    let (user, password) = (secret_text("username"), secret_text("password"));
    assert!(!user.is_empty() && !password.is_empty());
    // The token the sidecar uses is the one the (fake) token controller put into the token
    // Secret the controller created; the kubelet mounts it into `bmc` only.
    let token_mount = plan
        .mounts
        .iter()
        .find(|m| m.mount_path == plan.env["KUBEVIRT_BMC_TOKEN_DIR"])
        .expect("token directory is a mounted volume");
    assert_eq!(token_mount.volume["secret"]["secretName"], "vm1-bmc-token");
    let token_secret = fake
        .get(gvr("", "v1", "secrets"), NS, "vm1-bmc-token")
        .unwrap();
    let sa_token = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(token_secret["data"]["token"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let serve_dir = tempfile::tempdir().unwrap();
    // Free high ports on loopback instead of 623/443 on the Pod IP; every Pod gets the
    // same ones, standing for the vm1-bmc Service's stable address.
    let ipmi_port = free_udp_port();
    let redfish_port = free_tcp_port();
    let kubelet = Kubelet::start(
        fake.clone(),
        SidecarConfig {
            binary: workspace_binary(&plan.program),
            default_program: "kubevirt-bmc".to_owned(),
            namespace: NS.to_owned(),
            vm: VM.to_owned(),
            container: "bmc".to_owned(),
            env_overrides: [
                ("KUBEVIRT_BMC_IPMI_PORT", ipmi_port.to_string()),
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
    let pod_name = pod["metadata"]["name"].as_str().unwrap().to_owned();
    wait_for("serve started for the launcher Pod", SECS_10, || {
        kubelet.starts().first().map(|s| s.pod.as_str()) == Some(pod_name.as_str())
    })
    .await;
    assert_eq!(kubelet.error(), None);

    let ipmi = Ipmi {
        port: ipmi_port,
        user: user.clone(),
        password: password.clone(),
    };
    // Ironic's first call: power on, which unpauses the paused VMI.
    ipmi.until_ok(&["power", "on"]).await;
    wait_for("the VMI unpaused", SECS_15, || {
        fake.vmi(NS, VM).is_some_and(|vmi| !vmi_paused(&vmi))
    })
    .await;
    let status = ipmi.ok(&["power", "status"]);
    assert!(status.contains("Chassis Power is on"), "{status}");

    // sushy, one client for the rest of the scenario, as an Ironic conductor keeps one. A
    // Redfish session made now must outlive this serve process.
    let mut sushy = Driver(
        Sushy::start(
            &format!("https://127.0.0.1:{redfish_port}"),
            &user,
            &password,
            VM,
        )
        .unwrap(),
    );
    assert_eq!(sushy.ok(json!({"op": "power"}))["power"], "On");
    let login = sushy.ok(json!({"op": "login"}));
    let token = login["token"].as_str().unwrap().to_owned();
    let system_path = format!("/redfish/v1/Systems/{VM}");

    // Ironic's reboot sequence, its exact ipmitool calls: off, boot device PXE once in UEFI
    // mode (set, then the boot-info acknowledge), on. The BMC process is SIGKILLed right
    // after `power off` is accepted; the kubelet restarts it in the same Pod and Ironic's
    // next calls reach the new process (ipmitool opens a new session per call anyway).
    let template_before = fake.vm(NS, VM).unwrap()["spec"]["template"]["spec"]["domain"].clone();
    let old_vmi = vmi_uid(&fake);
    ipmi.ok(&["power", "off"]);
    assert!(vmi_paused(&fake.vmi(NS, VM).unwrap()), "power off pauses");
    kubelet.crash().expect("a running serve process");
    wait_for("serve restarted in the same Pod", SECS_10, || {
        kubelet
            .starts()
            .last()
            .is_some_and(|s| s.restart && s.pod == pod_name)
    })
    .await;
    ipmi.until_ok(&["raw", "0x00", "0x08", "0x03", "0x08"])
        .await;
    ipmi.ok(&["raw", "0x00", "0x08", "0x05", "0xa0", "0x04", "0", "0", "0"]);
    let domain = fake.vm(NS, VM).unwrap()["spec"]["template"]["spec"]["domain"].clone();
    assert_eq!(
        domain["devices"]["interfaces"][0]["bootOrder"], 1,
        "PXE first"
    );
    let status = ipmi.ok(&["power", "status"]);
    assert!(
        status.contains("Chassis Power is off"),
        "off survived the crash: {status}"
    );
    // Power on with a boot change pending: a new VMI, so a new launcher Pod; the kubelet
    // stops this serve with its Pod and starts the new Pod's, which boots the new VMI.
    ipmi.ok(&["power", "on"]);
    let booted = wait_for_boot_of_successor(&fake, &old_vmi).await;
    assert_eq!(
        booted["spec"]["domain"]["devices"]["interfaces"][0]["bootOrder"], 1,
        "the new VMI boots from the network"
    );
    assert!(booted["spec"]["domain"]["firmware"]["bootloader"]["efi"].is_object());
    wait_for_template(&fake, &template_before).await;
    // Its launcher Pod goes through admission; the VMI may be booted before it is there
    // (the old sidecar, still in its grace period, may boot it: twins are tolerated).
    wait_for("the new VMI's launcher Pod", SECS_10, || {
        current_pod_name(&fake).is_some()
    })
    .await;
    let new_pod = current_pod_name(&fake).unwrap();
    assert_ne!(new_pod, pod_name);
    wait_for("serve started from the new launcher Pod", SECS_10, || {
        kubelet.starts().last().is_some_and(|s| s.pod == new_pod)
    })
    .await;
    assert_eq!(kubelet.killed_after_grace(), 0, "serve stops on SIGTERM");
    assert_eq!(
        sushy.ok(json!({"op": "boot_read"}))["enabled"],
        "Disabled",
        "the one-time override is used up"
    );
    // The Redfish session from before: the new process honours its token (the key lives in
    // the credentials Secret, not in the process).
    let seen = sushy.ok(json!({"op": "get_with_token", "path": system_path, "token": token}));
    assert_eq!(seen["status"], 200, "{seen}");
    assert_eq!(seen["body"]["PowerState"], "On");

    // sushy: ForceOff, then On, PowerState following; the VMI paused and unpaused.
    for (reset, state, paused) in [("ForceOff", "Off", true), ("On", "On", false)] {
        sushy.ok(json!({"op": "reset", "type": reset}));
        sushy.power_becomes(state).await;
        assert_eq!(vmi_paused(&fake.vmi(NS, VM).unwrap()), paused, "{reset}");
    }

    // sushy's boot override, read back exactly, then ForceRestart with the BMC SIGKILLed
    // half-way: the intent is on the VM, the restart call not yet made (the API answers
    // slowly). sushy retries a dropped request after 3 s, as Ironic relies on; the restarted
    // process carries it out. The PXE-once override applies to exactly one boot.
    let boot = sushy.ok(json!({"op": "boot", "target": "Pxe", "enabled": "Once", "mode": "UEFI"}));
    assert_eq!(boot["raw"], json!(["Pxe", "Once", "UEFI"]));
    assert_eq!(
        fake.vm(NS, VM).unwrap()["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]
            ["bootOrder"],
        1
    );
    let before_restart = vmi_uid(&fake);
    let vmis_before = fake.history(&Gvr::vmi()).len();
    let starts_before = kubelet.starts().len();
    fake.set_slow(Duration::from_millis(400));
    let pending = sushy.background(json!({"op": "reset", "type": "ForceRestart"}));
    wait_for("the restart intent on the VM", SECS_10, || {
        annotation(&fake, "bmc.kubevirt.io/restart-of").as_deref() == Some(before_restart.as_str())
    })
    .await;
    kubelet.crash().expect("a running serve process");
    let restarted_before_crash = vmi_uid(&fake) != before_restart;
    fake.set_slow(Duration::ZERO);
    let (driver, answer) = pending.await.unwrap();
    let restart_calls = fake
        .requests()
        .iter()
        .filter(|r| r.subresource() == Some("restart"))
        .count();
    eprintln!(
        "whole flow: ForceRestart crash: restart made before the crash: {restarted_before_crash}, \
         restart calls so far: {restart_calls}, sushy answered {answer:?}"
    );
    sushy = driver;
    assert!(answer.is_ok(), "ForceRestart across the crash: {answer:?}");
    assert!(
        kubelet.starts().len() > starts_before,
        "serve came back: {:?}",
        kubelet.starts()
    );
    wait_for_boot_of_successor(&fake, &before_restart).await;
    wait_for_template(&fake, &template_before).await;
    let pxe_boots = fake.history(&Gvr::vmi())[vmis_before..]
        .iter()
        .filter(|(kind, vmi)| {
            *kind == EventType::Added
                && vmi["spec"]["domain"]["devices"]["interfaces"][0]["bootOrder"] == 1
        })
        .count();
    assert_eq!(pxe_boots, 1, "the PXE-once override booted exactly one VMI");
    sushy.power_becomes("On").await;
    assert_eq!(sushy.ok(json!({"op": "boot_read"}))["enabled"], "Disabled");

    // Virtual media through sushy, with every watch broken just before (the controller's
    // and the sidecar's resume from their resourceVersions): the sidecar records the wish
    // on the VM → the controller creates the DataVolume → simulated CDI imports it → the
    // controller attaches the bmc-media CD-ROM to the VM → sushy reads it back inserted.
    let images = ImageServer::start().await.unwrap();
    let image = images.url("images/ipa.iso");
    fake.break_watches();
    sushy.ok(json!({"op": "insert", "image": image}));
    let wish: Value =
        serde_json::from_str(&annotation(&fake, "bmc.kubevirt.io/media").unwrap()).unwrap();
    assert_eq!(wish["image"], image.as_str());
    // Sized from the image server's answer to the sidecar's HEAD, and the DataVolume from it.
    assert_eq!(wish["sizeBytes"], IMAGE_BYTES as u64, "{wish}");
    let dvs = cdi::gvr();
    wait_for("the media DataVolume imported", SECS_20, || {
        fake.get(dvs.clone(), NS, "vm1-bmc-media")
            .is_some_and(|dv| dv["status"]["phase"] == "Succeeded")
    })
    .await;
    let dv = fake.get(dvs.clone(), NS, "vm1-bmc-media").unwrap();
    assert_eq!(dv["spec"]["source"]["http"]["url"], image.as_str());
    assert_eq!(dv["metadata"]["ownerReferences"][0]["name"], VM);
    assert_eq!(
        dv["spec"]["storage"]["resources"]["requests"]["storage"], "1Mi",
        "64 KiB aligned up to CDI's 1 MiB block; CDI adds the filesystem overhead"
    );
    assert_eq!(
        dv["metadata"]["annotations"]["cdi.kubevirt.io/storage.bind.immediate.requested"],
        "true"
    );
    let phases: Vec<(String, String)> = fake
        .history(&dvs)
        .iter()
        .filter(|(_, dv)| dv["spec"]["source"]["http"]["url"] == image.as_str())
        .filter_map(|(_, dv)| {
            Some((
                dv["status"]["phase"].as_str()?.to_owned(),
                dv["status"]["progress"].as_str()?.to_owned(),
            ))
        })
        .collect();
    assert!(
        phases.iter().any(|(p, _)| p == "ImportScheduled")
            && phases
                .iter()
                .any(|(p, progress)| p == "ImportInProgress" && progress.ends_with('%'))
            && phases.last().map(|(p, _)| p.as_str()) == Some("Succeeded"),
        "CDI phases: {phases:?}"
    );
    wait_for("the CD-ROM on the VM and the import Ready", SECS_20, || {
        let vm = fake.vm(NS, VM).unwrap();
        has_media_disk(&vm["spec"]["template"]["spec"])
            && annotation(&fake, "bmc.kubevirt.io/media-status")
                .is_some_and(|s| s.contains("\"Ready\""))
    })
    .await;
    let media = sushy.ok(json!({"op": "media"}));
    assert_eq!(media["inserted"], true, "{media}");
    assert_eq!(media["image"], image.as_str());
    assert_eq!(media["image_name"], "ipa.iso");
    assert_eq!(media["connected_via"], "URI");
    assert_eq!(media["health"], "OK");
    // The CD reaches the VMI on its next boot (a new VMI: the template changed).
    let with_media = vmi_uid(&fake);
    sushy.ok(json!({"op": "reset", "type": "ForceRestart"}));
    wait_for("a new VMI with the CD-ROM", SECS_20, || {
        fake.vmi(NS, VM).is_some_and(|vmi| {
            vmi["metadata"]["uid"] != with_media.as_str()
                && !vmi_paused(&vmi)
                && has_media_disk(&vmi["spec"])
        })
    })
    .await;
    // Eject: the CD-ROM leaves the VM and the DataVolume goes.
    sushy.ok(json!({"op": "eject"}));
    wait_for("the CD-ROM and the DataVolume removed", SECS_20, || {
        let vm = fake.vm(NS, VM).unwrap();
        !has_media_disk(&vm["spec"]["template"]["spec"])
            && fake.get(dvs.clone(), NS, "vm1-bmc-media").is_none()
    })
    .await;
    let media = sushy.ok(json!({"op": "media"}));
    assert_eq!(
        (&media["inserted"], &media["image"]),
        (&json!(false), &Value::Null)
    );

    // Images whose size cannot be learned are refused at insert, with the reason, and leave
    // nothing on the VM: a 404, and a server that sends no Content-Length.
    for (path, why) in [
        ("images/missing.img", "404"),
        ("images/generated.stream.iso", "Content-Length"),
    ] {
        let refused = sushy
            .call(json!({"op": "insert", "image": images.url(path)}))
            .unwrap_err();
        assert!(
            refused.contains("HEAD") && refused.contains(why),
            "{path}: {refused}"
        );
        assert_eq!(annotation(&fake, "bmc.kubevirt.io/media"), None, "{path}");
    }

    // An image the importer cannot fetch (gone after the insert): CDI ends Failed, and sushy
    // reads an error state (Health Critical, not connected), never success.
    let missing = images.url("images/removed.gone.iso");
    sushy.ok(json!({"op": "insert", "image": missing}));
    wait_for("the import Failed", SECS_20, || {
        fake.get(dvs.clone(), NS, "vm1-bmc-media")
            .is_some_and(|dv| dv["status"]["phase"] == "Failed")
    })
    .await;
    wait_for("the failure on the VM", SECS_20, || {
        annotation(&fake, "bmc.kubevirt.io/media-status").is_some_and(|s| s.contains("got 404"))
    })
    .await;
    let media = sushy.ok(json!({"op": "media"}));
    assert_eq!(media["health"], "Critical", "{media}");
    assert_eq!(media["connected_via"], "NotConnected", "{media}");
    sushy.ok(json!({"op": "eject"}));
    wait_for("the failed DataVolume removed", SECS_20, || {
        fake.get(dvs.clone(), NS, "vm1-bmc-media").is_none()
    })
    .await;

    // The API server goes away while serve runs: reads answer from the cache, changes fail
    // with a clear error (IPMI: a completion code; Redfish: 503 naming the KubeVirt API),
    // a serve process restarted meanwhile cannot sync and says so, and all of it works
    // again once the API server is back. The VM ends where the client last asked.
    fake.set_down(true);
    let status = ipmi.ok(&["power", "status"]);
    assert!(status.contains("Chassis Power is on"), "{status}");
    let (ok, out) = ipmi.run(&["power", "off"]);
    assert!(!ok, "power off with the API down: {out}");
    let refused = sushy
        .call(json!({"op": "reset", "type": "ForceOff"}))
        .unwrap_err();
    assert!(
        refused.contains("503") && refused.contains("unreachable"),
        "{refused}"
    );
    assert!(!vmi_paused(&fake.vmi(NS, VM).unwrap()), "nothing changed");
    let starts_before = kubelet.starts().len();
    kubelet.crash().expect("a running serve process");
    wait_for("serve restarted with the API down", SECS_10, || {
        kubelet.starts().len() > starts_before
    })
    .await;
    // Raw on purpose: sushy retries a GET's 503 for 30 s, which would hide the answer. The
    // new process needs a moment before it listens.
    let start = Instant::now();
    let unsynced = loop {
        match sushy.call(json!({"op": "get_with_token", "path": system_path, "token": token})) {
            Ok(answer) => break answer,
            Err(e) if e.starts_with("ConnectionError") && start.elapsed() < SECS_15 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the restarted BMC never answered: {e}"),
        }
    };
    assert_eq!(unsynced["status"], 503, "{unsynced}");
    let message = unsynced["body"]["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("the BMC is starting: cannot read the VM from the KubeVirt API"),
        "{unsynced}"
    );
    fake.set_down(false);
    sushy.ok(json!({"op": "reset", "type": "ForceOff"}));
    sushy.power_becomes("Off").await;
    assert!(vmi_paused(&fake.vmi(NS, VM).unwrap()));
    ipmi.until_ok(&["power", "on"]).await;
    sushy.power_becomes("On").await;

    // The sidecar's token works on its own VM only: vm2 answers 403.
    fake.put(Gvr::vm(), NS, "vm2", {
        let mut vm = user_vm();
        vm["metadata"]["name"] = json!("vm2");
        vm
    });
    let (code, body) = http_get(
        fake.addr(),
        "/apis/kubevirt.io/v1/namespaces/vms/virtualmachines/vm2",
        &sa_token,
    )
    .await;
    assert_eq!(code, 403, "{body}");
    let expected = fixture("status-403-get-vm2.json");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["message"], expected["message"]);
    let (code, _) = http_get(
        fake.addr(),
        "/apis/kubevirt.io/v1/namespaces/vms/virtualmachines/vm1",
        &sa_token,
    )
    .await;
    assert_eq!(code, 200);

    // Opt-out: the VM keeps the power a client last asked for (on: it stays running, so
    // runStrategy Always instead of the Halted saved at opt-in), gets its other settings back
    // and every child goes. Right after the outage above: the controller's watches must be
    // back (with kube-runtime's default trigger backoff they took minutes; see
    // `TriggerBackoff`).
    assert_eq!(
        annotation(&fake, "bmc.kubevirt.io/power-state").as_deref(),
        Some("On"),
        "the flow ends powered on"
    );
    fake.modify(Gvr::vm(), NS, VM, |vm| {
        vm["metadata"]["annotations"]["bmc.kubevirt.io/enabled"] = json!("false");
    });
    wait_for_children(&fake, &children, false).await;
    wait_for("the VM restored", Duration::from_secs(30), || {
        let vm = fake.vm(NS, VM).unwrap();
        vm["spec"]["runStrategy"] == "Always"
            && vm["metadata"]["annotations"]
                .get("bmc.kubevirt.io/original")
                .is_none()
    })
    .await;
    drop(kubelet);
}

const SECS_10: Duration = Duration::from_secs(10);
const SECS_15: Duration = Duration::from_secs(15);
const SECS_20: Duration = Duration::from_secs(20);

fn vmi_uid(fake: &FakeApiServer) -> String {
    fake.vmi(NS, VM).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn annotation(fake: &FakeApiServer, key: &str) -> Option<String> {
    fake.vm(NS, VM)?["metadata"]["annotations"][key]
        .as_str()
        .map(str::to_owned)
}

/// The launcher Pod of the current VMI.
fn current_pod_name(fake: &FakeApiServer) -> Option<String> {
    let uid = vmi_uid(fake);
    fake.list(gvr("", "v1", "pods"), NS)
        .into_iter()
        .find(|p| p["metadata"]["labels"]["kubevirt.io/created-by"] == uid.as_str())
        .and_then(|p| p["metadata"]["name"].as_str().map(str::to_owned))
}

/// A VM template spec or VMI spec with the bmc-media CD-ROM backed by the DataVolume.
fn has_media_disk(spec: &Value) -> bool {
    let disk = spec["domain"]["devices"]["disks"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|d| d["name"] == "bmc-media" && d["cdrom"].is_object());
    let volume = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|v| v["name"] == "bmc-media" && v["dataVolume"]["name"] == "vm1-bmc-media");
    disk && volume
}

/// ipmitool as Ironic runs it.
struct Ipmi {
    port: u16,
    user: String,
    password: String,
}

impl Ipmi {
    fn run(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ipmitool")
            .args(["-I", "lanplus", "-C", "17", "-H", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-U", &self.user, "-P", &self.password, "-R", "3", "-N", "1"])
            .args(args)
            .output()
            .expect("ipmitool not found: run e2e/setup.sh");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out) = tokio::task::block_in_place(|| self.run(args));
        assert!(ok, "ipmitool {args:?} failed: {out}");
        out
    }

    /// Retries while the BMC is (re)starting, as Ironic's retries would.
    async fn until_ok(&self, args: &[&str]) -> String {
        let start = Instant::now();
        loop {
            let (ok, out) = tokio::task::block_in_place(|| self.run(args));
            if ok {
                return out;
            }
            assert!(
                start.elapsed() < SECS_15,
                "ipmitool {args:?} kept failing: {out}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The sushy driver, blocking calls kept off the runtime's workers.
struct Driver(Sushy);

impl Driver {
    fn call(&mut self, command: Value) -> Result<Value, String> {
        tokio::task::block_in_place(|| self.0.call(command)).expect("the sushy driver runs")
    }

    fn ok(&mut self, command: Value) -> Value {
        let what = command.to_string();
        self.call(command)
            .unwrap_or_else(|e| panic!("sushy {what} failed: {e}"))
    }

    /// Runs one command on a blocking thread while the test goes on.
    fn background(
        self,
        command: Value,
    ) -> tokio::task::JoinHandle<(Driver, Result<Value, String>)> {
        let Driver(mut sushy) = self;
        tokio::task::spawn_blocking(move || {
            let answer = sushy.call(command).expect("the sushy driver runs");
            (Driver(sushy), answer)
        })
    }

    async fn power_becomes(&mut self, state: &str) {
        let start = Instant::now();
        loop {
            let power = self.ok(json!({"op": "power"}));
            if power["power"] == state {
                return;
            }
            assert!(
                start.elapsed() < SECS_15,
                "PowerState never became {state}: {power}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
