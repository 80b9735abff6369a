//! pyghmi's IPMI client with its default settings (it offers cipher suite 17 first).

mod ipmi_common;

use ipmi_common::{Bmc, PASSWORD, run};
use std::process::Command;

#[test]
fn pyghmi_default_client_powers_and_sets_boot() {
    let bmc = Bmc::start();
    let venv = std::env::var("KUBEVIRT_BMC_VENV")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target/venv").to_owned());
    let python = std::path::Path::new(&venv).join("bin/python");
    assert!(
        python.exists(),
        "{} missing: run e2e/setup.sh (or set KUBEVIRT_BMC_VENV)",
        python.display()
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/pyghmi_client.py");
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .args(["127.0.0.1", &bmc.port.to_string(), "admin", PASSWORD]);
    let out = run(cmd, "pyghmi (python)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{stdout}\nBMC log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        bmc.log_text()
    );
    assert_eq!(
        stdout.trim(),
        r#"{"bootdev": {"bootdev": "network", "persistent": true, "uefimode": true}, "device_id": 32, "power_after_off": "off", "power_after_on": "on", "power_initial": "off"}"#
    );
    assert!(bmc.log_text().contains("Some(17)"), "pyghmi got suite 17");
}
