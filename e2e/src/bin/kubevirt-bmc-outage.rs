//! The outage command (`e2e/outage.sh`): N real `kubevirt-bmc serve` sidecars (default
//! 1,000), each with a token limited to its own VM as the per-VM Role grants, watching their
//! VM and VMI on the fake API server; then the API server goes away for 30 s (connections
//! refused, open watches cut, as a restarting kube-apiserver behind its load balancer) and
//! comes back. Reports how the sidecars come back: connection attempts per second during the
//! outage, requests per second after it by kind, how long until every sidecar watches again,
//! and whether any sidecar listed again (a relist) although its resourceVersion was still
//! valid (the fake keeps its whole history, so a watch from any resourceVersion it handed
//! out resumes; kube-apiserver answers 410 Gone only once its watch cache has moved past it).
//! A measurement, not a test: it prints tables and exits 0 unless the run broke.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use kubevirt_bmc_e2e::bench::procs::{self, mib};
use kubevirt_bmc_e2e::bench::stats::Latencies;
use kubevirt_bmc_e2e::fake_apiserver::{FakeApiServer, Gvr, RequestRecord};
use kubevirt_bmc_e2e::testkit::fixture;
use serde_json::Value;

const NS: &str = "vms";

#[derive(Debug, Parser)]
#[command(about = "Sidecars' watches through an API server outage")]
struct Args {
    /// Sidecar processes, one per VM.
    #[arg(long, env = "KUBEVIRT_BMC_OUTAGE_SIDECARS", default_value_t = 1_000)]
    sidecars: usize,
    /// How long the API server is away.
    #[arg(long, env = "KUBEVIRT_BMC_OUTAGE_SECONDS", default_value_t = 30)]
    outage_seconds: u64,
    /// How long the requests are recorded after it comes back.
    #[arg(long, env = "KUBEVIRT_BMC_OUTAGE_AFTER_SECONDS", default_value_t = 60)]
    after_seconds: u64,
    /// Sidecars started at a time (their start is not what is measured).
    #[arg(long, env = "KUBEVIRT_BMC_OUTAGE_BATCH", default_value_t = 50)]
    batch: usize,
    /// Width of a row of the per-second tables, in seconds.
    #[arg(long, env = "KUBEVIRT_BMC_OUTAGE_BUCKET_SECONDS", default_value_t = 1)]
    bucket_seconds: u64,
}

fn vm_name(i: usize) -> String {
    format!("vm-{i:04}")
}

fn user(i: usize) -> String {
    format!("system:serviceaccount:{NS}:{}-bmc", vm_name(i))
}

/// What a sidecar's request was, as an audit log would file it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Watch,
    List,
    Get,
    Other,
}

fn kind(r: &RequestRecord) -> Kind {
    if r.is_watch() {
        return Kind::Watch;
    }
    if r.method != "GET" {
        return Kind::Other;
    }
    // .../namespaces/<ns>/<resource>[/<name>]: a collection is a list (the watcher's relist
    // lists by field selector, metadata.name=<vm>).
    let parts: Vec<&str> = r.path.trim_matches('/').split('/').collect();
    match parts.iter().position(|p| *p == "namespaces") {
        Some(i) if parts.len() == i + 3 => Kind::List,
        Some(i) if parts.len() > i + 3 => Kind::Get,
        _ => Kind::Other,
    }
}

/// Which of its two objects a sidecar's watch is of.
fn watched(r: &RequestRecord) -> &'static str {
    if r.path.contains("virtualmachineinstances") {
        "vmi"
    } else {
        "vm"
    }
}

/// The sidecars, killed when the run ends however it ends.
struct Sidecars(Vec<Child>);

impl Drop for Sidecars {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.sidecars == 0 || args.bucket_seconds == 0 {
        bail!("need at least one sidecar and a bucket of at least 1 s");
    }
    let machine = procs::MachineInfo::now();
    let fake = Arc::new(FakeApiServer::start().await?);
    let mut vm = fixture("vm-vm1.json");
    vm["metadata"]
        .as_object_mut()
        .map(|m| m.remove("managedFields"));
    for i in 0..args.sidecars {
        let mut v = vm.clone();
        v["metadata"]["name"] = Value::from(vm_name(i));
        v["metadata"]["namespace"] = Value::from(NS);
        v["metadata"].as_object_mut().map(|m| m.remove("uid"));
        fake.put(Gvr::vm(), NS, &vm_name(i), v);
        let name = vm_name(i);
        fake.grant(&format!("{name}-token"), &user(i), &[&name]);
    }

    let binary = procs::built_binary(&kubevirt_bmc_e2e::bench::bin_dir(), "kubevirt-bmc")?;
    let dir = tempfile::tempdir()?;
    let mut sidecars = Sidecars(Vec::with_capacity(args.sidecars));
    let started = Instant::now();
    for i in 0..args.sidecars {
        let name = vm_name(i);
        let home: PathBuf = dir.path().join(&name);
        let credentials = home.join("credentials");
        std::fs::create_dir_all(&credentials)?;
        std::fs::write(credentials.join("username"), "admin\n")?;
        std::fs::write(credentials.join("password"), "outage-bench\n")?;
        let kubeconfig = home.join("kubeconfig");
        std::fs::write(&kubeconfig, fake.kubeconfig(&format!("{name}-token"), NS))?;
        let child = Command::new(&binary)
            .arg("serve")
            .env_clear()
            .env("POD_NAMESPACE", NS)
            .env("VM_NAME", &name)
            .env("POD_NAME", format!("virt-launcher-{name}-abcde"))
            .env("POD_IP", "127.0.0.1")
            // Port 0: the kernel picks; nothing here talks IPMI or Redfish to them.
            .env("KUBEVIRT_BMC_IPMI_PORT", "0")
            .env("KUBEVIRT_BMC_REDFISH_PORT", "0")
            .env("KUBEVIRT_BMC_HEALTH_LISTEN", "127.0.0.1:0")
            .env("KUBEVIRT_BMC_CREDENTIALS_DIR", &credentials)
            .env("KUBECONFIG", &kubeconfig)
            .env("KUBEVIRT_BMC_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting sidecar {i}"))?;
        sidecars.0.push(child);
        if (i + 1) % args.batch == 0 {
            // Let this batch list and watch before the next starts.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    // Every sidecar watching both of its objects (its VM and its VMI).
    let watching = |requests: &[RequestRecord]| -> BTreeSet<String> {
        let mut per_user: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for r in requests.iter().filter(|r| r.is_watch() && r.status == 200) {
            if let Some(u) = r.user.as_deref() {
                per_user.entry(u).or_default().insert(watched(r));
            }
        }
        per_user
            .into_iter()
            .filter(|(_, r)| r.len() == 2)
            .map(|(u, _)| u.to_owned())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(120 + args.sidecars as u64 / 5);
    loop {
        for (i, child) in sidecars.0.iter_mut().enumerate() {
            if let Some(status) = child.try_wait()? {
                bail!("sidecar {i} exited before the outage: {status}");
            }
        }
        let n = watching(&fake.requests()).len();
        if n == args.sidecars {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "only {n} of {} sidecars watch their VM and VMI",
                args.sidecars
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let startup = started.elapsed();
    let before = fake.requests();
    let startup_lists = before.iter().filter(|r| kind(r) == Kind::List).count();
    let rss: Vec<u64> = sidecars
        .0
        .iter()
        .filter_map(|c| procs::rss_kib(c.id()))
        .collect();
    // A quiet moment: the watches idle (bookmarks only) before the outage.
    tokio::time::sleep(Duration::from_secs(3)).await;

    fake.clear_requests();
    let down_at = Instant::now();
    fake.set_down(true);
    tokio::time::sleep(Duration::from_secs(args.outage_seconds)).await;
    fake.set_down(false);
    let up_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.after_seconds)).await;
    let refused = fake.refused_connections();
    let after: Vec<RequestRecord> = fake
        .requests()
        .into_iter()
        .filter(|r| r.received >= up_at)
        .collect();
    for (i, child) in sidecars.0.iter_mut().enumerate() {
        if let Some(status) = child.try_wait()? {
            bail!("sidecar {i} exited during the run: {status}");
        }
    }
    let load_after = procs::load_average();
    drop(sidecars);

    // Per sidecar: when it watched both objects again, and what it listed.
    let mut back: BTreeMap<&str, BTreeMap<&str, Instant>> = BTreeMap::new();
    let mut lists_by: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &after {
        let Some(u) = r.user.as_deref() else { continue };
        match kind(r) {
            Kind::Watch if r.status == 200 => {
                back.entry(u)
                    .or_default()
                    .entry(watched(r))
                    .or_insert(r.received);
            }
            Kind::List => *lists_by.entry(u).or_default() += 1,
            _ => {}
        }
    }
    let mut recovered = Latencies::default();
    for w in back.values().filter(|w| w.len() == 2) {
        if let Some(t) = w.values().max() {
            recovered.push(t.duration_since(up_at));
        }
    }
    let resumed_from_rv = after
        .iter()
        .filter(|r| kind(r) == Kind::Watch && r.query.contains("resourceVersion="))
        .count();
    let watches_after = after.iter().filter(|r| kind(r) == Kind::Watch).count();

    println!(
        "## Sidecars through a {} s API outage ({} cores, {}, load average {} at start, {} at the end)",
        args.outage_seconds, machine.cores, machine.cpu_model, machine.load_average, load_after
    );
    println!();
    println!(
        "{} `kubevirt-bmc serve` sidecars (release build), each with a token limited to its own VM, watching its VM and VMI; \
         all watching after {:.1} s ({startup_lists} lists at start, RSS per sidecar {:.1} MiB median).",
        args.sidecars,
        startup.as_secs_f64(),
        {
            let mut r = rss.clone();
            r.sort();
            mib(r.get(r.len() / 2).copied().unwrap_or(0))
        }
    );
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| connection attempts during the outage | {} ({:.0}/s; {:.2} per sidecar per second) |",
        refused.len(),
        refused.len() as f64 / args.outage_seconds as f64,
        refused.len() as f64 / args.outage_seconds as f64 / args.sidecars as f64
    );
    println!(
        "| sidecars watching both objects again | {} of {} |",
        recovered.len(),
        args.sidecars
    );
    println!(
        "| time from recovery until 50 / 90 / 100 % watch again | {:.2} / {:.2} / {:.2} s |",
        recovered.percentile_ms(0.5) / 1000.0,
        recovered.percentile_ms(0.9) / 1000.0,
        recovered.percentile_ms(1.0) / 1000.0
    );
    println!(
        "| watches after recovery that resumed from a resourceVersion | {resumed_from_rv} of {watches_after} |"
    );
    println!(
        "| relists (LIST requests) after recovery | {} in all, by {} sidecars (max {} by one) |",
        lists_by.values().sum::<usize>(),
        lists_by.len(),
        lists_by.values().max().copied().unwrap_or(0)
    );
    println!();

    // Rates over time: the outage (refused connections) and the recovery (requests by kind).
    let bucket = Duration::from_secs(args.bucket_seconds);
    let index =
        |t: Instant, from: Instant| (t.duration_since(from).as_secs() / bucket.as_secs()) as usize;
    let mut refused_rows = vec![0usize; (args.outage_seconds / args.bucket_seconds + 1) as usize];
    for t in &refused {
        if *t >= down_at {
            let i = index(*t, down_at).min(refused_rows.len() - 1);
            refused_rows[i] += 1;
        }
    }
    let rows = (args.after_seconds / args.bucket_seconds + 1) as usize;
    let mut after_rows = vec![[0usize; 4]; rows];
    for r in &after {
        let i = index(r.received, up_at).min(rows - 1);
        after_rows[i][kind(r) as usize] += 1;
    }
    let per_s = |n: usize| n as f64 / args.bucket_seconds as f64;
    println!("During the outage, connection attempts per second:");
    println!();
    println!("| from outage start (s) | attempts/s |");
    println!("|---|---|");
    for (i, n) in refused_rows.iter().enumerate() {
        println!("| {} | {:.0} |", i as u64 * args.bucket_seconds, per_s(*n));
    }
    println!();
    println!("After recovery, requests per second by kind:");
    println!();
    println!("| from recovery (s) | watch | list | get | other |");
    println!("|---|---|---|---|---|");
    let last_busy = after_rows
        .iter()
        .rposition(|r| r.iter().sum::<usize>() > 0)
        .unwrap_or(0);
    for (i, r) in after_rows.iter().enumerate().take(last_busy + 1) {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            i as u64 * args.bucket_seconds,
            per_s(r[0]),
            per_s(r[1]),
            per_s(r[2]),
            per_s(r[3])
        );
    }
    if last_busy + 1 < rows {
        println!(
            "| {}-{} | 0 | 0 | 0 | 0 |",
            (last_busy as u64 + 1) * args.bucket_seconds,
            args.after_seconds
        );
    }
    let peak = after_rows
        .iter()
        .map(|r| r.iter().sum::<usize>())
        .max()
        .unwrap_or(0);
    let total: usize = after_rows.iter().flatten().sum();
    println!();
    println!(
        "Peak {:.0} requests/s after recovery; {} requests in the first {} s in all.",
        per_s(peak),
        total,
        args.after_seconds
    );
    Ok(())
}
