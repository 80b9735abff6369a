//! Shared by the Redfish integration tests: a simulated BMC process on free ports, and the
//! Python clients from the test venv.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};

pub use kubevirt_bmc_e2e::testkit::{free_tcp_port, free_udp_port};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "admin";
pub const PASSWORD: &str = "redfish-test-pw";
pub const VM: &str = "test-vm";

/// A `kubevirt-bmc simulate` process, killed on drop.
pub struct Bmc {
    pub child: Child,
    pub redfish: SocketAddr,
    pub state_file: PathBuf,
    extra: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Bmc {
    pub fn start() -> Bmc {
        Bmc::start_with(&[])
    }

    /// Starts the simulator; `extra` are more `simulate` flags. Retries on a port race.
    pub fn start_with(extra: &[&str]) -> Bmc {
        let dir = tempfile::tempdir().unwrap();
        let state_file = dir.path().join("state.json");
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        for _ in 0..5 {
            let redfish: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
            if let Some(child) = spawn(redfish, &state_file, &extra) {
                return Bmc {
                    child,
                    redfish,
                    state_file,
                    extra,
                    _dir: dir,
                };
            }
        }
        panic!("kubevirt-bmc could not start on a free port");
    }

    /// Stops the process and starts a new one on the same address and state file.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for _ in 0..50 {
            if let Some(child) = spawn(self.redfish, &self.state_file, &self.extra) {
                self.child = child;
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("kubevirt-bmc did not restart on {}", self.redfish);
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.redfish)
    }

    /// The session key the simulator keeps in its state file.
    pub fn state(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&self.state_file).unwrap()).unwrap()
    }
}

/// Spawns the simulator and waits until Redfish listens; `None` if it exited (port taken).
fn spawn(redfish: SocketAddr, state_file: &Path, extra: &[String]) -> Option<Child> {
    let ipmi = format!("127.0.0.1:{}", free_udp_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubevirt-bmc"))
        .args(["simulate", "--redfish-listen", &redfish.to_string()])
        .args(["--ipmi-listen", &ipmi, "--name", VM])
        .args(["--username", USER, "--password", PASSWORD])
        .arg("--state-file")
        .arg(state_file)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubevirt-bmc starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        if TcpStream::connect(redfish).is_ok() {
            return Some(child);
        }
        assert!(Instant::now() < deadline, "Redfish never listened");
        std::thread::sleep(Duration::from_millis(25));
    }
}

impl Drop for Bmc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test venv: `KUBEVIRT_BMC_VENV`, else `<workspace>/target/venv`.
pub fn venv() -> PathBuf {
    let venv = std::env::var_os("KUBEVIRT_BMC_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/venv"));
    assert!(
        venv.join("bin/python").exists(),
        "no Python venv at {}: run e2e/setup.sh (or set KUBEVIRT_BMC_VENV)",
        venv.display()
    );
    venv
}

pub fn venv_tool(name: &str) -> PathBuf {
    let tool = venv().join("bin").join(name);
    assert!(
        tool.exists(),
        "{} is missing: run e2e/setup.sh",
        tool.display()
    );
    tool
}

pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/redfish_py")
        .join(name)
}

/// Runs a Python test script with the venv's interpreter against `bmc`.
pub fn run_python(bmc: &Bmc, name: &str, extra: &[&str]) -> Output {
    Command::new(venv().join("bin/python"))
        .arg(script(name))
        .args([&bmc.url(), USER, PASSWORD, VM])
        .args(extra)
        .env("PYTHONWARNINGS", "ignore")
        .output()
        .expect("python runs")
}

pub fn assert_success(output: &Output, what: &str) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
}
