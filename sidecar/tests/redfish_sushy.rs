//! sushy (Ironic's Redfish library) drives the simulated BMC: Basic and session auth, power,
//! boot override read back exactly, virtual media.

mod redfish_support;

use redfish_support::{Bmc, assert_success, run_python};

#[test]
fn sushy_manages_the_machine_like_ironic() {
    let bmc = Bmc::start();
    let output = run_python(&bmc, "sushy_flow.py", &[]);
    assert_success(&output, "sushy flow");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("ALL OK"), "{stdout}");
    assert!(
        stdout.contains("ok raw boot = ('Pxe', 'Once', 'UEFI')"),
        "{stdout}"
    );
}

/// sushy's resets during a power transition (boots of 1.5 s): ForceRestart, On and ForceOff
/// while powering on, ForceRestart while powering off; none is refused.
#[test]
fn sushy_resets_during_a_transition_succeed() {
    let bmc = Bmc::start_with(&["--power-transition-ms", "1500"]);
    let output = run_python(&bmc, "sushy_transition.py", &[]);
    assert_success(&output, "sushy during transitions");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("ALL OK"), "{stdout}");
}
