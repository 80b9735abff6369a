//! The real process over HTTPS: HTTP/2, keep-alive, and refused requests (bad JSON,
//! oversized body, bad credentials, an expired session token) leave the machine unchanged.

mod redfish_support;

use std::process::Command;

use base64::Engine;
use hmac::{Hmac, Mac};
use kubevirt_bmc_e2e::testkit::redfish_login;
use redfish_support::{Bmc, PASSWORD, USER, VM, script, venv_tool};
use serde_json::Value;

/// Runs curl; returns (status code, body, stderr).
fn curl(args: &[&str]) -> (u16, String, String) {
    let output = Command::new("curl")
        .args(["-sk", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is installed (run e2e/setup.sh)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let code = code
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0);
    (
        code,
        body.to_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn auth() -> String {
    format!("{USER}:{PASSWORD}")
}

fn system(bmc: &Bmc) -> Value {
    let (code, body, _) = curl(&[
        "-u",
        &auth(),
        &format!("{}/redfish/v1/Systems/{VM}", bmc.url()),
    ]);
    assert_eq!(code, 200);
    serde_json::from_str(&body).unwrap()
}

#[test]
fn http2_and_keep_alive_are_served() {
    let bmc = Bmc::start();
    let url = format!("{}/redfish/v1/", bmc.url());
    let output = Command::new("curl")
        .args([
            "-sk",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
            &url,
        ])
        .output()
        .expect("curl is installed");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "2");
    let (_, _, stderr) = curl(&["--http1.1", "-v", "-o", "/dev/null", &url, &url]);
    assert!(
        stderr.contains("Re-using existing connection") || stderr.contains("Reusing existing"),
        "second request opened a new connection:\n{stderr}"
    );
}

/// A request refused before its body arrived (urllib3 writes headers and body apart) must
/// not cost the client its keep-alive connection: the next request on it is answered.
#[test]
fn a_refusal_before_the_body_arrived_keeps_the_connection() {
    let bmc = Bmc::start();
    let output = Command::new(venv_tool("python"))
        .arg(script("keep_alive_after_refusal.py"))
        .args(["127.0.0.1", &bmc.redfish.port().to_string(), USER, PASSWORD])
        .output()
        .expect("the venv's python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        result,
        serde_json::json!({"first": 405, "first_connection": null, "second": 405}),
        "the POST is refused, and the DELETE on the same connection is answered too"
    );
}

#[test]
fn refused_requests_change_nothing() {
    let bmc = Bmc::start();
    let system_url = format!("{}/redfish/v1/Systems/{VM}", bmc.url());
    let before = system(&bmc)["Boot"].clone();

    let (code, body, _) = curl(&[
        "-u",
        &auth(),
        "-X",
        "PATCH",
        "-H",
        "Content-Type: application/json",
        "-d",
        "{\"Boot\": {",
        &system_url,
    ]);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("MalformedJSON"), "{body}");

    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.json");
    std::fs::write(&big, format!("{{\"Boot\": \"{}\"}}", "x".repeat(200_000))).unwrap();
    let (code, body, _) = curl(&[
        "-u",
        &auth(),
        "-X",
        "PATCH",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &format!("@{}", big.display()),
        &system_url,
    ]);
    assert_eq!(code, 413, "{body}");

    let (code, body, _) = curl(&[
        "-u",
        &format!("{USER}:wrong"),
        "-X",
        "PATCH",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"Boot": {"BootSourceOverrideTarget": "Pxe"}}"#,
        &system_url,
    ]);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("NoValidSession"), "{body}");

    let (code, body, _) = curl(&[
        "-u",
        &auth(),
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"ResetType": "Detonate"}"#,
        &format!("{system_url}/Actions/ComputerSystem.Reset"),
    ]);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("PropertyValueNotInList"), "{body}");

    let after = system(&bmc);
    assert_eq!(after["Boot"], before);
    assert_eq!(after["PowerState"], "Off");
}

/// The key lives in the simulator's state file; a token it signed that has expired must be
/// refused, while the same signing with a future expiry is honoured.
#[test]
fn expired_session_tokens_are_refused() {
    let bmc = Bmc::start();
    // The listener accepts before the service has stored its key: wait for the key.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let state = loop {
        let state = bmc.state();
        if state["records"]["SessionKey"].is_string() {
            break state;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no session key stored: {state}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let secret = state["records"]["SessionKey"].as_str().unwrap();
    let key = kubevirt_bmc::redfish::auth::signing_key(secret);
    let sign = |expires: u64| {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("s1.{expires}").as_bytes());
        mac.update(format!("\0{USER}").as_bytes());
        let signature =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("s1.{expires}.{signature}")
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let url = format!("{}/redfish/v1/Systems/{VM}", bmc.url());
    let (code, _, _) = curl(&["-H", &format!("X-Auth-Token: {}", sign(now + 300)), &url]);
    assert_eq!(code, 200);
    let (code, body, _) = curl(&["-H", &format!("X-Auth-Token: {}", sign(now - 5)), &url]);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("expired"), "{body}");
}

/// Tokens are signed, not remembered: a restarted BMC honours a session from before, and a
/// logout from before stays a logout.
#[test]
fn sessions_survive_a_restart() {
    let mut bmc = Bmc::start();
    let login = |bmc: &Bmc| {
        let login = redfish_login(&bmc.url(), USER, PASSWORD);
        let headers = &login.headers;
        (
            login
                .token
                .unwrap_or_else(|| panic!("no token in {headers}")),
            login
                .location
                .unwrap_or_else(|| panic!("no location in {headers}")),
        )
    };
    let (kept, _) = login(&bmc);
    let (dropped, location) = login(&bmc);
    let (code, _, _) = curl(&[
        "-X",
        "DELETE",
        "-H",
        &format!("X-Auth-Token: {dropped}"),
        &format!("{}{location}", bmc.url()),
    ]);
    assert_eq!(code, 204);
    bmc.restart();
    let url = format!("{}/redfish/v1/Systems/{VM}", bmc.url());
    let (code, _, _) = curl(&["-H", &format!("X-Auth-Token: {kept}"), &url]);
    assert_eq!(code, 200, "a live session was lost in the restart");
    let (code, _, _) = curl(&["-H", &format!("X-Auth-Token: {dropped}"), &url]);
    assert_eq!(
        code, 401,
        "a logged-out session came back after the restart"
    );
}

#[test]
fn a_taken_redfish_port_is_a_clear_startup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let ipmi = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_kubevirt-bmc"))
        .args(["simulate", "--redfish-listen", &addr, "--ipmi-listen"])
        .arg(ipmi.to_string())
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}
