//! Helpers every test crate uses, written once: free loopback ports and a Redfish session
//! login with the real curl.

use std::net::{TcpListener, UdpSocket};
use std::process::Command;

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
