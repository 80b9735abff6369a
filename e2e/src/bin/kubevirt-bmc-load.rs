//! The load command (`e2e/load.sh`): many concurrent IPMI lanplus sessions and Redfish
//! HTTPS clients against one `kubevirt-bmc simulate` (release) for a while. Reports
//! requests, errors by kind, p50/p99 and the BMC's RSS before, during and after; exits
//! non-zero on any error or when memory grows beyond the limits below.
//!
//! Memory limits, and why:
//! * steady: under a constant set of sessions and connections nothing should accumulate,
//!   so RSS at the end of the load may exceed RSS a quarter into it by allocator noise
//!   only (`--steady-growth-limit-mib`, default 2 MiB);
//! * after: once every client has gone, RSS may stay above the idle RSS by what the
//!   allocator keeps from the peak working set, which is bounded by the load's size:
//!   100 TLS connections x (rustls's two 16 KiB record buffers + hyper's read buffer, up to
//!   ~64 KiB each) ~= 8 MiB, plus 1024 session slots (< 1 MiB). Hence
//!   `--rss-growth-limit-mib`, default 12 MiB; a leak of even 100 bytes per request
//!   (millions of requests in 60 s) exceeds it many times over.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use kubevirt_bmc_e2e::bench;
use kubevirt_bmc_e2e::bench::https::{self, Connection};
use kubevirt_bmc_e2e::bench::ipmi::{self, Patience, Session};
use kubevirt_bmc_e2e::bench::pki::Pki;
use kubevirt_bmc_e2e::bench::procs::{self, MachineInfo, Proc, mib};
use kubevirt_bmc_e2e::bench::stats::Latencies;

const PASSWORD: &str = "load-password";
const SYSTEM: &str = "/redfish/v1/Systems/bench-vm";
/// IPMI completion code "node busy": a power transition in progress.
const CC_BUSY: u8 = 0xC0;

#[derive(Debug, Parser)]
#[command(about = "Load one simulated BMC with IPMI sessions and Redfish clients")]
struct Args {
    /// How long the load runs, in seconds.
    #[arg(long, env = "KUBEVIRT_BMC_LOAD_SECONDS", default_value_t = 60)]
    seconds: u64,
    /// Concurrent IPMI lanplus sessions (cipher suites 17 and 3 alternate), 1 to 1024.
    #[arg(
        long,
        env = "KUBEVIRT_BMC_LOAD_IPMI_SESSIONS",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u16).range(1..=1024)
    )]
    ipmi_sessions: u16,
    /// Concurrent Redfish clients, each on its own keep-alive HTTPS connection.
    #[arg(long, env = "KUBEVIRT_BMC_LOAD_REDFISH_CLIENTS", default_value_t = 100)]
    redfish_clients: u32,
    /// How long an IPMI client waits for an answer before sending again (ipmitool: 1 s).
    #[arg(
        long,
        env = "KUBEVIRT_BMC_LOAD_IPMI_TIMEOUT_MS",
        default_value_t = 1000
    )]
    ipmi_timeout_ms: u64,
    /// How often an IPMI client sends again before it counts an error (ipmitool: 4).
    #[arg(long, env = "KUBEVIRT_BMC_LOAD_IPMI_RETRIES", default_value_t = 3)]
    ipmi_retries: u32,
    /// The simulated machine's power transition time (resets answer "busy" meanwhile).
    #[arg(
        long,
        env = "KUBEVIRT_BMC_LOAD_POWER_TRANSITION_MS",
        default_value_t = 300
    )]
    power_transition_ms: u64,
    /// Largest allowed RSS after the load minus RSS before it, in MiB (see the source).
    #[arg(
        long,
        env = "KUBEVIRT_BMC_LOAD_RSS_GROWTH_LIMIT_MIB",
        default_value_t = 12.0
    )]
    rss_growth_limit_mib: f64,
    /// Largest allowed RSS growth from a quarter into the load to its end, in MiB.
    #[arg(
        long,
        env = "KUBEVIRT_BMC_LOAD_STEADY_GROWTH_LIMIT_MIB",
        default_value_t = 2.0
    )]
    steady_growth_limit_mib: f64,
    /// Directory holding the release binary kubevirt-bmc.
    #[arg(long, env = "KUBEVIRT_BMC_BENCH_BIN_DIR")]
    bin_dir: Option<PathBuf>,
}

/// What one client saw.
#[derive(Default)]
struct Tally {
    ok: u64,
    busy: u64,
    errors: BTreeMap<String, u64>,
    latencies: Latencies,
    retransmits: u64,
    late_answers: u64,
    login_restarts: u64,
}

impl Tally {
    fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.busy += other.busy;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.latencies.extend(other.latencies);
        self.retransmits += other.retransmits;
        self.late_answers += other.late_answers;
        self.login_restarts += other.login_restarts;
    }

    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// The IPMI mix: what `ipmitool power status`, Ironic's power sync and a boot-device
/// check send. (Get Chassis Status is what `power status` sends; Get ACPI Power State and
/// Get System Boot Options parameter 5 are the other reads.)
const IPMI_MIX: [((u8, u8), &[u8], &str); 3] = [
    (ipmi::GET_CHASSIS_STATUS, &[], "Get Chassis Status"),
    (ipmi::GET_ACPI_POWER_STATE, &[], "Get ACPI Power State"),
    (
        ipmi::GET_SYSTEM_BOOT_OPTIONS,
        &[5, 0, 0],
        "Get System Boot Options",
    ),
];

async fn ipmi_client(bmc: SocketAddr, index: u64, patience: Patience, end: Instant) -> Tally {
    let mut tally = Tally::default();
    let suite = if index.is_multiple_of(2) { 17 } else { 3 };
    let (mut session, restarts) =
        match Session::login(bmc, suite, "admin", PASSWORD, index + 1, patience).await {
            Ok(s) => s,
            Err(e) => {
                tally.error(format!("IPMI login (suite {suite}): {}", e.kind()));
                return tally;
            }
        };
    tally.login_restarts = u64::from(restarts);
    if let Err(e) = session.raise_to_administrator().await {
        tally.error(format!("IPMI Set Session Privilege Level: {}", e.kind()));
    }
    let mut n = index as usize;
    while Instant::now() < end {
        let (command, data, name) = IPMI_MIX[n % IPMI_MIX.len()];
        n += 1;
        let sent = Instant::now();
        match session.call(command, data).await {
            Ok(r) if r.cc == 0 => {
                tally.ok += 1;
                tally.latencies.push(sent.elapsed());
            }
            Ok(r) if r.cc == CC_BUSY => tally.busy += 1,
            Ok(r) => tally.error(format!("IPMI {name}: completion code {:#04x}", r.cc)),
            Err(e) => tally.error(format!("IPMI {name}: {}", e.kind())),
        }
    }
    tally.retransmits = session.retransmits;
    tally.late_answers = session.late_answers;
    if let Err(e) = session.close().await {
        tally.error(format!("IPMI Close Session: {e}"));
    }
    tally
}

/// The Redfish mix, 20 requests per round: 18 GET System, one PATCH of the boot
/// override, one Reset (On and ForceOff alternating, so the machine really transitions).
async fn redfish_client(
    bmc: SocketAddr,
    pki: Arc<rustls::ClientConfig>,
    index: u64,
    end: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let auth = https::basic_auth("admin", PASSWORD);
    let headers = [("authorization", auth.as_str())];
    let mut connection = None;
    let mut n = index as usize;
    while Instant::now() < end {
        let c = match &mut connection {
            Some(c) => c,
            None => match Connection::connect(bmc, pki.clone()).await {
                Ok(c) => connection.insert(c),
                Err(e) => {
                    tally.error(format!("Redfish connect: {}", e.kind()));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let round = n / 20;
        let (method, path, body, name) = match n % 20 {
            0 => {
                let reset = if round.is_multiple_of(2) {
                    "On"
                } else {
                    "ForceOff"
                };
                (
                    http::Method::POST,
                    "/redfish/v1/Systems/bench-vm/Actions/ComputerSystem.Reset",
                    format!(r#"{{"ResetType": "{reset}"}}"#),
                    "POST Reset",
                )
            }
            10 => {
                let (target, enabled) = if round.is_multiple_of(2) {
                    ("Pxe", "Once")
                } else {
                    ("Hdd", "Continuous")
                };
                (
                    http::Method::PATCH,
                    SYSTEM,
                    format!(
                        r#"{{"Boot": {{"BootSourceOverrideTarget": "{target}", "BootSourceOverrideEnabled": "{enabled}"}}}}"#
                    ),
                    "PATCH Boot",
                )
            }
            _ => (http::Method::GET, SYSTEM, String::new(), "GET System"),
        };
        n += 1;
        let sent = Instant::now();
        match c.send(method, path, &headers, Bytes::from(body)).await {
            Ok(r) if r.status.is_success() => {
                tally.ok += 1;
                tally.latencies.push(sent.elapsed());
            }
            // The machine is between power states and says "retry" (Retry-After).
            Ok(r) if r.status == http::StatusCode::SERVICE_UNAVAILABLE => tally.busy += 1,
            Ok(r) => tally.error(format!("Redfish {name}: HTTP {}", r.status.as_u16())),
            Err(e) => {
                tally.error(format!("Redfish {name}: {}", e.kind()));
                connection = None;
            }
        }
    }
    tally
}

fn print_tally(what: &str, tally: &mut Tally, seconds: f64) {
    println!(
        "{what}: {} answered ({:.0}/s), {} busy, {} errors; p50 {:.2} ms, p99 {:.2} ms",
        tally.ok,
        tally.ok as f64 / seconds,
        tally.busy,
        tally.error_count(),
        tally.latencies.percentile_ms(0.50),
        tally.latencies.percentile_ms(0.99),
    );
    for (kind, count) in &tally.errors {
        println!("  error: {kind}: {count}");
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    let bin_dir = args.bin_dir.clone().unwrap_or_else(bench::bin_dir);
    let machine = MachineInfo::now();
    println!(
        "Machine: {} cores (nproc), {}; load average {}",
        machine.cores, machine.cpu_model, machine.load_average
    );
    println!(
        "Load: {} IPMI lanplus sessions (cipher suites 17 and 3 alternating) + {} Redfish HTTPS clients, {} s, against one kubevirt-bmc simulate (--ipmi-max-sessions 1024)",
        args.ipmi_sessions, args.redfish_clients, args.seconds
    );

    let pki = Pki::new()?;
    let binary = procs::built_binary(&bin_dir, "kubevirt-bmc")?;
    let (ipmi_port, redfish_port) = (procs::free_udp_port()?, procs::free_tcp_port()?);
    let mut command = procs::simulate_command(&binary, ipmi_port, redfish_port, PASSWORD, &pki);
    command.args(["--ipmi-max-sessions", "1024"]).args([
        "--power-transition-ms",
        &args.power_transition_ms.to_string(),
    ]);
    let mut bmc = Proc::spawn("kubevirt-bmc simulate", command)?;
    bmc.wait_tcp(redfish_port)?;
    let ipmi_addr = SocketAddr::from(([127, 0, 0, 1], ipmi_port));
    let redfish_addr = SocketAddr::from(([127, 0, 0, 1], redfish_port));
    ipmi::wait_ready(ipmi_addr, 17, PASSWORD).await?;
    https::warm_up(redfish_addr, pki.client.clone(), SYSTEM, "admin", PASSWORD).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = bmc.rss_kib().unwrap_or(0);
    let drops_before = procs::udp_socket_drops(ipmi_port).unwrap_or(0);
    let snmp_before = procs::udp_counters();

    let patience = Patience {
        timeout: Duration::from_millis(args.ipmi_timeout_ms),
        retries: args.ipmi_retries,
    };
    let start = Instant::now();
    let end = start + Duration::from_secs(args.seconds);
    let ipmi_tasks: Vec<_> = (0..u64::from(args.ipmi_sessions))
        .map(|i| tokio::spawn(ipmi_client(ipmi_addr, i, patience, end)))
        .collect();
    let redfish_tasks: Vec<_> = (0..u64::from(args.redfish_clients))
        .map(|i| tokio::spawn(redfish_client(redfish_addr, pki.client.clone(), i, end)))
        .collect();

    // RSS once a second while the load runs; the BMC dying ends the run at once.
    let pid = bmc.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                samples.push((start.elapsed(), procs::rss_kib(pid)));
            }
            samples
        })
    };
    let mut ipmi_tally = Tally::default();
    for t in ipmi_tasks {
        ipmi_tally.merge(t.await?);
    }
    let mut redfish_tally = Tally::default();
    for t in redfish_tasks {
        redfish_tally.merge(t.await?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await?;
    bmc.check_alive()?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = bmc.rss_kib().unwrap_or(0);
    let drops = procs::udp_socket_drops(ipmi_port).unwrap_or(0) - drops_before;
    let snmp_after = procs::udp_counters();

    let during: Vec<u64> = samples.iter().filter_map(|(_, r)| *r).collect();
    let peak = during.iter().copied().max().unwrap_or(0);
    let quarter = samples
        .iter()
        .find(|(t, _)| t.as_secs_f64() >= args.seconds as f64 / 4.0)
        .and_then(|(_, r)| *r)
        .unwrap_or(0);
    let last_loaded = samples
        .iter()
        .rev()
        .find(|(t, _)| t.as_secs() < args.seconds)
        .and_then(|(_, r)| *r)
        .unwrap_or(0);

    println!();
    print_tally("IPMI", &mut ipmi_tally, elapsed);
    println!(
        "  retransmissions {}, late answers {}, login restarts {}; datagrams the kernel dropped at the BMC's socket: {drops}",
        ipmi_tally.retransmits, ipmi_tally.late_answers, ipmi_tally.login_restarts
    );
    if let (Some((in0, rcv0)), Some((in1, rcv1))) = (snmp_before, snmp_after) {
        println!(
            "  system UDP: {} datagrams received, {} receive-buffer errors",
            in1 - in0,
            rcv1 - rcv0
        );
    }
    print_tally("Redfish", &mut redfish_tally, elapsed);
    let steady = last_loaded as f64 - quarter as f64;
    let growth = rss_after as f64 - rss_before as f64;
    println!(
        "BMC RSS: before {:.1} MiB, a quarter in {:.1} MiB, peak {:.1} MiB, end of load {:.1} MiB, after {:.1} MiB (growth {:+.1} MiB, steady {:+.1} MiB)",
        mib(rss_before),
        mib(quarter),
        mib(peak),
        mib(last_loaded),
        mib(rss_after),
        growth / 1024.0,
        steady / 1024.0
    );
    println!("load average after: {}", procs::load_average());

    let mut failures = Vec::new();
    let errors = ipmi_tally.error_count() + redfish_tally.error_count();
    if errors > 0 {
        failures.push(format!("{errors} error(s)"));
    }
    if growth / 1024.0 > args.rss_growth_limit_mib {
        failures.push(format!(
            "RSS grew {:.1} MiB (limit {} MiB)",
            growth / 1024.0,
            args.rss_growth_limit_mib
        ));
    }
    if steady / 1024.0 > args.steady_growth_limit_mib {
        failures.push(format!(
            "RSS grew {:.1} MiB under steady load (limit {} MiB)",
            steady / 1024.0,
            args.steady_growth_limit_mib
        ));
    }
    if failures.is_empty() {
        println!("PASS: zero errors, memory flat");
        Ok(())
    } else {
        println!("FAIL: {}", failures.join("; "));
        anyhow::bail!("the load failed: {}", failures.join("; "))
    }
}
