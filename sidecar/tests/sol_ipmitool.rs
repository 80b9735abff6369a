//! Serial over LAN with ipmitool 1.8.19 (`-I lanplus -C 17 sol activate`) and FreeIPMI
//! `ipmiconsole`, each driven through a tmux pseudo-terminal against `kubevirt-bmc
//! simulate`.

mod ipmi_common;
mod tmux;

use ipmi_common::{Bmc, PASSWORD, assert_contains};
use tmux::{Logs, Tmux};

impl Logs for Bmc {
    fn log_text(&self) -> String {
        Bmc::log_text(self)
    }
}

fn sol_command(bmc: &Bmc) -> String {
    format!(
        "ipmitool -I lanplus -C 17 -H 127.0.0.1 -p {} -U admin -P {PASSWORD} sol activate; \
         echo SOL-EXITED=$?; sleep 60",
        bmc.port
    )
}

const LANPLUS: &str = "-I lanplus -C 17";

#[test]
fn sol_activate_shows_the_boot_banner_echoes_typing_and_tilde_dot_ends_it() {
    let bmc = Bmc::start();
    let tmux = Tmux::new("banner");
    tmux.start("sol", &sol_command(&bmc));
    tmux.wait_for("sol", "SOL Session operational", &bmc);

    // A boot prints its banner on the serial console.
    assert_contains(
        &bmc.ipmitool_ok(LANPLUS, "power on"),
        "Chassis Power Control: Up/On",
    );
    tmux.wait_for("sol", "vm1 login:", &bmc);
    tmux.keys("sol", &["hello-sol", "Enter"]);
    tmux.wait_for("sol", "login: hello-sol", &bmc);

    // One SOL session per machine.
    let second = bmc.ipmitool(LANPLUS, "sol activate");
    assert!(!second.status.success());
    assert_contains(
        &String::from_utf8_lossy(&second.stderr),
        "SOL payload already active on another session",
    );
    assert_contains(&bmc.ipmitool_ok(LANPLUS, "raw 0x06 0x4a 0x01"), "01 01 00");

    // ipmitool's escape: Enter, then ~.
    tmux.keys("sol", &["Enter", "~."]);
    let screen = tmux.wait_for("sol", "SOL-EXITED=0", &bmc);
    assert_contains(&screen, "[terminated ipmitool]");
    assert_contains(&bmc.ipmitool_ok(LANPLUS, "raw 0x06 0x4a 0x01"), "01 00 00");
}

#[test]
fn sol_deactivate_from_a_second_client_ends_the_active_session() {
    let bmc = Bmc::start();
    let tmux = Tmux::new("deact");
    tmux.start("sol", &sol_command(&bmc));
    tmux.wait_for("sol", "SOL Session operational", &bmc);
    assert_contains(&bmc.ipmitool_ok(LANPLUS, "raw 0x06 0x4a 0x01"), "01 01 00");

    bmc.ipmitool_ok(LANPLUS, "sol deactivate");
    assert_contains(&bmc.ipmitool_ok(LANPLUS, "raw 0x06 0x4a 0x01"), "01 00 00");
    // ipmitool notices at its next send (its keepalive or a keystroke) and exits.
    tmux.keys("sol", &["x"]);
    let screen = tmux.wait_for("sol", "SOL-EXITED=1", &bmc);
    assert_contains(&screen, "SOL session closed by BMC");
    // The payload is free again.
    tmux.start("again", &sol_command(&bmc));
    tmux.wait_for("again", "SOL Session operational", &bmc);
    tmux.keys("again", &["Enter", "~."]);
    tmux.wait_for("again", "SOL-EXITED=0", &bmc);
}

/// The Manager's `SerialConsole` over HTTPS (curl, Basic auth).
fn redfish_serial_console(bmc: &Bmc) -> serde_json::Value {
    let out = std::process::Command::new("curl")
        .args(["-sk", "-u", &format!("admin:{PASSWORD}")])
        .arg(format!(
            "https://127.0.0.1:{}/redfish/v1/Managers/BMC",
            bmc.redfish
        ))
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "curl: {out:?}");
    let manager: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    manager["SerialConsole"].clone()
}

#[test]
fn sol_info_reports_the_configuration_and_set_changes_it() {
    let bmc = Bmc::start();
    assert_eq!(
        redfish_serial_console(&bmc),
        serde_json::json!({"ServiceEnabled": true, "MaxConcurrentSessions": 1, "ConnectTypesSupported": ["IPMI"]})
    );
    let info = bmc.ipmitool_ok(LANPLUS, "sol info");
    assert_contains(&info, "Enabled                         : true");
    assert_contains(&info, "Payload Port                    : ");
    assert_contains(&info, &bmc.port.to_string());
    bmc.ipmitool_ok(LANPLUS, "sol set enabled false");
    assert_contains(
        &bmc.ipmitool_ok(LANPLUS, "sol info"),
        "Enabled                         : false",
    );
    let refused = bmc.ipmitool(LANPLUS, "sol activate");
    assert_contains(
        &String::from_utf8_lossy(&refused.stderr),
        "SOL payload disabled",
    );
    // Redfish follows the IPMI switch: one serial console, one state.
    assert_eq!(
        redfish_serial_console(&bmc),
        serde_json::json!({"ServiceEnabled": false, "MaxConcurrentSessions": 0, "ConnectTypesSupported": []})
    );
    bmc.ipmitool_ok(LANPLUS, "sol set enabled true");
    assert_eq!(redfish_serial_console(&bmc)["ServiceEnabled"], true);
    bmc.ipmitool_ok(LANPLUS, "sol set volatile-bit-rate 9.6");
    assert_contains(
        &bmc.ipmitool_ok(LANPLUS, "sol info"),
        "Volatile Bit Rate (kbps)        : 9.6",
    );
}

/// A free UDP port below 32768: ipmiconsole 1.6 calls "host:port" with a higher port
/// "hostname invalid".
fn low_udp_port() -> u16 {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
    (0..200u64)
        .map(|i| 20000 + ((seed.wrapping_mul(2654435761).wrapping_add(i * 7919)) % 12000) as u16)
        .find(|&port| std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok())
        .expect("a free UDP port below 32768")
}

#[test]
fn freeipmi_ipmiconsole_sees_the_banner_and_its_echo() {
    let bmc = Bmc::start_picking(low_udp_port);
    let tmux = Tmux::new("ipmiconsole");
    tmux.start(
        "con",
        &format!(
            "ipmiconsole -h 127.0.0.1:{} -u admin -p {PASSWORD} -I 17; echo CON-EXITED=$?; \
             sleep 60",
            bmc.port
        ),
    );
    tmux.wait_for("con", "[SOL established]", &bmc);
    bmc.ipmitool_ok(LANPLUS, "power on");
    tmux.wait_for("con", "vm1 login:", &bmc);
    tmux.keys("con", &["typed-by-freeipmi", "Enter"]);
    tmux.wait_for("con", "login: typed-by-freeipmi", &bmc);
    // ipmiconsole's escape is &.
    tmux.keys("con", &["&."]);
    tmux.wait_for("con", "CON-EXITED=0", &bmc);
    assert_contains(&bmc.ipmitool_ok(LANPLUS, "raw 0x06 0x4a 0x01"), "01 00 00");
}
