//! IPMI benchmark: Get Chassis Status round trips over RMCP+ (cipher suite 3) against
//! `kubevirt-bmc simulate` and the pyghmi-based peer BMC, with the same client in the same
//! run; one session, then 16 concurrent sessions. Prints a table with the ratio, and the
//! idle and after-load RSS of `kubevirt-bmc simulate`.
//!
//!     cargo build --release -p kubevirt-bmc
//!     cargo run --release -p kubevirt-bmc-ipmi --example bench -- \
//!         --bmc target/release/kubevirt-bmc \
//!         --python target/venv/bin/python \
//!         --peer e2e/testdata/peers/fake_ipmi_bmc.py [--seconds 5]

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kubevirt_bmc_ipmi::Privilege;
use kubevirt_bmc_ipmi::client::Client;
use kubevirt_bmc_ipmi::crypto::CipherSuite;
use kubevirt_bmc_ipmi::message::netfn;

struct Args {
    bmc: String,
    python: String,
    peer: String,
    seconds: u64,
}

fn args() -> Args {
    let mut a = Args {
        bmc: "target/release/kubevirt-bmc".into(),
        python: "target/venv/bin/python".into(),
        peer: "e2e/testdata/peers/fake_ipmi_bmc.py".into(),
        seconds: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--bmc" => a.bmc = value,
            "--python" => a.python = value,
            "--peer" => a.peer = value,
            "--seconds" => a.seconds = value.parse().expect("--seconds N"),
            _ => panic!("unknown flag {flag}"),
        }
    }
    a
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rng(seed: u32) -> impl FnMut(&mut [u8]) {
    let mut n = seed;
    move |b: &mut [u8]| {
        for x in b {
            n = n.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *x = (n >> 16) as u8;
        }
    }
}

/// Logs in with suite 3 and returns the socket and client; retries while the BMC starts.
fn login(port: u16, seed: u32) -> (UdpSocket, Client) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match try_login(port, seed) {
            Ok(pair) => return pair,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("login to port {port} failed: {e}"),
        }
    }
}

fn try_login(port: u16, seed: u32) -> Result<(UdpSocket, Client), String> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    socket
        .connect(("127.0.0.1", port))
        .map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut rng = rng(seed);
    let suite = CipherSuite::by_id(3).unwrap();
    let mut client = Client::new(
        b"admin",
        b"password",
        suite,
        Privilege::Administrator,
        seed | 1,
    );
    let mut buf = [0u8; 1024];
    let mut exchange = |d: &[u8]| -> Result<Vec<u8>, String> {
        socket.send(d).map_err(|e| e.to_string())?;
        let n = socket.recv(&mut buf).map_err(|e| e.to_string())?;
        Ok(buf[..n].to_vec())
    };
    let rsp = exchange(&client.open_session_request())?;
    let rakp1 = client
        .on_open_session_response(&rsp, &mut rng)
        .map_err(|e| e.to_string())?;
    let rakp2 = exchange(&rakp1)?;
    let rakp3 = client.on_rakp2(&rakp2).map_err(|e| e.to_string())?;
    let rakp4 = exchange(&rakp3)?;
    client.on_rakp4(&rakp4).map_err(|e| e.to_string())?;
    Ok((socket, client))
}

/// Sequential Get Chassis Status for `duration`; latencies in microseconds, and errors.
fn hammer(
    socket: &UdpSocket,
    client: &mut Client,
    duration: Duration,
    seed: u32,
) -> (Vec<u32>, u32) {
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut rng = rng(seed);
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut buf = [0u8; 1024];
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let mut iv = [0u8; 16];
        rng(&mut iv);
        let datagram = client.request(netfn::CHASSIS, 0x01, &[], iv);
        let start = Instant::now();
        socket.send(&datagram).unwrap();
        match socket.recv(&mut buf) {
            Ok(n) => match client.response(&buf[..n]) {
                Ok(r) if r.cc == 0 && r.cmd == 0x01 => {
                    latencies.push(start.elapsed().as_micros() as u32)
                }
                _ => errors += 1,
            },
            Err(_) => errors += 1,
        }
    }
    (latencies, errors)
}

struct Row {
    rps: f64,
    p50: f64,
    p99: f64,
    errors: u32,
}

fn run(port: u16, sessions: usize, seconds: u64) -> Row {
    let clients: Vec<_> = (0..sessions)
        .map(|i| login(port, 1000 + i as u32))
        .collect();
    let duration = Duration::from_secs(seconds);
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, (socket, mut client))| {
            std::thread::spawn(move || hammer(&socket, &mut client, duration, i as u32))
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (l, e) = h.join().unwrap();
        all.extend(l);
        errors += e;
    }
    all.sort_unstable();
    let pct = |p: f64| {
        if all.is_empty() {
            f64::NAN
        } else {
            all[((all.len() - 1) as f64 * p) as usize] as f64 / 1000.0
        }
    };
    Row {
        rps: all.len() as f64 / seconds as f64,
        p50: pct(0.50),
        p99: pct(0.99),
        errors,
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let a = args();
    let ours_port = free_port();
    let ours = Proc(
        Command::new(&a.bmc)
            .args([
                "simulate",
                "--ipmi-listen",
                &format!("127.0.0.1:{ours_port}"),
            ])
            .args(["--redfish-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--power-transition-ms", "0", "--password", "password"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubevirt-bmc starts (build it with --release first)"),
    );
    let peer_port = free_port();
    let peer = Proc(
        Command::new(&a.python)
            .arg(&a.peer)
            .args(["--address", "127.0.0.1", "--port", &peer_port.to_string()])
            .args(["--user", "admin", "--password", "password"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the pyghmi peer starts"),
    );
    // Idle: started, one login done (so the sockets are warm), then a pause.
    drop(login(ours_port, 1));
    drop(login(peer_port, 2));
    std::thread::sleep(Duration::from_secs(1));
    let idle = rss_kib(ours.0.id());
    let peer_idle = rss_kib(peer.0.id());

    let mut rows = Vec::new();
    for sessions in [1usize, 16] {
        let o = run(ours_port, sessions, a.seconds);
        let p = run(peer_port, sessions, a.seconds);
        rows.push((sessions, o, p));
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(ours.0.id());

    println!(
        "IPMI Get Chassis Status, RMCP+ cipher suite 3, {} s per cell, same client",
        a.seconds
    );
    println!();
    println!("| sessions | BMC | req/s | p50 ms | p99 ms | errors |");
    println!("|---|---|---|---|---|---|");
    for (s, o, p) in &rows {
        println!(
            "| {s} | kubevirt-bmc | {:.0} | {:.3} | {:.3} | {} |",
            o.rps, o.p50, o.p99, o.errors
        );
        println!(
            "| {s} | pyghmi peer | {:.0} | {:.3} | {:.3} | {} |",
            p.rps, p.p50, p.p99, p.errors
        );
        println!("| {s} | **ratio** | **{:.1}x** | | | |", o.rps / p.rps);
    }
    println!();
    println!(
        "kubevirt-bmc simulate RSS: idle {:.1} MiB, after the bench {:.1} MiB (growth {:+.2} MiB); pyghmi peer idle {:.1} MiB",
        idle as f64 / 1024.0,
        after as f64 / 1024.0,
        (after as f64 - idle as f64) / 1024.0,
        peer_idle as f64 / 1024.0
    );
    drop(peer);
    drop(ours);
}
