//! Virtual media on real storage, with the real `kubevirt-bmc-webhook` binary against the
//! fake API server: without CDI the controller never watches DataVolumes (API discovery
//! says the group is not served) and the VM says CDI is missing; once CDI is installed the
//! controller notices on its next discovery and imports the medium into a DataVolume sized
//! from the image, in the installation's StorageClass, with CDI's immediate binding.

use std::time::Duration;

use kubevirt_bmc_e2e::fake_apiserver::cdi;
use kubevirt_bmc_e2e::fake_apiserver::{FakeApiServer, Gvr};
use kubevirt_bmc_e2e::testkit::{fixture, spawn_controller, wait_for};
use serde_json::json;

const NS: &str = "vms";
const VM: &str = "vm1";
/// A RHEL-DVD-sized image: 10.9 GB, what the old fixed 4Gi could not hold.
const IMAGE_BYTES: u64 = 11_659_116_544;

fn media_status(fake: &FakeApiServer) -> Option<String> {
    fake.vm(NS, VM)?["metadata"]["annotations"]["bmc.kubevirt.io/media-status"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cdi_nothing_spins_and_cdi_installed_later_imports_a_sized_medium() {
    let fake = FakeApiServer::start().await.unwrap();
    fake.set_cdi_installed(false);
    fake.grant_all("token", "system:serviceaccount:kubevirt-bmc:controller");
    fake.put(
        Gvr::new("", "v1", "namespaces"),
        "",
        NS,
        json!({"metadata": {}}),
    );
    let mut vm = fixture("vm-vm1.json");
    vm.as_object_mut().unwrap().remove("status");
    let media = json!({"image": "http://images.example/rhel-dvd.iso", "inserted": true,
                       "writeProtected": true, "sizeBytes": IMAGE_BYTES});
    vm["metadata"] = json!({"name": VM, "namespace": NS, "annotations": {
        "bmc.kubevirt.io/enabled": "true",
        "bmc.kubevirt.io/media": media.to_string(),
    }});
    vm["spec"]["runStrategy"] = json!("Halted");
    fake.put(Gvr::vm(), NS, VM, vm);

    let dir = tempfile::tempdir().unwrap();
    let _controller = spawn_controller(
        &fake,
        dir.path(),
        &[
            "--media-storage-class",
            "local-wffc",
            "--cdi-recheck-seconds",
            "1",
        ],
    );

    wait_for(
        "the VM to say CDI is missing",
        Duration::from_secs(60),
        || media_status(&fake).is_some_and(|s| s.contains("Failed") && s.contains("CDI")),
    )
    .await;
    // A few discovery rounds later: still no DataVolume request at all (today's controller
    // retried a failing DataVolume watch every 0.1-2 s forever).
    let discovery = |fake: &FakeApiServer| {
        fake.requests()
            .iter()
            .filter(|r| r.path.trim_end_matches('/') == "/apis/cdi.kubevirt.io/v1beta1")
            .count()
    };
    let seen = discovery(&fake);
    wait_for(
        "three more discovery rounds",
        Duration::from_secs(30),
        || discovery(&fake) >= seen + 3,
    )
    .await;
    let dv_requests: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.path.contains("/datavolumes"))
        .map(|r| format!("{} {}?{} -> {}", r.method, r.path, r.query, r.status))
        .collect();
    // Only the reconciles' reads of the one DataVolume name (answered 404): no list, watch or
    // write.
    assert!(
        dv_requests.iter().all(|r| r.starts_with("GET ")
            && r.contains("/datavolumes/vm1-bmc-media?")
            && !r.contains("watch")),
        "no DataVolume watch, list or write without CDI: {dv_requests:?}"
    );

    // CDI installed: the next discovery finds it, every VM is reconciled, the import starts.
    fake.set_cdi_installed(true);
    wait_for("the media DataVolume", Duration::from_secs(60), || {
        fake.get(cdi::gvr(), NS, "vm1-bmc-media").is_some()
    })
    .await;
    let dv = fake.get(cdi::gvr(), NS, "vm1-bmc-media").unwrap();
    let storage = &dv["spec"]["storage"];
    assert_eq!(storage["storageClassName"], "local-wffc", "{dv}");
    assert_eq!(
        storage["resources"]["requests"]["storage"], "11119Mi",
        "the image's size aligned to 1 MiB (CDI adds its filesystem overhead): {dv}"
    );
    assert_eq!(
        dv["metadata"]["annotations"]["cdi.kubevirt.io/storage.bind.immediate.requested"],
        "true"
    );
    wait_for("the DataVolume watched", Duration::from_secs(30), || {
        fake.requests()
            .iter()
            .any(|r| r.path.ends_with("/datavolumes") && r.query.contains("watch"))
    })
    .await;
    // From now on the import's progress reaches the VM from the watch's cache: a change of
    // the DataVolume triggers a reconcile that reads it without a GET. (No simulated CDI
    // importer runs in this test: only the test writes the DataVolume's status.)
    let dv_gets = |fake: &FakeApiServer| {
        fake.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.ends_with("/datavolumes/vm1-bmc-media"))
            .count()
    };
    let gets = dv_gets(&fake);
    // CDI reports progress (as its importer does, `status.progress`): the VM shows it, and
    // the reconcile that put it there made no GET.
    let mut dv = fake.get(cdi::gvr(), NS, "vm1-bmc-media").unwrap();
    dv["status"] = json!({"phase": "ImportInProgress", "progress": "42.00%"});
    fake.put(cdi::gvr(), NS, "vm1-bmc-media", dv);
    wait_for(
        "the VM to show the progress",
        Duration::from_secs(60),
        || media_status(&fake).is_some_and(|s| s.contains("42.00%")),
    )
    .await;
    assert_eq!(
        dv_gets(&fake),
        gets,
        "a reconcile read the watched DataVolume with a GET"
    );
}
