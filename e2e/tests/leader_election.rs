//! Two replicas of the real `kubevirt-bmc-webhook` binary against the fake API server: both
//! answer admission, one holds the `kubevirt-bmc-controller` Lease and reconciles; killed
//! (SIGKILL) in the middle of preparing 12 VMs, the other takes the Lease and finishes them,
//! and the request log shows the two never wrote in the same period and nothing was written
//! twice (one credentials Secret created per VM, one preparing patch per VM, at most one
//! BmcPrepared Event per VM).
//!
//! The fake's Lease semantics are client-go's resourcelock contract (GET, POST, PUT with a
//! resourceVersion precondition; see `fake_apiserver::write::update`).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kubevirt_bmc_e2e::fake_apiserver::admission::MutatingWebhook;
use kubevirt_bmc_e2e::fake_apiserver::{FakeApiServer, Gvr, RequestRecord};
use kubevirt_bmc_e2e::testkit::{
    Kill, fixture, free_tcp_port, installed_webhook, wait_for, webhook_command, webhook_tls,
    workspace_binary,
};
use serde_json::{Value, json};

const NS: &str = "vms";
const VMS: usize = 12;
const USER_A: &str = "system:serviceaccount:kubevirt-bmc:replica-a";
const USER_B: &str = "system:serviceaccount:kubevirt-bmc:replica-b";

fn lease() -> Gvr {
    Gvr::new("coordination.k8s.io", "v1", "leases")
}

fn is_write(r: &RequestRecord) -> bool {
    matches!(r.method.as_str(), "POST" | "PATCH" | "PUT" | "DELETE") && !r.path.contains("/leases")
}

fn vm_name(i: usize) -> String {
    format!("vm{i}")
}

fn prepared(fake: &FakeApiServer, i: usize) -> bool {
    fake.vm(NS, &vm_name(i)).is_some_and(|vm| {
        vm["spec"]["template"]["metadata"]["labels"]["bmc.kubevirt.io/enabled"] == "true"
    }) && fake
        .get(
            Gvr::new("", "v1", "services"),
            NS,
            &format!("{}-bmc", vm_name(i)),
        )
        .is_some()
}

struct Replica {
    process: Kill,
    hook: MutatingWebhook,
}

fn start_replica(
    fake: &FakeApiServer,
    dir: &std::path::Path,
    name: &str,
    token: &str,
    cert_pem: &str,
) -> Replica {
    let kubeconfig = dir.join(format!("kubeconfig-{name}"));
    std::fs::write(&kubeconfig, fake.kubeconfig(token, "kubevirt-bmc")).unwrap();
    let port = free_tcp_port();
    let hook = installed_webhook(port, cert_pem);
    let child = webhook_command(
        &workspace_binary("kubevirt-bmc-webhook"),
        dir,
        port,
        &kubeconfig,
    )
    // Short, so the test's wait is short; the order retry < renew < lease is what keeps
    // one writer, whatever the durations.
    .args(["--leader-election-lease-seconds", "4"])
    .args(["--leader-election-renew-deadline-seconds", "3"])
    .args(["--leader-election-retry-seconds", "0.5"])
    .env("POD_NAME", name)
    .env("POD_NAMESPACE", "kubevirt-bmc")
    .env_remove("KUBEVIRT_BMC_LEADER_ELECT")
    .stdout(Stdio::null())
    .stderr(Stdio::inherit())
    .spawn()
    .unwrap();
    Replica {
        process: Kill(child),
        hook,
    }
}

fn holder(fake: &FakeApiServer) -> Option<String> {
    fake.get(lease(), "kubevirt-bmc", "kubevirt-bmc-controller")
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
}

/// An opted-in launcher Pod (the captured one) admitted by `hook`: the replica serves
/// admission whether or not it leads.
async fn admits(hook: &MutatingWebhook) -> bool {
    let pod = fixture("pod-a-vm1-optin.json");
    match hook.admit(NS, &pod).await {
        // Injected: the `bmc` native sidecar is there (the Pod's own account is left alone).
        Ok(Ok(patched)) => patched["spec"]["initContainers"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["name"] == "bmc")),
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_mid_reconcile_is_replaced_and_nothing_is_written_twice() {
    let fake = Arc::new(FakeApiServer::start().await.unwrap());
    fake.grant_all("token-a", USER_A);
    fake.grant_all("token-b", USER_B);
    fake.put(
        Gvr::new("", "v1", "namespaces"),
        "",
        NS,
        json!({"metadata": {}}),
    );
    for i in 0..VMS {
        let mut vm = fixture("vm-vm1.json");
        vm.as_object_mut().unwrap().remove("status");
        vm["metadata"] = json!({"name": vm_name(i), "namespace": NS,
            "annotations": {"bmc.kubevirt.io/enabled": "true"}});
        vm["spec"]["runStrategy"] = json!("Halted");
        fake.put(Gvr::vm(), NS, &vm_name(i), vm);
    }
    // Every request takes 150 ms: one VM's reconcile (a dozen requests in a row) lasts
    // seconds, so a kill lands in the middle of it.
    fake.set_slow(Duration::from_millis(150));

    let dir = tempfile::tempdir().unwrap();
    let cert_pem = webhook_tls(dir.path(), &[]);

    let a = start_replica(&fake, dir.path(), "replica-a", "token-a", &cert_pem);
    wait_for(
        "replica-a to take the Lease",
        Duration::from_secs(60),
        || holder(&fake).is_some_and(|h| h.starts_with("replica-a_")),
    )
    .await;
    let b = start_replica(&fake, dir.path(), "replica-b", "token-b", &cert_pem);

    // Both serve admission: the follower too.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok_a, ok_b) = (admits(&a.hook).await, admits(&b.hook).await);
        if ok_a && ok_b {
            break;
        }
        assert!(Instant::now() < deadline, "admission: a {ok_a}, b {ok_b}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Kill the leader once it has written something but not prepared every VM.
    wait_for("replica-a's first write", Duration::from_secs(60), || {
        fake.requests()
            .iter()
            .any(|r| is_write(r) && r.user.as_deref() == Some(USER_A))
    })
    .await;
    let mut a = a;
    a.process.0.kill().unwrap();
    a.process.0.wait().unwrap();
    let killed = Instant::now();
    let done_at_kill = (0..VMS).filter(|i| prepared(&fake, *i)).count();
    assert!(done_at_kill < VMS, "the kill was not mid-reconcile");
    assert!(
        holder(&fake).is_some_and(|h| h.starts_with("replica-a_")),
        "replica-b must not have led before the kill"
    );

    wait_for(
        "replica-b to prepare every VM",
        Duration::from_secs(120),
        || (0..VMS).all(|i| prepared(&fake, i)),
    )
    .await;
    let took_over = holder(&fake).unwrap();
    assert!(took_over.starts_with("replica-b_"), "{took_over}");
    let transitions = fake
        .get(lease(), "kubevirt-bmc", "kubevirt-bmc-controller")
        .unwrap()["spec"]["leaseTransitions"]
        .as_i64()
        .unwrap();
    assert!(transitions >= 1, "{transitions}");

    // Let replica-b settle (its own follow-up reconciles) before reading the log.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = fake.requests();
    let writes_a: Vec<&RequestRecord> = log
        .iter()
        .filter(|r| is_write(r) && r.user.as_deref() == Some(USER_A))
        .collect();
    let writes_b: Vec<&RequestRecord> = log
        .iter()
        .filter(|r| is_write(r) && r.user.as_deref() == Some(USER_B))
        .collect();
    assert!(!writes_a.is_empty() && !writes_b.is_empty());
    let last_a = writes_a.iter().map(|r| r.received).max().unwrap();
    let first_b = writes_b.iter().map(|r| r.received).min().unwrap();
    assert!(last_a <= killed);
    assert!(
        first_b > last_a,
        "replica-b wrote while replica-a was still writing"
    );
    // client-go's bound: a dead leader is replaced once its lease runs out (4 s here), plus
    // retries; generous for a loaded machine, and far from the old "never".
    let handover = first_b.duration_since(killed);
    eprintln!(
        "handover: replica-b's first write {handover:?} after the kill; {} of {VMS} VMs were prepared at the kill; writes: a {}, b {}",
        done_at_kill,
        writes_a.len(),
        writes_b.len()
    );

    // Nothing written twice.
    let mut secret_creates: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    let mut preparing: BTreeMap<String, usize> = BTreeMap::new();
    let mut prepared_events: BTreeMap<String, usize> = BTreeMap::new();
    for r in writes_a.iter().chain(&writes_b) {
        let body = r.body.clone().unwrap_or(Value::Null);
        if r.method == "POST" && r.path.ends_with("/secrets") {
            let name = body["metadata"]["name"].as_str().unwrap_or("").to_owned();
            secret_creates.entry(name).or_default().push(r.status);
        }
        if r.method == "PATCH"
            && r.path.contains("/virtualmachines/")
            && r.status == 200
            && body["metadata"]["annotations"]["bmc.kubevirt.io/original"].is_string()
        {
            let name = r.path.rsplit('/').next().unwrap().to_owned();
            *preparing.entry(name).or_default() += 1;
        }
        if r.method == "POST" && r.path.ends_with("/events") && body["reason"] == "BmcPrepared" {
            let name = body["regarding"]["name"].as_str().unwrap_or("").to_owned();
            *prepared_events.entry(name).or_default() += 1;
        }
    }
    // The sidecars' CA (issue 12) is no VM's: made once by whichever replica came first (both
    // sign certificates, so both make sure it exists); a loser's create is answered 409.
    let ca = secret_creates.remove("kubevirt-bmc-ca").unwrap_or_default();
    assert!(
        ca.iter().filter(|s| **s == 201).count() <= 1,
        "CA created twice: {ca:?}"
    );
    // Two Secrets per VM, each created once: the credentials and the `<vm>-bmc` token.
    assert_eq!(secret_creates.len(), 2 * VMS, "{secret_creates:?}");
    for (name, codes) in &secret_creates {
        assert_eq!(codes, &[201], "Secret {name} created more than once");
    }
    assert_eq!(preparing.len(), VMS, "{preparing:?}");
    assert!(preparing.values().all(|n| *n == 1), "{preparing:?}");
    assert!(
        prepared_events.values().all(|n| *n == 1),
        "{prepared_events:?}"
    );
    // Every write of ours names our field manager (creates and merge patches included).
    for r in writes_a.iter().chain(&writes_b) {
        assert!(
            r.query.contains("fieldManager=kubevirt-bmc-controller"),
            "{} {}?{} without our field manager",
            r.method,
            r.path,
            r.query
        );
    }
    drop(b);
}
