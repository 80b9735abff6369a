//! FreeIPMI (ipmipower, ipmi-chassis, ipmi-chassis-config, bmc-info) on LAN_2_0 with cipher
//! suites 3 and 17, and on LAN (IPMI 1.5).

mod ipmi_common;

use ipmi_common::{Bmc, PASSWORD, UUID, assert_contains, run};
use std::process::Command;

fn freeipmi(bmc: &Bmc, tool: &str, driver: &str, args: &str) -> String {
    let mut cmd = Command::new(tool);
    cmd.args(driver.split_whitespace())
        .arg("-h")
        .arg(format!("127.0.0.1:{}", bmc.port))
        .args(["-u", "admin", "-p", PASSWORD])
        .args(args.split_whitespace());
    let out = run(cmd, tool);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && !stdout.contains("error") && !stdout.contains("timeout"),
        "{tool} {driver} {args}: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn tour(driver: &str) {
    let bmc = Bmc::start();
    let power = |args: &str| freeipmi(&bmc, "ipmipower", driver, args);
    assert_contains(&power("--stat"), "127.0.0.1: off");
    assert_contains(&power("--on"), "127.0.0.1: ok");
    assert_contains(&power("--stat"), "127.0.0.1: on");
    assert_contains(&power("--reset"), "127.0.0.1: ok");
    assert_contains(&power("--cycle"), "127.0.0.1: ok");
    assert_contains(&power("--stat"), "127.0.0.1: on");
    assert_contains(
        &freeipmi(&bmc, "ipmi-chassis", driver, "--get-chassis-status"),
        "System Power                        : on",
    );
    assert_contains(&power("--off"), "127.0.0.1: ok");
    assert_contains(&power("--stat"), "127.0.0.1: off");

    let info = freeipmi(&bmc, "bmc-info", driver, "");
    assert_contains(&info, "IPMI Version          : 2.0");
    assert_contains(&info, &format!("System GUID : {UUID}"));

    freeipmi(
        &bmc,
        "ipmi-chassis-config",
        driver,
        "--commit -e Chassis_Boot_Flags:Boot_Flags_Persistent=Yes \
         -e Chassis_Boot_Flags:BIOS_Boot_Type=EFI -e Chassis_Boot_Flags:Boot_Device=PXE",
    );
    let config = freeipmi(
        &bmc,
        "ipmi-chassis-config",
        driver,
        "--checkout -S Chassis_Boot_Flags",
    );
    let value = |key: &str| {
        config
            .lines()
            .find(|l| l.trim_start().starts_with(key))
            .map(|l| l.split_whitespace().last().unwrap_or_default().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(value("Boot_Flags_Persistent"), "Yes", "{config}");
    assert_eq!(value("BIOS_Boot_Type"), "EFI", "{config}");
    assert_eq!(value("Boot_Device"), "PXE", "{config}");
}

#[test]
fn freeipmi_lan_2_0_cipher_suite_3() {
    tour("-D LAN_2_0 -I 3");
}

#[test]
fn freeipmi_lan_2_0_cipher_suite_17() {
    tour("-D LAN_2_0 -I 17");
}

#[test]
fn freeipmi_lan_ipmi_15() {
    tour("-D LAN");
}
