//! Power actions of the KubeVirt machine from each state, against the fake API server with
//! KubeVirt's rules and a simulated virt-controller.

mod support;

use kubevirt_bmc::machine::{Machine, MachineError, PowerAction, PowerState};
use support::*;

async fn power_is(machine: &impl Machine, state: PowerState) {
    eventually(&format!("power {state}"), || async {
        machine.power_state().await.ok() == Some(state)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_unpauses_the_fresh_vmi_and_records_the_wish_first() {
    let fake = fake().await;
    let machine = machine(&fake).await;
    let uid = vmi_uid(&fake);
    assert_eq!(machine.power_state().await.unwrap(), PowerState::Off);
    fake.clear_requests();
    machine.power(PowerAction::On).await.unwrap();
    let requests = non_watch(&fake.requests());
    assert_eq!(calls(&requests), ["unpause"]);
    // The wish is written before the call, the fact (this VMI has booted) after it.
    let order: Vec<(String, Option<String>)> = requests
        .iter()
        .map(|r| (r.method.clone(), r.subresource().map(str::to_owned)))
        .collect();
    assert_eq!(
        order,
        [
            ("PATCH".to_owned(), None),
            ("PUT".to_owned(), Some("unpause".to_owned())),
            ("PATCH".to_owned(), None)
        ]
    );
    assert_eq!(
        requests[0].body.as_ref().unwrap()["metadata"]["annotations"],
        serde_json::json!({"bmc.kubevirt.io/power-state": "On"})
    );
    assert_eq!(
        requests[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        annotation(&fake, "bmc.kubevirt.io/power-state").as_deref(),
        Some("On")
    );
    assert_eq!(
        annotation(&fake, "bmc.kubevirt.io/booted-vmi"),
        Some(uid.clone())
    );
    assert!(!paused(&vmi(&fake)));
    assert_eq!(vmi_uid(&fake), uid, "same VMI, same Pod");
    power_is(&machine, PowerState::On).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_off_pauses_and_on_again_is_a_fresh_boot_by_reset_and_unpause() {
    let fake = fake().await;
    let machine = machine(&fake).await;
    machine.power(PowerAction::On).await.unwrap();
    power_is(&machine, PowerState::On).await;
    fake.clear_requests();
    machine.power(PowerAction::ForceOff).await.unwrap();
    assert_eq!(calls(&fake.requests()), ["pause"]);
    assert!(paused(&vmi(&fake)));
    power_is(&machine, PowerState::Off).await;
    // Off when off: nothing to do, nothing sent.
    fake.clear_requests();
    machine.power(PowerAction::ForceOff).await.unwrap();
    assert!(non_watch(&fake.requests()).is_empty());
    let uid = vmi_uid(&fake);
    machine.power(PowerAction::On).await.unwrap();
    assert_eq!(calls(&fake.requests()), ["reset", "unpause"]);
    assert_eq!(vmi_uid(&fake), uid);
    power_is(&machine, PowerState::On).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_when_on_sends_nothing() {
    let fake = fake().await;
    let machine = machine(&fake).await;
    machine.power(PowerAction::On).await.unwrap();
    power_is(&machine, PowerState::On).await;
    fake.clear_requests();
    machine.power(PowerAction::On).await.unwrap();
    assert!(non_watch(&fake.requests()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_and_restarts_when_on() {
    let fake = fake().await;
    let machine = machine(&fake).await;
    machine.power(PowerAction::On).await.unwrap();
    power_is(&machine, PowerState::On).await;
    let uid = vmi_uid(&fake);
    for (action, call) in [
        (PowerAction::ForceRestart, "reset"),
        (PowerAction::PowerCycle, "reset"),
        (PowerAction::GracefulRestart, "softreboot"),
    ] {
        fake.clear_requests();
        machine.power(action).await.unwrap();
        assert_eq!(calls(&fake.requests()), [call], "{action:?}");
        power_is(&machine, PowerState::On).await;
    }
    assert_eq!(vmi_uid(&fake), uid, "in place: same VMI and Pod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_off_cycle_powers_on_and_restarts_are_refused_with_a_reason() {
    let fake = fake().await;
    let machine = machine(&fake).await;
    for action in [PowerAction::ForceRestart, PowerAction::GracefulRestart] {
        let error = machine.power(action).await.unwrap_err();
        assert!(
            matches!(&error, MachineError::NotAllowed(m) if m.contains("off")),
            "{action:?}: {error:?}"
        );
    }
    assert!(
        calls(&fake.requests()).is_empty(),
        "nothing sent for a refusal"
    );
    machine.power(PowerAction::PowerCycle).await.unwrap();
    assert_eq!(
        calls(&fake.requests()),
        ["unpause"],
        "never ran: a plain unpause"
    );
    power_is(&machine, PowerState::On).await;
    assert!(matches!(
        machine.power(PowerAction::Nmi).await,
        Err(MachineError::NotSupported(_))
    ));
    assert!(!machine.supported_actions().contains(&PowerAction::Nmi));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_ends_with_a_new_vmi_that_stays_paused() {
    let fake = fake().await;
    let machine = machine(&fake).await;
    machine.power(PowerAction::On).await.unwrap();
    power_is(&machine, PowerState::On).await;
    let old = vmi_uid(&fake);
    fake.clear_requests();
    machine.power(PowerAction::GracefulShutdown).await.unwrap();
    assert_eq!(calls(&fake.requests()), ["restart"]);
    assert_eq!(
        annotation(&fake, "bmc.kubevirt.io/power-state").as_deref(),
        Some("Off")
    );
    power_is(&machine, PowerState::Off).await;
    assert_ne!(vmi_uid(&fake), old, "Always made a new VMI");
    assert!(paused(&vmi(&fake)), "and it starts paused: off");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!calls(&fake.requests()).contains(&"unpause".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_powers_itself_off_is_off() {
    let fake = fake().await;
    let machine = machine(&fake).await;
    machine.power(PowerAction::On).await.unwrap();
    power_is(&machine, PowerState::On).await;
    let old = vmi_uid(&fake);
    assert!(fake.guest_shutdown(NS, VM));
    eventually("desired power becomes Off", || async {
        annotation(&fake, "bmc.kubevirt.io/power-state").as_deref() == Some("Off")
    })
    .await;
    assert_ne!(vmi_uid(&fake), old);
    assert!(paused(&vmi(&fake)));
    power_is(&machine, PowerState::Off).await;
    // And it comes back on when asked.
    machine.power(PowerAction::On).await.unwrap();
    power_is(&machine, PowerState::On).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_cost_no_api_call() {
    let fake = fake().await;
    let machine = machine(&fake).await;
    fake.clear_requests();
    for _ in 0..1000 {
        machine.power_state().await.unwrap();
    }
    machine.boot_override().await.unwrap();
    machine.inventory().await.unwrap();
    machine.media().await.unwrap();
    assert!(
        non_watch(&fake.requests()).is_empty(),
        "{:?}",
        fake.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_on_after_a_guest_shutdown_boots_the_replacement_vmi() {
    let fake = fake().await;
    let machine = machine(&fake).await;
    machine.power(PowerAction::On).await.unwrap();
    power_is(&machine, PowerState::On).await;
    // The guest powers off and virt-controller is slow to replace the VMI; meanwhile a
    // client powers the machine on again.
    fake.hold_controller(true);
    assert!(fake.guest_shutdown(NS, VM));
    power_is(&machine, PowerState::Off).await;
    machine.power(PowerAction::On).await.unwrap();
    fake.hold_controller(false);
    eventually("the replacement VMI is unpaused", || async {
        !paused(&vmi(&fake))
    })
    .await;
    power_is(&machine, PowerState::On).await;
    assert_eq!(
        annotation(&fake, "bmc.kubevirt.io/power-state").as_deref(),
        Some("On")
    );
}

/// A node failure (the VMI ends Failed) is a power loss, not a power-off: under the default
/// restore policy `previous` the replacement VMI is booted and the machine stays on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_vmi_comes_back_on_under_the_default_policy_previous() {
    let fake = fake().await;
    let machine = machine(&fake).await;
    assert_eq!(
        machine.restore_policy().await.unwrap(),
        kubevirt_bmc::machine::RestorePolicy::Previous
    );
    machine.power(PowerAction::On).await.unwrap();
    power_is(&machine, PowerState::On).await;
    let old = vmi_uid(&fake);
    assert!(fake.lose_vmi(NS, VM));
    eventually("the replacement VMI is booted", || async {
        vmi_uid(&fake) != old && !paused(&vmi(&fake))
    })
    .await;
    power_is(&machine, PowerState::On).await;
    assert_eq!(
        annotation(&fake, "bmc.kubevirt.io/power-state").as_deref(),
        Some("On")
    );
    // A user's `virtctl restart` is a loss too: on it stays.
    let old = vmi_uid(&fake);
    fake.restart_by_user(NS, VM).unwrap();
    eventually("booted again after virtctl restart", || async {
        vmi_uid(&fake) != old && !paused(&vmi(&fake))
    })
    .await;
    power_is(&machine, PowerState::On).await;
}

/// The sidecar dies with its VMI: a new one, started after the loss, reads the policy and the
/// desired power from the VM and boots the replacement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_sidecar_after_a_loss_restores_power_from_the_vm() {
    let fake = fake().await;
    let first = machine(&fake).await;
    first.power(PowerAction::On).await.unwrap();
    power_is(&first, PowerState::On).await;
    drop(first);
    let old = vmi_uid(&fake);
    assert!(fake.lose_vmi(NS, VM));
    assert_ne!(vmi_uid(&fake), old);
    assert!(paused(&vmi(&fake)), "replacement starts paused");
    let second = machine(&fake).await;
    eventually("the new sidecar boots it", || async {
        !paused(&vmi(&fake))
    })
    .await;
    power_is(&second, PowerState::On).await;
}

/// `always-off` keeps a lost machine off; `always-on` powers a lost one on even when it was
/// off. The policy is written on the VM exactly as set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_policies_always_off_and_always_on_decide_after_a_loss() {
    use kubevirt_bmc::machine::RestorePolicy;
    let fake = fake().await;
    let machine = machine(&fake).await;
    machine
        .set_restore_policy(RestorePolicy::AlwaysOff)
        .await
        .unwrap();
    assert_eq!(
        annotation(&fake, "bmc.kubevirt.io/power-restore-policy").as_deref(),
        Some("always-off")
    );
    assert_eq!(
        machine.restore_policy().await.unwrap(),
        RestorePolicy::AlwaysOff
    );
    machine.power(PowerAction::On).await.unwrap();
    power_is(&machine, PowerState::On).await;
    assert!(fake.lose_vmi(NS, VM));
    eventually("desired power becomes Off", || async {
        annotation(&fake, "bmc.kubevirt.io/power-state").as_deref() == Some("Off")
    })
    .await;
    power_is(&machine, PowerState::Off).await;
    assert!(paused(&vmi(&fake)));

    machine
        .set_restore_policy(RestorePolicy::AlwaysOn)
        .await
        .unwrap();
    assert!(fake.lose_vmi(NS, VM));
    eventually("always-on boots the replacement", || async {
        !paused(&vmi(&fake))
    })
    .await;
    power_is(&machine, PowerState::On).await;
    assert_eq!(
        annotation(&fake, "bmc.kubevirt.io/power-state").as_deref(),
        Some("On")
    );
    // But a guest's own power-off is no loss: off it stays, even under always-on.
    assert!(fake.guest_shutdown(NS, VM));
    eventually("desired power becomes Off", || async {
        annotation(&fake, "bmc.kubevirt.io/power-state").as_deref() == Some("Off")
    })
    .await;
    power_is(&machine, PowerState::Off).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(paused(&vmi(&fake)), "not turned on by always-on");
}

/// A hard off right after a power-on (the unpause may not have reached the cache yet) pauses
/// the VMI: the off wins, no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_off_right_after_power_on_wins() {
    let fake = fake().await;
    let machine = machine(&fake).await;
    machine.power(PowerAction::On).await.unwrap();
    machine.power(PowerAction::ForceOff).await.unwrap();
    power_is(&machine, PowerState::Off).await;
    assert!(paused(&vmi(&fake)));
    machine.power(PowerAction::On).await.unwrap();
    machine.power(PowerAction::ForceRestart).await.unwrap();
    power_is(&machine, PowerState::On).await;
}

/// virt-api refuses to unpause during a VM snapshot (409 "VM snapshot is in progress"): the
/// power-on is accepted, reads PoweringOn, and completes once the snapshot is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_on_during_a_vm_snapshot_completes_when_the_snapshot_ends() {
    let fake = fake().await;
    let machine = machine(&fake).await;
    fake.modify(kubevirt_bmc_e2e::fake_apiserver::Gvr::vm(), NS, VM, |vm| {
        vm["status"]["snapshotInProgress"] = serde_json::json!("snap-1");
    });
    machine.power(PowerAction::On).await.unwrap();
    assert_eq!(machine.power_state().await.unwrap(), PowerState::PoweringOn);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(paused(&vmi(&fake)), "KubeVirt refused the unpause");
    assert_eq!(machine.power_state().await.unwrap(), PowerState::PoweringOn);
    fake.modify(kubevirt_bmc_e2e::fake_apiserver::Gvr::vm(), NS, VM, |vm| {
        vm["status"]
            .as_object_mut()
            .unwrap()
            .remove("snapshotInProgress");
    });
    eventually("unpaused after the snapshot", || async {
        !paused(&vmi(&fake))
    })
    .await;
    power_is(&machine, PowerState::On).await;
}

/// The controller's part, played by the test: the import done, the CD-ROM attached (a template
/// change, so the VM's generation moves on).
fn attach_medium(fake: &kubevirt_bmc_e2e::fake_apiserver::FakeApiServer) {
    fake.modify(kubevirt_bmc_e2e::fake_apiserver::Gvr::vm(), NS, VM, |vm| {
        vm["metadata"]["annotations"]["bmc.kubevirt.io/media-status"] =
            serde_json::Value::from(r#"{"phase":"Ready","progress":"100.0%"}"#);
        let spec = &mut vm["spec"]["template"]["spec"];
        spec["domain"]["devices"]["disks"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"name": "bmc-media", "cdrom": {"bus": "sata"}}));
        spec["volumes"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!(
                {"name": "bmc-media", "dataVolume": {"name": "vm1-bmc-media", "hotpluggable": true}}
            ));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_on_while_the_medium_imports_boots_only_once_it_is_attached() {
    let fake = fake().await;
    let machine = machine(&fake).await;
    let first = vmi_uid(&fake);
    // Inserted, the controller has not reported the import done.
    fake.modify(kubevirt_bmc_e2e::fake_apiserver::Gvr::vm(), NS, VM, |vm| {
        vm["metadata"]["annotations"]["bmc.kubevirt.io/media"] = serde_json::Value::from(
            r#"{"image":"http://10.0.0.1/rhel-dvd.iso","inserted":true,"writeProtected":true,"sizeBytes":11659116544}"#,
        );
    });
    eventually("the medium seen importing", || async {
        machine.media().await.unwrap().image.is_some()
    })
    .await;
    fake.clear_requests();
    machine.power(PowerAction::On).await.unwrap();
    assert!(
        calls(&fake.requests()).is_empty(),
        "no boot without the medium"
    );
    assert!(paused(&vmi(&fake)));
    assert_eq!(machine.power_state().await.unwrap(), PowerState::PoweringOn);
    let wait = annotation(&fake, "bmc.kubevirt.io/power-on-waits-for-media").unwrap();
    assert!(wait.contains(&first), "{wait}");

    attach_medium(&fake);
    // A new VMI from the template with the CD-ROM, booted (unpaused) by the BMC.
    eventually("a new VMI with the medium, running", || async {
        let vmi = vmi(&fake);
        vmi["metadata"]["uid"] != first.as_str()
            && !paused(&vmi)
            && vmi["spec"]["domain"]["devices"]["disks"]
                .as_array()
                .is_some_and(|d| d.iter().any(|d| d["name"] == "bmc-media"))
    })
    .await;
    power_is(&machine, PowerState::On).await;
    assert_eq!(
        annotation(&fake, "bmc.kubevirt.io/power-on-waits-for-media"),
        None
    );
}
