//! Helpers every test crate uses, written once: free loopback ports, a Redfish session
//! login with the real curl, the workspace's built binaries, the captured fixtures, and a
//! child process that dies with the test.

use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A process killed (and reaped) when the test lets go of it, passing or failing.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A binary of the workspace, built next to the running test (`target/debug/deps/<test>` ->
/// `target/debug/<name>`): `e2e/test-all.sh` builds them before the tests.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (e2e/test-all.sh does)",
        path.display()
    );
    path
}

/// One of the captures from a real kube-apiserver (`e2e/testdata/fixtures`).
pub fn fixture(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/fixtures")
        .join(name);
    serde_json::from_slice(&std::fs::read(&path).expect("fixture readable")).expect("fixture JSON")
}

/// A TCP port free right now on loopback (a race with other processes is possible: callers
/// that spawn a server on it retry on a bind error).
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free TCP port on loopback")
        .port()
}

/// A UDP port free right now on loopback (same race as [`free_tcp_port`]).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port on loopback")
        .port()
}

/// What a Redfish session login answered.
#[derive(Debug, Clone)]
pub struct RedfishLogin {
    pub token: Option<String>,
    /// The session's URI from `Location`, as sent (absolute or a path).
    pub location: Option<String>,
    /// Every response header, for assertion messages.
    pub headers: String,
}

/// POSTs a login to `{base}/redfish/v1/SessionService/Sessions` with curl (`-k`: the tests'
/// BMCs have self-signed certificates).
pub fn redfish_login(base: &str, user: &str, password: &str) -> RedfishLogin {
    let body = serde_json::json!({"UserName": user, "Password": password}).to_string();
    let output = Command::new("curl")
        .args(["-sk", "-D", "-", "-o", "/dev/null"])
        .args(["-H", "Content-Type: application/json", "-d", &body])
        .arg(format!("{base}/redfish/v1/SessionService/Sessions"))
        .output()
        .expect("curl runs (e2e/setup.sh installs it)");
    let headers = String::from_utf8_lossy(&output.stdout).into_owned();
    let header = |name: &str| {
        headers.lines().find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_owned())
        })
    };
    RedfishLogin {
        token: header("x-auth-token"),
        location: header("location"),
        headers: headers.clone(),
    }
}

/// Polls `check` every 50 ms until it holds; fails the test naming `what` after `timeout`.
pub async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
