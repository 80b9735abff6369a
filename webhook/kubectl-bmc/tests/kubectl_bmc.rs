//! The real `kubectl-bmc` binary against the fake API server, with a kubeconfig and nothing
//! else, as a user runs it.
//!
//! The cluster holds what the controller and the sidecar leave behind for opted-in VMs: the
//! VM annotations, Secret and Service come from the controller's own decision functions
//! (`kubevirt_bmc_webhook::controller::plan::plan`, `children::service`,
//! `children::credentials_secret`) applied the way its run loop applies them (merge patch of
//! the VM), for a VM whose launcher Pod is injected and ready, one that runs without its
//! sidecar, and so on; `power-state` and `boot-override` are written with the contract's types,
//! as the sidecar writes them. The VMs start from the captured `vm-vm1.json` (kube-apiserver
//! 1.36, KubeVirt 1.9). The controller's watch loop itself does not run here
//! (`e2e/tests/whole_flow.rs` runs it).
//!
//! The generated host definitions are checked against the vendored real schemas
//! (`testdata/schemas`, see `schema/mod.rs`).

mod schema;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use kubevirt_bmc_contract::annotations::{self, PowerState, ServiceType};
use kubevirt_bmc_contract::boot::{BootMode, BootOverride, BootOverrideEnabled, BootTarget};
use kubevirt_bmc_contract::names;
use kubevirt_bmc_e2e::fake_apiserver::{FakeApiServer, Gvr};
use kubevirt_bmc_webhook::controller::children::{self, VmRef};
use kubevirt_bmc_webhook::controller::plan::{Fresh, Launcher, Observed, Plan, plan};
use serde_json::{Value, json};

const NS: &str = "vms";
const ADMIN: &str = "admin-token";
/// A user who may read VMs and Services but not Secrets (a namespace viewer).
const VIEWER: &str = "viewer-token";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

struct Cluster {
    fake: FakeApiServer,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn kubeconfig(&self, token: &str) -> PathBuf {
        let path = self.dir.path().join(format!("kubeconfig-{token}"));
        std::fs::write(&path, self.fake.kubeconfig(token, NS)).unwrap();
        path
    }

    /// `kubectl bmc ARGS` as a user whose kubeconfig holds `token` (KUBECONFIG, no flags).
    async fn run(&self, token: &str, args: &[&str]) -> Run {
        let kubeconfig = self.kubeconfig(token);
        let home = self.dir.path().to_owned();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_kubectl-bmc"))
                .args(&args)
                .env_clear()
                .env("KUBECONFIG", kubeconfig)
                .env("HOME", home)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }
}

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../e2e/testdata/fixtures")
        .join(name);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The captured VM renamed, with `interfaces` (and a pod or multus network for each),
/// `firmware` bootloader, printableStatus and our annotations.
fn vm(
    namespace: &str,
    name: &str,
    interfaces: Value,
    bootloader: Option<Value>,
    printable: &str,
    annotations: &[(&str, String)],
) -> Value {
    let mut vm = fixture("vm-vm1.json");
    vm["metadata"]["name"] = json!(name);
    vm["metadata"]["namespace"] = json!(namespace);
    vm["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("managedFields");
    for (k, v) in annotations {
        vm["metadata"]["annotations"][*k] = json!(v);
    }
    let spec = &mut vm["spec"]["template"]["spec"];
    let networks: Vec<Value> = interfaces
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, nic)| {
            if i == 0 {
                json!({"name": nic["name"], "pod": {}})
            } else {
                json!({"name": nic["name"], "multus": {"networkName": "provisioning"}})
            }
        })
        .collect();
    let mut interfaces = interfaces;
    for nic in interfaces.as_array_mut().unwrap() {
        // As in the capture: masquerade with a ports list, or every port (the BMC's too) goes
        // to the guest and the controller reports the BMC unreachable.
        if nic.get("masquerade").is_some() && nic.get("ports").is_none() {
            nic["ports"] = json!([{"name": "ssh", "port": 22, "protocol": "TCP"}]);
        }
    }
    spec["domain"]["devices"]["interfaces"] = interfaces;
    spec["networks"] = json!(networks);
    if let Some(loader) = bootloader {
        spec["domain"]["firmware"]["bootloader"] = loader;
    }
    vm["status"]["printableStatus"] = json!(printable);
    vm
}

/// What the controller leaves behind for `vm`: its decision applied until it has nothing more
/// to write (the run loop's merge patches), with `launcher` as the VM's Pod is seen. Returns
/// the VM and the Secret and Service it creates (`node_ports` as kube-apiserver allocates them
/// for a NodePort Service, pkg/registry/core/service/portallocator).
fn controller_writes(
    mut vm: Value,
    launcher: Option<Launcher>,
    password: &str,
    node_ports: Option<(u16, u16)>,
) -> (Value, Value, Value) {
    let vm_ref = VmRef {
        name: vm["metadata"]["name"].as_str().unwrap().to_owned(),
        namespace: vm["metadata"]["namespace"].as_str().unwrap().to_owned(),
        uid: vm["metadata"]["uid"].as_str().unwrap().to_owned(),
    };
    let fresh = Fresh {
        password: password.to_owned(),
        session_key: "session-key".to_owned(),
    };
    // vm2's NodePort Service: an installation that allows external BMC Services.
    let mut observed = Observed::default();
    observed.policy.external_services = true;
    let mut service_type = ServiceType::ClusterIp;
    // What the controller generated at opt-in: it creates the Secret once and never reads it.
    let mut credentials = None;
    // First pass: the opt-in (the controller prepares the VM); then the launcher Pod as it is now.
    let passes = [None, launcher];
    for seen in passes {
        observed.launcher = seen;
        let Plan::OptedIn {
            secrets,
            vm_patch,
            service_type: wanted,
            ..
        } = plan(&vm, &vm_ref, &observed, &fresh)
        else {
            panic!("{} is opted in", vm_ref.name);
        };
        service_type = wanted;
        if credentials.is_none() && !secrets.credentials.is_empty() {
            credentials = Some(secrets.credentials);
        }
        if let Some(patch) = vm_patch {
            json_patch::merge(&mut vm, &patch);
        }
    }
    let account_uid = format!("{}-bmc-account-uid", vm_ref.name);
    let secret = children::credentials_secret(
        &vm_ref,
        &account_uid,
        credentials.expect("opt-in generates the credentials"),
    );
    let mut service = serde_json::to_value(children::service(&vm_ref, service_type)).unwrap();
    if let Some((ipmi, redfish)) = node_ports {
        service["spec"]["ports"][0]["nodePort"] = json!(ipmi);
        service["spec"]["ports"][1]["nodePort"] = json!(redfish);
    }
    (vm, serde_json::to_value(secret).unwrap(), service)
}

fn pod(ip: &str, injected: bool, bmc_ready: bool) -> Option<Launcher> {
    Some(Launcher {
        ip: Some(ip.to_owned()),
        injected,
        bmc_ready,
    })
}

/// vm1: ready, powered off (paused), a PXE override pending, two NICs (the second, with the
/// lowest bootOrder, on a provisioning network), UEFI without secure boot.
/// vm2: ready, on, one NIC, BIOS, a NodePort Service.
/// vm3: opted in, not ready (its Pod started before the opt-in, without the sidecar), its NIC
/// has no pinned MAC. vm4: not opted in. lab/vm5: ready, in another namespace.
async fn cluster() -> Cluster {
    let fake = FakeApiServer::start().await.unwrap();
    fake.grant_all(ADMIN, "alice");
    fake.grant_all(VIEWER, "jane");
    fake.deny_resources(VIEWER, &["secrets"]);
    let on = |k: &'static str| (k, "true".to_owned());
    let pxe_once = BootOverride {
        target: BootTarget::Pxe,
        enabled: BootOverrideEnabled::Once,
        mode: BootMode::Uefi,
    };
    let opted_in = [
        (
            vm(
                NS,
                "vm1",
                json!([
                    {"name": "default", "masquerade": {}, "macAddress": "02:00:00:00:01:01"},
                    {"name": "prov", "bridge": {}, "macAddress": "52:54:00:00:01:02", "bootOrder": 1},
                ]),
                Some(json!({"efi": {"secureBoot": false}})),
                "Paused",
                &[
                    on(annotations::ENABLED),
                    (annotations::POWER, PowerState::Off.as_str().to_owned()),
                    (annotations::BOOT_OVERRIDE, pxe_once.to_annotation()),
                ],
            ),
            pod("10.244.1.17", true, true),
            "pw-one",
            None,
        ),
        (
            vm(
                NS,
                "vm2",
                json!([{"name": "default", "masquerade": {}, "macAddress": "02:00:00:00:02:01"}]),
                None,
                "Running",
                &[
                    on(annotations::ENABLED),
                    (annotations::SERVICE_TYPE, "NodePort".to_owned()),
                    (annotations::POWER, PowerState::On.as_str().to_owned()),
                ],
            ),
            pod("10.244.1.18", true, true),
            "pw-two",
            Some((31623, 30443)),
        ),
        (
            vm(
                NS,
                "vm3",
                json!([{"name": "default", "masquerade": {}}]),
                Some(json!({"efi": {}})),
                "Running",
                &[on(annotations::ENABLED)],
            ),
            pod("10.244.1.19", false, false),
            "pw-three",
            None,
        ),
        (
            vm(
                "lab",
                "vm5",
                json!([{"name": "default", "masquerade": {}, "macAddress": "02:00:00:00:05:01"}]),
                None,
                "Running",
                &[on(annotations::ENABLED)],
            ),
            pod("10.244.2.5", true, true),
            "pw-five",
            None,
        ),
    ];
    let secrets = Gvr::new("", "v1", "secrets");
    let services = Gvr::new("", "v1", "services");
    for (user_vm, launcher, password, node_ports) in opted_in {
        let (vm, secret, service) = controller_writes(user_vm, launcher, password, node_ports);
        let ns = vm["metadata"]["namespace"].as_str().unwrap().to_owned();
        let name = vm["metadata"]["name"].as_str().unwrap().to_owned();
        fake.put(Gvr::vm(), &ns, &name, vm);
        fake.put(
            secrets.clone(),
            &ns,
            &names::credentials_secret(&name),
            secret,
        );
        fake.put(services.clone(), &ns, &names::service(&name), service);
    }
    let vm4 = vm(
        NS,
        "vm4",
        json!([{"name": "default", "masquerade": {}, "macAddress": "02:00:00:00:04:01"}]),
        None,
        "Running",
        &[],
    );
    fake.put(Gvr::vm(), NS, "vm4", vm4);
    Cluster {
        fake,
        dir: tempfile::tempdir().unwrap(),
    }
}

fn columns(line: &str) -> Vec<&str> {
    line.split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

#[tokio::test]
async fn list_shows_every_opted_in_vm_with_readiness_and_the_reason_when_not_ready() {
    let c = cluster().await;
    let out = c.run(ADMIN, &["list"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    println!("$ kubectl bmc list\n{}", out.stdout);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        4,
        "header and vm1..vm3 (vm4 did not opt in):\n{}",
        out.stdout
    );
    assert_eq!(
        columns(lines[0]),
        ["NAME", "READY", "POWER", "POD IP", "SERVICE", "REASON"]
    );
    assert_eq!(
        columns(lines[1]),
        ["vm1", "True", "Off", "10.244.1.17", "vm1-bmc.vms.svc"]
    );
    assert_eq!(
        columns(lines[2]),
        ["vm2", "True", "On", "10.244.1.18", "vm2-bmc.vms.svc"]
    );
    assert_eq!(
        columns(lines[3]),
        [
            "vm3",
            "False",
            "On",
            "10.244.1.19",
            "vm3-bmc.vms.svc",
            "the VM's Pod has no BMC sidecar; restart the VM (virtctl restart vm3) to get one"
        ]
    );

    let wide = c.run(ADMIN, &["list", "-o", "wide"]).await;
    assert_eq!(wide.code, 0, "{}", wide.stderr);
    println!("$ kubectl bmc list -o wide\n{}", wide.stdout);
    let lines: Vec<&str> = wide.stdout.lines().collect();
    assert_eq!(
        columns(lines[0]),
        [
            "NAME",
            "READY",
            "POWER",
            "POD IP",
            "SERVICE",
            "TYPE",
            "PORTS",
            "REQUESTED",
            "BOOT OVERRIDE",
            "REASON"
        ]
    );
    assert_eq!(
        &columns(lines[1])[5..],
        ["ClusterIP", "623/UDP,443/TCP", "Off", "Pxe/Once/UEFI"]
    );
    assert_eq!(
        &columns(lines[2])[5..],
        ["NodePort", "623:31623/UDP,443:30443/TCP", "On", "<none>"]
    );

    let all = c.run(ADMIN, &["list", "-A"]).await;
    assert_eq!(all.code, 0, "{}", all.stderr);
    let lines: Vec<&str> = all.stdout.lines().collect();
    assert_eq!(columns(lines[0])[0], "NAMESPACE");
    assert_eq!(&columns(lines[1])[..2], ["lab", "vm5"]);
    assert_eq!(lines.len(), 5);

    let json_out = c.run(ADMIN, &["list", "-o", "json"]).await;
    assert_eq!(json_out.code, 0, "{}", json_out.stderr);
    let doc: Value = serde_json::from_str(&json_out.stdout).unwrap();
    assert_eq!(doc["kind"], "List");
    let items = doc["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[2]["name"], "vm3");
    assert_eq!(items[2]["ready"], false);
    assert_eq!(items[1]["ports"][1]["nodePort"], 30443);
    assert_eq!(items[0]["bootOverride"], "Pxe/Once/UEFI");

    let yaml_out = c.run(ADMIN, &["list", "-n", "lab", "-o", "yaml"]).await;
    assert_eq!(yaml_out.code, 0, "{}", yaml_out.stderr);
    let doc: Value = serde_saphyr::from_str(&yaml_out.stdout).unwrap();
    assert_eq!(doc["items"][0]["name"], "vm5");
    assert_eq!(doc["items"][0]["service"], "vm5-bmc.lab.svc");

    // Without the right to list Services, the rows stay and the ports are said to be defaults.
    c.fake.deny_resources(VIEWER, &["services"]);
    let viewer = c.run(VIEWER, &["list", "-o", "wide"]).await;
    assert_eq!(viewer.code, 0, "{}", viewer.stderr);
    assert!(
        viewer
            .stderr
            .contains("services is forbidden: User \"jane\"")
            && viewer.stderr.contains("ports shown are the BMC's defaults"),
        "{}",
        viewer.stderr
    );
    assert_eq!(viewer.stdout.lines().count(), 4);
}

#[tokio::test]
async fn enable_and_disable_set_the_opt_in_annotation_and_nothing_else() {
    let c = cluster().await;
    let before = c.fake.vm(NS, "vm4").unwrap();
    let out = c.run(ADMIN, &["enable", "vm4"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("vm4 BMC enabled"), "{}", out.stdout);
    let after = c.fake.vm(NS, "vm4").unwrap();
    assert_eq!(
        after["metadata"]["annotations"][annotations::ENABLED],
        "true"
    );
    assert_eq!(after["spec"], before["spec"], "only the annotation changes");
    let patch = c
        .fake
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .unwrap();
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        patch.body.unwrap(),
        json!({"metadata": {"annotations": {annotations::ENABLED: "true"}}})
    );

    let out = c.run(ADMIN, &["disable", "vm4", "-n", NS]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        c.fake.vm(NS, "vm4").unwrap()["metadata"]["annotations"][annotations::ENABLED],
        "false"
    );
    // disabled VMs drop out of the list
    let list = c.run(ADMIN, &["list"]).await;
    assert!(!list.stdout.contains("vm4"), "{}", list.stdout);

    let missing = c.run(ADMIN, &["enable", "nosuch"]).await;
    assert_eq!(missing.code, 1);
    assert_eq!(
        missing.stderr.trim(),
        "error: VM vms/nosuch not found (`kubectl get vm -n vms` lists the VMs there)"
    );
    c.fake.deny_verbs(VIEWER, &["patch"]);
    let refused = c.run(VIEWER, &["enable", "vm4"]).await;
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("annotating VM vms/vm4: the API server refused: virtualmachines.kubevirt.io \"vm4\" is forbidden: User \"jane\" cannot patch"),
        "{}",
        refused.stderr
    );
}

#[tokio::test]
async fn credentials_come_from_the_secret_only_to_who_may_read_it() {
    let c = cluster().await;
    let out = c.run(ADMIN, &["credentials", "vm1"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "username: admin\npassword: pw-one\n");

    let denied = c.run(VIEWER, &["credentials", "vm1"]).await;
    assert_eq!(denied.code, 1);
    assert_eq!(denied.stdout, "");
    println!(
        "$ kubectl bmc credentials vm1  # as jane\n{}",
        denied.stderr
    );
    for part in [
        "you may not read Secret vms/vm1-bmc-credentials, which holds VM vm1's BMC credentials",
        "secrets \"vm1-bmc-credentials\" is forbidden: User \"jane\" cannot get resource \"secrets\"",
        "kubectl create role vm1-bmc-reader -n vms --verb=get --resource=secrets --resource-name=vm1-bmc-credentials",
    ] {
        assert!(denied.stderr.contains(part), "{part}\n{}", denied.stderr);
    }
    assert!(!denied.stderr.contains("pw-one"));

    let not_opted = c.run(ADMIN, &["credentials", "vm4"]).await;
    assert_eq!(not_opted.code, 1);
    assert_eq!(
        not_opted.stderr.trim(),
        "error: VM vms/vm4 is not opted in to a BMC: run `kubectl bmc enable vm4 -n vms` (or `kubectl annotate vm vm4 -n vms bmc.kubevirt.io/enabled=true`)"
    );
    // The controller has not created the Secret yet.
    c.fake.modify(Gvr::vm(), NS, "vm4", |vm| {
        vm["metadata"]["annotations"][annotations::ENABLED] = json!("true");
    });
    let early = c.run(ADMIN, &["credentials", "vm4"]).await;
    assert_eq!(early.code, 1);
    assert!(
        early
            .stderr
            .contains("Secret vms/vm4-bmc-credentials not found: the controller creates it once VM vm4 is opted in"),
        "{}",
        early.stderr
    );
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple(text).unwrap()
}

#[tokio::test]
async fn metal3_hosts_are_valid_baremetalhosts_with_their_secrets() {
    let c = cluster().await;
    let out = c
        .run(ADMIN, &["hosts", "vm1", "vm2", "--format", "metal3"])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    println!(
        "$ kubectl bmc hosts vm1 vm2 --format metal3\n{}",
        out.stdout
    );
    // vm1 has two NICs: the one it took is said, and why.
    assert_eq!(
        out.stderr.trim(),
        "vm1: boot MAC 52:54:00:00:01:02 of interface \"prov\" (lowest bootOrder)"
    );
    let docs = yaml_docs(&out.stdout);
    assert_eq!(docs.len(), 4);
    let bmh_schema = schema::crd_schema("metal3.io_baremetalhosts.yaml", "v1alpha1");
    let hosts: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "BareMetalHost")
        .collect();
    assert_eq!(hosts.len(), 2);
    for host in &hosts {
        assert_eq!(host["apiVersion"], "metal3.io/v1alpha1");
        assert_eq!(
            schema::validate_crd(&bmh_schema, host),
            Vec::<String>::new(),
            "{host}"
        );
    }
    let vm1 = &hosts[0]["spec"];
    assert_eq!(
        vm1["bmc"]["address"],
        "redfish-virtualmedia://vm1-bmc.vms.svc/redfish/v1/Systems/vm1"
    );
    assert_eq!(vm1["bmc"]["credentialsName"], "vm1-bmc-auth");
    assert_eq!(vm1["bmc"]["disableCertificateVerification"], true);
    assert_eq!(vm1["bootMACAddress"], "52:54:00:00:01:02");
    assert_eq!(vm1["bootMode"], "UEFI");
    assert_eq!(hosts[1]["spec"]["bootMode"], "legacy");
    assert_eq!(hosts[1]["spec"]["bootMACAddress"], "02:00:00:00:02:01");
    // Each BareMetalHost's Secret: next to it, the credentials of the controller's Secret.
    let secret = docs
        .iter()
        .find(|d| d["kind"] == "Secret" && d["metadata"]["name"] == "vm2-bmc-auth")
        .unwrap();
    assert_eq!(
        secret["metadata"]["namespace"],
        hosts[1]["metadata"]["namespace"]
    );
    let decode = |v: &Value| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(decode(&secret["data"]["username"]), "admin");
    assert_eq!(decode(&secret["data"]["password"]), "pw-two");

    // IPMI: an ipmi:// address and no certificate setting; another namespace for the objects.
    let ipmi = c
        .run(
            ADMIN,
            &[
                "hosts",
                "vm2",
                "--format",
                "metal3",
                "--protocol",
                "ipmi",
                "--bmc-host",
                "192.0.2.10",
                "--ipmi-port",
                "31623",
                "--target-namespace",
                "metal3",
            ],
        )
        .await;
    assert_eq!(ipmi.code, 0, "{}", ipmi.stderr);
    // vm2 boots from its masquerade NIC: fine for virtual media, not for PXE.
    assert!(
        ipmi.stderr
            .contains("warning: vm2: interface \"default\" uses masquerade"),
        "{}",
        ipmi.stderr
    );
    let docs = yaml_docs(&ipmi.stdout);
    let host = docs.iter().find(|d| d["kind"] == "BareMetalHost").unwrap();
    assert_eq!(
        schema::validate_crd(&bmh_schema, host),
        Vec::<String>::new()
    );
    assert_eq!(host["spec"]["bmc"]["address"], "ipmi://192.0.2.10:31623");
    assert!(
        host["spec"]["bmc"]
            .get("disableCertificateVerification")
            .is_none()
    );
    assert!(docs.iter().all(|d| d["metadata"]["namespace"] == "metal3"));
}

#[tokio::test]
async fn openshift_hosts_decode_as_the_installers_host_type() {
    let c = cluster().await;
    let out = c
        .run(
            ADMIN,
            &[
                "hosts",
                "vm1",
                "vm2",
                "--format",
                "openshift",
                "--role",
                "master",
            ],
        )
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    println!(
        "$ kubectl bmc hosts vm1 vm2 --format openshift\n{}",
        out.stdout
    );
    assert!(out.stderr.contains("--bmc-host"), "{}", out.stderr);
    let docs = yaml_docs(&out.stdout);
    assert_eq!(docs.len(), 1);
    let types = schema::go_types("platform.go");
    let hosts = &docs[0]["platform"]["baremetal"]["hosts"];
    assert_eq!(
        types.validate("[]*Host", hosts, "hosts"),
        Vec::<String>::new()
    );
    assert_eq!(hosts[0]["bmc"]["username"], "admin");
    assert_eq!(hosts[0]["bmc"]["password"], "pw-one");
    assert_eq!(hosts[0]["bootMode"], "UEFI");
    assert_eq!(hosts[0]["role"], "master");
    assert_eq!(hosts[1]["bootMACAddress"], "02:00:00:00:02:01");
    assert_eq!(hosts[1]["bmc"]["disableCertificateVerification"], true);
}

#[tokio::test]
async fn rufio_machines_are_valid_machines_with_their_secrets() {
    let c = cluster().await;
    let out = c.run(ADMIN, &["hosts", "vm2", "--format", "rufio"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    println!("$ kubectl bmc hosts vm2 --format rufio\n{}", out.stdout);
    let docs = yaml_docs(&out.stdout);
    let machine_schema = schema::crd_schema("bmc.tinkerbell.org_machines.yaml", "v1alpha1");
    let machine = docs.iter().find(|d| d["kind"] == "Machine").unwrap();
    assert_eq!(
        schema::validate_crd(&machine_schema, machine),
        Vec::<String>::new()
    );
    let connection = &machine["spec"]["connection"];
    assert_eq!(connection["host"], "vm2-bmc.vms.svc");
    assert_eq!(connection["port"], 623);
    assert_eq!(connection["insecureTLS"], true);
    assert_eq!(connection["providerOptions"]["redfish"]["port"], 443);
    let secret_ref = &connection["authSecretRef"];
    let secret = docs.iter().find(|d| d["kind"] == "Secret").unwrap();
    assert_eq!(secret["metadata"]["name"], secret_ref["name"]);
    assert_eq!(secret["metadata"]["namespace"], secret_ref["namespace"]);
}

#[tokio::test]
async fn hosts_refuses_with_what_to_fix_and_writes_nothing() {
    let c = cluster().await;
    let out = c
        .run(ADMIN, &["hosts", "vm1", "vm3", "vm4", "--format", "metal3"])
        .await;
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, "", "all or nothing");
    println!(
        "$ kubectl bmc hosts vm1 vm3 vm4 --format metal3\n{}",
        out.stderr
    );
    for part in [
        "no hosts written:",
        "VM vms/vm3: interface \"default\" has no pinned MAC address",
        "set spec.template.spec.domain.devices.interfaces[0].macAddress",
        "VM vms/vm4 is not opted in to a BMC: run `kubectl bmc enable vm4 -n vms`",
        "warning: vm3's BMC is not ready yet: the VM's Pod has no BMC sidecar; restart the VM (virtctl restart vm3)",
    ] {
        assert!(out.stderr.contains(part), "{part}\n{}", out.stderr);
    }
    let named = c
        .run(
            ADMIN,
            &["hosts", "vm1", "--format", "metal3", "--interface", "eth9"],
        )
        .await;
    assert_eq!(named.code, 1);
    assert!(
        named
            .stderr
            .contains("VM vms/vm1 has no interface named \"eth9\"; it has: default, prov"),
        "{}",
        named.stderr
    );
    let denied = c
        .run(VIEWER, &["hosts", "vm1", "--format", "openshift"])
        .await;
    assert_eq!(denied.code, 1);
    assert_eq!(denied.stdout, "");
    assert!(
        denied
            .stderr
            .contains("you may not read Secret vms/vm1-bmc-credentials"),
        "{}",
        denied.stderr
    );
}

/// The checkers catch what they are there for: a test passing against them means something.
#[test]
fn the_schema_checkers_refuse_what_the_real_servers_refuse() {
    let bmh = schema::crd_schema("metal3.io_baremetalhosts.yaml", "v1alpha1");
    let good = json!({
        "apiVersion": "metal3.io/v1alpha1", "kind": "BareMetalHost",
        "metadata": {"name": "vm1", "namespace": "vms"},
        "spec": {"online": true, "bootMACAddress": "52:54:00:00:01:02", "bootMode": "UEFI",
                 "bmc": {"address": "ipmi://h", "credentialsName": "s"}},
    });
    assert_eq!(schema::validate_crd(&bmh, &good), Vec::<String>::new());
    let mut bad = good.clone();
    bad["spec"]["bootMode"] = json!("uefi");
    bad["spec"]["bootMACAddress"] = json!("52-54-00");
    bad["spec"]["bmc"]
        .as_object_mut()
        .unwrap()
        .remove("credentialsName");
    bad["spec"]["bmc"]["disableCertificateVerification"] = json!("yes");
    bad["spec"]["bootMacAddress"] = json!("typo");
    bad["spec"].as_object_mut().unwrap().remove("online");
    bad["metadata"]["name"] = json!("VM_1");
    let errors = schema::validate_crd(&bmh, &bad);
    assert_eq!(errors.len(), 7, "{errors:#?}");

    let rufio = schema::crd_schema("bmc.tinkerbell.org_machines.yaml", "v1alpha1");
    let machine = json!({"apiVersion": "bmc.tinkerbell.org/v1alpha1", "kind": "Machine",
        "metadata": {"name": "vm1"}, "spec": {"connection": {"host": ""}}});
    let errors = schema::validate_crd(&rufio, &machine);
    assert_eq!(
        errors.len(),
        2,
        "empty host, insecureTLS missing: {errors:#?}"
    );

    let types = schema::go_types("platform.go");
    assert_eq!(
        types.string_values["BootMode"],
        ["UEFI", "UEFISecureBoot", "legacy"]
    );
    let host = json!([{"name": "", "bmc": {"address": "ipmi://h", "username": "u"},
        "bootMACAddress": "52:54:00:00:01:02", "bootMode": "uefi", "bmcAddress": "x"}]);
    let errors = types.validate("[]*Host", &host, "hosts");
    assert_eq!(
        errors.len(),
        4,
        "bad bootMode, unknown field, empty name, no password: {errors:#?}"
    );
}

/// `kubectl bmc hosts --help` says which MAC it takes when a VM has several.
#[test]
fn hosts_help_says_which_mac_it_takes() {
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-bmc"))
        .args(["hosts", "--help"])
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(
        help.contains(kubevirt_bmc_kubectl::vm::NIC_CHOICE),
        "{help}"
    );
    assert!(
        help.contains("[possible values: metal3, openshift, rufio]"),
        "{help}"
    );
}
