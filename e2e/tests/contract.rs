//! The VM annotations are one contract, spoken by both binaries through `kubevirt-bmc-contract`:
//! what the sidecar writes the controller reads, and what the controller writes the sidecar
//! reads, with the functions each binary really calls.

use std::collections::BTreeMap;
use std::path::Path;

use kubevirt_bmc::machine::kubevirt::annotations as sidecar;
use kubevirt_bmc::machine::kubevirt::types::VirtualMachine;
use kubevirt_bmc::machine::{
    BootMode, BootOverride, BootOverrideEnabled, BootTarget, MediaInsert, MediaStatus,
};
use kubevirt_bmc_contract::annotations::{self as contract, PowerState};
use kubevirt_bmc_webhook::controller::children::VmRef;
use kubevirt_bmc_webhook::controller::media::{self as controller_media, DvAction};
use serde_json::{Value, json};

fn vm_with(annotations: &BTreeMap<String, String>) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "vm1", "namespace": "ns", "uid": "uid-1", "annotations": annotations},
        "spec": {"template": {"spec": {"domain": {"devices": {"disks": []}}, "volumes": []}}}
    })
}

fn vm_ref() -> VmRef {
    VmRef {
        name: "vm1".into(),
        namespace: "ns".into(),
        uid: "uid-1".into(),
    }
}

fn sidecar_view(vm: &Value) -> VirtualMachine {
    serde_json::from_value(vm.clone()).expect("the sidecar reads the VM")
}

#[test]
fn media_the_sidecar_writes_is_imported_by_the_controller_and_its_status_read_back() {
    let insert = MediaInsert {
        image: "https://images.example/installer.iso".into(),
        inserted: true,
        write_protected: true,
        size_bytes: None,
    };
    let mut annotations = BTreeMap::from([(
        contract::MEDIA.to_owned(),
        sidecar::media_annotation(&insert, Some(700 << 20)),
    )]);

    let plan = controller_media::plan(
        &vm_with(&annotations),
        &vm_ref(),
        &annotations,
        None,
        &Default::default(),
    );
    let DvAction::Apply(dv) = &plan.data_volume else {
        panic!("the controller must import what the sidecar asked for: {plan:?}");
    };
    assert_eq!(dv["spec"]["source"]["http"]["url"], insert.image.as_str());
    assert_eq!(
        dv["spec"]["storage"]["resources"]["requests"]["storage"], "700Mi",
        "sized from the image size the sidecar recorded"
    );
    let (key, status) = plan
        .status_annotation
        .expect("the controller reports the import");
    assert_eq!(key, contract::MEDIA_STATUS);
    annotations.insert(key, status.as_str().unwrap().to_owned());
    let state = sidecar::media_state(&sidecar_view(&vm_with(&annotations)));
    assert_eq!(state.image.as_deref(), Some(insert.image.as_str()));
    assert_eq!(state.status, MediaStatus::Importing { progress: None });

    // CDI finished: the controller writes Ready, the sidecar reads it as Ready.
    let imported = json!({"spec": {"source": {"http": {"url": insert.image}}},
                          "status": {"phase": "Succeeded", "progress": "100.0%"}});
    let plan = controller_media::plan(
        &vm_with(&annotations),
        &vm_ref(),
        &annotations,
        Some(&imported),
        &Default::default(),
    );
    let (_, status) = plan.status_annotation.expect("status changes to Ready");
    annotations.insert(
        contract::MEDIA_STATUS.to_owned(),
        status.as_str().unwrap().to_owned(),
    );
    let state = sidecar::media_state(&sidecar_view(&vm_with(&annotations)));
    assert_eq!(state.status, MediaStatus::Ready);
    assert!(state.inserted && state.write_protected);

    // A failed import reaches the sidecar with the controller's reason.
    let failed = json!({"spec": {"source": {"http": {"url": insert.image}}},
                        "status": {"phase": "Failed", "conditions": [
                            {"type": "Running", "status": "False", "reason": "Error", "message": "got 404"}]}});
    let plan = controller_media::plan(
        &vm_with(&annotations),
        &vm_ref(),
        &annotations,
        Some(&failed),
        &Default::default(),
    );
    let (_, status) = plan.status_annotation.unwrap();
    annotations.insert(
        contract::MEDIA_STATUS.to_owned(),
        status.as_str().unwrap().to_owned(),
    );
    let state = sidecar::media_state(&sidecar_view(&vm_with(&annotations)));
    assert_eq!(
        state.status,
        MediaStatus::Failed {
            reason: "got 404".into()
        }
    );
}

#[test]
fn power_and_boot_override_the_sidecar_writes_parse_in_the_contract_and_back() {
    for on in [true, false] {
        let written = sidecar::power_value(on);
        assert_eq!(PowerState::parse(written), Some(PowerState::from_on(on)));
        let annotations = BTreeMap::from([(contract::POWER.to_owned(), written.to_owned())]);
        assert_eq!(
            sidecar::desired(&sidecar_view(&vm_with(&annotations))).power,
            Some(on)
        );
    }
    let boot = BootOverride {
        target: BootTarget::Cd,
        enabled: BootOverrideEnabled::Once,
        mode: BootMode::Legacy,
    };
    let annotations = BTreeMap::from([(contract::BOOT_OVERRIDE.to_owned(), boot.to_annotation())]);
    assert_eq!(
        sidecar::boot_override(&sidecar_view(&vm_with(&annotations))),
        Some(boot)
    );
    assert_eq!(boot.to_annotation(), "Cd/Once/Legacy");
}

#[test]
fn the_sidecars_own_keys_are_under_the_prefix_and_left_alone_by_the_controllers_checks() {
    let mut annotations = BTreeMap::new();
    for key in [
        contract::POWER,
        contract::BOOTED_VMI,
        contract::RESTART_OF,
        contract::BOOT_OVERRIDE,
        contract::BOOT_STATE,
        contract::EVENT_SUBSCRIPTIONS,
        contract::SESSION_SETTINGS,
    ] {
        assert!(key.starts_with(contract::PREFIX), "{key}");
        annotations.insert(key.to_owned(), "whatever the sidecar keeps".to_owned());
    }
    assert_eq!(contract::check_all(&annotations), vec![]);
}

/// The keys are written once: no source file of either binary spells one out.
#[test]
fn no_annotation_key_is_spelled_outside_the_contract_crate() {
    let top = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut offenders = Vec::new();
    for dir in [
        "webhook/src",
        "sidecar/src",
        "sidecar/ipmi/src",
        "webhook/runtime/src",
        "webhook/kubectl-bmc/src",
    ] {
        visit(&top.join(dir), &mut |path, text| {
            // Unit tests may spell a key to pin its exact text; code must not.
            let code = text.split("#[cfg(test)]").next().unwrap_or(text);
            for (n, line) in code.lines().enumerate() {
                if line.contains("\"bmc.kubevirt.io/") {
                    offenders.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        });
    }
    assert!(
        offenders.is_empty(),
        "keys outside the contract: {offenders:#?}"
    );
}

fn visit(dir: &Path, f: &mut dyn FnMut(&Path, &str)) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            visit(&path, f);
        } else if path.extension().is_some_and(|e| e == "rs") {
            f(&path, &std::fs::read_to_string(&path).unwrap());
        }
    }
}
