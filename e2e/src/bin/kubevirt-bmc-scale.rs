//! The scale command (`e2e/scale.sh`): the real `kubevirt-bmc-webhook` (controller and
//! admission, leader election on) against the fake API server holding a cluster's worth of
//! objects: by default 10,000 VMs of which 1,000 opted in, and 2,000 launcher Pods (one per
//! opted-in VM, with its sidecar ready, and 1,000 of VMs that did not opt in). Reports the
//! controller's RSS, the time from a cold start until every opted-in VM reads ready, the API
//! requests per minute at steady state by verb and resource (the window should cover the
//! controller's 300 s resync, hence the default of 330 s), and admission latency (p50/p99,
//! a fresh HTTPS connection per review, as the fake's admission client makes) while all of it
//! runs. A measurement, not a test: it prints a table and exits 0 unless the run broke.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use kubevirt_bmc_e2e::bench::procs::{self, Proc, mib};
use kubevirt_bmc_e2e::bench::stats::Latencies;
use kubevirt_bmc_e2e::fake_apiserver::{FakeApiServer, Gvr, RequestRecord};
use kubevirt_bmc_e2e::testkit;
use kubevirt_bmc_e2e::testkit::fixture;
use serde_json::{Value, json};
use tokio::sync::Mutex;

const TOKEN: &str = "scale-controller";

#[derive(Debug, Parser)]
#[command(about = "The controller against a fake cluster of thousands of VMs")]
struct Args {
    #[arg(long, env = "KUBEVIRT_BMC_SCALE_VMS", default_value_t = 10_000)]
    vms: usize,
    /// How many of the VMs carry bmc.kubevirt.io/enabled=true.
    #[arg(long, env = "KUBEVIRT_BMC_SCALE_OPTED_IN", default_value_t = 1_000)]
    opted_in: usize,
    /// Launcher Pods: one per opted-in VM first, the rest for VMs that did not opt in.
    #[arg(long, env = "KUBEVIRT_BMC_SCALE_PODS", default_value_t = 2_000)]
    pods: usize,
    #[arg(long, env = "KUBEVIRT_BMC_SCALE_NAMESPACES", default_value_t = 20)]
    namespaces: usize,
    /// Steady-state window after the cold reconcile, in seconds.
    #[arg(long, env = "KUBEVIRT_BMC_SCALE_STEADY_SECONDS", default_value_t = 330)]
    steady_seconds: u64,
    /// Admission reviews per second sent to the webhook throughout.
    #[arg(long, env = "KUBEVIRT_BMC_SCALE_ADMISSION_RATE", default_value_t = 20)]
    admission_rate: u32,
    /// Give up on the cold reconcile after this many seconds.
    #[arg(
        long,
        env = "KUBEVIRT_BMC_SCALE_COLD_LIMIT_SECONDS",
        default_value_t = 600
    )]
    cold_limit_seconds: u64,
}

fn vm_name(i: usize) -> String {
    format!("vm-{i:05}")
}

fn namespace(args: &Args, i: usize) -> String {
    format!("tenant-{:02}", i % args.namespaces)
}

/// `(verb, resource)` of a request, as kube-apiserver's audit log names them.
fn verb_and_resource(r: &RequestRecord) -> (String, String) {
    let parts: Vec<&str> = r.path.trim_matches('/').split('/').collect();
    // api/v1/... or apis/<group>/<version>/...
    let rest = match parts.first() {
        Some(&"api") => &parts[2.min(parts.len())..],
        _ => &parts[3.min(parts.len())..],
    };
    let (resource, named) = match rest {
        ["namespaces", _, resource, name, ..] => (*resource, !name.is_empty()),
        ["namespaces", _, resource] => (*resource, false),
        [resource, name, ..] => (*resource, !name.is_empty()),
        [resource] => (*resource, false),
        [] => ("?", false),
    };
    let verb = match r.method.as_str() {
        "GET" if r.is_watch() => "watch",
        "GET" if named => "get",
        "GET" => "list",
        "POST" => "create",
        "PATCH" if r.content_type.as_deref() == Some("application/apply-patch+yaml") => "apply",
        "PATCH" => "patch",
        "PUT" => "update",
        "DELETE" => "delete",
        other => other,
    };
    (verb.to_owned(), resource.to_owned())
}

fn populate(fake: &FakeApiServer, args: &Args) -> anyhow::Result<()> {
    let mut vm = fixture("vm-vm1.json");
    vm.as_object_mut().map(|o| o.remove("status"));
    vm["spec"]["runStrategy"] = json!("Halted");
    if let Some(t) = vm["spec"]["template"]["metadata"]["annotations"].as_object_mut() {
        t.remove("bmc.kubevirt.io/enabled");
    }
    let pod = fixture("pod-vm1-injected.json");
    for n in 0..args.namespaces {
        fake.put(
            Gvr::new("", "v1", "namespaces"),
            "",
            &format!("tenant-{n:02}"),
            json!({"metadata": {"labels": {"team": format!("t{n}")}}}),
        );
    }
    fake.hold_controller(true);
    for i in 0..args.vms {
        let (name, ns) = (vm_name(i), namespace(args, i));
        let mut v = vm.clone();
        v["metadata"] = json!({"name": name, "namespace": ns});
        if i < args.opted_in {
            v["metadata"]["annotations"] = json!({"bmc.kubevirt.io/enabled": "true"});
        }
        fake.put(Gvr::vm(), &ns, &name, v);
    }
    for i in 0..args.pods {
        // The first `opted_in` Pods are the opted-in VMs' (injected, sidecar ready); the rest
        // belong to VMs that did not opt in.
        let vm = i;
        let (name, ns) = (vm_name(vm), namespace(args, vm));
        let mut p = pod.clone();
        let opted = i < args.opted_in;
        let mut labels = json!({"kubevirt.io": "virt-launcher", "vm.kubevirt.io/name": name,
            "kubevirt.io/created-by": format!("uid-{i}")});
        let mut annotations = json!({"kubevirt.io/domain": name});
        if opted {
            labels["bmc.kubevirt.io/enabled"] = json!("true");
            labels["bmc.kubevirt.io/vm"] = json!(name);
            annotations["bmc.kubevirt.io/enabled"] = json!("true");
            annotations["bmc.kubevirt.io/injected"] = json!("true");
        }
        let pod_name = format!("virt-launcher-{name}-abcde");
        p["metadata"] = json!({"name": pod_name, "namespace": ns, "labels": labels,
            "annotations": annotations});
        p["status"] = json!({"phase": "Running", "podIP": format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
            "initContainerStatuses": [{"name": "bmc", "ready": opted, "restartCount": 0,
                "image": "x", "imageID": "", "state": {"running": {}}}]});
        fake.put(Gvr::new("", "v1", "pods"), &ns, &pod_name, p);
    }
    Ok(())
}

/// Opted-in VMs whose status reads ready. Reads only those VMs, one at a time: a list of all
/// 10,000 would hold the fake's store lock long enough to slow the controller it measures.
fn ready_count(fake: &FakeApiServer, args: &Args) -> usize {
    (0..args.opted_in)
        .filter(|i| {
            fake.vm(&namespace(args, *i), &vm_name(*i))
                .is_some_and(|vm| {
                    vm["metadata"]["annotations"]["bmc.kubevirt.io/status"]
                        .as_str()
                        .and_then(|s| serde_json::from_str::<Value>(s).ok())
                        .is_some_and(|s| s["ready"] == true)
                })
        })
        .count()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.opted_in > args.vms || args.pods > args.vms || args.pods < args.opted_in {
        bail!("need opted-in <= pods <= VMs");
    }
    let machine = procs::MachineInfo::now();
    let fake = Arc::new(FakeApiServer::start().await?);
    fake.grant_all(
        TOKEN,
        "system:serviceaccount:kubevirt-bmc:kubevirt-bmc-webhook",
    );
    let started = Instant::now();
    populate(&fake, &args)?;
    eprintln!(
        "populated {} VMs ({} opted in), {} launcher Pods in {} namespaces in {:.1?}",
        args.vms,
        args.opted_in,
        args.pods,
        args.namespaces,
        started.elapsed()
    );

    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig(TOKEN, "kubevirt-bmc"))?;
    let cert_pem = testkit::webhook_tls(dir.path(), &[]);
    let port = procs::free_tcp_port()?;
    let hook = testkit::installed_webhook(port, &cert_pem);
    let binary = procs::built_binary(&kubevirt_bmc_e2e::bench::bin_dir(), "kubevirt-bmc-webhook")?;
    let mut command = testkit::webhook_command(&binary, dir.path(), port, &kubeconfig);
    command
        .env("POD_NAME", "scale")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    fake.clear_requests();
    let cold_start = Instant::now();
    let mut webhook = Proc::spawn("kubevirt-bmc-webhook", command)?;
    webhook.wait_tcp(port)?;

    // Admission throughout: a steady rate of opted-in launcher Pod reviews.
    let samples = Arc::new(Mutex::new((
        Latencies::default(),
        Latencies::default(),
        0u64,
    )));
    let steady = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let pod = fixture("pod-a-vm1-optin.json");
    let admission = {
        let (samples, steady, stop, hook) =
            (samples.clone(), steady.clone(), stop.clone(), hook.clone());
        let period = Duration::from_secs_f64(1.0 / f64::from(args.admission_rate.max(1)));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let (hook, pod, samples, steady) =
                    (hook.clone(), pod.clone(), samples.clone(), steady.clone());
                tokio::spawn(async move {
                    let t = Instant::now();
                    let ok = matches!(hook.admit("tenant-00", &pod).await, Ok(Ok(_)));
                    let took = t.elapsed();
                    let mut s = samples.lock().await;
                    if !ok {
                        s.2 += 1;
                    } else if steady.load(Ordering::Relaxed) {
                        s.1.push(took);
                    } else {
                        s.0.push(took);
                    }
                });
            }
        })
    };

    let mut peak_rss = 0u64;
    let limit = Duration::from_secs(args.cold_limit_seconds);
    let cold = loop {
        webhook.check_alive()?;
        peak_rss = peak_rss.max(webhook.rss_kib().unwrap_or(0));
        let ready = ready_count(&fake, &args);
        if ready >= args.opted_in {
            break cold_start.elapsed();
        }
        if cold_start.elapsed() > limit {
            bail!(
                "cold reconcile: {ready} of {} ready after {limit:?}",
                args.opted_in
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let cold_requests = fake.requests();
    let rss_after_cold = webhook.rss_kib().unwrap_or(0);
    eprintln!(
        "cold reconcile done in {cold:.1?}; steady window {} s",
        args.steady_seconds
    );

    fake.clear_requests();
    steady.store(true, Ordering::Relaxed);
    let window_start = Instant::now();
    let mut rss_samples = Vec::new();
    while window_start.elapsed() < Duration::from_secs(args.steady_seconds) {
        webhook.check_alive()?;
        let rss = webhook.rss_kib().unwrap_or(0);
        peak_rss = peak_rss.max(rss);
        rss_samples.push(rss);
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let window = window_start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = admission.await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let steady_requests = fake.requests();
    let rss_end = webhook.rss_kib().unwrap_or(0);
    drop(webhook);
    if let Ok(path) = std::env::var("KUBEVIRT_BMC_SCALE_DUMP") {
        let lines: Vec<String> = steady_requests
            .iter()
            .map(|r| {
                format!(
                    "{} {}?{} {} {:?}",
                    r.method, r.path, r.query, r.status, r.user
                )
            })
            .collect();
        std::fs::write(path, lines.join("\n"))?;
    }

    let count = |log: &[RequestRecord]| {
        let mut by: BTreeMap<(String, String), u64> = BTreeMap::new();
        for r in log {
            *by.entry(verb_and_resource(r)).or_default() += 1;
        }
        by
    };
    let minutes = window.as_secs_f64() / 60.0;
    let steady_by = count(&steady_requests);
    let cold_by = count(&cold_requests);
    let non_watch: u64 = steady_by
        .iter()
        .filter(|((v, r), _)| v != "watch" && r != "leases")
        .map(|(_, n)| n)
        .sum();
    let leases: u64 = steady_by
        .iter()
        .filter(|((_, r), _)| r == "leases")
        .map(|(_, n)| n)
        .sum();
    let watches: u64 = steady_by
        .iter()
        .filter(|((v, _), _)| v == "watch")
        .map(|(_, n)| n)
        .sum();

    println!(
        "## Controller at scale ({} cores, {}, load average {} at start)",
        machine.cores, machine.cpu_model, machine.load_average
    );
    println!();
    println!(
        "{} VMs ({} opted in), {} launcher Pods, {} namespaces; admission at {}/s throughout.",
        args.vms, args.opted_in, args.pods, args.namespaces, args.admission_rate
    );
    println!();
    println!("| measure | value | goal |");
    println!("|---|---|---|");
    println!(
        "| cold reconcile (start to every opted-in VM ready) | {:.1} s | <= 60 s |",
        cold.as_secs_f64()
    );
    println!(
        "| controller RSS: after cold / end / peak | {:.1} / {:.1} / {:.1} MiB | <= 100 MiB |",
        mib(rss_after_cold),
        mib(rss_end),
        mib(peak_rss)
    );
    println!(
        "| steady state: requests other than watches and the Lease, per minute | {:.1} ({:.2} per opted-in VM per 10 min) | <= 1 per opted-in VM per 10 min |",
        non_watch as f64 / minutes,
        non_watch as f64 / minutes * 10.0 / args.opted_in.max(1) as f64
    );
    println!(
        "| steady state: watch (re)starts / Lease requests per minute | {:.1} / {:.1} | - |",
        watches as f64 / minutes,
        leases as f64 / minutes
    );
    let (mut cold_adm, mut steady_adm, errors) = std::mem::take(&mut *samples.lock().await);
    let (cold_n, steady_n) = (cold_adm.len(), steady_adm.len());
    println!(
        "| admission p50 / p99 during the cold reconcile ({cold_n} reviews) | {:.2} / {:.2} ms | - |",
        cold_adm.percentile_ms(0.5),
        cold_adm.percentile_ms(0.99)
    );
    println!(
        "| admission p50 / p99 at steady state ({steady_n} reviews, {errors} failed in all) | {:.2} / {:.2} ms | - |",
        steady_adm.percentile_ms(0.5),
        steady_adm.percentile_ms(0.99)
    );
    println!();
    println!(
        "Requests by verb and resource (cold: {:.1} s in all; steady: per minute over {:.0} s):",
        cold.as_secs_f64(),
        window.as_secs_f64()
    );
    println!();
    println!("| verb | resource | cold (count) | steady (per minute) |");
    println!("|---|---|---|---|");
    let keys: std::collections::BTreeSet<_> = cold_by.keys().chain(steady_by.keys()).collect();
    for key in keys {
        println!(
            "| {} | {} | {} | {:.2} |",
            key.0,
            key.1,
            cold_by.get(key).copied().unwrap_or(0),
            steady_by.get(key).copied().unwrap_or(0) as f64 / minutes
        );
    }
    if errors > 0 {
        eprintln!("{errors} admission reviews failed");
    }
    Ok(())
}
