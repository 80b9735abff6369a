//! The KubeVirt machine when the API misbehaves: watches that break, an API server that goes
//! away and comes back, a token without rights; plus media and records on the VM.

mod support;

use std::time::Duration;

use kubevirt_bmc::machine::kubevirt::{KubevirtConfig, KubevirtMachine};
use kubevirt_bmc::machine::{
    Machine, MachineError, MediaInsert, MediaStatus, PowerAction, PowerState, Record,
};
use kubevirt_bmc_e2e::fake_apiserver::Gvr;
use serde_json::Value;
use support::*;

async fn power_is(machine: &impl Machine, state: PowerState) {
    eventually(&format!("power {state}"), || async {
        machine.power_state().await.ok() == Some(state)
    })
    .await;
}

fn pause_by_hand(fake: &kubevirt_bmc_e2e::fake_apiserver::FakeApiServer, paused: bool) {
    fake.modify(Gvr::vmi(), NS, VM, |vmi| {
        let conditions = vmi["status"]["conditions"].as_array_mut().unwrap();
        conditions.retain(|c| c["type"] != "Paused");
        if paused {
            conditions.push(serde_json::json!({"type": "Paused", "status": "True"}));
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_watch_resumes_from_its_resource_version() {
    let fake = fake().await;
    let machine = machine(&fake).await;
    machine.power(PowerAction::On).await.unwrap();
    power_is(&machine, PowerState::On).await;
    fake.clear_requests();
    fake.break_watches();
    pause_by_hand(&fake, true);
    power_is(&machine, PowerState::Off).await;
    let requests = fake.requests();
    let rewatches: Vec<_> = requests.iter().filter(|r| r.is_watch()).collect();
    assert!(!rewatches.is_empty(), "watches restarted");
    for watch in &rewatches {
        assert!(watch.query.contains("resourceVersion="), "{}", watch.query);
        assert!(
            watch.query.contains("fieldSelector=metadata.name%3Dvm1"),
            "{}",
            watch.query
        );
    }
    assert!(
        requests.iter().all(|r| r.is_watch()),
        "resumed without relisting: {requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_down_then_back_fails_clearly_then_recovers() {
    let fake = fake().await;
    let machine = machine(&fake).await;
    fake.set_down(true);
    let error = machine.power(PowerAction::On).await.unwrap_err();
    assert!(
        matches!(&error, MachineError::Unavailable(m) if m.contains("unreachable")),
        "{error:?}"
    );
    // Reads keep answering from the cache meanwhile.
    assert_eq!(machine.power_state().await.unwrap(), PowerState::Off);
    // Changes made while we could not see them are caught up with.
    fake.set_down(false);
    pause_by_hand(&fake, false);
    power_is(&machine, PowerState::On).await;
    machine.power(PowerAction::ForceOff).await.unwrap();
    power_is(&machine, PowerState::Off).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_api_still_gets_the_job_done() {
    let fake = fake().await;
    let machine = machine(&fake).await;
    fake.set_slow(Duration::from_millis(150));
    machine.power(PowerAction::On).await.unwrap();
    assert!(!paused(&vmi(&fake)));
    power_is(&machine, PowerState::On).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_another_vm_gets_a_forbidden_error_naming_the_permission() {
    let fake = fake().await;
    fake.grant("vm2-token", "system:serviceaccount:vms:vm2-bmc", &["vm2"]);
    let machine = start_machine(&fake, "vm2-token");
    let error = machine.power_state().await.unwrap_err();
    let MachineError::Forbidden(message) = &error else {
        panic!("{error:?}")
    };
    assert!(message.contains("cannot list resource"), "{message}");
    assert!(message.contains("vm2-bmc"), "{message}");
    let denied = fake.requests().iter().filter(|r| r.status == 403).count();
    assert!(denied > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_may_read_but_not_act_says_which_subresource_is_missing() {
    let fake = fake().await;
    fake.deny_verbs(TOKEN, &["update"]);
    let machine = machine(&fake).await;
    let error = machine.power(PowerAction::On).await.unwrap_err();
    let MachineError::Forbidden(message) = &error else {
        panic!("{error:?}")
    };
    assert!(
        message.contains("unpause VirtualMachineInstance vms/vm1"),
        "{message}"
    );
    assert!(
        message.contains("cannot update resource \"virtualmachineinstances/unpause\""),
        "{message}"
    );
    assert!(paused(&vmi(&fake)), "nothing happened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubevirt_refusals_come_back_as_not_allowed_with_kubevirts_message() {
    let fake = fake().await;
    let machine = machine(&fake).await;
    machine.power(PowerAction::On).await.unwrap();
    power_is(&machine, PowerState::On).await;
    // Someone paused it behind our back and our cache has not seen it yet.
    fake.freeze_watches(true);
    pause_by_hand(&fake, true);
    // A graceful restart needs a running guest: KubeVirt's 409 comes back with its message.
    let error = machine
        .power(PowerAction::GracefulRestart)
        .await
        .unwrap_err();
    assert_eq!(
        error,
        MachineError::NotAllowed("softreboot VirtualMachineInstance vms/vm1: VMI is paused".into())
    );
    // Hard off: KubeVirt says "already paused", which is what was asked.
    machine.power(PowerAction::ForceOff).await.unwrap();
    assert_eq!(
        fake.requests().iter().filter(|r| r.status == 409).count(),
        2,
        "both refused by KubeVirt"
    );
    fake.freeze_watches(false);
    power_is(&machine, PowerState::Off).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_is_recorded_on_the_vm_and_the_controllers_progress_read_back() {
    let fake = fake().await;
    let machine = machine(&fake).await;
    let bad = MediaInsert {
        image: "ftp://x/boot.iso".into(),
        inserted: true,
        write_protected: true,
        size_bytes: None,
    };
    assert!(matches!(
        machine.insert_media(bad).await,
        Err(MachineError::Invalid(_))
    ));
    let unsized_media = MediaInsert {
        image: "http://10.0.0.1/ipa.iso".into(),
        inserted: true,
        write_protected: true,
        size_bytes: None,
    };
    // The import is sized from the image: without a size nothing is recorded.
    assert!(machine.media_needs_size());
    assert!(matches!(
        machine.insert_media(unsized_media.clone()).await,
        Err(MachineError::Invalid(_))
    ));
    let media = MediaInsert {
        size_bytes: Some(700 << 20),
        ..unsized_media
    };
    // Without CDI: refused with a message that says so, and nothing is left on the VM.
    fake.set_cdi_installed(false);
    let error = machine.insert_media(media.clone()).await.unwrap_err();
    assert!(
        matches!(&error, MachineError::NotSupported(m) if m.contains("CDI")),
        "{error:?}"
    );
    assert_eq!(annotation(&fake, "bmc.kubevirt.io/media"), None);
    fake.set_cdi_installed(true);
    machine.insert_media(media.clone()).await.unwrap();
    let recorded: Value =
        serde_json::from_str(&annotation(&fake, "bmc.kubevirt.io/media").unwrap()).unwrap();
    assert_eq!(
        recorded,
        serde_json::json!({"image": "http://10.0.0.1/ipa.iso", "inserted": true, "writeProtected": true, "sizeBytes": 734003200})
    );
    let state = machine.media().await.unwrap();
    assert_eq!(state.image.as_deref(), Some("http://10.0.0.1/ipa.iso"));
    assert_eq!(state.status, MediaStatus::Importing { progress: None });
    assert!(matches!(
        machine.insert_media(media).await,
        Err(MachineError::NotAllowed(_))
    ));
    // The controller reports progress on the VM.
    fake.modify(Gvr::vm(), NS, VM, |vm| {
        vm["metadata"]["annotations"]["bmc.kubevirt.io/media-status"] =
            Value::from(r#"{"phase":"Importing","progress":"42.0%"}"#);
    });
    eventually("progress read back", || async {
        machine.media().await.unwrap().status
            == MediaStatus::Importing {
                progress: Some("42.0%".into()),
            }
    })
    .await;
    machine.eject_media().await.unwrap();
    assert_eq!(annotation(&fake, "bmc.kubevirt.io/media"), None);
    assert_eq!(machine.media().await.unwrap().image, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_live_on_the_vm_and_the_session_key_in_the_credentials_secret() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("session-key"), "k3y-from-secret\n").unwrap();
    let machine = KubevirtMachine::start(
        client(&fake, TOKEN),
        KubevirtConfig {
            namespace: NS.into(),
            vm_name: VM.into(),
            credentials_dir: Some(dir.path().to_owned()),
        },
    );
    assert!(machine.wait_synced(Duration::from_secs(10)).await);
    assert_eq!(
        machine.record(Record::SessionKey).await.unwrap().as_deref(),
        Some("k3y-from-secret")
    );
    let subscriptions = r#"{"Members":[{"Id":"1","Destination":"https://ironic/events"}]}"#;
    machine
        .store_record(Record::EventSubscriptions, Some(subscriptions.into()))
        .await
        .unwrap();
    assert_eq!(
        annotation(&fake, "bmc.kubevirt.io/event-subscriptions").as_deref(),
        Some(subscriptions)
    );
    drop(machine);
    // A new sidecar reads them back.
    let again = support::machine(&fake).await;
    assert_eq!(
        again
            .record(Record::EventSubscriptions)
            .await
            .unwrap()
            .as_deref(),
        Some(subscriptions)
    );
    assert_eq!(again.record(Record::SessionKey).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_changes_are_announced() {
    let fake = fake().await;
    let machine = machine(&fake).await;
    let mut events = machine.events();
    machine.power(PowerAction::On).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(
            event,
            kubevirt_bmc::machine::MachineEvent::PowerChanged {
                to: PowerState::On | PowerState::PoweringOn,
                ..
            }
        ),
        "{event:?}"
    );
}

/// After an outage longer than the API server's watch window the resourceVersion a watch
/// resumes from is gone: kube-apiserver answers 410 Expired, and the machine must relist to
/// see what changed meanwhile rather than keep a stale state or spin on the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_whose_resource_version_expired_relists_and_sees_what_changed() {
    let fake = fake().await;
    let machine = machine(&fake).await;
    machine.power(PowerAction::On).await.unwrap();
    power_is(&machine, PowerState::On).await;
    // The API goes away (every open watch cut, none let in), the VMI is paused meanwhile,
    // and the history the watches would resume from is compacted: only a relist can show
    // the pause.
    fake.freeze_watches(true);
    fake.set_down(true);
    fake.break_watches();
    eventually("every watch cut", || async { fake.open_watches() == 0 }).await;
    pause_by_hand(&fake, true);
    fake.compact();
    fake.clear_requests();
    fake.freeze_watches(false);
    fake.set_down(false);
    eventually_within("power off, read by a relist", WATCH_BACK_WITHIN, || async {
        machine.power_state().await.ok() == Some(PowerState::Off)
    })
    .await;
    let requests = fake.requests();
    let vmis = "/apis/kubevirt.io/v1/namespaces/vms/virtualmachineinstances";
    assert!(
        requests
            .iter()
            .any(|r| r.is_watch() && r.path == vmis && r.status == 200),
        "the VMI watch came back: {requests:?}"
    );
    assert!(
        requests.iter().any(|r| !r.is_watch() && r.path == vmis),
        "the VMIs were listed again: {requests:?}"
    );
}
