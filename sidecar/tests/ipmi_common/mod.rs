//! Shared by the IPMI client tests: a `kubevirt-bmc simulate` process on a free port and
//! helpers to run real clients against it.
#![allow(dead_code)]

use std::net::UdpSocket;

use kubevirt_bmc_e2e::testkit::{free_tcp_port, free_udp_port};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const UUID: &str = "5d307ca9-b3ef-428c-8861-06e72d69f223";
pub const PASSWORD: &str = "s3cret-Pass";

pub struct Bmc {
    child: Child,
    pub port: u16,
    /// The Redfish (HTTPS) port.
    pub redfish: u16,
    pub log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Bmc {
    pub fn start() -> Bmc {
        Self::start_picking(free_udp_port)
    }

    /// As [`Bmc::start`], with the UDP port from `pick` (some clients refuse high ports).
    pub fn start_picking(pick: impl Fn() -> u16) -> Bmc {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            let port = pick();
            let log = dir.path().join("bmc.log");
            let redfish = free_tcp_port();
            let child = Command::new(env!("CARGO_BIN_EXE_kubevirt-bmc"))
                .args(["simulate", "--ipmi-listen"])
                .arg(format!("127.0.0.1:{port}"))
                .arg("--redfish-listen")
                .arg(format!("127.0.0.1:{redfish}"))
                .args([
                    "--power-transition-ms",
                    "0",
                    "--uuid",
                    UUID,
                    "--name",
                    "vm1",
                ])
                .args(["--password", PASSWORD])
                .env("RUST_LOG", "info,kubevirt_bmc=debug")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("kubevirt-bmc runs");
            let mut bmc = Bmc {
                child,
                port,
                redfish,
                log,
                _dir: tempfile::tempdir().unwrap(),
            };
            if bmc.wait_ready() {
                bmc._dir = dir;
                return bmc;
            }
        }
        panic!("kubevirt-bmc did not answer an ASF ping");
    }

    /// Ready when an ASF Presence Ping gets its Pong.
    fn wait_ready(&mut self) -> bool {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let ping = [6, 0, 0xFF, 6, 0, 0, 0x11, 0xBE, 0x80, 1, 0, 0];
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            socket.send_to(&ping, ("127.0.0.1", self.port)).unwrap();
            let mut buf = [0u8; 64];
            if let Ok((n, _)) = socket.recv_from(&mut buf)
                && n >= 10
                && buf[8] == 0x40
            {
                return true;
            }
        }
        false
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// ipmitool with `interface_args` (e.g. `-I lanplus -C 3`) then `args`.
    pub fn ipmitool(&self, interface_args: &str, args: &str) -> Output {
        let port = self.port.to_string();
        let mut cmd = Command::new("ipmitool");
        cmd.args(interface_args.split_whitespace())
            .args([
                "-H",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "admin",
                "-P",
                PASSWORD,
            ])
            .args(["-N", "1", "-R", "2"])
            .args(args.split_whitespace());
        run(cmd, "ipmitool")
    }

    /// ipmitool expected to succeed; returns stdout.
    pub fn ipmitool_ok(&self, interface_args: &str, args: &str) -> String {
        let out = self.ipmitool(interface_args, args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "ipmitool {interface_args} {args} failed: {}\n{stdout}\nBMC log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        stdout
    }
}

impl Drop for Bmc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a client, failing with a pointer to e2e/setup.sh when it is not installed.
pub fn run(mut cmd: Command, name: &str) -> Output {
    match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("{name} is not installed: run e2e/setup.sh")
        }
        Err(e) => panic!("{name}: {e}"),
    }
}

pub fn assert_contains(haystack: &str, needle: &str) {
    assert!(
        haystack.contains(needle),
        "expected {needle:?} in:\n{haystack}"
    );
}
