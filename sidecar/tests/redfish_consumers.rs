//! The BMC as the programs one level up call it: bmclib (Tinkerbell's Rufio) through its
//! exact Redfish requests, and sushy's firmware, BIOS-settings and boot-progress reads as
//! Ironic (Metal3, OpenShift) makes them.

mod redfish_support;

use redfish_support::{Bmc, assert_success, run_python};

fn run(script: &str) {
    let bmc = Bmc::start();
    let output = run_python(&bmc, script, &[]);
    assert_success(&output, script);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("ALL OK"), "{stdout}");
}

/// Every bmclib Redfish call path (power, boot device, virtual media, inventory, BIOS,
/// Secure Boot, boot progress) replayed from its source (`redfish_py/bmclib_replay.py`
/// names the files).
#[test]
fn bmclib_call_paths_work() {
    run("bmclib_replay.py");
}

/// sushy: Bios attributes, registry and pending settings applied at the next boot,
/// BootProgress, the read-only UpdateService, processor architecture, the Manager's
/// network.
#[test]
fn sushy_firmware_and_boot_progress() {
    run("sushy_firmware.py");
}
