//! Boot overrides and recovery: Ironic's reboot (off, PXE once in UEFI, on), a sidecar that
//! dies with the VMI it restarted, and the next one finishing the job.

mod support;

use std::time::Duration;

use kubevirt_bmc::machine::{
    BootMode, BootOverride, BootOverrideEnabled, BootTarget, Machine, MachineError, PowerAction,
    PowerState,
};
use serde_json::Value;
use support::*;

const PXE_ONCE_UEFI: BootOverride = BootOverride {
    target: BootTarget::Pxe,
    enabled: BootOverrideEnabled::Once,
    mode: BootMode::Uefi,
};

fn template(fake: &kubevirt_bmc_e2e::fake_apiserver::FakeApiServer) -> Value {
    fake.vm(NS, VM).unwrap()["spec"]["template"]["spec"]["domain"].clone()
}

fn original_template() -> Value {
    fixture("vm-vm1.json")["spec"]["template"]["spec"]["domain"].clone()
}

async fn power_is(machine: &impl Machine, state: PowerState) {
    eventually(&format!("power {state}"), || async {
        machine.power_state().await.ok() == Some(state)
    })
    .await;
}

async fn override_is(machine: &impl Machine, boot: BootOverride) {
    eventually(&format!("boot override {boot:?}"), || async {
        machine.boot_override().await.ok() == Some(boot)
    })
    .await;
}

fn disabled(mode: BootMode) -> BootOverride {
    BootOverride {
        target: BootTarget::None,
        enabled: BootOverrideEnabled::Disabled,
        mode,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ironic_reboot_pxe_once_uefi_boots_a_new_unpaused_vmi_then_restores_the_order() {
    let fake = fake().await;
    let machine = machine(&fake).await;
    machine.power(PowerAction::On).await.unwrap();
    power_is(&machine, PowerState::On).await;

    // Ironic: power off, set the boot device, read it back, power on.
    machine.power(PowerAction::ForceOff).await.unwrap();
    power_is(&machine, PowerState::Off).await;
    machine.set_boot_override(PXE_ONCE_UEFI).await.unwrap();
    assert_eq!(
        machine.boot_override().await.unwrap(),
        PXE_ONCE_UEFI,
        "reads back exactly as set, at once"
    );
    let domain = template(&fake);
    assert_eq!(domain["devices"]["interfaces"][0]["bootOrder"], 1);
    assert_eq!(domain["devices"]["disks"][0]["bootOrder"], 2);
    assert_eq!(domain["firmware"]["bootloader"]["efi"]["secureBoot"], false);
    let patch = fake
        .requests()
        .into_iter()
        .find(|r| r.content_type.as_deref() == Some("application/json-patch+json"))
        .expect("a JSON patch");
    assert_eq!(
        patch.body.as_ref().unwrap()[0]["op"],
        "test",
        "guarded by a test op"
    );

    let old = vmi_uid(&fake);
    fake.clear_requests();
    machine.power(PowerAction::On).await.unwrap();
    assert_eq!(
        calls(&fake.requests())[0],
        "restart",
        "a pending change needs a new VMI"
    );
    eventually("the new VMI runs unpaused", || async {
        let vmi = vmi(&fake);
        vmi["metadata"]["uid"] != old.as_str() && !paused(&vmi)
    })
    .await;
    let booted = vmi(&fake);
    assert_eq!(
        booted["spec"]["domain"]["devices"]["interfaces"][0]["bootOrder"], 1,
        "the new VMI boots from the network"
    );
    assert!(booted["spec"]["domain"]["firmware"]["bootloader"]["efi"].is_object());
    power_is(&machine, PowerState::On).await;
    // Used up: the template's own order is back and the override reads Disabled.
    override_is(&machine, disabled(BootMode::Legacy)).await;
    eventually("template restored", || async {
        template(&fake) == original_template()
    })
    .await;
    assert_eq!(
        annotation(&fake, "bmc.kubevirt.io/boot-override-state"),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_killed_after_it_issued_restart_is_finished_by_the_next_one() {
    let fake = fake().await;
    let first = machine(&fake).await;
    first.set_boot_override(PXE_ONCE_UEFI).await.unwrap();
    let old = vmi_uid(&fake);
    // virt-controller is slow: the VMI is gone but its successor not there yet when the
    // sidecar dies with the Pod.
    fake.hold_controller(true);
    first.power(PowerAction::On).await.unwrap();
    assert_eq!(
        calls(&fake.requests()).last().map(String::as_str),
        Some("restart")
    );
    assert_eq!(first.power_state().await.unwrap(), PowerState::PoweringOn);
    drop(first);
    assert!(fake.vmi(NS, VM).is_none());
    fake.hold_controller(false);
    let new = vmi_uid(&fake);
    assert_ne!(new, old);
    assert!(paused(&vmi(&fake)), "startStrategy Paused");

    let second = machine(&fake).await;
    eventually("the next sidecar unpauses the new VMI", || async {
        !paused(&vmi(&fake))
    })
    .await;
    power_is(&second, PowerState::On).await;
    override_is(&second, disabled(BootMode::Legacy)).await;
    eventually("template restored", || async {
        template(&fake) == original_template()
    })
    .await;
    assert_eq!(annotation(&fake, "bmc.kubevirt.io/booted-vmi"), Some(new));
    assert_eq!(annotation(&fake, "bmc.kubevirt.io/restart-of"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_killed_after_unpausing_but_before_restoring_is_finished_too() {
    let fake = fake().await;
    let first = machine(&fake).await;
    first.set_boot_override(PXE_ONCE_UEFI).await.unwrap();
    fake.hold_controller(true);
    first.power(PowerAction::On).await.unwrap();
    drop(first);
    fake.hold_controller(false);
    // The previous sidecar's work, done by hand up to the unpause: annotations as it
    // writes them, then the unpause, then death.
    let new = vmi_uid(&fake);
    fake.modify(kubevirt_bmc_e2e::fake_apiserver::Gvr::vm(), NS, VM, |vm| {
        let a = &mut vm["metadata"]["annotations"];
        a["bmc.kubevirt.io/booted-vmi"] = Value::from(new.clone());
        a.as_object_mut()
            .unwrap()
            .remove("bmc.kubevirt.io/restart-of");
    });
    fake.modify(
        kubevirt_bmc_e2e::fake_apiserver::Gvr::vmi(),
        NS,
        VM,
        |vmi| {
            let conditions = vmi["status"]["conditions"].as_array_mut().unwrap();
            conditions.retain(|c| c["type"] != "Paused");
        },
    );
    let second = machine(&fake).await;
    override_is(&second, disabled(BootMode::Legacy)).await;
    eventually("template restored", || async {
        template(&fake) == original_template()
    })
    .await;
    power_is(&second, PowerState::On).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_override_stays_and_the_next_boot_uses_it() {
    let fake = fake().await;
    let machine = machine(&fake).await;
    let boot = BootOverride {
        target: BootTarget::Pxe,
        enabled: BootOverrideEnabled::Continuous,
        mode: BootMode::Legacy,
    };
    machine.set_boot_override(boot).await.unwrap();
    assert_eq!(machine.boot_override().await.unwrap(), boot);
    // Never ran, but the template changed since the VMI was made: a new VMI.
    machine.power(PowerAction::On).await.unwrap();
    assert!(calls(&fake.requests()).contains(&"restart".to_owned()));
    eventually("new VMI unpaused", || async { !paused(&vmi(&fake)) }).await;
    power_is(&machine, PowerState::On).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(machine.boot_override().await.unwrap(), boot, "not consumed");
    assert_eq!(template(&fake)["devices"]["interfaces"][0]["bootOrder"], 1);
    // A reset now needs no new VMI: the running one has the current template.
    fake.clear_requests();
    machine.power(PowerAction::ForceRestart).await.unwrap();
    assert_eq!(calls(&fake.requests()), ["reset"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_targets_and_missing_devices_are_refused_and_change_nothing() {
    let fake = fake().await;
    let machine = machine(&fake).await;
    let before = fake.vm(NS, VM).unwrap();
    let mut boot = PXE_ONCE_UEFI;
    boot.target = BootTarget::BiosSetup;
    assert!(matches!(
        machine.set_boot_override(boot).await,
        Err(MachineError::NotSupported(_))
    ));
    boot.target = BootTarget::Cd;
    let error = machine.set_boot_override(boot).await.unwrap_err();
    assert!(
        matches!(&error, MachineError::NotAllowed(m) if m.contains("CD-ROM")),
        "{error:?}"
    );
    assert_eq!(fake.vm(NS, VM).unwrap(), before);
    assert_eq!(
        machine.boot_override().await.unwrap(),
        disabled(BootMode::Legacy),
        "nothing set: Disabled in the template's (BIOS) mode"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_writers_are_retried_until_the_api_accepts() {
    let fake = fake().await;
    let machine = machine(&fake).await;
    fake.inject_conflicts(2);
    machine.set_boot_override(PXE_ONCE_UEFI).await.unwrap();
    let statuses: Vec<u16> = fake
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [409, 409, 200]);
    assert_eq!(machine.boot_override().await.unwrap(), PXE_ONCE_UEFI);
    fake.inject_conflicts(1);
    machine.power(PowerAction::On).await.unwrap();
    assert_eq!(
        annotation(&fake, "bmc.kubevirt.io/power-state").as_deref(),
        Some("On")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_changed_by_someone_else_meanwhile_is_not_overwritten() {
    let fake = fake().await;
    let machine = machine(&fake).await;
    // Someone changes the VM, and our cache has not seen it yet when we decide: hold the
    // watch back by making the change right before the write through a slow API.
    fake.set_slow(Duration::from_millis(50));
    let writer = async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        fake.modify(kubevirt_bmc_e2e::fake_apiserver::Gvr::vm(), NS, VM, |vm| {
            vm["spec"]["template"]["spec"]["domain"]["devices"]["disks"][1]["disk"]["bus"] =
                Value::from("sata");
        });
    };
    let (result, ()) = tokio::join!(machine.set_boot_override(PXE_ONCE_UEFI), writer);
    result.unwrap();
    let statuses: Vec<u16> = fake
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [422, 200], "the test guard caught the stale read");
    let domain = template(&fake);
    assert_eq!(
        domain["devices"]["disks"][1]["disk"]["bus"], "sata",
        "their change kept"
    );
    assert_eq!(
        domain["devices"]["interfaces"][0]["bootOrder"], 1,
        "ours applied"
    );
}

/// The installer's loop: CD once, power on, the guest installs and reboots itself with the
/// ISO still inserted. While the override is pending the template carries KubeVirt's
/// `rebootPolicy: Terminate`, so that reboot ends the VMI; the next one comes from the
/// restored template and boots the disk, the CD still attached, and power stays On.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cd_once_then_the_guests_own_reboot_boots_the_disk_and_power_stays_on() {
    use kubevirt_bmc_e2e::fake_apiserver::{Gvr, kubevirt::first_boot_device};
    let fake = fake().await;
    fake.modify(Gvr::vm(), NS, VM, |vm| {
        let spec = &mut vm["spec"]["template"]["spec"];
        spec["domain"]["devices"]["disks"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"name": "installer", "cdrom": {"bus": "sata"}}));
        spec["volumes"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "name": "installer", "containerDisk": {"image": "example/installer-iso"}
            }));
    });
    let machine = machine(&fake).await;
    let cd_once = BootOverride {
        target: BootTarget::Cd,
        enabled: BootOverrideEnabled::Once,
        mode: BootMode::Legacy,
    };
    machine.set_boot_override(cd_once).await.unwrap();
    assert_eq!(template(&fake)["rebootPolicy"], "Terminate");
    machine.power(PowerAction::On).await.unwrap();
    eventually("the CD boot runs", || async {
        let vmi = vmi(&fake);
        !paused(&vmi) && first_boot_device(&vmi).as_deref() == Some("installer")
    })
    .await;
    power_is(&machine, PowerState::On).await;
    eventually("template restored, rebootPolicy the user's again", || async {
        template(&fake)["rebootPolicy"].is_null()
            && first_boot_device(&serde_json::json!({"spec": fake.vm(NS, VM).unwrap()["spec"]["template"]["spec"]})).as_deref()
                == Some("containerdisk")
    })
    .await;
    let installing = vmi_uid(&fake);

    assert!(fake.guest_reboot(NS, VM));
    eventually("the next VMI boots the disk", || async {
        let vmi = vmi(&fake);
        vmi_uid(&fake) != installing
            && !paused(&vmi)
            && first_boot_device(&vmi).as_deref() == Some("containerdisk")
    })
    .await;
    let vmi = vmi(&fake);
    assert!(
        vmi["spec"]["domain"]["devices"]["disks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "installer"),
        "the CD is still inserted"
    );
    assert!(vmi["spec"]["domain"]["rebootPolicy"].is_null());
    power_is(&machine, PowerState::On).await;
    assert_eq!(
        annotation(&fake, "bmc.kubevirt.io/power-state").as_deref(),
        Some("On")
    );
    override_is(&machine, disabled(BootMode::Legacy)).await;
    // The next guest reboot is an ordinary one, in place.
    let booted = vmi_uid(&fake);
    assert!(fake.guest_reboot(NS, VM));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(vmi_uid(&fake), booted);
    power_is(&machine, PowerState::On).await;
}
