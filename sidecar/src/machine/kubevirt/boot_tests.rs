use proptest::prelude::*;
use serde_json::json;

use super::*;

fn device(name: &str, cdrom: bool, order: Option<u32>, is_nic: bool) -> Device {
    let mut rest = Map::new();
    if is_nic {
        rest.insert("masquerade".into(), json!({}));
    } else if cdrom {
        rest.insert("cdrom".into(), json!({"bus": "sata"}));
    } else {
        rest.insert("disk".into(), json!({"bus": "virtio"}));
    }
    Device {
        name: name.into(),
        boot_order: order,
        rest,
    }
}

fn layout(disks: Vec<Device>, interfaces: Vec<Device>) -> BootLayout {
    BootLayout {
        disks,
        interfaces,
        bootloader: None,
    }
}

fn orders(devices: &[Device]) -> Vec<Option<u32>> {
    devices.iter().map(|d| d.boot_order).collect()
}

#[test]
fn pxe_on_a_template_without_orders_puts_the_nic_first_and_keeps_disks_bootable() {
    let l = layout(
        vec![
            device("root", false, None, false),
            device("cloudinit", false, None, false),
        ],
        vec![device("default", false, None, true)],
    );
    let out = l.rewrite(BootTarget::Pxe, BootMode::Uefi).unwrap();
    assert_eq!(orders(&out.interfaces), vec![Some(1)]);
    assert_eq!(orders(&out.disks), vec![Some(2), Some(3)]);
    assert_eq!(out.mode(), BootMode::Uefi);
    assert_eq!(
        out.bootloader.unwrap().efi,
        Some(json!({"secureBoot": false}))
    );
    // Fields the BMC does not know survive.
    assert_eq!(out.interfaces[0].rest["masquerade"], json!({}));
}

#[test]
fn unbootable_devices_stay_unbootable_unless_of_the_requested_class() {
    let l = layout(
        vec![
            device("root", false, Some(1), false),
            device("data", false, None, false),
            device("iso", true, None, false),
        ],
        vec![device("default", false, Some(2), true)],
    );
    let out = l.rewrite(BootTarget::Cd, BootMode::Legacy).unwrap();
    assert_eq!(orders(&out.disks), vec![Some(2), None, Some(1)]);
    assert_eq!(orders(&out.interfaces), vec![Some(3)]);
    assert_eq!(out.bootloader, None, "absent bootloader already means BIOS");
}

#[test]
fn a_missing_class_is_refused_and_unsupported_targets_named() {
    let l = layout(vec![device("root", false, None, false)], vec![]);
    assert_eq!(
        l.rewrite(BootTarget::Cd, BootMode::Uefi),
        Err(BootError::NoDevice(DeviceClass::Cdrom))
    );
    assert_eq!(
        l.rewrite(BootTarget::BiosSetup, BootMode::Uefi),
        Err(BootError::Unsupported(BootTarget::BiosSetup))
    );
    assert!(
        BootError::NoDevice(DeviceClass::Cdrom)
            .to_string()
            .contains("CD-ROM")
    );
}

#[test]
fn restore_puts_the_saved_order_and_firmware_back() {
    let l = BootLayout {
        disks: vec![device("root", false, Some(1), false)],
        interfaces: vec![device("default", false, None, true)],
        bootloader: Some(Bootloader {
            bios: Some(json!({})),
            ..Default::default()
        }),
    };
    let saved = l.save();
    let changed = l.rewrite(BootTarget::Pxe, BootMode::Uefi).unwrap();
    assert_ne!(changed, l);
    assert_eq!(changed.restore(&saved), l);
}

#[test]
fn uefi_keeps_existing_efi_settings_and_legacy_replaces_them() {
    let efi = Bootloader {
        efi: Some(json!({"secureBoot": true, "persistent": true})),
        ..Default::default()
    };
    let l = BootLayout {
        disks: vec![device("root", false, None, false)],
        interfaces: vec![],
        bootloader: Some(efi.clone()),
    };
    assert_eq!(
        l.rewrite(BootTarget::None, BootMode::Uefi)
            .unwrap()
            .bootloader,
        Some(efi)
    );
    let legacy = l.rewrite(BootTarget::None, BootMode::Legacy).unwrap();
    assert_eq!(legacy.mode(), BootMode::Legacy);
    assert_eq!(legacy.bootloader.unwrap().efi, None);
}

fn arb_device(i: usize, kind: u8, order: Option<u32>) -> Device {
    device(&format!("d{i}"), kind == 1, order, kind == 2)
}

prop_compose! {
    fn arb_layout()(specs in prop::collection::vec((0u8..3, prop::option::of(1u32..20)), 1..8))
        -> BootLayout {
        let mut disks = Vec::new();
        let mut interfaces = Vec::new();
        for (i, (kind, order)) in specs.into_iter().enumerate() {
            // KubeVirt refuses duplicate boot orders: keep them unique.
            let d = arb_device(i, kind, order.map(|o| o * 100 + i as u32));
            if kind == 2 { interfaces.push(d) } else { disks.push(d) }
        }
        layout(disks, interfaces)
    }
}

fn class_of(l: &BootLayout, name: &str) -> DeviceClass {
    if l.interfaces.iter().any(|d| d.name == name) {
        DeviceClass::Network
    } else {
        disk_class(l.disks.iter().find(|d| d.name == name).unwrap())
    }
}

/// Bootable devices by ascending bootOrder; names only.
fn boot_sequence(l: &BootLayout) -> Vec<String> {
    let mut all: Vec<(u32, String)> = l
        .disks
        .iter()
        .chain(&l.interfaces)
        .filter_map(|d| d.boot_order.map(|o| (o, d.name.clone())))
        .collect();
    all.sort();
    all.into_iter().map(|(_, n)| n).collect()
}

proptest! {
    #[test]
    fn rewrite_puts_the_class_first_keeps_the_rest_and_is_valid(
        l in arb_layout(),
        target in prop::sample::select(vec![BootTarget::Pxe, BootTarget::Hdd, BootTarget::Cd]),
        uefi in any::<bool>(),
    ) {
        let mode = if uefi { BootMode::Uefi } else { BootMode::Legacy };
        let class = DeviceClass::for_target(target).unwrap().unwrap();
        let out = match l.rewrite(target, mode) {
            Err(BootError::NoDevice(c)) => {
                prop_assert_eq!(c, class);
                let has = l.disks.iter().chain(&l.interfaces).any(|d| class_of(&l, &d.name) == class);
                prop_assert!(!has);
                return Ok(());
            }
            other => other.unwrap(),
        };
        prop_assert_eq!(out.mode(), mode);
        // Valid: same devices, same fields apart from bootOrder, orders 1..=n without gaps.
        prop_assert_eq!(out.disks.len(), l.disks.len());
        prop_assert_eq!(out.interfaces.len(), l.interfaces.len());
        for (a, b) in out.disks.iter().chain(&out.interfaces).zip(l.disks.iter().chain(&l.interfaces)) {
            prop_assert_eq!(&a.name, &b.name);
            prop_assert_eq!(&a.rest, &b.rest);
        }
        let seq = boot_sequence(&out);
        let mut orders: Vec<u32> = out.disks.iter().chain(&out.interfaces).filter_map(|d| d.boot_order).collect();
        orders.sort();
        prop_assert_eq!(orders, (1..=seq.len() as u32).collect::<Vec<_>>());
        // Every device of the class boots, and before anything else.
        let n_class = out.disks.iter().chain(&out.interfaces).filter(|d| class_of(&out, &d.name) == class).count();
        prop_assert!(seq.len() >= n_class);
        for name in &seq[..n_class] {
            prop_assert_eq!(class_of(&out, name), class);
        }
        // The rest keep their relative order, and what was bootable still is.
        let before: Vec<String> = {
            let any = l.disks.iter().chain(&l.interfaces).any(|d| d.boot_order.is_some());
            if any {
                boot_sequence(&l)
            } else {
                l.disks.iter().chain(&l.interfaces).map(|d| d.name.clone()).collect()
            }
        };
        let before_others: Vec<&String> = before.iter().filter(|n| class_of(&l, n) != class).collect();
        let after_others: Vec<&String> = seq[n_class..].iter().collect();
        prop_assert_eq!(after_others, before_others);
        // Restoring what was saved gives the original back.
        prop_assert_eq!(out.restore(&l.save()).disks, l.disks.clone());
    }
}
