//! The KubeVirt machine driven the way users drive it: the real `kubevirt-bmc serve` process
//! against the fake API server, with ipmitool (Ironic's exact sequence) and curl (Redfish).
//! What the clients see is checked against what the fake API server holds.

mod support;

use std::process::{Command, Stdio};

use kubevirt_bmc_e2e::testkit::redfish_login;
use support::*;

const PASSWORD: &str = "s3cret";

fn ipmitool(port: u16, args: &[&str]) -> Result<String, String> {
    let output = Command::new("ipmitool")
        .args(["-I", "lanplus", "-C", "17", "-H", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-U", "admin", "-P", PASSWORD, "-N", "1", "-R", "3"])
        .args(args)
        .output()
        .expect("ipmitool is installed (run e2e/setup.sh)");
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if output.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "{text} {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn curl(port: u16, method: &str, path: &str, body: Option<&str>) -> String {
    let url = format!("https://127.0.0.1:{port}{path}");
    let mut command = Command::new("curl");
    command.args([
        "-sk",
        "-u",
        &format!("admin:{PASSWORD}"),
        "-X",
        method,
        &url,
    ]);
    if let Some(body) = body {
        command.args(["-H", "Content-Type: application/json", "-d", body]);
    }
    let output = command
        .output()
        .expect("curl is installed (run e2e/setup.sh)");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn interface_boot_order(vmi: &serde_json::Value) -> Option<u64> {
    vmi["spec"]["domain"]["devices"]["interfaces"][0]["bootOrder"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmitool_and_redfish_drive_a_kubevirt_vm_through_serve() {
    let fake = fake().await;
    let dir = setup_files(&fake);
    let serve = spawn_serve(
        &dir.path().join("kubeconfig"),
        &dir.path().join("credentials"),
        Stdio::inherit(),
    );
    let ipmi = serve.ipmi;
    eventually("the VMI exists paused", || async {
        fake.vmi(NS, VM).is_some_and(|vmi| paused(&vmi))
    })
    .await;
    eventually("IPMI answers off", || async {
        ipmitool(ipmi, &["power", "status"]).as_deref() == Ok("Chassis Power is off")
    })
    .await;

    // Power on: the paused first VMI is unpaused, not recreated.
    let first = vmi_uid(&fake);
    ipmitool(ipmi, &["power", "on"]).unwrap();
    eventually("VMI unpaused", || async { !paused(&vmi(&fake)) }).await;
    assert_eq!(
        vmi_uid(&fake),
        first,
        "a first power-on unpauses the same VMI"
    );
    assert_eq!(
        ipmitool(ipmi, &["power", "status"]).unwrap(),
        "Chassis Power is on"
    );

    // Ironic's reboot into PXE: off, boot flags valid-bit clearing, PXE once in UEFI, on.
    ipmitool(ipmi, &["power", "off"]).unwrap();
    eventually("VMI paused", || async { paused(&vmi(&fake)) }).await;
    ipmitool(ipmi, &["raw", "0x00", "0x08", "0x03", "0x08"]).unwrap();
    let pxe_once_efi = [
        "raw", "0x00", "0x08", "0x05", "0xa0", "0x04", "0x00", "0x00", "0x00",
    ];
    ipmitool(ipmi, &pxe_once_efi).unwrap();
    let flags = ipmitool(ipmi, &["chassis", "bootparam", "get", "5"]).unwrap();
    assert!(flags.contains("Force PXE"), "{flags}");
    assert!(flags.contains("BIOS EFI boot"), "{flags}");
    assert!(flags.contains("Options apply to only next boot"), "{flags}");
    ipmitool(ipmi, &["power", "on"]).unwrap();
    eventually("a new VMI boots from the network, unpaused", || async {
        let vmi = vmi(&fake);
        vmi["metadata"]["uid"] != first && !paused(&vmi) && interface_boot_order(&vmi) == Some(1)
    })
    .await;
    eventually(
        "the one-time override is used up and reads Disabled",
        || async {
            annotation(&fake, "bmc.kubevirt.io/boot-override")
                .is_some_and(|value| value.contains("/Disabled/"))
        },
    )
    .await;
    let template_nic =
        &fake.vm(NS, VM).unwrap()["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0];
    assert!(
        template_nic.get("bootOrder").is_none(),
        "the template's persistent boot order is restored: {template_nic}"
    );

    // Redfish sees the same machine and drives it too.
    let system = curl(
        serve.redfish,
        "GET",
        &format!("/redfish/v1/Systems/{VM}"),
        None,
    );
    assert!(system.contains("\"PowerState\":\"On\""), "{system}");
    let reset = format!("/redfish/v1/Systems/{VM}/Actions/ComputerSystem.Reset");
    curl(
        serve.redfish,
        "POST",
        &reset,
        Some(r#"{"ResetType":"ForceOff"}"#),
    );
    eventually("Redfish ForceOff pauses the VMI", || async {
        paused(&vmi(&fake))
    })
    .await;
    let refused = curl(
        serve.redfish,
        "POST",
        &reset,
        Some(r#"{"ResetType":"Sideways"}"#),
    );
    assert!(
        refused.contains("error"),
        "unknown ResetType refused: {refused}"
    );
    assert!(paused(&vmi(&fake)), "a refused request changes nothing");
    assert_eq!(
        ipmitool(ipmi, &["power", "status"]).unwrap(),
        "Chassis Power is off"
    );

    let requests = fake.requests();
    assert!(
        requests
            .iter()
            .filter(|r| r.subresource().is_some())
            .all(|r| r.user.as_deref() == Some(USER)),
        "every KubeVirt call came with the VM's own scoped token"
    );
}

/// A Redfish session outlives the sidecar that issued it: the signing secret comes from the
/// credentials Secret (as the controller writes it) and logouts live on the VM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redfish_sessions_survive_a_sidecar_restart_on_kubevirt() {
    let fake = fake().await;
    let dir = setup_files(&fake);
    let credentials = dir.path().join("credentials");
    std::fs::write(credentials.join("session-key"), "controller-made-secret\n").unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let login = |port: u16| {
        let login = redfish_login(&format!("https://127.0.0.1:{port}"), "admin", PASSWORD);
        (login.token, login.location, login.headers)
    };
    let get_with = |port: u16, token: &str, method: &str, path: &str| {
        let output = Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-X", method])
            .args(["-H", &format!("X-Auth-Token: {token}")])
            .arg(format!("https://127.0.0.1:{port}{path}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let system = format!("/redfish/v1/Systems/{VM}");

    let first = spawn_serve(&kubeconfig, &credentials, Stdio::inherit());
    let port = first.redfish;
    eventually("Redfish answers", || async {
        get_with(port, "none", "GET", "/redfish/v1/") == "200"
    })
    .await;
    let (token, _, headers) = login(port);
    let token = token.unwrap_or_else(|| panic!("no token: {headers}"));
    let (other, location, _) = login(port);
    let (other, location) = (other.unwrap(), location.unwrap());
    assert_eq!(get_with(port, &token, "GET", &system), "200");
    let path = location.trim_start_matches(&format!("https://127.0.0.1:{port}"));
    assert_eq!(
        get_with(port, &other, "DELETE", path),
        "204",
        "logout of {path}"
    );
    drop(first);

    let second = spawn_serve(&kubeconfig, &credentials, Stdio::inherit());
    let port = second.redfish;
    eventually("the new sidecar answers", || async {
        get_with(port, "none", "GET", "/redfish/v1/") == "200"
    })
    .await;
    assert_eq!(
        get_with(port, &token, "GET", &system),
        "200",
        "token survives"
    );
    assert_eq!(
        get_with(port, &other, "GET", &system),
        "401",
        "logout survives"
    );
    assert!(
        annotation(&fake, "bmc.kubevirt.io/session-settings").is_some(),
        "logouts are kept on the VM"
    );
}
