//! Boot order and firmware of a VM template, rewritten for a boot override. Pure.
//!
//! KubeVirt boots from `bootOrder` on disks, CD-ROMs and interfaces. When no device has one,
//! the firmware's default order applies and every device counts as bootable; once any device
//! has one, devices without one are not bootable. A rewrite puts every device of the
//! requested class first (in their current order) and keeps the relative order of all other
//! bootable devices, so no class that could boot before becomes unbootable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::types::{Bootloader, Device, Domain};
use crate::machine::{BootMode, BootTarget};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceClass {
    Network,
    Disk,
    Cdrom,
}

impl DeviceClass {
    pub fn for_target(target: BootTarget) -> Result<Option<DeviceClass>, BootError> {
        match target {
            BootTarget::None => Ok(None),
            BootTarget::Pxe => Ok(Some(DeviceClass::Network)),
            BootTarget::Hdd => Ok(Some(DeviceClass::Disk)),
            BootTarget::Cd => Ok(Some(DeviceClass::Cdrom)),
            BootTarget::BiosSetup | BootTarget::UefiHttp => Err(BootError::Unsupported(target)),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            DeviceClass::Network => "network interface",
            DeviceClass::Disk => "disk",
            DeviceClass::Cdrom => "CD-ROM drive",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootError {
    #[error("booting from {0:?} is not supported by KubeVirt VMs")]
    Unsupported(BootTarget),
    #[error("the VM has no {} to boot from", .0.describe())]
    NoDevice(DeviceClass),
}

/// The boot-relevant part of a template: what a rewrite changes and a restore puts back.
#[derive(Debug, Clone, PartialEq)]
pub struct BootLayout {
    pub disks: Vec<Device>,
    pub interfaces: Vec<Device>,
    pub bootloader: Option<Bootloader>,
}

/// The persistent boot order saved while a one-time override is applied, so the boot that
/// consumes it can put the template back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedOrder {
    /// Disk and CD-ROM name -> bootOrder (null: had none).
    pub disks: BTreeMap<String, Option<u32>>,
    pub interfaces: BTreeMap<String, Option<u32>>,
    /// The whole `firmware.bootloader` as it was (null: absent).
    pub bootloader: Option<Value>,
}

impl BootLayout {
    pub fn of(domain: &Domain) -> Self {
        BootLayout {
            disks: domain.devices.disks.clone(),
            interfaces: domain.devices.interfaces.clone(),
            bootloader: domain.firmware.as_ref().and_then(|f| f.bootloader.clone()),
        }
    }

    /// KubeVirt's default bootloader is BIOS: UEFI only when `efi` is present.
    pub fn mode(&self) -> BootMode {
        match &self.bootloader {
            Some(b) if b.efi.is_some() => BootMode::Uefi,
            _ => BootMode::Legacy,
        }
    }

    pub fn save(&self) -> SavedOrder {
        let orders = |devices: &[Device]| {
            devices
                .iter()
                .map(|d| (d.name.clone(), d.boot_order))
                .collect()
        };
        SavedOrder {
            disks: orders(&self.disks),
            interfaces: orders(&self.interfaces),
            bootloader: self
                .bootloader
                .as_ref()
                .map(|b| serde_json::to_value(b).unwrap_or(Value::Null)),
        }
    }

    /// Puts a saved order back. Devices added since keep what they have.
    pub fn restore(&self, saved: &SavedOrder) -> BootLayout {
        let apply = |devices: &[Device], orders: &BTreeMap<String, Option<u32>>| {
            devices
                .iter()
                .map(|d| {
                    let mut d = d.clone();
                    if let Some(order) = orders.get(&d.name) {
                        d.boot_order = *order;
                    }
                    d
                })
                .collect()
        };
        BootLayout {
            disks: apply(&self.disks, &saved.disks),
            interfaces: apply(&self.interfaces, &saved.interfaces),
            bootloader: saved
                .bootloader
                .clone()
                .and_then(|v| serde_json::from_value(v).ok()),
        }
    }

    /// The layout booting `target` first in `mode`.
    pub fn rewrite(&self, target: BootTarget, mode: BootMode) -> Result<BootLayout, BootError> {
        let mut layout = self.clone();
        if let Some(class) = DeviceClass::for_target(target)? {
            layout.put_first(class)?;
        }
        layout.bootloader = with_mode(self.bootloader.as_ref(), mode);
        Ok(layout)
    }

    fn put_first(&mut self, class: DeviceClass) -> Result<(), BootError> {
        let any_order = self
            .disks
            .iter()
            .chain(&self.interfaces)
            .any(|d| d.boot_order.is_some());
        // (class, index in its list) in the current effective order.
        let mut current: Vec<(DeviceClass, usize, Option<u32>)> = Vec::new();
        for (i, d) in self.disks.iter().enumerate() {
            current.push((disk_class(d), i, d.boot_order));
        }
        for (i, d) in self.interfaces.iter().enumerate() {
            current.push((DeviceClass::Network, i, d.boot_order));
        }
        if !current.iter().any(|(c, ..)| *c == class) {
            return Err(BootError::NoDevice(class));
        }
        // Stable sort: devices with an order by it, then the rest in list order (disks
        // before interfaces), which is how the firmware tries devices without one.
        current.sort_by_key(|(_, _, order)| order.map_or((1, 0), |o| (0, o)));
        let bootable = |order: Option<u32>| !any_order || order.is_some();
        let first = current.iter().filter(|(c, ..)| *c == class);
        let others = current
            .iter()
            .filter(|(c, _, order)| *c != class && bootable(*order));
        let ordered: Vec<(DeviceClass, usize)> =
            first.chain(others).map(|(c, i, _)| (*c, *i)).collect();
        for d in self.disks.iter_mut().chain(self.interfaces.iter_mut()) {
            d.boot_order = None;
        }
        for (position, (class, index)) in ordered.into_iter().enumerate() {
            let device = match class {
                DeviceClass::Network => &mut self.interfaces[index],
                _ => &mut self.disks[index],
            };
            device.boot_order = Some(position as u32 + 1);
        }
        Ok(())
    }
}

pub fn disk_class(device: &Device) -> DeviceClass {
    if device.is_cdrom() {
        DeviceClass::Cdrom
    } else {
        DeviceClass::Disk
    }
}

/// Keeps the existing `efi` or `bios` settings when the mode already matches. A switch to
/// UEFI turns Secure Boot off explicitly: KubeVirt defaults it on, and it requires SMM that
/// a BIOS VM usually lacks, which would make the next VMI fail to start.
fn with_mode(current: Option<&Bootloader>, mode: BootMode) -> Option<Bootloader> {
    let mut loader = current.cloned().unwrap_or_default();
    match mode {
        BootMode::Uefi if loader.efi.is_none() => {
            loader.bios = None;
            loader.efi = Some(json!({"secureBoot": false}));
        }
        BootMode::Legacy if loader.efi.is_some() || loader.bios.is_none() => {
            // Absent already means BIOS: keep the template as it is.
            current?;
            loader.efi = None;
            loader.bios = Some(Value::Object(Map::new()));
        }
        _ => {}
    }
    Some(loader)
}

#[cfg(test)]
#[path = "boot_tests.rs"]
mod tests;
