//! The comparison table (`e2e/bench.sh`): our `kubevirt-bmc simulate` against the pyghmi
//! BMC (VirtualBMC's engine) and sushy-emulator's fake driver over HTTPS, plus the webhook's
//! admission latency, all from release binaries in one run, one client per protocol for
//! both sides. Prints one Markdown table with the machine it ran on.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use kubevirt_bmc_e2e::bench::cpu::{self, CpuPerRequest};
use kubevirt_bmc_e2e::bench::https::{self, Connection};
use kubevirt_bmc_e2e::bench::ipmi;
use kubevirt_bmc_e2e::bench::pki::Pki;
use kubevirt_bmc_e2e::bench::procs::{self, MachineInfo, Proc, mib};
use kubevirt_bmc_e2e::bench::stats::{Latencies, Row};
use kubevirt_bmc_e2e::bench::{self, wrk};

const PASSWORD: &str = "bench-password";
/// pyghmi's BMC offers RMCP+ with cipher suite 3 only, so both sides are measured with it.
const SUITE: u8 = 3;
const SUSHY_SYSTEM: &str = "/redfish/v1/Systems/27946b59-9e44-4fa7-8e91-f3527a1ef094";
const OUR_SYSTEM: &str = "/redfish/v1/Systems/bench-vm";

#[derive(Debug, Parser)]
#[command(about = "Measure kubevirt-bmc against its peers and print the comparison table")]
struct Args {
    /// Seconds per measured cell.
    #[arg(long, env = "KUBEVIRT_BMC_BENCH_SECONDS", default_value_t = 5)]
    seconds: u64,
    /// Directory holding the release binaries kubevirt-bmc and kubevirt-bmc-webhook.
    #[arg(long, env = "KUBEVIRT_BMC_BENCH_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Python venv with pyghmi and sushy-tools (e2e/setup.sh makes it).
    #[arg(long, env = "KUBEVIRT_BMC_VENV")]
    venv: Option<PathBuf>,
    /// Seconds every server sits idle while its CPU time is watched.
    #[arg(long, env = "KUBEVIRT_BMC_BENCH_IDLE_SECONDS", default_value_t = 30)]
    idle_seconds: u64,
    /// `ipmitool -I lanplus power status` runs per IPMI server for the CPU-per-session row.
    /// /proc/PID/stat counts CPU time in 10 ms clock ticks, so each row is good to one tick
    /// over this many sessions: 10 µs per session at 1000 (at 400 the floor rows rested on
    /// 4-8 ticks, a 12-25 % step).
    #[arg(
        long,
        env = "KUBEVIRT_BMC_BENCH_IPMITOOL_SESSIONS",
        default_value_t = 1000
    )]
    ipmitool_sessions: u64,
}

struct Servers {
    ours: Proc,
    pyghmi: Proc,
    sushy: Proc,
    webhook: Proc,
    ours_ipmi: SocketAddr,
    ours_redfish: SocketAddr,
    pyghmi_ipmi: SocketAddr,
    sushy_redfish: SocketAddr,
    webhook_addr: SocketAddr,
    floor_bin: PathBuf,
    floor_tokio: (Proc, SocketAddr),
    floor_blocking: (Proc, SocketAddr),
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// sushy-emulator with the peers' fake-driver config, TLS and a bcrypt auth file of cost 4
/// (bcrypt's minimum: sushy checks the hash on every request, and at the default cost 12 it
/// manages about 1 req/s, which would measure bcrypt rather than the server).
fn sushy(venv: &Path, pki: &Pki, dir: &Path) -> anyhow::Result<(Proc, u16)> {
    let peers = bench::repo_root().join("e2e/testdata/peers");
    let original = std::fs::read_to_string(peers.join("sushy-emulator-fake.conf"))
        .context("e2e/testdata/peers/sushy-emulator-fake.conf")?;
    let hash = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            &format!(
                "import bcrypt; print(bcrypt.hashpw(b'{PASSWORD}', bcrypt.gensalt(rounds=4)).decode())"
            ),
        ])
        .output()
        .context("the venv's python with bcrypt (run e2e/setup.sh)")?;
    anyhow::ensure!(hash.status.success(), "bcrypt hash: {hash:?}");
    let htpasswd = dir.join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!("admin:{}\n", String::from_utf8_lossy(&hash.stdout).trim()),
    )?;
    let port = procs::free_tcp_port()?;
    let config = dir.join("sushy.conf");
    std::fs::write(
        &config,
        format!(
            "{original}\nSUSHY_EMULATOR_LISTEN_PORT = {port}\nSUSHY_EMULATOR_SSL_CERT = '{}'\n\
             SUSHY_EMULATOR_SSL_KEY = '{}'\nSUSHY_EMULATOR_AUTH_FILE = '{}'\n",
            pki.cert.display(),
            pki.key.display(),
            htpasswd.display()
        ),
    )?;
    let mut command = Command::new(venv.join("bin/sushy-emulator"));
    command.arg("--config").arg(&config);
    Ok((Proc::spawn("sushy-emulator", command)?, port))
}

fn start(bin_dir: &Path, venv: &Path, pki: &Pki, dir: &Path) -> anyhow::Result<Servers> {
    let bmc = procs::built_binary(bin_dir, "kubevirt-bmc")?;
    let webhook_bin = procs::built_binary(bin_dir, "kubevirt-bmc-webhook")?;

    let (ipmi_port, redfish_port) = (procs::free_udp_port()?, procs::free_tcp_port()?);
    let mut command = procs::simulate_command(&bmc, ipmi_port, redfish_port, PASSWORD, pki);
    // Instant power transitions: the table measures the protocol servers, not a fake delay.
    command.args(["--power-transition-ms", "0"]);
    let mut ours = Proc::spawn("kubevirt-bmc simulate", command)?;
    ours.wait_tcp(redfish_port)?;

    let pyghmi_port = procs::free_udp_port()?;
    let mut command = Command::new(venv.join("bin/python"));
    command
        .arg(bench::repo_root().join("e2e/testdata/peers/fake_ipmi_bmc.py"))
        .args(["--address", "127.0.0.1", "--port", &pyghmi_port.to_string()])
        .args(["--user", "admin", "--password", PASSWORD]);
    let pyghmi = Proc::spawn("pyghmi BMC", command)?;

    let (mut sushy, sushy_port) = sushy(venv, pki, dir)?;
    sushy.wait_tcp(sushy_port)?;

    let webhook_port = procs::free_tcp_port()?;
    let mut command = Command::new(webhook_bin);
    command
        .args([
            "--no-controller",
            "--listen",
            &format!("127.0.0.1:{webhook_port}"),
        ])
        .arg("--tls-cert")
        .arg(&pki.cert)
        .arg("--tls-key")
        .arg(&pki.key)
        .args(["--sidecar-image", "kubevirt-bmc:bench"])
        .env("RUST_LOG", "warn");
    let mut webhook = Proc::spawn("kubevirt-bmc-webhook", command)?;
    webhook.wait_tcp(webhook_port)?;

    let floor_bin = procs::built_binary(bin_dir, "kubevirt-bmc-udp-floor")?;
    let floor = |io: &str| -> anyhow::Result<(Proc, SocketAddr)> {
        let addr = loopback(procs::free_udp_port()?);
        let mut command = Command::new(&floor_bin);
        command.args(["serve", "--listen", &addr.to_string(), "--io", io]);
        Ok((
            Proc::spawn(&format!("UDP echo floor ({io})"), command)?,
            addr,
        ))
    };
    let (floor_tokio, floor_blocking) = (floor("tokio")?, floor("blocking")?);

    Ok(Servers {
        ours,
        pyghmi,
        sushy,
        webhook,
        ours_ipmi: loopback(ipmi_port),
        ours_redfish: loopback(redfish_port),
        pyghmi_ipmi: loopback(pyghmi_port),
        sushy_redfish: loopback(sushy_port),
        webhook_addr: loopback(webhook_port),
        floor_tokio,
        floor_blocking,
        floor_bin,
    })
}

/// One request through our HTTPS client, so both Redfish servers have served before the
/// idle RSS is read.
async fn warm_redfish(addr: SocketAddr, path: &str, pki: &Pki) -> anyhow::Result<()> {
    Ok(https::warm_up(addr, pki.client.clone(), path, "admin", PASSWORD).await?)
}

/// A Redfish session token from our BMC (sushy-emulator has no SessionService).
async fn session_token(addr: SocketAddr, pki: &Pki) -> anyhow::Result<String> {
    let mut connection = Connection::connect(addr, pki.client.clone()).await?;
    let body = format!(r#"{{"UserName": "admin", "Password": "{PASSWORD}"}}"#);
    let response = connection
        .send(
            http::Method::POST,
            "/redfish/v1/SessionService/Sessions",
            &[],
            Bytes::from(body),
        )
        .await?;
    anyhow::ensure!(response.status.is_success(), "login: {}", response.status);
    let token = response
        .headers
        .get("x-auth-token")
        .context("the login answered no X-Auth-Token")?;
    Ok(token.to_str()?.to_owned())
}

/// AdmissionReviews posted back to back on `connections` keep-alive HTTPS connections.
async fn admission(
    addr: SocketAddr,
    pki: &Pki,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Row> {
    let review = std::fs::read(
        bench::repo_root().join("e2e/testdata/fixtures/admissionreview-a-vm1-optin.json"),
    )
    .context("e2e/testdata/fixtures/admissionreview-a-vm1-optin.json")?;
    let review = Bytes::from(review);
    let mut clients = Vec::new();
    for _ in 0..connections {
        let mut c = Connection::connect(addr, pki.client.clone()).await?;
        for _ in 0..50 {
            c.send(
                http::Method::POST,
                "/mutate-pods?timeout=5s",
                &[],
                review.clone(),
            )
            .await?; // warm-up
        }
        clients.push(c);
    }
    let start = Instant::now();
    let end = start + duration;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let review = review.clone();
            tokio::spawn(async move {
                let mut latencies = Latencies::default();
                let mut errors = 0u64;
                while Instant::now() < end {
                    let sent = Instant::now();
                    match c
                        .send(
                            http::Method::POST,
                            "/mutate-pods?timeout=5s",
                            &[],
                            review.clone(),
                        )
                        .await
                    {
                        // The opted-in review must come back with the sidecar patch.
                        Ok(r)
                            if r.status == 200 && r.body.windows(7).any(|w| w == b"\"patch\"") =>
                        {
                            latencies.push(sent.elapsed())
                        }
                        _ => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut all = Latencies::default();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    Ok(Row::from_latencies(all, start.elapsed(), errors))
}

fn ratio(ours: f64, peer: f64) -> String {
    if peer > 0.0 && ours.is_finite() && peer.is_finite() {
        format!("{:.2}x", ours / peer)
    } else {
        "n/a".to_owned()
    }
}

struct Table {
    lines: Vec<String>,
    errors: Vec<String>,
    /// Errors of our side: these fail the command; a peer's are only reported.
    ours_failed: bool,
}

impl Table {
    fn new() -> Table {
        Table {
            lines: vec![
                "| measure | kubevirt-bmc | peer | peer value | ours/peer |".to_owned(),
                "|---|---|---|---|---|".to_owned(),
            ],
            errors: Vec::new(),
            ours_failed: false,
        }
    }

    fn compared(&mut self, what: &str, ours: &Row, peer_name: &str, peer: &Row) {
        self.lines.push(format!(
            "| {what} req/s | {:.0} | {peer_name} | {:.0} | {} |",
            ours.rps,
            peer.rps,
            ratio(ours.rps, peer.rps)
        ));
        self.lines.push(format!(
            "| {what} p99 ms | {:.3} | {peer_name} | {:.3} | {} |",
            ours.p99_ms,
            peer.p99_ms,
            ratio(ours.p99_ms, peer.p99_ms)
        ));
        self.note_errors(what, "kubevirt-bmc", ours);
        self.note_errors(what, peer_name, peer);
    }

    fn alone(&mut self, what: &str, ours: &Row, why: &str) {
        self.lines.push(format!(
            "| {what} req/s | {:.0} | {why} | | no peer |",
            ours.rps
        ));
        self.lines.push(format!(
            "| {what} p99 ms | {:.3} | {why} | | no peer |",
            ours.p99_ms
        ));
        self.note_errors(what, "kubevirt-bmc", ours);
    }

    fn note_errors(&mut self, what: &str, who: &str, row: &Row) {
        if row.errors > 0 {
            self.ours_failed |= who == "kubevirt-bmc";
            self.errors
                .push(format!("{what}: {who} had {} error(s)", row.errors));
        }
    }
}

fn rss(proc: &Proc) -> anyhow::Result<u64> {
    proc.rss_kib()
        .with_context(|| format!("no VmRSS for {}", proc.name))
}

fn anonymous(proc: &Proc) -> anyhow::Result<u64> {
    cpu::anonymous_kib(proc.pid())
        .with_context(|| format!("no /proc/PID/smaps_rollup for {}", proc.name))
}

fn ticks(proc: &Proc) -> anyhow::Result<u64> {
    cpu::cpu_ticks(proc.pid()).with_context(|| format!("no /proc/PID/stat for {}", proc.name))
}

/// wrk against `url` with the CPU time `server` spent meanwhile charged to its requests.
fn wrk_charged(
    server: &Proc,
    url: &str,
    header: &str,
    connections: u32,
    seconds: u64,
    hz: u64,
) -> anyhow::Result<(Row, CpuPerRequest)> {
    let before = ticks(server)?;
    let row = wrk::run(url, header, connections, seconds)?;
    let spent = ticks(server)?.saturating_sub(before);
    Ok((
        row,
        CpuPerRequest {
            ticks: spent,
            requests: row.requests,
            ticks_per_second: hz,
        },
    ))
}

/// Client runs (ipmitool sessions, or the floor's client processes), with the CPU time
/// `server` spent on them.
async fn sessions_charged(
    server: &Proc,
    runs: impl std::future::Future<Output = Result<cpu::SessionRuns, bench::BenchError>>,
) -> anyhow::Result<(cpu::SessionRuns, CpuPerRequest)> {
    let hz = cpu::ticks_per_second();
    let (runs, spent) = cpu::charge(server.pid(), runs).await?;
    Ok((
        runs,
        CpuPerRequest {
            ticks: spent,
            requests: runs.ok,
            ticks_per_second: hz,
        },
    ))
}

/// Two at a time: a session is mostly its client starting up and waiting for answers.
const PARALLEL_SESSIONS: u64 = 2;

impl Table {
    /// A per-request CPU row: ours against the peer, lower is better.
    fn cpu(&mut self, what: &str, ours: &CpuPerRequest, peer_name: &str, peer: &CpuPerRequest) {
        self.lines.push(format!(
            "| {what}, server CPU µs per request | {} | {peer_name} | {} | {} |",
            ours.describe(),
            peer.describe(),
            ratio(ours.micros(), peer.micros())
        ));
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    let bin_dir = args.bin_dir.clone().unwrap_or_else(bench::bin_dir);
    let venv = args
        .venv
        .clone()
        .unwrap_or_else(|| bench::repo_root().join("target/venv"));
    let cell = Duration::from_secs(args.seconds);
    let before = MachineInfo::now();
    let started = std::time::SystemTime::now();

    let pki = Pki::new()?;
    let dir = tempfile::tempdir()?;
    let mut s = start(&bin_dir, &venv, &pki, dir.path())?;
    ipmi::wait_ready(s.ours_ipmi, SUITE, PASSWORD).await?;
    ipmi::wait_ready(s.pyghmi_ipmi, SUITE, PASSWORD).await?;
    warm_redfish(s.ours_redfish, OUR_SYSTEM, &pki).await?;
    warm_redfish(s.sushy_redfish, SUSHY_SYSTEM, &pki).await?;
    admission(s.webhook_addr, &pki, 1, Duration::from_millis(100)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = [
        rss(&s.ours)?,
        rss(&s.pyghmi)?,
        rss(&s.sushy)?,
        rss(&s.webhook)?,
    ];
    let idle_anonymous = [
        anonymous(&s.ours)?,
        anonymous(&s.pyghmi)?,
        anonymous(&s.sushy)?,
    ];
    // Nothing talks to any server now: a BMC with no timers firing spends no CPU at all.
    let idle_before = [ticks(&s.ours)?, ticks(&s.pyghmi)?, ticks(&s.sushy)?];
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let idle_after = [ticks(&s.ours)?, ticks(&s.pyghmi)?, ticks(&s.sushy)?];
    let idle_ticks: Vec<u64> = idle_after
        .iter()
        .zip(idle_before)
        .map(|(a, b)| a.saturating_sub(b))
        .collect();
    let hz = cpu::ticks_per_second();

    let mut table = Table::new();
    let ipmitool = |bmc| {
        cpu::ipmitool_sessions(
            bmc,
            SUITE,
            PASSWORD,
            args.ipmitool_sessions,
            PARALLEL_SESSIONS,
        )
    };
    let (ours_runs, ours_session) = sessions_charged(&s.ours, ipmitool(s.ours_ipmi)).await?;
    let (peer_runs, peer_session) = sessions_charged(&s.pyghmi, ipmitool(s.pyghmi_ipmi)).await?;
    table.cpu(
        "`ipmitool -I lanplus -C 3 power status` session (login, command, close)",
        &ours_session,
        "pyghmi BMC",
        &peer_session,
    );
    let mut client_runs = vec![("kubevirt-bmc", ours_runs), ("pyghmi BMC", peer_runs)];
    for (floor, io, who) in [
        (
            &s.floor_tokio,
            "a current-thread tokio runtime, as ours",
            "floor (tokio)",
        ),
        (
            &s.floor_blocking,
            "a thread blocked in recvfrom",
            "floor (blocking)",
        ),
    ] {
        let runs = cpu::floor_sessions(
            s.floor_bin.clone(),
            floor.1,
            args.ipmitool_sessions,
            PARALLEL_SESSIONS,
        );
        let (runs, spent) = sessions_charged(&floor.0, runs).await?;
        table.cpu(
            &format!(
                "floor: bare UDP echo on {io}, the same 11 round trips per client process with ipmitool's pauses (no IPMI)"
            ),
            &spent,
            "pyghmi BMC session",
            &peer_session,
        );
        client_runs.push((who, runs));
    }
    for (who, runs) in client_runs {
        if runs.errors > 0 {
            table.ours_failed |= who == "kubevirt-bmc";
            table.errors.push(format!(
                "ipmitool power status: {who} failed {} of {} runs",
                runs.errors,
                runs.errors + runs.ok
            ));
        }
    }
    for sessions in [1usize, 16] {
        let (ours, ours_ticks) = cpu::charge(
            s.ours.pid(),
            ipmi::throughput(s.ours_ipmi, sessions, cell, SUITE, PASSWORD),
        )
        .await?;
        let (peer, peer_ticks) = cpu::charge(
            s.pyghmi.pid(),
            ipmi::throughput(s.pyghmi_ipmi, sessions, cell, SUITE, PASSWORD),
        )
        .await?;
        let label = if sessions == 1 { "session" } else { "sessions" };
        let what = format!("IPMI Get Chassis Status, {sessions} {label}");
        table.compared(&what, &ours, "pyghmi BMC", &peer);
        // The logins are part of the measured span, but a handful against thousands of
        // requests.
        let per = |ticks, row: &Row| CpuPerRequest {
            ticks,
            requests: row.requests,
            ticks_per_second: hz,
        };
        table.cpu(
            &what,
            &per(ours_ticks, &ours),
            "pyghmi BMC",
            &per(peer_ticks, &peer),
        );
    }
    let basic = format!("Authorization: {}", https::basic_auth("admin", PASSWORD));
    // The same resource for every Redfish cell, both passes.
    let our_system = format!("https://{}{OUR_SYSTEM}", s.ours_redfish);
    let sushy_system = format!("https://{}{SUSHY_SYSTEM}", s.sushy_redfish);
    for connections in [1u32, 16] {
        let (ours, ours_cpu) =
            wrk_charged(&s.ours, &our_system, &basic, connections, args.seconds, hz)?;
        let (peer, peer_cpu) = wrk_charged(
            &s.sushy,
            &sushy_system,
            &basic,
            connections,
            args.seconds,
            hz,
        )?;
        let label = if connections == 1 {
            "connection"
        } else {
            "connections"
        };
        let what = format!("Redfish HTTPS GET System, Basic, {connections} {label}");
        table.compared(&what, &ours, "sushy-emulator", &peer);
        table.cpu(&what, &ours_cpu, "sushy-emulator", &peer_cpu);
    }
    let token = format!(
        "X-Auth-Token: {}",
        session_token(s.ours_redfish, &pki).await?
    );
    for connections in [1u32, 16] {
        let ours = wrk::run(&our_system, &token, connections, args.seconds)?;
        table.alone(
            &format!("Redfish HTTPS GET System, session token, {connections} conn."),
            &ours,
            "no peer: sushy-emulator has no SessionService",
        );
    }
    for connections in [1usize, 16] {
        let ours = admission(s.webhook_addr, &pki, connections, cell).await?;
        table.alone(
            &format!("webhook admission over HTTPS, {connections} conn."),
            &ours,
            "no peer",
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for p in [
        &mut s.ours,
        &mut s.pyghmi,
        &mut s.sushy,
        &mut s.webhook,
        &mut s.floor_tokio.0,
        &mut s.floor_blocking.0,
    ] {
        p.check_alive()?;
    }
    let after = [
        rss(&s.ours)?,
        rss(&s.pyghmi)?,
        rss(&s.sushy)?,
        rss(&s.webhook)?,
    ];
    let after_anonymous = [
        anonymous(&s.ours)?,
        anonymous(&s.pyghmi)?,
        anonymous(&s.sushy)?,
    ];
    // The heaviest cells once more: memory flat under load stays where the first pass left
    // it; a leak, or a heap that keeps growing under the same load, shows as a step up.
    let second_pass = "second pass of the 16-session and 16-connection cells";
    for (what, who, row) in [
        (
            "IPMI",
            "kubevirt-bmc",
            ipmi::throughput(s.ours_ipmi, 16, cell, SUITE, PASSWORD).await?,
        ),
        (
            "IPMI",
            "pyghmi BMC",
            ipmi::throughput(s.pyghmi_ipmi, 16, cell, SUITE, PASSWORD).await?,
        ),
        (
            "Redfish",
            "kubevirt-bmc",
            wrk::run(&our_system, &basic, 16, args.seconds)?,
        ),
        (
            "Redfish",
            "sushy-emulator",
            wrk::run(&sushy_system, &basic, 16, args.seconds)?,
        ),
    ] {
        table.note_errors(&format!("{what}, {second_pass}"), who, &row);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second_anonymous = [
        anonymous(&s.ours)?,
        anonymous(&s.pyghmi)?,
        anonymous(&s.sushy)?,
    ];
    for (what, rss) in [("idle RSS MiB", idle), ("after-load RSS MiB", after)] {
        let peers = rss[1] + rss[2];
        table.lines.push(format!(
            "| {what} (one process: IPMI + Redfish) | {:.1} | pyghmi BMC + sushy-emulator | {:.1} + {:.1} = {:.1} | {} |",
            mib(rss[0]),
            mib(rss[1]),
            mib(rss[2]),
            mib(peers),
            ratio(rss[0] as f64, peers as f64)
        ));
    }
    let after_second_pass = format!("anonymous memory MiB after a {second_pass}");
    for (what, kib) in [
        ("idle anonymous memory MiB", idle_anonymous),
        ("after-load anonymous memory MiB", after_anonymous),
        (after_second_pass.as_str(), second_anonymous),
    ] {
        let peers = kib[1] + kib[2];
        table.lines.push(format!(
            "| {what} (heap and stacks: what each more copy adds) | {:.2} | pyghmi BMC + sushy-emulator | {:.2} + {:.2} = {:.2} | {} |",
            mib(kib[0]),
            mib(kib[1]),
            mib(kib[2]),
            mib(peers),
            ratio(kib[0] as f64, peers as f64)
        ));
    }
    table.lines.push(format!(
        "| idle CPU clock ticks in {} s (1 tick = {:.0} ms) | {} | pyghmi BMC + sushy-emulator | {} + {} | no ratio |",
        args.idle_seconds,
        1000.0 / hz as f64,
        idle_ticks[0],
        idle_ticks[1],
        idle_ticks[2]
    ));
    table.lines.push(format!(
        "| webhook RSS MiB, idle / after load | {:.1} / {:.1} | no peer | | no peer |",
        mib(idle[3]),
        mib(after[3])
    ));

    let end = MachineInfo::now();
    let date = started
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!(
        "Machine: {} cores (nproc), {}; load average {} before, {} after. Unix time {date}, {} s per cell.",
        before.cores, before.cpu_model, before.load_average, end.load_average, args.seconds
    );
    println!();
    println!("{}", table.lines.join("\n"));
    println!();
    println!(
        "IPMI: RMCP+ cipher suite 3 (the only one pyghmi offers), our Rust client for both. \
         Redfish: wrk over HTTPS keep-alive for both. Server CPU: the server process's \
         utime + stime (/proc/PID/stat) over the cell divided by the requests answered, \
         with the clock ticks and requests it rests on. ours/peer above 1 is better for \
         req/s, below 1 is better for p99, CPU and memory."
    );
    if table.errors.is_empty() {
        println!("Errors: none (every request answered with success).");
    } else {
        println!("Errors: {}.", table.errors.join("; "));
    }
    anyhow::ensure!(!table.ours_failed, "kubevirt-bmc failed requests");
    Ok(())
}
