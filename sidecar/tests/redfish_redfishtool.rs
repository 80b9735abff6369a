//! DMTF redfishtool against the simulated BMC: every command the issue lists succeeds and
//! the writes take effect.

mod redfish_support;

use std::process::Command;
use std::time::{Duration, Instant};

use redfish_support::{Bmc, PASSWORD, USER, VM, venv_tool};
use serde_json::Value;

fn redfishtool(bmc: &Bmc, auth: &str, args: &[&str]) -> Value {
    let output = Command::new(venv_tool("redfishtool"))
        .args(["-r", &bmc.redfish.to_string(), "-u", USER, "-p", PASSWORD])
        .args(["-S", "Always", "-A", auth])
        .args(args)
        .output()
        .expect("redfishtool runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "redfishtool {args:?} failed: {}\n{stdout}\n{stderr}",
        output.status
    );
    if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
    }
}

#[test]
fn redfishtool_commands_work() {
    let bmc = Bmc::start();
    let versions = redfishtool(&bmc, "Basic", &["versions"]);
    assert_eq!(versions["v1"], "/redfish/v1/");
    let root = redfishtool(&bmc, "Session", &["root"]);
    assert_eq!(root["Systems"]["@odata.id"], "/redfish/v1/Systems");

    let systems = redfishtool(&bmc, "Session", &["Systems"]);
    // The alias bmclib needs is what the collection lists; the VM-named System stays.
    assert_eq!(
        systems["Members"][0]["@odata.id"],
        "/redfish/v1/Systems/Self"
    );
    // `-I` and `-L` match members of the collection, which lists the alias bmclib needs;
    // the VM-named System (how Ironic and Metal3 address it) is reached by its path.
    let by_path = format!("/redfish/v1/Systems/{VM}");
    let system = redfishtool(&bmc, "Basic", &["raw", "GET", &by_path]);
    assert_eq!(system["PowerState"], "Off");
    assert_eq!(system["Name"], VM);
    let system = redfishtool(&bmc, "Basic", &["Systems", "-I", "Self"]);
    assert_eq!(system["Name"], VM);

    redfishtool(&bmc, "Session", &["Systems", "reset", "On"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let system = redfishtool(&bmc, "Basic", &["raw", "GET", &by_path]);
        if system["PowerState"] == "On" {
            break;
        }
        assert!(Instant::now() < deadline, "never powered on: {system}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let patched = redfishtool(
        &bmc,
        "Session",
        &["Systems", "setBootOverride", "Once", "Pxe"],
    );
    assert_eq!(patched["Boot"]["BootSourceOverrideTarget"], "Pxe");
    let system = redfishtool(&bmc, "Basic", &["raw", "GET", &by_path]);
    assert_eq!(system["Boot"]["BootSourceOverrideEnabled"], "Once");
    assert_eq!(system["Boot"]["BootSourceOverrideTarget"], "Pxe");

    let managers = redfishtool(&bmc, "Session", &["Managers"]);
    assert_eq!(
        managers["Members"][0]["@odata.id"],
        "/redfish/v1/Managers/BMC"
    );
    let chassis = redfishtool(&bmc, "Session", &["Chassis"]);
    assert_eq!(chassis["Members@odata.count"], 1);
    let sessions = redfishtool(&bmc, "Session", &["SessionService"]);
    assert_eq!(sessions["SessionTimeout"], 1800);
    let accounts = redfishtool(&bmc, "Session", &["AccountService"]);
    assert_eq!(
        accounts["Accounts"]["@odata.id"],
        "/redfish/v1/AccountService/Accounts"
    );
}
