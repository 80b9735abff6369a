//! The whole flow on a real cluster (kind + KubeVirt + CDI + cert-manager, brought up by
//! `e2e/cluster/up.sh`). Gated: it runs only with `KUBEVIRT_BMC_E2E_CLUSTER=1` and a
//! `KUBECONFIG`, and otherwise prints why it did nothing, so CI without a cluster passes and
//! users and cluster CI run `e2e/cluster/run.sh`.
//!
//! The BMC is reached from the test host through its `<vm>-bmc` Service as a NodePort on the
//! kind node's address, exactly as an Ironic outside the cluster would.

use std::process::Command;
use std::time::{Duration, Instant};

const NAMESPACE: &str = "kubevirt-bmc-e2e";

fn cluster_available() -> bool {
    let wanted = std::env::var("KUBEVIRT_BMC_E2E_CLUSTER").is_ok_and(|v| v == "1");
    let kubeconfig = std::env::var("KUBECONFIG").is_ok();
    if !(wanted && kubeconfig) {
        eprintln!(
            "skipped: no cluster (set KUBEVIRT_BMC_E2E_CLUSTER=1 and KUBECONFIG, or run e2e/cluster/run.sh)"
        );
    }
    wanted && kubeconfig
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn kubectl(args: &[&str]) -> String {
    let mut full = vec!["-n", NAMESPACE];
    full.extend_from_slice(args);
    run("kubectl", &full).unwrap_or_else(|e| panic!("{e}"))
}

fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

fn vm_manifest(name: &str) -> String {
    // masquerade with an explicit ports list: the BMC ports are not forwarded to the guest.
    format!(
        r#"{{"apiVersion":"kubevirt.io/v1","kind":"VirtualMachine","metadata":{{"name":"{name}"}},
"spec":{{"runStrategy":"Halted","template":{{"spec":{{
 "domain":{{"devices":{{"disks":[{{"name":"root","disk":{{"bus":"virtio"}}}}],
   "interfaces":[{{"name":"default","masquerade":{{}},"ports":[{{"port":22}}]}}]}},
   "resources":{{"requests":{{"memory":"128Mi"}}}}}},
 "networks":[{{"name":"default","pod":{{}}}}],
 "volumes":[{{"name":"root","containerDisk":{{"image":"quay.io/kubevirt/cirros-container-disk-demo"}}}}]}}}}}}}}"#
    )
}

struct Bmc {
    host: String,
    ipmi_port: String,
    redfish_port: String,
    username: String,
    password: String,
}

fn bmc_of(vm: &str) -> Bmc {
    let service = format!("{vm}-bmc");
    let port = |name: &str| {
        kubectl(&[
            "get",
            "svc",
            &service,
            "-o",
            &format!("jsonpath={{.spec.ports[?(@.name==\"{name}\")].nodePort}}"),
        ])
    };
    let node_ip = run(
        "kubectl",
        &[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[0].status.addresses[?(@.type==\"InternalIP\")].address}",
        ],
    )
    .unwrap();
    let secret = |key: &str| {
        let encoded = kubectl(&[
            "get",
            "secret",
            &format!("{vm}-bmc-credentials"),
            "-o",
            &format!("jsonpath={{.data.{key}}}"),
        ]);
        run("sh", &["-c", &format!("printf %s '{encoded}' | base64 -d")]).unwrap()
    };
    Bmc {
        host: node_ip,
        ipmi_port: port("ipmi"),
        redfish_port: port("redfish"),
        username: secret("username"),
        password: secret("password"),
    }
}

fn ipmitool(bmc: &Bmc, args: &[&str]) -> Result<String, String> {
    let mut full = vec![
        "-I",
        "lanplus",
        "-C",
        "17",
        "-H",
        &bmc.host,
        "-p",
        &bmc.ipmi_port,
        "-U",
        &bmc.username,
        "-P",
        &bmc.password,
    ];
    full.extend_from_slice(args);
    run("ipmitool", &full)
}

fn vmi_paused(vm: &str) -> Option<bool> {
    let conditions = run(
        "kubectl",
        &[
            "-n",
            NAMESPACE,
            "get",
            "vmi",
            vm,
            "-o",
            "jsonpath={.status.phase}/{.status.conditions[?(@.type==\"Paused\")].status}",
        ],
    )
    .ok()?;
    let (phase, paused) = conditions.split_once('/')?;
    (phase == "Running").then_some(paused == "True")
}

#[test]
fn opt_in_power_boot_media_and_opt_out_on_a_real_cluster() {
    if !cluster_available() {
        return;
    }
    let _ = run("kubectl", &["create", "namespace", NAMESPACE]);
    for vm in ["vm-a", "vm-b"] {
        let manifest = vm_manifest(vm);
        let path = std::env::temp_dir().join(format!("{vm}.json"));
        std::fs::write(&path, manifest).unwrap();
        kubectl(&["apply", "-f", path.to_str().unwrap()]);
        kubectl(&[
            "annotate",
            "vm",
            vm,
            "--overwrite",
            "bmc.kubevirt.io/enabled=true",
            "bmc.kubevirt.io/service-type=NodePort",
        ]);
    }

    // The controller creates the identity first, then prepares the VM.
    for kind in ["serviceaccount", "role", "rolebinding", "secret", "service"] {
        let name = if kind == "secret" {
            "vm-a-bmc-credentials"
        } else {
            "vm-a-bmc"
        };
        eventually(&format!("{kind} {name}"), Duration::from_secs(60), || {
            run("kubectl", &["-n", NAMESPACE, "get", kind, name]).is_ok()
        });
    }
    eventually(
        "vm-a running paused (BMC off)",
        Duration::from_secs(300),
        || vmi_paused("vm-a") == Some(true),
    );

    let bmc = bmc_of("vm-a");
    eventually("IPMI answering", Duration::from_secs(120), || {
        ipmitool(&bmc, &["power", "status"]).is_ok()
    });
    assert_eq!(
        ipmitool(&bmc, &["power", "status"]).unwrap(),
        "Chassis Power is off"
    );

    ipmitool(&bmc, &["power", "on"]).unwrap();
    eventually("vm-a unpaused", Duration::from_secs(60), || {
        vmi_paused("vm-a") == Some(false)
    });

    let system = format!(
        "https://{}:{}/redfish/v1/Systems/vm-a",
        bmc.host, bmc.redfish_port
    );
    let user = format!("{}:{}", bmc.username, bmc.password);
    let body = run("curl", &["-sfk", "-u", &user, &system]).unwrap();
    assert!(
        body.contains("\"PowerState\":\"On\""),
        "Redfish disagrees with IPMI: {body}"
    );

    // Ironic's reboot into PXE: off, boot device PXE once in UEFI mode, on.
    ipmitool(&bmc, &["power", "off"]).unwrap();
    ipmitool(&bmc, &["raw", "0x00", "0x08", "0x03", "0x08"]).unwrap();
    ipmitool(
        &bmc,
        &[
            "raw", "0x00", "0x08", "0x05", "0xa0", "0x04", "0x00", "0x00", "0x00",
        ],
    )
    .unwrap();
    let old_vmi = kubectl(&["get", "vmi", "vm-a", "-o", "jsonpath={.metadata.uid}"]);
    ipmitool(&bmc, &["power", "on"]).unwrap();
    eventually("a new VMI, unpaused", Duration::from_secs(300), || {
        let uid = run(
            "kubectl",
            &[
                "-n",
                NAMESPACE,
                "get",
                "vmi",
                "vm-a",
                "-o",
                "jsonpath={.metadata.uid}",
            ],
        );
        uid.is_ok_and(|uid| uid != old_vmi) && vmi_paused("vm-a") == Some(false)
    });
    let vmi_boot = kubectl(&[
        "get",
        "vmi",
        "vm-a",
        "-o",
        "jsonpath={.spec.domain.devices.interfaces[0].bootOrder}",
    ]);
    assert_eq!(vmi_boot, "1", "the PXE boot put the interface first");
    let bmc = bmc_of("vm-a");
    eventually("once-override consumed", Duration::from_secs(120), || {
        ipmitool(&bmc, &["chassis", "bootparam", "get", "5"])
            .is_ok_and(|out| out.contains("Boot Flag Invalid"))
    });

    // VM A's identity is refused on VM B.
    let can = run(
        "kubectl",
        &[
            "auth",
            "can-i",
            "update",
            "virtualmachineinstances/unpause",
            "--subresource=unpause",
            "--as",
            &format!("system:serviceaccount:{NAMESPACE}:vm-a-bmc"),
            "-n",
            NAMESPACE,
            "virtualmachineinstances/vm-b",
        ],
    );
    assert!(
        can.is_err() || can.as_deref() == Ok("no"),
        "vm-a's BMC may act on vm-b: {can:?}"
    );

    // Opt-out cleans up.
    kubectl(&[
        "annotate",
        "vm",
        "vm-a",
        "--overwrite",
        "bmc.kubevirt.io/enabled=false",
    ]);
    eventually("owned objects removed", Duration::from_secs(120), || {
        run(
            "kubectl",
            &["-n", NAMESPACE, "get", "serviceaccount", "vm-a-bmc"],
        )
        .is_err()
    });
    let _ = run(
        "kubectl",
        &["delete", "namespace", NAMESPACE, "--wait=false"],
    );
}
