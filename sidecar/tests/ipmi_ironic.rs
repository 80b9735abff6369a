//! Ironic's ipmitool driver, command for command: `-I lanplus -L ADMINISTRATOR -f file`,
//! its raw Set System Boot Options and the power commands.

mod ipmi_common;

use ipmi_common::{Bmc, PASSWORD, assert_contains, run};
use std::process::Command;

fn ironic(bmc: &Bmc, password_file: &std::path::Path, args: &str) -> String {
    let mut cmd = Command::new("ipmitool");
    cmd.args(["-I", "lanplus", "-H", "127.0.0.1", "-L", "ADMINISTRATOR"])
        .args([
            "-p",
            &bmc.port.to_string(),
            "-U",
            "admin",
            "-R",
            "3",
            "-N",
            "1",
            "-f",
        ])
        .arg(password_file)
        .args(args.split_whitespace());
    let out = run(cmd, "ipmitool");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args}: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn ironic_boot_and_power_sequences() {
    let bmc = Bmc::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let t = |args: &str| ironic(&bmc, &file, args);

    // Don't clear the boot flag valid bit on the 60 s timeout; read back as set.
    t("raw 0x00 0x08 0x03 0x08");
    assert_contains(&t("raw 0x00 0x09 0x03 0x00 0x00"), "01 03 08");

    // PXE, EFI, persistent.
    t("raw 0x00 0x08 0x05 0xe0 0x04 0x00 0x00 0x00");
    let got = t("chassis bootparam get 5");
    assert_contains(&got, "Boot parameter data: e004000000");
    assert_contains(&got, "Options apply to all future boots");
    assert_contains(&got, "BIOS EFI boot");
    assert_contains(&got, "Force PXE");

    // PXE, EFI, once.
    t("raw 0x00 0x08 0x05 0xa0 0x04 0x00 0x00 0x00");
    let got = t("chassis bootparam get 5");
    assert_contains(&got, "Boot parameter data: a004000000");
    assert_contains(&got, "Options apply to only next boot");

    assert_contains(&t("power status"), "Chassis Power is off");
    assert_contains(&t("power on"), "Chassis Power Control: Up/On");
    assert_contains(&t("power status"), "Chassis Power is on");
    // The one-time override was used by that boot and now reads as not valid.
    assert_contains(
        &t("chassis bootparam get 5"),
        "Boot parameter data: 2000000000",
    );
    assert_contains(&t("power soft"), "Chassis Power Control: Soft");
    assert_contains(&t("power status"), "Chassis Power is off");
    assert_contains(&t("power on"), "Chassis Power Control: Up/On");
    assert_contains(&t("power off"), "Chassis Power Control: Down/Off");
    assert_contains(&t("power status"), "Chassis Power is off");
}
