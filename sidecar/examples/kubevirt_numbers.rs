//! Numbers for the KubeVirt machine against the fake API server (loopback HTTP):
//! API calls per 1000 power-status reads, and our latency from a power request to the first
//! API call leaving the BMC. Run: `cargo run --release -p kubevirt-bmc --example kubevirt_numbers`.

use std::time::{Duration, Instant};

use kubevirt_bmc::machine::kubevirt::{KubevirtConfig, KubevirtMachine};
use kubevirt_bmc::machine::{Machine, PowerAction, PowerState};
use kubevirt_bmc_e2e::fake_apiserver::{FakeApiServer, Gvr};

const NS: &str = "vms";
const VM: &str = "vm1";
const TOKEN: &str = "t";
const ROUNDS: usize = 200;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// p50 of 20 GETs and 20 merge PATCHes of the VM.
async fn get_and_patch(client: kube::Client) -> (Duration, Duration) {
    let vms: kube::Api<kubevirt_bmc::machine::kubevirt::types::VirtualMachine> =
        kube::Api::namespaced(client, NS);
    let mut get_times = Vec::new();
    let mut patch_times = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        vms.get(VM).await.unwrap();
        get_times.push(t.elapsed());
        let patch = serde_json::json!({"metadata": {"annotations": {"probe": i.to_string()}}});
        let t = Instant::now();
        vms.patch(VM, &Default::default(), &kube::api::Patch::Merge(&patch))
            .await
            .unwrap();
        patch_times.push(t.elapsed());
    }
    get_times.sort();
    patch_times.sort();
    (percentile(&get_times, 0.5), percentile(&patch_times, 0.5))
}

async fn settle(machine: &KubevirtMachine, state: PowerState) {
    for _ in 0..5000 {
        if machine.power_state().await.ok() == Some(state) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let snapshot = machine.snapshot();
    panic!(
        "never reached {state}: now {:?}; VMI status {:?}",
        machine.power_state().await,
        snapshot.vmi.map(|v| v.status.clone())
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    kubevirt_bmc_runtime::tls::install_crypto_provider();
    let fake = FakeApiServer::start().await.unwrap();
    fake.grant(TOKEN, "system:serviceaccount:vms:vm1-bmc", &[VM]);
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../e2e/testdata/fixtures/vm-vm1.json"
    );
    let mut vm: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    vm["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("managedFields");
    fake.put(Gvr::vm(), NS, VM, vm);
    let mut config = kube::Config::new(fake.url().parse().unwrap());
    config.auth_info.token = Some(TOKEN.to_owned().into());
    let machine = KubevirtMachine::start(
        kube::Client::try_from(config).unwrap(),
        KubevirtConfig {
            namespace: NS.into(),
            vm_name: VM.into(),
            credentials_dir: None,
        },
    );
    assert!(machine.wait_synced(Duration::from_secs(10)).await);

    // Reads.
    fake.clear_requests();
    let started = Instant::now();
    for _ in 0..1000 {
        machine.power_state().await.unwrap();
    }
    let read_time = started.elapsed();
    let calls = fake.requests().iter().filter(|r| !r.is_watch()).count();

    // Writes: request in -> first API call out, alternating on and off.
    let mut latencies = Vec::with_capacity(ROUNDS);
    let mut whole = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let (action, target) = if round % 2 == 0 {
            (PowerAction::On, PowerState::On)
        } else {
            (PowerAction::ForceOff, PowerState::Off)
        };
        fake.clear_requests();
        let t0 = Instant::now();
        machine.power(action).await.unwrap();
        whole.push(t0.elapsed());
        let first = fake
            .requests()
            .iter()
            .filter(|r| !r.is_watch())
            .map(|r| r.received)
            .min()
            .expect("a request");
        latencies.push(first.saturating_duration_since(t0));
        settle(&machine, target).await;
    }
    latencies.sort();
    whole.sort();

    // Where whole-operation time goes: one GET and one merge PATCH through kube's client.
    let client = kube::Client::try_from({
        let mut c = kube::Config::new(fake.url().parse().unwrap());
        c.auth_info.token = Some(TOKEN.to_owned().into());
        c
    })
    .unwrap();
    let (get_p50, patch_p50) = get_and_patch(client).await;

    println!("| measure | value |");
    println!("|---|---|");
    println!("| API calls per 1000 power-status reads | {calls} |");
    println!(
        "| 1000 power-status reads, total | {:.3} ms ({:.2} µs each) |",
        read_time.as_secs_f64() * 1e3,
        read_time.as_secs_f64() * 1e3
    );
    for (name, p) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
        println!(
            "| power request in -> first API call received, {name} ({ROUNDS} on/off) | {:.3} ms |",
            percentile(&latencies, p).as_secs_f64() * 1e3
        );
    }
    println!(
        "| one GET / one merge PATCH of the VM, p50 | {:.3} ms / {:.3} ms |",
        get_p50.as_secs_f64() * 1e3,
        patch_p50.as_secs_f64() * 1e3
    );
    println!(
        "| whole power on/off incl. fake API round trips, p50 | {:.3} ms |",
        percentile(&whole, 0.5).as_secs_f64() * 1e3
    );
}
