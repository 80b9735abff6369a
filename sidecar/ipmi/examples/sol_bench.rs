//! Serial-over-LAN benchmark against `kubevirt-bmc simulate` over loopback, RMCP+ cipher
//! suite 17: keystroke-to-echo latency (one character per SOL packet, wait for its echo)
//! and console throughput (200-character packets echoed back by the simulated console,
//! every output packet acknowledged). Prints a table.
//!
//!     cargo build --release -p kubevirt-bmc
//!     cargo run --release -p kubevirt-bmc-ipmi --example sol_bench -- \
//!         --bmc target/release/kubevirt-bmc [--seconds 5]

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kubevirt_bmc_ipmi::Privilege;
use kubevirt_bmc_ipmi::client::Client;
use kubevirt_bmc_ipmi::crypto::CipherSuite;
use kubevirt_bmc_ipmi::message::netfn;
use kubevirt_bmc_ipmi::v20::payload;

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

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn try_login(port: u16) -> Result<(UdpSocket, Client), String> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    socket
        .connect(("127.0.0.1", port))
        .map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut rng = rng(7);
    let suite = CipherSuite::by_id(17).unwrap();
    let mut client = Client::new(b"admin", b"password", suite, Privilege::Administrator, 77);
    let mut buf = [0u8; 2048];
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

fn call(socket: &UdpSocket, client: &mut Client, net_fn: u8, cmd: u8, data: &[u8]) -> u8 {
    socket
        .send(&client.request(net_fn, cmd, data, [5; 16]))
        .unwrap();
    let mut buf = [0u8; 2048];
    loop {
        let n = socket.recv(&mut buf).unwrap();
        if let Ok((payload::IPMI, _)) = client.open(&buf[..n]) {
            return client.response(&buf[..n]).unwrap().cc;
        }
    }
}

/// The SOL side of the console: sends characters, acknowledges output, collects echoes.
struct Sol<'a> {
    socket: &'a UdpSocket,
    client: &'a mut Client,
    seq: u8,
    acked: bool,
}

impl Sol<'_> {
    fn send(&mut self, data: &[u8]) {
        self.seq = if self.seq >= 15 { 1 } else { self.seq + 1 };
        let mut p = vec![self.seq, 0, 0, 0];
        p.extend_from_slice(data);
        self.acked = false;
        self.socket.send(&self.client.sol(&p, [9; 16])).unwrap();
    }

    /// Handles one datagram; returns the console output it carried.
    fn receive(&mut self) -> Vec<u8> {
        let mut buf = [0u8; 2048];
        let n = self.socket.recv(&mut buf).expect("SOL datagram in time");
        let Ok((payload::SOL, p)) = self.client.open(&buf[..n]) else {
            return Vec::new();
        };
        if p[1] == self.seq {
            self.acked = true;
        }
        if p[0] != 0 && p.len() > 4 {
            let ack = [0, p[0], (p.len() - 4) as u8, 0];
            self.socket.send(&self.client.sol(&ack, [9; 16])).unwrap();
            return p[4..].to_vec();
        }
        Vec::new()
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let mut bmc = "target/release/kubevirt-bmc".to_owned();
    let mut seconds = 5u64;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--bmc" => bmc = value,
            "--seconds" => seconds = value.parse().expect("--seconds N"),
            _ => panic!("unknown flag {flag}"),
        }
    }
    let port = free_port();
    let _bmc = Proc(
        Command::new(&bmc)
            .args(["simulate", "--ipmi-listen", &format!("127.0.0.1:{port}")])
            .args(["--redfish-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--password", "password", "--power-transition-ms", "0"])
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubevirt-bmc runs"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let (socket, mut client) = loop {
        match try_login(port) {
            Ok(pair) => break pair,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => panic!("login failed: {e}"),
        }
    };
    assert_eq!(call(&socket, &mut client, netfn::APP, 0x3B, &[4]), 0);
    assert_eq!(
        call(
            &socket,
            &mut client,
            netfn::APP,
            0x48,
            &[1, 1, 0xC0, 0, 0, 0]
        ),
        0
    );
    let mut sol = Sol {
        socket: &socket,
        client: &mut client,
        seq: 0,
        acked: true,
    };

    // Keystroke to echo: one character, wait until it comes back.
    let mut latencies = Vec::new();
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut key = b'a';
    while Instant::now() < end {
        let start = Instant::now();
        sol.send(&[key]);
        loop {
            let out = sol.receive();
            if out.contains(&key) && sol.acked {
                break;
            }
            if out.contains(&key) {
                // Echo seen before our ACK: wait for the ACK so sequence numbers stay in step.
                while !sol.acked {
                    sol.receive();
                }
                break;
            }
        }
        latencies.push(start.elapsed().as_secs_f64() * 1000.0);
        key = if key == b'z' { b'a' } else { key + 1 };
    }
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());

    // Throughput: 200-character packets, one outstanding at a time each way.
    let chunk = [b'x'; 200];
    let mut echoed = 0usize;
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    while Instant::now() < end {
        sol.send(&chunk);
        while !sol.acked {
            echoed += sol.receive().len();
        }
    }
    sol.socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let drain_end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < drain_end
        && let Ok(n) = sol.socket.recv(&mut buf)
    {
        if let Ok((payload::SOL, p)) = sol.client.open(&buf[..n])
            && p[0] != 0
        {
            echoed += p.len() - 4;
            let ack = [0, p[0], (p.len() - 4) as u8, 0];
            sol.socket.send(&sol.client.sol(&ack, [9; 16])).unwrap();
        }
    }
    let elapsed = start.elapsed().as_secs_f64();

    println!("| measure | value |");
    println!("|---|---|");
    println!("| keystrokes echoed | {} |", latencies.len());
    println!(
        "| echo latency p50 | {:.3} ms |",
        percentile(&latencies, 0.5)
    );
    println!(
        "| echo latency p99 | {:.3} ms |",
        percentile(&latencies, 0.99)
    );
    println!(
        "| console throughput (echoed, both directions through SOL) | {:.0} bytes/s |",
        echoed as f64 / elapsed
    );
}
