//! What a Redfish user cannot make the BMC do (issue 12, sections 4 and 5), through the real
//! process with curl and Python: send events or media imports to loopback, link-local or
//! metadata addresses (also through a name that resolves there), keep idle connections
//! open for ever, open more than the cap, or guess passwords at full speed.

mod redfish_support;

use std::io::Read;
use std::net::TcpListener;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use redfish_support::{Bmc, PASSWORD, USER, VM, assert_success, run_python};
use serde_json::{Value, json};

/// Runs curl; returns (status code, body).
fn curl(args: &[&str]) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-sk", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is installed (run e2e/setup.sh)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn auth() -> String {
    format!("{USER}:{PASSWORD}")
}

fn post(bmc: &Bmc, path: &str, body: &Value) -> (u16, Value) {
    let url = format!("{}{path}", bmc.url());
    let body = body.to_string();
    let (code, text) = curl(&[
        "-u",
        &auth(),
        "-H",
        "Content-Type: application/json",
        "-X",
        "POST",
        "-d",
        &body,
        &url,
    ]);
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn get(bmc: &Bmc, path: &str) -> Value {
    let (code, text) = curl(&["-u", &auth(), &format!("{}{path}", bmc.url())]);
    assert_eq!(code, 200, "{path}: {text}");
    serde_json::from_str(&text).unwrap()
}

fn message_id(error: &Value) -> &str {
    error["error"]["@Message.ExtendedInfo"][0]["MessageId"]
        .as_str()
        .unwrap_or_default()
}

#[test]
fn event_destinations_and_images_on_loopback_link_local_or_with_credentials_are_refused() {
    let bmc = Bmc::start_strict(&[]);
    for destination in [
        "https://127.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/events",
        "http://[fe80::1]/events",
        "http://[::ffff:127.0.0.1]/",
    ] {
        let (code, error) = post(
            &bmc,
            "/redfish/v1/EventService/Subscriptions",
            &json!({"Destination": destination, "Protocol": "Redfish"}),
        );
        assert_eq!(code, 400, "{destination}: {error}");
        assert_eq!(message_id(&error), "Base.1.4.0.AccessDenied", "{error}");
        let text = error["error"]["message"].as_str().unwrap();
        assert!(
            text.contains("are not allowed from the BMC"),
            "{destination}: {text}"
        );
    }
    let (code, error) = post(
        &bmc,
        "/redfish/v1/EventService/Subscriptions",
        &json!({"Destination": "https://ironic:s3cret@events.example/", "Protocol": "Redfish"}),
    );
    assert_eq!(code, 400, "{error}");
    assert!(
        !error.to_string().contains("s3cret"),
        "the password came back: {error}"
    );
    assert_eq!(
        get(&bmc, "/redfish/v1/EventService/Subscriptions")["Members"],
        json!([])
    );

    let insert = "/redfish/v1/Managers/BMC/VirtualMedia/Cd/Actions/VirtualMedia.InsertMedia";
    for image in [
        "http://169.254.169.254/latest/user-data",
        "http://127.0.0.1:6443/boot.iso",
        "http://localhost/boot.iso",
        "http://[fe80::1]/boot.iso",
    ] {
        let (code, error) = post(&bmc, insert, &json!({"Image": image}));
        assert_eq!(code, 400, "{image}: {error}");
        assert_eq!(message_id(&error), "Base.1.4.0.AccessDenied", "{error}");
    }
    let (code, error) = post(
        &bmc,
        insert,
        &json!({"Image": "http://user:pw-in-url@images.example/boot.iso"}),
    );
    assert_eq!(code, 400, "{error}");
    assert!(!error.to_string().contains("pw-in-url"), "{error}");
    let media = get(&bmc, "/redfish/v1/Managers/BMC/VirtualMedia/Cd");
    assert_eq!(media["Image"], Value::Null, "{media}");
    assert_eq!(media["Inserted"], false, "{media}");
}

/// A receiver on loopback; sends each request's first line to the returned channel.
fn receiver() -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let send = send.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let n = stream.read(&mut buf).unwrap_or(0);
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let _ = std::io::Write::write_all(
                    &mut stream,
                    b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
                );
                let _ = send.send(text.lines().next().unwrap_or_default().to_owned());
            });
        }
    });
    (port, receive)
}

fn subscribe_and_test(bmc: &Bmc, destination: &str) {
    let (code, body) = post(
        bmc,
        "/redfish/v1/EventService/Subscriptions",
        &json!({"Destination": destination, "Protocol": "Redfish"}),
    );
    // A name is accepted: what it resolves to is checked when an event is delivered.
    assert_eq!(code, 201, "{body}");
    let (code, body) = post(
        bmc,
        "/redfish/v1/EventService/Actions/EventService.SubmitTestEvent",
        &json!({}),
    );
    assert!(code == 204 || code == 200, "{code} {body}");
}

#[test]
fn a_name_that_resolves_to_loopback_is_refused_at_delivery() {
    // Control: the same subscription on a BMC that allows loopback is delivered, so the
    // silence below is the guard and not a broken receiver.
    let (port, delivered) = receiver();
    let allowed = Bmc::start();
    subscribe_and_test(&allowed, &format!("http://localhost:{port}/events"));
    let line = delivered
        .recv_timeout(Duration::from_secs(30))
        .expect("the allowed BMC delivers to localhost");
    assert!(line.starts_with("POST /events"), "{line}");
    drop(allowed);
    while delivered.try_recv().is_ok() {}

    let strict = Bmc::start_strict(&[]);
    subscribe_and_test(&strict, &format!("http://localhost:{port}/events"));
    // Delivery (and its three retries, 1 + 2 + 4 s) would be over long before this.
    match delivered.recv_timeout(Duration::from_secs(10)) {
        Err(mpsc::RecvTimeoutError::Timeout) => {}
        other => panic!("an event reached localhost through the strict BMC: {other:?}"),
    }
}

#[test]
fn idle_http1_and_http2_connections_are_closed_after_the_idle_timeout() {
    let bmc = Bmc::start_with(&[
        "--redfish-idle-timeout",
        "3",
        "--redfish-max-connections",
        "1100",
    ]);
    let output = run_python(&bmc, "idle_connections.py", &["1000", "20", "3"]);
    assert_success(&output, "idle connections");
    let stdout = String::from_utf8_lossy(&output.stdout);
    for (kind, count) in [("HTTP/1.1", 1000), ("HTTP/2", 20)] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(kind))
            .unwrap_or_else(|| panic!("no {kind} line: {stdout}"));
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "KIND: opened N closed N shortest S longest L"
        assert_eq!(fields[2], count.to_string(), "{line}");
        assert_eq!(fields[4], count.to_string(), "not all closed: {line}");
        let shortest: f64 = fields[6].parse().unwrap();
        let longest: f64 = fields[8].parse().unwrap();
        assert!(shortest >= 2.5, "closed before the timeout: {line}");
        // hyper alone closes an idle HTTP/1.1 connection only at its 30 s header-read
        // timeout and an idle HTTP/2 one never; 20 s leaves a busy machine plenty of slack.
        assert!(longest < 20.0, "closed long after the 3 s timeout: {line}");
    }
    // The BMC still serves.
    assert_eq!(get(&bmc, &format!("/redfish/v1/Systems/{VM}"))["Id"], VM);
}

/// A connection the BMC has accepted and finished the TLS handshake on, then left idle:
/// `openssl s_client` holds it while its stdin stays open. A bare TCP connection would not
/// do: the TLS acceptor gives up on a handshake that does not start within 10 s
/// (axum-server's `RustlsAcceptor`), freeing the slot, and a busy machine can take that long
/// to run the next step.
struct Held(std::process::Child);

impl Held {
    fn open(bmc: &Bmc) -> Held {
        use std::io::BufRead;
        let mut child = Command::new("openssl")
            .args(["s_client", "-connect", &bmc.redfish.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl s_client");
        let stdout = child.stdout.take().unwrap();
        let (done, handshake) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                // The session summary follows the completed handshake.
                if line.contains("Verify return code") {
                    let _ = done.send(());
                }
            }
        });
        handshake
            .recv_timeout(Duration::from_secs(60))
            .expect("the BMC completes a TLS handshake within its cap");
        Held(child)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn connections_beyond_the_cap_are_closed_at_once_and_served_again_when_one_closes() {
    let bmc = Bmc::start_with(&["--redfish-max-connections", "4"]);
    let url = format!("{}/redfish/v1", bmc.url());
    let held: Vec<Held> = (0..4).map(|_| Held::open(&bmc)).collect();
    let (code, _) = curl(&["--max-time", "20", &url]);
    assert_eq!(code, 0, "a fifth connection was served");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, body) = curl(&["--max-time", "20", &url]);
        if code == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not served after the others closed: {code} {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn failed_logins_are_slowed_down_after_three_and_a_good_login_is_not() {
    let bmc = Bmc::start();
    let url = format!("{}/redfish/v1/Systems", bmc.url());
    let mut times = vec![];
    for _ in 0..7 {
        let start = Instant::now();
        let (code, _) = curl(&["-u", &format!("{USER}:wrong"), &url]);
        assert_eq!(code, 401);
        times.push(start.elapsed());
    }
    // Three failures are free; the answers to the 5th, 6th and 7th are held back 250 ms,
    // 500 ms and 1 s (lower bounds hold on any machine, however busy).
    assert!(times[4] >= Duration::from_millis(200), "{times:?}");
    assert!(times[5] >= Duration::from_millis(450), "{times:?}");
    assert!(times[6] >= Duration::from_millis(900), "{times:?}");
    // The right password is let in (after the held-back answer) and clears the record.
    let (code, _) = curl(&["-u", &auth(), &url]);
    assert_eq!(code, 200);
    let start = Instant::now();
    let (code, _) = curl(&["-u", &format!("{USER}:wrong"), &url]);
    assert_eq!(code, 401);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "still held back after a good login"
    );
    // Session logins count the same way.
    let login = json!({"UserName": USER, "Password": "wrong"}).to_string();
    let session_url = format!("{}/redfish/v1/SessionService/Sessions", bmc.url());
    for _ in 0..5 {
        curl(&[
            "-H",
            "Content-Type: application/json",
            "-d",
            &login,
            &session_url,
        ]);
    }
    let start = Instant::now();
    let (code, _) = curl(&[
        "-H",
        "Content-Type: application/json",
        "-d",
        &login,
        &session_url,
    ]);
    assert_eq!(code, 401);
    assert!(start.elapsed() >= Duration::from_millis(900));
}
