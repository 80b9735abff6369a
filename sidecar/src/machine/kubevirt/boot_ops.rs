//! JSON patches that write a boot override into the VM template and take a used-up one out.
//! Each starts with a `test` of the resourceVersion the decision was made on, so a template
//! someone else changed meanwhile is never overwritten (the API answers 422; we re-read).

use serde_json::{Value, json};

use super::annotations::{self, BootState};
use super::boot::{BootError, BootLayout};
use super::types::VirtualMachine;
use crate::machine::{BootOverride, BootOverrideEnabled, BootTarget, MachineError};

const DOMAIN: &str = "/spec/template/spec/domain";

fn pointer_key(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn annotation_path(key: &str) -> String {
    format!("/metadata/annotations/{}", pointer_key(key))
}

fn guard(vm: &VirtualMachine, ops: &mut Vec<Value>) {
    ops.push(json!({
        "op": "test",
        "path": "/metadata/resourceVersion",
        "value": vm.metadata.resource_version.clone().unwrap_or_default(),
    }));
    if vm.metadata.annotations.is_none() {
        ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": {}}));
    }
}

fn layout_ops(vm: &VirtualMachine, old: &BootLayout, new: &BootLayout, ops: &mut Vec<Value>) {
    if new.disks != old.disks {
        ops.push(
            json!({"op": "add", "path": format!("{DOMAIN}/devices/disks"), "value": new.disks}),
        );
    }
    if new.interfaces != old.interfaces {
        ops.push(json!({"op": "add", "path": format!("{DOMAIN}/devices/interfaces"), "value": new.interfaces}));
    }
    if new.bootloader != old.bootloader {
        match &new.bootloader {
            None => {
                ops.push(json!({"op": "remove", "path": format!("{DOMAIN}/firmware/bootloader")}))
            }
            Some(loader) if vm.spec.template.spec.domain.firmware.is_some() => ops.push(json!({
                "op": "add", "path": format!("{DOMAIN}/firmware/bootloader"), "value": loader
            })),
            Some(loader) => ops.push(json!({
                "op": "add", "path": format!("{DOMAIN}/firmware"), "value": {"bootloader": loader}
            })),
        }
    }
}

fn set_annotation(ops: &mut Vec<Value>, key: &str, value: &str) {
    ops.push(json!({"op": "add", "path": annotation_path(key), "value": value}));
}

fn remove_annotation(vm: &VirtualMachine, ops: &mut Vec<Value>, key: &str) {
    if vm.annotation(key).is_some() {
        ops.push(json!({"op": "remove", "path": annotation_path(key)}));
    }
}

fn finish(ops: Vec<Value>) -> json_patch::Patch {
    serde_json::from_value(Value::Array(ops)).expect("well-formed JSON patch")
}

/// The patch that makes `boot` the override: the template boots it from the next VMI on,
/// and the override is recorded exactly as given so it reads back unchanged.
pub fn set(
    vm: &VirtualMachine,
    boot: &BootOverride,
    running_vmi: Option<&str>,
) -> Result<json_patch::Patch, MachineError> {
    let current = BootLayout::of_vm(vm);
    let state = annotations::boot_state(vm);
    // A one-time override not used yet is replaced: start from the persistent order.
    let base = match state.as_ref().and_then(|s| s.saved.as_ref()) {
        Some(saved) => current.restore(saved),
        None => current.clone(),
    };
    let rewrite = |base: &BootLayout| {
        base.rewrite(boot.target, boot.mode).map_err(|e| match e {
            BootError::Unsupported(_) => MachineError::NotSupported(e.to_string()),
            BootError::NoDevice(_) => MachineError::NotAllowed(e.to_string()),
        })
    };
    let (layout, new_state) = match boot.enabled {
        _ if boot.target == BootTarget::None && boot.enabled != BootOverrideEnabled::Disabled => {
            (rewrite(&base)?, None)
        }
        BootOverrideEnabled::Disabled => (base.clone(), None),
        BootOverrideEnabled::Continuous => (rewrite(&base)?, None),
        BootOverrideEnabled::Once => {
            let layout = rewrite(&base)?;
            let changes_spec = layout != current;
            let state = BootState {
                applied_generation: vm.generation() + i64::from(changes_spec),
                set_on_vmi: running_vmi.map(str::to_owned),
                saved: Some(base.save()),
            };
            (layout, Some(state))
        }
    };
    let mut ops = Vec::new();
    guard(vm, &mut ops);
    layout_ops(vm, &current, &layout, &mut ops);
    set_annotation(&mut ops, annotations::BOOT_OVERRIDE, &boot.to_annotation());
    match new_state {
        Some(state) => set_annotation(
            &mut ops,
            annotations::BOOT_STATE,
            &serde_json::to_string(&state).unwrap_or_default(),
        ),
        None => remove_annotation(vm, &mut ops, annotations::BOOT_STATE),
    }
    Ok(finish(ops))
}

/// The patch that ends a used-up one-time override.
pub fn consume(vm: &VirtualMachine, state: &BootState) -> json_patch::Patch {
    let current = BootLayout::of_vm(vm);
    let restored = match &state.saved {
        Some(saved) => current.restore(saved),
        None => current.clone(),
    };
    let mut ops = Vec::new();
    guard(vm, &mut ops);
    layout_ops(vm, &current, &restored, &mut ops);
    let disabled = BootOverride {
        target: BootTarget::None,
        enabled: BootOverrideEnabled::Disabled,
        mode: restored.mode(),
    };
    set_annotation(
        &mut ops,
        annotations::BOOT_OVERRIDE,
        &disabled.to_annotation(),
    );
    remove_annotation(vm, &mut ops, annotations::BOOT_STATE);
    finish(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::BootMode;

    fn vm() -> VirtualMachine {
        let path = format!(
            "{}/../e2e/testdata/fixtures/vm-vm1.json",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn apply(vm: &VirtualMachine, patch: &json_patch::Patch) -> VirtualMachine {
        let mut raw = serde_json::to_value(vm).unwrap();
        json_patch::patch(&mut raw, patch).unwrap();
        serde_json::from_value(raw).unwrap()
    }

    #[test]
    fn once_pxe_uefi_then_consume_restores_the_template_and_reads_disabled() {
        let original = vm();
        let boot = BootOverride {
            target: BootTarget::Pxe,
            enabled: BootOverrideEnabled::Once,
            mode: BootMode::Uefi,
        };
        let patch = set(&original, &boot, Some("vmi-a")).unwrap();
        let text = serde_json::to_string(&patch).unwrap();
        assert!(
            text.starts_with(r#"[{"op":"test","path":"/metadata/resourceVersion","value":"1344"}"#),
            "{text}"
        );
        let applied = apply(&original, &patch);
        let domain = &applied.spec.template.spec.domain;
        assert_eq!(domain.devices.interfaces[0].boot_order, Some(1));
        assert_eq!(domain.devices.disks[0].boot_order, Some(2));
        assert!(
            domain
                .firmware
                .as_ref()
                .unwrap()
                .bootloader
                .as_ref()
                .unwrap()
                .efi
                .is_some()
        );
        assert_eq!(
            domain.firmware.as_ref().unwrap().uuid.as_deref(),
            Some("1ea717a8-9322-57bb-96c6-9356ff873252"),
            "fields beside the bootloader survive"
        );
        assert_eq!(
            applied.annotation(annotations::BOOT_OVERRIDE),
            Some("Pxe/Once/UEFI")
        );
        let state = annotations::boot_state(&applied).unwrap();
        assert_eq!(state.applied_generation, 2);
        assert_eq!(state.set_on_vmi.as_deref(), Some("vmi-a"));

        let consumed = apply(&applied, &consume(&applied, &state));
        assert_eq!(consumed.spec, original.spec);
        assert_eq!(
            consumed.annotation(annotations::BOOT_OVERRIDE),
            Some("None/Disabled/Legacy")
        );
        assert_eq!(consumed.annotation(annotations::BOOT_STATE), None);
    }

    #[test]
    fn a_new_override_replaces_an_unused_once_from_the_persistent_order() {
        let original = vm();
        let once = BootOverride {
            target: BootTarget::Pxe,
            enabled: BootOverrideEnabled::Once,
            mode: BootMode::Legacy,
        };
        let applied = apply(&original, &set(&original, &once, None).unwrap());
        let disabled = BootOverride {
            target: BootTarget::None,
            enabled: BootOverrideEnabled::Disabled,
            mode: BootMode::Legacy,
        };
        let back = apply(&applied, &set(&applied, &disabled, None).unwrap());
        assert_eq!(back.spec, original.spec);
        assert_eq!(back.annotation(annotations::BOOT_STATE), None);
    }

    #[test]
    fn unsupported_targets_and_missing_devices_change_nothing() {
        let vm = vm();
        let mut boot = BootOverride {
            target: BootTarget::BiosSetup,
            enabled: BootOverrideEnabled::Once,
            mode: BootMode::Uefi,
        };
        assert!(matches!(
            set(&vm, &boot, None),
            Err(MachineError::NotSupported(_))
        ));
        boot.target = BootTarget::Cd;
        assert!(
            matches!(set(&vm, &boot, None), Err(MachineError::NotAllowed(m)) if m.contains("CD-ROM"))
        );
    }
}
