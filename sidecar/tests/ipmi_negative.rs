//! Refusals: wrong password, unknown user, cipher suite 0, replayed, corrupted and
//! truncated packets. Each is refused, logged without secrets, and changes nothing.

mod ipmi_common;

use std::net::UdpSocket;
use std::time::Duration;

use ipmi_common::{Bmc, PASSWORD, assert_contains};
use kubevirt_bmc_ipmi::Privilege;
use kubevirt_bmc_ipmi::client::Client;
use kubevirt_bmc_ipmi::crypto::CipherSuite;
use kubevirt_bmc_ipmi::message::netfn;

fn failing(bmc: &Bmc, iface: &str, user: &str, password: &str) -> String {
    let port = bmc.port.to_string();
    let out = ipmi_common::run(
        {
            let mut c = std::process::Command::new("ipmitool");
            c.args(iface.split_whitespace())
                .args(["-H", "127.0.0.1", "-p", &port, "-U", user, "-P", password])
                .args(["-N", "1", "-R", "1", "power", "on"]);
            c
        },
        "ipmitool",
    );
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
}

#[test]
fn bad_logins_are_refused_and_logged_without_secrets() {
    let bmc = Bmc::start();
    let text = failing(&bmc, "-I lanplus -C 3", "admin", "guess-Word1");
    assert_contains(&text, "Unable to establish IPMI v2 / RMCP+ session");
    let text = failing(&bmc, "-I lanplus -C 17", "nobody", PASSWORD);
    assert_contains(&text, "Unable to establish IPMI v2 / RMCP+ session");
    let text = failing(&bmc, "-I lanplus -C 0", "admin", PASSWORD);
    assert_contains(&text, "no matching cipher suite");
    let text = failing(&bmc, "-I lan", "admin", "guess-Word2");
    assert_contains(&text, "Activate Session command failed");
    let text = failing(&bmc, "-I lan", "nobody", PASSWORD);
    assert_contains(&text, "Invalid user name");

    let log = bmc.log_text();
    // ipmitool detects a wrong password itself (RAKP 2 does not verify) and stops; the
    // half-open session then expires. A wrong RAKP 3 is refused with RAKP 4 status 0x0F
    // (unit test in the ipmi crate).
    assert_contains(&log, "unknown user");
    assert_contains(&log, "cipher suite not offered");
    assert_contains(&log, "wrong password or challenge (Activate Session)");
    for secret in [PASSWORD, "guess-Word1", "guess-Word2"] {
        assert!(!log.contains(secret), "log holds {secret:?}:\n{log}");
    }
    // Written to a file, not a terminal: plain text, no colour codes.
    assert!(!log.contains('\u{1b}'), "colour codes in the log:\n{log}");
    assert_contains(
        &bmc.ipmitool_ok("-I lanplus", "power status"),
        "Chassis Power is off",
    );
}

struct Udp {
    socket: UdpSocket,
}

impl Udp {
    fn new(bmc: &Bmc) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(("127.0.0.1", bmc.port)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(400)))
            .unwrap();
        Udp { socket }
    }

    fn exchange(&self, datagram: &[u8]) -> Option<Vec<u8>> {
        self.socket.send(datagram).unwrap();
        let mut buf = [0u8; 1024];
        self.socket.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
    }
}

fn rng() -> impl FnMut(&mut [u8]) {
    let mut n = 7u8;
    move |b: &mut [u8]| {
        for x in b {
            n = n.wrapping_mul(31).wrapping_add(17);
            *x = n;
        }
    }
}

#[test]
fn replayed_corrupted_and_truncated_packets_change_nothing() {
    let bmc = Bmc::start();
    let udp = Udp::new(&bmc);
    let mut rng = rng();
    let suite = CipherSuite::by_id(3).unwrap();
    let mut client = Client::new(
        b"admin",
        PASSWORD.as_bytes(),
        suite,
        Privilege::Administrator,
        42,
    );
    let rsp = udp.exchange(&client.open_session_request()).unwrap();
    let rakp1 = client.on_open_session_response(&rsp, &mut rng).unwrap();
    let rakp3 = client.on_rakp2(&udp.exchange(&rakp1).unwrap()).unwrap();
    client.on_rakp4(&udp.exchange(&rakp3).unwrap()).unwrap();
    let call = |client: &mut Client, cmd: u8, data: &[u8]| {
        let datagram = client.request(
            if cmd == 0x3B {
                netfn::APP
            } else {
                netfn::CHASSIS
            },
            cmd,
            data,
            [9; 16],
        );
        let rsp = udp.exchange(&datagram).expect("answered");
        (datagram, client.response(&rsp).unwrap())
    };
    assert_eq!(call(&mut client, 0x3B, &[4]).1.cc, 0);
    let (power_on, rsp) = call(&mut client, 0x02, &[1]);
    assert_eq!(rsp.cc, 0);
    assert_contains(&bmc.ipmitool_ok("-I lanplus", "power off"), "Down/Off");

    // The captured "power on", sent again: dropped, the machine stays off.
    assert_eq!(udp.exchange(&power_on), None);
    // A fresh "power on" with one bit of its integrity code flipped: dropped.
    let mut forged = client.request(netfn::CHASSIS, 0x02, &[1], [9; 16]);
    let last = forged.len() - 1;
    forged[last] ^= 0x01;
    assert_eq!(udp.exchange(&forged), None);
    // Truncated at every length: nothing answers.
    for cut in [1, 4, 5, 10, 16, 20, forged.len() - 13, forged.len() - 1] {
        assert_eq!(udp.exchange(&forged[..cut]), None, "cut at {cut}");
    }
    assert_contains(
        &bmc.ipmitool_ok("-I lanplus", "power status"),
        "Chassis Power is off",
    );
    // The session itself survived the garbage.
    assert_eq!(call(&mut client, 0x01, &[]).1.cc, 0);
}

#[test]
fn a_taken_ipmi_port_fails_at_start_with_a_clear_error() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubevirt-bmc"))
        .args(["simulate", "--ipmi-listen", &format!("127.0.0.1:{port}")])
        .args(["--redfish-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_contains(&stderr, &format!("cannot listen on 127.0.0.1:{port}"));
}

/// The default login policy (`--ipmi-auth strict`, the VM annotation
/// `bmc.kubevirt.io/ipmi-auth` absent): RMCP+ with cipher suites 3 and 17 only.
#[test]
fn strict_ipmi_refuses_v15_and_cipher_suites_1_and_2_and_serves_3_and_17() {
    let bmc = Bmc::start_strict();
    for suite in ["3", "17"] {
        assert_contains(
            &bmc.ipmitool_ok(&format!("-I lanplus -C {suite}"), "power status"),
            "Chassis Power is off",
        );
    }
    assert_contains(
        &bmc.ipmitool_ok("-I lanplus", "channel getciphers ipmi"),
        "17",
    );
    let listed = bmc.ipmitool_ok("-I lanplus", "channel getciphers ipmi");
    let ids: Vec<&str> = listed
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(ids, ["17", "3"], "{listed}");
    for interface in ["-I lanplus -C 1", "-I lanplus -C 2", "-I lan"] {
        let out = bmc.ipmitool(interface, "power status");
        assert!(
            !out.status.success(),
            "{interface} got in: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn passwords_ipmi_would_cut_or_empty_ones_are_refused_at_start() {
    let run = |extra: &[&str]| {
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::process::Command::new(env!("CARGO_BIN_EXE_kubevirt-bmc"))
            .args(["simulate", "--ipmi-listen", &format!("127.0.0.1:{port}")])
            .args(["--redfish-listen", "127.0.0.1:0"])
            .args(extra)
            .output()
            .unwrap()
    };
    for (extra, expected) in [
        (
            &["--password", "twenty-one-characters"][..],
            "is 21 bytes; IPMI v2.0 carries at most 20",
        ),
        (
            &[
                "--password",
                "seventeen-chars!!",
                "--ipmi-auth",
                "compatible",
            ][..],
            "is 17 bytes; IPMI v1.5",
        ),
        (&["--password", ""][..], "the BMC password is empty"),
    ] {
        let out = run(extra);
        assert!(!out.status.success(), "{extra:?} started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_contains(&stderr, expected);
        assert!(
            !stderr.contains(extra[1]) || extra[1].is_empty(),
            "the password is in the message: {stderr}"
        );
    }
}
