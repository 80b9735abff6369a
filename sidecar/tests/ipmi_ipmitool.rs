//! ipmitool 1.8.19 against `kubevirt-bmc simulate`: lanplus with cipher suites 3 and 17,
//! the default suite, and IPMI 1.5 (`-I lan`).

mod ipmi_common;

use ipmi_common::{Bmc, UUID, assert_contains};

/// The whole command list of the issue over one interface.
fn full_tour(bmc: &Bmc, iface: &str) {
    let t = |args: &str| bmc.ipmitool_ok(iface, args);
    assert_contains(&t("power status"), "Chassis Power is off");
    assert_contains(&t("power on"), "Chassis Power Control: Up/On");
    assert_contains(&t("power status"), "Chassis Power is on");
    assert_contains(&t("chassis status"), "System Power         : on");
    assert_contains(&t("power reset"), "Chassis Power Control: Reset");
    assert_contains(&t("power cycle"), "Chassis Power Control: Cycle");
    assert_contains(&t("power diag"), "Chassis Power Control: Diag");
    assert_contains(&t("power soft"), "Chassis Power Control: Soft");
    assert_contains(&t("power status"), "Chassis Power is off");
    assert_contains(&t("power on"), "Chassis Power Control: Up/On");
    assert_contains(&t("power off"), "Chassis Power Control: Down/Off");
    assert_contains(&t("chassis status"), "System Power         : off");

    for (dev, selector) in [
        ("pxe", "Force PXE"),
        ("disk", "Force Boot from default Hard-Drive"),
        ("cdrom", "Force Boot from CD/DVD"),
        ("bios", "Force Boot into BIOS Setup"),
    ] {
        assert_contains(
            &t(&format!("chassis bootdev {dev}")),
            &format!("Set Boot Device to {dev}"),
        );
        let got = t("chassis bootparam get 5");
        assert_contains(&got, selector);
        assert_contains(&got, "Options apply to only next boot");
    }
    t("chassis bootdev pxe options=persistent,efiboot");
    let got = t("chassis bootparam get 5");
    assert_contains(&got, "Boot parameter data: e004000000");
    assert_contains(&got, "Options apply to all future boots");
    assert_contains(&got, "BIOS EFI boot");
    assert_contains(&got, "Force PXE");

    let info = t("mc info");
    assert_contains(&info, "IPMI Version              : 2.0");
    assert_contains(&info, "Chassis Device");
    assert_contains(&t("mc guid"), &format!("System GUID   : {UUID}"));
    assert_contains(&t("channel info"), "Channel Medium Type   : 802.3 LAN");
    let users = t("user list");
    assert!(
        users
            .lines()
            .any(|l| l.contains("admin") && l.contains("ADMINISTRATOR")),
        "{users}"
    );
    let sdr = t("sdr list");
    assert_contains(&sdr, "System Temp");
    assert_contains(&sdr, "Power Unit");
    assert_contains(&t("sel info"), "Entries          : 0");
    let fru = t("fru");
    assert_contains(&fru, "Product Name          : KubeVirt VirtualMachine");
    assert_contains(&fru, &format!("Product Serial        : {UUID}"));
}

#[test]
fn lanplus_cipher_suite_3() {
    let bmc = Bmc::start();
    full_tour(&bmc, "-I lanplus -C 3");
}

#[test]
fn lanplus_cipher_suite_17() {
    let bmc = Bmc::start();
    full_tour(&bmc, "-I lanplus -C 17");
}

#[test]
fn lanplus_default_cipher_suite_and_ipmi_15() {
    let bmc = Bmc::start();
    for iface in ["-I lanplus", "-I lan"] {
        let t = |args: &str| bmc.ipmitool_ok(iface, args);
        assert_contains(&t("power on"), "Chassis Power Control: Up/On");
        assert_contains(&t("power status"), "Chassis Power is on");
        assert_contains(&t("chassis status"), "System Power         : on");
        assert_contains(&t("power off"), "Chassis Power Control: Down/Off");
        t("chassis bootdev cdrom options=persistent");
        assert_contains(
            &t("chassis bootparam get 5"),
            "Boot parameter data: c014000000",
        );
        assert_contains(&t("mc info"), "Device ID                 : 32");
        assert_contains(&t("mc guid"), UUID);
    }
    let ciphers = bmc.ipmitool_ok("-I lanplus", "channel getciphers ipmi");
    let ids: Vec<&str> = ciphers
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(ids, ["17", "3", "2", "1"], "{ciphers}");
    let info = bmc.ipmitool_ok("-I lanplus", "session info active");
    assert_contains(&info, "session type                  : IPMIv2/RMCP+");
    assert_contains(&info, "privilege level               : ADMINISTRATOR");
    // The default suite is the strongest offered: 17.
    assert!(
        bmc.log_text().contains("cipher_suite=Some(17)") || bmc.log_text().contains("Some(17)")
    );
}

#[test]
fn user_privilege_reads_but_cannot_change_power() {
    let bmc = Bmc::start();
    for iface in ["-I lanplus -C 3 -L USER", "-I lan -L USER"] {
        let out = bmc.ipmitool(iface, "power off");
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{text}");
        assert_contains(&text, "Insufficient privilege level");
        assert_contains(
            &bmc.ipmitool_ok(iface, "power status"),
            "Chassis Power is off",
        );
    }
}

#[test]
fn bmclib_style_suite_17_then_3_gets_its_first_choice() {
    // bmclib tries -C 17 and falls back to -C 3 only on failure: 17 must simply work.
    let bmc = Bmc::start();
    assert_contains(
        &bmc.ipmitool_ok("-I lanplus -C 17", "power status"),
        "Chassis Power is off",
    );
    assert_contains(
        &bmc.ipmitool_ok("-I lanplus -C 3", "power status"),
        "Chassis Power is off",
    );
    let log = bmc.log_text();
    let first = log.find("Some(17)").expect("a suite 17 session");
    let second = log.find("Some(3)").expect("a suite 3 session");
    assert!(first < second);
}

/// `power on` then `power off` 270 ms later, on a machine whose boot takes 3 s: the off wins
/// over the boot under way (it used to answer 0xC0 "Node busy"), and a reset during the next
/// boot is accepted too.
#[test]
fn power_off_during_a_power_on_succeeds() {
    let bmc = Bmc::start_slow(3000);
    let t = |args: &str| bmc.ipmitool_ok("-I lanplus -C 3", args);
    assert_contains(&t("power on"), "Chassis Power Control: Up/On");
    std::thread::sleep(std::time::Duration::from_millis(270));
    assert_contains(&t("power off"), "Chassis Power Control: Down/Off");
    assert_contains(&t("power status"), "Chassis Power is off");
    assert_contains(&t("power on"), "Chassis Power Control: Up/On");
    assert_contains(&t("power reset"), "Chassis Power Control: Reset");
    assert_contains(&t("power cycle"), "Chassis Power Control: Cycle");
    assert_contains(&t("power on"), "Chassis Power Control: Up/On");
}

/// `chassis policy` sets the power restore policy; `chassis status` reads it back.
#[test]
fn chassis_policy_is_set_and_read_back() {
    let bmc = Bmc::start();
    let t = |args: &str| bmc.ipmitool_ok("-I lanplus -C 17", args);
    assert_contains(&t("chassis status"), "Power Restore Policy : previous");
    let list = t("chassis policy list");
    for policy in ["always-on", "previous", "always-off"] {
        assert_contains(&list, policy);
    }
    for policy in ["always-on", "always-off", "previous"] {
        t(&format!("chassis policy {policy}"));
        assert_contains(
            &t("chassis status"),
            &format!("Power Restore Policy : {policy}"),
        );
    }
}
