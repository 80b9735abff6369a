//! Benchmark: GET System over HTTPS, Basic auth and session token, 1 and 16 connections,
//! against `kubevirt-bmc simulate` (release) and sushy-emulator's fake driver (HTTPS + Basic,
//! its only authentication), with wrk in the same run. Prints req/s, p50/p99, the ratio and
//! the RSS of both servers before and after.
//!
//!     cargo build --release -p kubevirt-bmc
//!     cargo run --release -p kubevirt-bmc --example bench_redfish -- [SECONDS]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;

const USER: &str = "admin";
const PASSWORD: &str = "bench-password";

struct Server {
    name: &'static str,
    child: Child,
    port: u16,
    system: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited: {status}");
        }
        assert!(Instant::now() < deadline, "{what} never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn venv() -> PathBuf {
    std::env::var_os("KUBEVIRT_BMC_VENV").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/venv"),
        PathBuf::from,
    )
}

fn ours(cert: &Path, key: &Path) -> Server {
    let binary = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("kubevirt-bmc"))
        .unwrap();
    assert!(
        binary.exists(),
        "{} missing: cargo build --release -p kubevirt-bmc",
        binary.display()
    );
    let port = free_port();
    let mut child = Command::new(&binary)
        .args(["simulate", "--redfish-listen", &format!("127.0.0.1:{port}")])
        .args(["--ipmi-listen", &format!("127.0.0.1:{}", free_port())])
        .args([
            "--name",
            "bench-vm",
            "--username",
            USER,
            "--password",
            PASSWORD,
        ])
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubevirt-bmc starts");
    wait_listening(port, &mut child, "kubevirt-bmc");
    Server {
        name: "kubevirt-bmc",
        child,
        port,
        system: "/redfish/v1/Systems/bench-vm".to_owned(),
    }
}

/// sushy-emulator with the peers' fake-driver config, plus TLS and a bcrypt auth file (cost
/// 4, bcrypt's minimum, so the comparison measures the server rather than the hash: sushy
/// checks bcrypt on every request, and at the default cost 12 it manages about 1 req/s).
fn sushy(dir: &Path, cert: &Path, key: &Path) -> Server {
    let peers = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/testdata/peers");
    let original = std::fs::read_to_string(peers.join("sushy-emulator-fake.conf"))
        .expect("e2e/testdata/peers/sushy-emulator-fake.conf");
    let python = venv().join("bin/python");
    let hash = Command::new(&python)
        .args([
            "-c",
            &format!(
                "import bcrypt; print(bcrypt.hashpw(b'{PASSWORD}', bcrypt.gensalt(rounds=4)).decode())"
            ),
        ])
        .output()
        .expect("venv python with bcrypt (run e2e/setup.sh)");
    let htpasswd = dir.join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!("{USER}:{}", String::from_utf8_lossy(&hash.stdout).trim()),
    )
    .unwrap();
    let port = free_port();
    let config = dir.join("sushy.conf");
    std::fs::write(
        &config,
        format!(
            "{}\nSUSHY_EMULATOR_LISTEN_PORT = {port}\nSUSHY_EMULATOR_SSL_CERT = '{}'\n\
             SUSHY_EMULATOR_SSL_KEY = '{}'\nSUSHY_EMULATOR_AUTH_FILE = '{}'\n",
            original,
            cert.display(),
            key.display(),
            htpasswd.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(venv().join("bin/sushy-emulator"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sushy-emulator in the venv (run e2e/setup.sh)");
    wait_listening(port, &mut child, "sushy-emulator");
    Server {
        name: "sushy-emulator",
        child,
        port,
        system: "/redfish/v1/Systems/27946b59-9e44-4fa7-8e91-f3527a1ef094".to_owned(),
    }
}

fn session_token(server: &Server) -> String {
    let output = Command::new("curl")
        .args([
            "-sk",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            "Content-Type: application/json",
        ])
        .args([
            "-d",
            &format!(r#"{{"UserName": "{USER}", "Password": "{PASSWORD}"}}"#),
            &format!(
                "https://127.0.0.1:{}/redfish/v1/SessionService/Sessions",
                server.port
            ),
        ])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("x-auth-token:")
                .then(|| l[13..].trim().to_owned())
        })
        .expect("login returned X-Auth-Token")
}

fn parse_duration_ms(text: &str) -> f64 {
    let number: String = text
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let value: f64 = number.parse().unwrap_or(f64::NAN);
    match &text[number.len()..] {
        "us" => value / 1000.0,
        "ms" => value,
        "s" => value * 1000.0,
        "m" => value * 60_000.0,
        _ => f64::NAN,
    }
}

fn wrk(server: &Server, header: &str, connections: u32, seconds: u64) -> Run {
    let threads = connections.min(2).to_string();
    let output = Command::new("wrk")
        .args(["-t", &threads, "-c", &connections.to_string()])
        .args([
            "-d",
            &format!("{seconds}s"),
            "--latency",
            "--timeout",
            "10s",
        ])
        .args(["-H", header])
        .arg(format!(
            "https://127.0.0.1:{}{}",
            server.port, server.system
        ))
        .output()
        .expect("wrk is installed (run e2e/setup.sh)");
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |prefix: &str| -> Option<String> {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(str::to_owned)
    };
    let non_2xx = text.lines().any(|l| l.contains("Non-2xx"));
    if non_2xx {
        eprintln!(
            "warning: {} answered non-2xx responses:\n{text}",
            server.name
        );
    }
    Run {
        rps: field("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
        p50_ms: field("50%").map_or(f64::NAN, |v| parse_duration_ms(&v)),
        p99_ms: field("99%").map_or(f64::NAN, |v| parse_duration_ms(&v)),
    }
}

fn main() {
    kubevirt_bmc::tls::install_crypto_provider();
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let generated =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();

    let ours = ours(&cert, &key);
    let peer = sushy(dir.path(), &cert, &key);
    std::thread::sleep(Duration::from_millis(500));
    let rss_before = [rss_mib(ours.child.id()), rss_mib(peer.child.id())];

    let basic = format!(
        "Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    let token = format!("X-Auth-Token: {}", session_token(&ours));

    println!("GET System over HTTPS, wrk, {seconds} s per row, same machine, same run");
    println!(
        "| auth | conns | kubevirt-bmc req/s | p50 ms | p99 ms | sushy-emulator req/s | p50 ms | p99 ms | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for connections in [1, 16] {
        let a = wrk(&ours, &basic, connections, seconds);
        let b = wrk(&peer, &basic, connections, seconds);
        println!(
            "| Basic | {connections} | {:.0} | {:.3} | {:.3} | {:.0} | {:.2} | {:.2} | {:.0}x |",
            a.rps,
            a.p50_ms,
            a.p99_ms,
            b.rps,
            b.p50_ms,
            b.p99_ms,
            a.rps / b.rps.max(0.001)
        );
    }
    for connections in [1, 16] {
        let a = wrk(&ours, &token, connections, seconds);
        println!(
            "| Session | {connections} | {:.0} | {:.3} | {:.3} | n/a (no SessionService) | | | |",
            a.rps, a.p50_ms, a.p99_ms
        );
    }
    let rss_after = [rss_mib(ours.child.id()), rss_mib(peer.child.id())];
    println!();
    println!("| RSS MiB | before | after |");
    println!("|---|---|---|");
    println!(
        "| kubevirt-bmc | {:.1} | {:.1} |",
        rss_before[0], rss_after[0]
    );
    println!(
        "| sushy-emulator | {:.1} | {:.1} |",
        rss_before[1], rss_after[1]
    );
}
