//! The namespace-wide opt-in with the real `kubevirt-bmc-webhook` binary against the fake API
//! server. The controller caches every VM of the cluster but keeps the spec only of VMs that
//! may opt in (cache.rs `prune_vm`): a VM in a namespace without the label is cached without
//! it, so when the label is added later the controller reads that VM whole once and prepares
//! it from what it read, not from the pruned copy.

use std::time::Duration;

use kubevirt_bmc_e2e::fake_apiserver::{FakeApiServer, Gvr};
use kubevirt_bmc_e2e::testkit::{fixture, spawn_controller, wait_for};
use serde_json::json;

const NS: &str = "vms";
const VM: &str = "vm1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_labelled_later_opts_in_its_vms_read_whole_once() {
    let fake = FakeApiServer::start().await.unwrap();
    fake.grant_all("token", "system:serviceaccount:kubevirt-bmc:controller");
    let namespaces = Gvr::new("", "v1", "namespaces");
    fake.put(namespaces.clone(), "", NS, json!({"metadata": {}}));
    let mut vm = fixture("vm-vm1.json");
    vm.as_object_mut().unwrap().remove("status");
    vm["metadata"] = json!({"name": VM, "namespace": NS});
    let domain = vm["spec"]["template"]["spec"]["domain"].clone();
    assert!(domain.is_object(), "the fixture has a domain");
    fake.put(Gvr::vm(), NS, VM, vm);

    let dir = tempfile::tempdir().unwrap();
    let _controller = spawn_controller(&fake, dir.path(), &[]);

    let vm_path = format!("/apis/kubevirt.io/v1/namespaces/{NS}/virtualmachines/{VM}");
    let vm_reads = |fake: &FakeApiServer| {
        fake.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path == vm_path)
            .count()
    };
    // Both caches listed: the VM is known and left alone, with no request for it.
    wait_for(
        "the controller's VM and namespace lists",
        Duration::from_secs(30),
        || {
            let listed = |resource: &str| {
                fake.requests().iter().any(|r| {
                    r.method == "GET" && r.path.ends_with(resource) && !r.query.contains("watch")
                })
            };
            listed("/virtualmachines") && listed("/namespaces")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(vm_reads(&fake), 0);
    let annotations = fake.vm(NS, VM).unwrap()["metadata"]["annotations"].clone();
    assert!(
        annotations
            .as_object()
            .is_none_or(|a| !a.keys().any(|k| k.starts_with("bmc.kubevirt.io/"))),
        "{annotations}"
    );

    fake.put(
        namespaces,
        "",
        NS,
        json!({"metadata": {"labels": {"bmc.kubevirt.io/enabled": "true"}}}),
    );
    wait_for("the VM prepared", Duration::from_secs(30), || {
        let vm = fake.vm(NS, VM).unwrap();
        vm["spec"]["template"]["spec"]["startStrategy"] == "Paused"
            && vm["spec"]["template"]["metadata"]["labels"]["bmc.kubevirt.io/enabled"] == "true"
    })
    .await;
    let vm = fake.vm(NS, VM).unwrap();
    // Prepared from the whole VM: its domain is untouched, the merge patch added only ours.
    assert_eq!(vm["spec"]["template"]["spec"]["domain"], domain);
    let reads = vm_reads(&fake);
    assert!(reads >= 1, "the pruned VM was not read whole");
    // Our own patch brought the whole VM back into the cache: no read per reconcile after it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(vm_reads(&fake), reads, "the VM is read on every reconcile");
}
