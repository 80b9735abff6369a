//! The `Machine` interface over the cache, the pure decisions and the API writes.

use std::collections::BTreeMap;

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::boot::BootLayout;
use super::types::VirtualMachine;
use super::{KubevirtMachine, annotations, boot_ops, power, view};
use crate::machine::{
    BootOverride, BootOverrideEnabled, BootTarget, Console, Disk, DiskKind, Inventory, Machine,
    MachineError, MachineEvent, MediaInsert, MediaState, NetworkInterface, PowerAction, PowerState,
    Record, RestorePolicy, Result, validate_image_url,
};

/// NMI is missing: KubeVirt has no subresource for it.
const SUPPORTED_ACTIONS: &[PowerAction] = &[
    PowerAction::On,
    PowerAction::ForceOff,
    PowerAction::GracefulShutdown,
    PowerAction::GracefulRestart,
    PowerAction::ForceRestart,
    PowerAction::PowerCycle,
];
const SUPPORTED_BOOT_TARGETS: &[BootTarget] = &[
    BootTarget::None,
    BootTarget::Pxe,
    BootTarget::Hdd,
    BootTarget::Cd,
];
const SET_BOOT_ATTEMPTS: usize = 8;

/// The override as a client set it; with none set, Disabled in the template's mode.
pub(super) fn boot_override_of(vm: &VirtualMachine) -> BootOverride {
    annotations::boot_override(vm).unwrap_or_else(|| BootOverride {
        target: BootTarget::None,
        enabled: BootOverrideEnabled::Disabled,
        mode: BootLayout::of_vm(vm).mode(),
    })
}

#[async_trait]
impl Machine for KubevirtMachine {
    async fn power_state(&self) -> Result<PowerState> {
        let snapshot = self.inner.ready().await?;
        self.inner.power_state_of(&snapshot)
    }

    fn supported_actions(&self) -> &[PowerAction] {
        SUPPORTED_ACTIONS
    }

    async fn power(&self, action: PowerAction) -> Result<()> {
        let _guard = self.inner.op_lock.lock().await;
        let snapshot = self.inner.ready().await?;
        let (observed, desired) = view(&snapshot)?;
        let plan = power::decide(&observed, &desired, action)?;
        tracing::info!(?action, ?plan, "power request");
        self.inner.execute(&plan, &snapshot).await.map(|_| ())
    }

    async fn restore_policy(&self) -> Result<RestorePolicy> {
        let snapshot = self.inner.ready().await?;
        let vm = self.inner.vm(&snapshot)?;
        Ok(annotations::restore_policy(&vm))
    }

    /// Kept on the VM, so every later sidecar applies it to the VMI it comes with.
    async fn set_restore_policy(&self, policy: RestorePolicy) -> Result<()> {
        let _guard = self.inner.op_lock.lock().await;
        let snapshot = self.inner.ready().await?;
        let vm = self.inner.vm(&snapshot)?;
        if vm.annotation(annotations::POWER_RESTORE_POLICY) == Some(policy.as_str()) {
            return Ok(());
        }
        let changes = BTreeMap::from([(
            annotations::POWER_RESTORE_POLICY,
            Some(policy.as_str().to_owned()),
        )]);
        let vm = self.inner.api.patch_annotations(&changes).await?;
        self.inner.cache.offer_vm(vm);
        tracing::info!(policy = policy.as_str(), "power restore policy set");
        Ok(())
    }

    async fn boot_override(&self) -> Result<BootOverride> {
        let snapshot = self.inner.ready().await?;
        let vm = self.inner.vm(&snapshot)?;
        Ok(boot_override_of(&vm))
    }

    async fn set_boot_override(&self, boot: BootOverride) -> Result<()> {
        if !SUPPORTED_BOOT_TARGETS.contains(&boot.target) {
            return Err(MachineError::NotSupported(format!(
                "booting from {:?} is not supported by KubeVirt VMs",
                boot.target
            )));
        }
        let _guard = self.inner.op_lock.lock().await;
        let snapshot = self.inner.ready().await?;
        let mut vm = self.inner.vm(&snapshot)?;
        let running_vmi = snapshot
            .vmi
            .as_ref()
            .and_then(|v| v.uid().map(str::to_owned));
        // Unless the cluster said no before, a one-time override also sets rebootPolicy.
        let mut terminate = vm
            .annotation(annotations::REBOOT_POLICY_UNSUPPORTED)
            .is_none();
        for _ in 0..SET_BOOT_ATTEMPTS {
            if boot_override_of(&vm) == boot && vm.annotation(annotations::BOOT_OVERRIDE).is_some()
            {
                return Ok(());
            }
            let patch = boot_ops::set(&vm, &boot, running_vmi.as_deref(), terminate)?;
            match self.inner.api.json_patch(patch).await {
                Ok(Ok(updated)) => {
                    let wanted = terminate
                        && annotations::boot_state(&updated)
                            .is_some_and(|s| s.reboot_policy.is_some());
                    let kept = updated.spec.template.spec.domain.rest.get("rebootPolicy")
                        == Some(&serde_json::json!(boot_ops::TERMINATE));
                    self.inner.cache.offer_vm(updated);
                    if wanted && !kept {
                        // An API server whose VM schema has no rebootPolicy prunes it silently.
                        self.reboot_policy_unsupported(
                            "the VirtualMachine schema dropped spec.template.spec.domain.rebootPolicy \
                             (KubeVirt older than 1.8)",
                        )
                        .await?;
                    }
                    return Ok(());
                }
                // Someone changed the VM since it was read: decide again on the latest.
                Ok(Err(())) => {
                    let fresh = self.inner.api.get_vm().await?;
                    self.inner.cache.offer_vm(fresh.clone());
                    vm = fresh.into();
                }
                // KubeVirt's admission refuses the field when its feature gate is off: the
                // override still works for the boot the BMC makes, and the VM says why a
                // guest's own reboot will use it again.
                Err(MachineError::Invalid(message))
                    if terminate && message.contains("rebootPolicy") =>
                {
                    self.reboot_policy_unsupported(&message).await?;
                    terminate = false;
                    let fresh = self.inner.api.get_vm().await?;
                    self.inner.cache.offer_vm(fresh.clone());
                    vm = fresh.into();
                }
                Err(error) => return Err(error),
            }
        }
        Err(MachineError::Busy(
            "the VM kept changing while the boot override was written; retry".into(),
        ))
    }

    fn supported_boot_targets(&self) -> &[BootTarget] {
        SUPPORTED_BOOT_TARGETS
    }

    async fn set_secure_boot(&self, enabled: bool) -> Result<()> {
        let _guard = self.inner.op_lock.lock().await;
        let snapshot = self.inner.ready().await?;
        let mut vm = self.inner.vm(&snapshot)?;
        for _ in 0..SET_BOOT_ATTEMPTS {
            if inventory(&vm, None).secure_boot == enabled {
                return Ok(());
            }
            match self
                .inner
                .api
                .json_patch(boot_ops::secure_boot(&vm, enabled)?)
                .await?
            {
                Ok(updated) => {
                    self.inner.cache.offer_vm(updated);
                    return Ok(());
                }
                Err(()) => {
                    let fresh = self.inner.api.get_vm().await?;
                    self.inner.cache.offer_vm(fresh.clone());
                    vm = fresh.into();
                }
            }
        }
        Err(MachineError::Busy(
            "the VM kept changing while Secure Boot was written; retry".into(),
        ))
    }

    async fn media(&self) -> Result<MediaState> {
        let snapshot = self.inner.ready().await?;
        let vm = self.inner.vm(&snapshot)?;
        Ok(annotations::media_state(&vm))
    }

    fn media_needs_size(&self) -> bool {
        true
    }

    async fn insert_media(&self, media: MediaInsert) -> Result<()> {
        validate_image_url(&media.image)?;
        // Sized imports only: the front end asks the image server first (a HEAD), and a
        // guessed size fails in CDI for large installers.
        let Some(size) = media.size_bytes else {
            return Err(MachineError::Invalid(
                "the image's size is unknown; the BMC imports it into storage of that size"
                    .to_owned(),
            ));
        };
        // Refused before anything is recorded: without CDI nothing would import it.
        if !self.inner.api.cdi_served().await? {
            return Err(MachineError::NotSupported(
                "virtual media need CDI (containerized-data-importer), which is not installed \
                 in this cluster (the API server serves no cdi.kubevirt.io/v1beta1 \
                 datavolumes); install CDI, then insert the medium again"
                    .to_owned(),
            ));
        }
        let _guard = self.inner.op_lock.lock().await;
        let snapshot = self.inner.ready().await?;
        if self
            .inner
            .vm(&snapshot)?
            .annotation(annotations::MEDIA)
            .is_some()
        {
            return Err(MachineError::NotAllowed(
                "a medium is already inserted; eject it first".to_owned(),
            ));
        }
        let changes = BTreeMap::from([(
            annotations::MEDIA,
            Some(annotations::media_annotation(&media, Some(size))),
        )]);
        let vm = self.inner.api.patch_annotations(&changes).await?;
        self.inner.cache.offer_vm(vm);
        Ok(())
    }

    async fn eject_media(&self) -> Result<()> {
        let _guard = self.inner.op_lock.lock().await;
        let snapshot = self.inner.ready().await?;
        if self
            .inner
            .vm(&snapshot)?
            .annotation(annotations::MEDIA)
            .is_none()
        {
            return Ok(());
        }
        let changes = BTreeMap::from([(annotations::MEDIA, None)]);
        let vm = self.inner.api.patch_annotations(&changes).await?;
        self.inner.cache.offer_vm(vm);
        Ok(())
    }

    async fn inventory(&self) -> Result<Inventory> {
        let snapshot = self.inner.ready().await?;
        let vm = self.inner.vm(&snapshot)?;
        Ok(inventory(&vm, snapshot.vmi.as_deref()))
    }

    /// The VMI carries the firmware its boot started with (its spec is the VM template's at
    /// creation); the VM's template holds what the next VMI gets.
    async fn running_firmware(&self) -> Result<Option<crate::machine::FirmwareSettings>> {
        let snapshot = self.inner.ready().await?;
        Ok(snapshot
            .vmi
            .as_deref()
            .filter(|vmi| !vmi.is_terminating())
            .map(|vmi| firmware_settings(&vmi.spec.domain)))
    }

    /// From the VMI alone: none while there is none (or it has ended), `OSRunning` once
    /// its guest agent is connected, `OSBootStarted` before (phases Pending, Scheduling,
    /// Scheduled, Running: `staging/src/kubevirt.io/api/core/v1/types.go`
    /// `VirtualMachineInstancePhase`). A guest without an agent never reaches `OSRunning`.
    async fn boot_progress(&self) -> Result<crate::machine::BootProgress> {
        let snapshot = self.inner.ready().await?;
        Ok(boot_progress_of(snapshot.vmi.as_deref()))
    }

    async fn record(&self, record: Record) -> Result<Option<String>> {
        match record {
            Record::SessionKey => self.session_key().await,
            Record::EventSubscriptions
            | Record::SessionSettings
            | Record::IpmiAuth
            | Record::Indicators => {
                let snapshot = self.inner.ready().await?;
                Ok(self
                    .inner
                    .vm(&snapshot)?
                    .annotation(record_annotation(record))
                    .map(str::to_owned))
            }
        }
    }

    async fn store_record(&self, record: Record, value: Option<String>) -> Result<()> {
        match record {
            Record::SessionKey => {
                // The real key comes from the credentials Secret; without one it lives in
                // memory, so sessions end with this sidecar.
                tracing::warn!(
                    "no session-key in the credentials Secret: Redfish sessions will not \
                     survive a restart of the BMC"
                );
                *self
                    .inner
                    .session_key
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = value;
                Ok(())
            }
            Record::IpmiAuth => Err(MachineError::Invalid(
                "the IPMI login policy is the VM owner's annotation; the BMC does not write it"
                    .to_owned(),
            )),
            Record::EventSubscriptions | Record::SessionSettings | Record::Indicators => {
                let changes = BTreeMap::from([(record_annotation(record), value)]);
                let vm = self.inner.api.patch_annotations(&changes).await?;
                self.inner.cache.offer_vm(vm);
                Ok(())
            }
        }
    }

    fn events(&self) -> broadcast::Receiver<MachineEvent> {
        self.inner.events.subscribe()
    }

    fn has_console(&self) -> bool {
        true
    }

    /// Bridges to the VMI's serial console subresource; connecting, waiting for a VMI and
    /// refusals are reported on the console itself, so the attachment never fails here.
    async fn console(&self) -> Result<Console> {
        Ok(super::console_bridge::attach(self.inner.clone()))
    }
}

impl KubevirtMachine {
    async fn reboot_policy_unsupported(&self, why: &str) -> Result<()> {
        tracing::warn!(
            why,
            "rebootPolicy Terminate unavailable: a guest's own reboot boots a one-time \
             override device again"
        );
        let changes =
            BTreeMap::from([(annotations::REBOOT_POLICY_UNSUPPORTED, Some(why.to_owned()))]);
        let vm = self.inner.api.patch_annotations(&changes).await?;
        self.inner.cache.offer_vm(vm);
        Ok(())
    }

    /// `<credentials-dir>/session-key`, re-read each time so a rotated Secret is followed.
    async fn session_key(&self) -> Result<Option<String>> {
        if let Some(dir) = &self.inner.config.credentials_dir {
            let path = dir.join(kubevirt_bmc_contract::names::SECRET_SESSION_KEY);
            match tokio::fs::read_to_string(&path).await {
                Ok(key) if !key.trim().is_empty() => return Ok(Some(key.trim().to_owned())),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(MachineError::Unavailable(format!(
                        "cannot read {}: {e}",
                        path.display()
                    )));
                }
            }
        }
        Ok(self
            .inner
            .session_key
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone())
    }
}

/// The VM annotation a front end's record is kept in.
fn record_annotation(record: Record) -> &'static str {
    match record {
        Record::EventSubscriptions => annotations::EVENT_SUBSCRIPTIONS,
        Record::SessionSettings => annotations::SESSION_SETTINGS,
        Record::IpmiAuth => annotations::IPMI_AUTH,
        Record::Indicators => annotations::INDICATORS,
        Record::SessionKey => unreachable!("the session key lives in the credentials Secret"),
    }
}

fn inventory(vm: &VirtualMachine, vmi: Option<&super::types::VirtualMachineInstance>) -> Inventory {
    let domain = &vm.spec.template.spec.domain;
    let cpu = domain.cpu.clone().unwrap_or_default();
    let vcpus = cpu.cores.unwrap_or(1) * cpu.sockets.unwrap_or(1) * cpu.threads.unwrap_or(1);
    let memory = domain
        .rest
        .get("memory")
        .and_then(|m| m.get("guest"))
        .or_else(|| {
            domain
                .rest
                .get("resources")
                .and_then(|r| r.get("requests"))
                .and_then(|r| r.get("memory"))
        })
        .and_then(|q| q.as_str())
        .and_then(parse_mib)
        .unwrap_or(0);
    let reported_macs: BTreeMap<&str, &str> = vmi
        .map(|v| {
            v.status
                .interfaces
                .iter()
                .filter_map(|i| Some((i.name.as_deref()?, i.mac.as_deref()?)))
                .collect()
        })
        .unwrap_or_default();
    let interfaces = domain
        .devices
        .interfaces
        .iter()
        .map(|i| NetworkInterface {
            name: i.name.clone(),
            mac: i
                .mac_address()
                .or_else(|| reported_macs.get(i.name.as_str()).copied())
                .unwrap_or_default()
                .to_ascii_lowercase(),
        })
        .collect();
    let sizes = vmi.map(volume_sizes).unwrap_or_default();
    let disks = domain
        .devices
        .disks
        .iter()
        .map(|d| Disk {
            name: d.name.clone(),
            // A disk's name is the name of its volume in KubeVirt.
            capacity_bytes: sizes.get(d.name.as_str()).copied(),
            kind: if d.is_cdrom() {
                DiskKind::Cdrom
            } else {
                DiskKind::Disk
            },
        })
        .collect();
    let firmware = domain.firmware.clone().unwrap_or_default();
    let secure_boot = firmware_settings(domain).secure_boot;
    // `spec.architecture` (VirtualMachineInstanceSpec `Architecture`, kubevirt/kubevirt
    // `staging/src/kubevirt.io/api/core/v1/types.go`): virt-api defaults it on the VMI from
    // the cluster's configuration; the VM's template has it when its owner set it.
    let architecture = vmi
        .and_then(|v| v.spec.rest.get("architecture"))
        .or_else(|| vm.spec.template.spec.rest.get("architecture"))
        .and_then(|a| a.as_str())
        .filter(|a| !a.is_empty())
        .map(str::to_owned);
    Inventory {
        name: vm.metadata.name.clone().unwrap_or_default(),
        uuid: firmware
            .uuid
            .or_else(|| vm.metadata.uid.clone())
            .unwrap_or_default()
            .to_ascii_lowercase(),
        vcpus,
        memory_mib: memory,
        interfaces,
        disks,
        secure_boot,
        architecture,
    }
}

/// See [`KubevirtMachine::boot_progress`].
fn boot_progress_of(
    vmi: Option<&super::types::VirtualMachineInstance>,
) -> crate::machine::BootProgress {
    use crate::machine::BootProgress;
    let Some(vmi) = vmi else {
        return BootProgress::None;
    };
    match vmi.phase() {
        "Succeeded" | "Failed" | "Unknown" => BootProgress::None,
        _ if vmi.is_terminating() => BootProgress::None,
        "Running" if vmi.agent_connected() => BootProgress::OsRunning,
        _ => BootProgress::OsBootStarted,
    }
}

/// Boot mode and Secure Boot of a domain spec (a VM's template or a VMI's): UEFI when
/// `firmware.bootloader.efi` is there, and then Secure Boot unless `secureBoot: false`
/// (KubeVirt turns it on for `efi: {}`).
fn firmware_settings(domain: &super::types::Domain) -> crate::machine::FirmwareSettings {
    let efi = domain
        .firmware
        .as_ref()
        .and_then(|f| f.bootloader.as_ref())
        .and_then(|b| b.efi.as_ref());
    crate::machine::FirmwareSettings {
        mode: if efi.is_some() {
            crate::machine::BootMode::Uefi
        } else {
            crate::machine::BootMode::Legacy
        },
        secure_boot: efi
            .is_some_and(|efi| efi.get("secureBoot").and_then(|v| v.as_bool()) != Some(false)),
    }
}

/// Volume name -> size in bytes, from the VMI's `status.volumeStatus`: `size` where
/// virt-handler reports it, else the PVC's `capacity.storage` (kubevirt/kubevirt
/// `staging/src/kubevirt.io/api/core/v1/types.go` `VolumeStatus`, `PersistentVolumeClaimInfo`).
/// Ironic's Redfish-only inspection needs disk sizes (`local_gb`, Metal3's `fast` mode).
fn volume_sizes(vmi: &super::types::VirtualMachineInstance) -> BTreeMap<String, u64> {
    let Some(statuses) = vmi
        .status
        .rest
        .get("volumeStatus")
        .and_then(|v| v.as_array())
    else {
        return BTreeMap::new();
    };
    statuses
        .iter()
        .filter_map(|status| {
            let name = status.get("name")?.as_str()?.to_owned();
            let size = status.get("size").and_then(|s| s.as_u64()).or_else(|| {
                status
                    .pointer("/persistentVolumeClaimInfo/capacity/storage")
                    .and_then(|q| q.as_str())
                    .and_then(parse_bytes)
            })?;
            (size > 0).then_some((name, size))
        })
        .collect()
}

/// A Kubernetes quantity in bytes (binary and decimal suffixes).
fn parse_bytes(quantity: &str) -> Option<u64> {
    let split = quantity
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        _ => return None,
    };
    Some((number * factor).round() as u64)
}

/// A Kubernetes quantity in MiB (binary and decimal suffixes; plain bytes).
fn parse_mib(quantity: &str) -> Option<u64> {
    parse_bytes(quantity).map(|bytes| (bytes as f64 / (1024.0 * 1024.0)).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_in_mib() {
        assert_eq!(parse_mib("128Mi"), Some(128));
        assert_eq!(parse_mib("2Gi"), Some(2048));
        assert_eq!(parse_mib("1G"), Some(954));
        assert_eq!(parse_mib("lots"), None);
    }

    #[test]
    fn inventory_of_the_fixture_vm() {
        let path = format!(
            "{}/../e2e/testdata/fixtures/vm-vm1.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let vm: VirtualMachine =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let vmi_path = path.replace("vm-vm1.json", "vmi-vm1-running.json");
        let vmi: super::super::types::VirtualMachineInstance =
            serde_json::from_str(&std::fs::read_to_string(vmi_path).unwrap()).unwrap();
        let inv = inventory(&vm, Some(&vmi));
        assert_eq!(inv.uuid, "1ea717a8-9322-57bb-96c6-9356ff873252");
        assert_eq!(inv.memory_mib, 128);
        assert_eq!(inv.vcpus, 1);
        assert_eq!(inv.interfaces[0].mac, "52:54:00:6e:3a:1d");
        assert_eq!(inv.disks.len(), 2);
        assert!(!inv.secure_boot);
        // The captured VMI's `spec.architecture`, defaulted by virt-api.
        assert_eq!(inv.architecture.as_deref(), Some("amd64"));
        // volumeStatus of the captured VMI: cloudinitdisk has a size, the containerDisk none.
        let cloudinit = inv
            .disks
            .iter()
            .find(|d| d.name == "cloudinitdisk")
            .unwrap();
        assert_eq!(cloudinit.capacity_bytes, Some(1_048_576));
        let container = inv
            .disks
            .iter()
            .find(|d| d.name == "containerdisk")
            .unwrap();
        assert_eq!(container.capacity_bytes, None);
        assert!(
            inventory(&vm, None)
                .disks
                .iter()
                .all(|d| d.capacity_bytes.is_none())
        );
    }

    #[test]
    fn pvc_capacity_when_no_size_is_reported() {
        let vmi: super::super::types::VirtualMachineInstance = serde_json::from_value(
            serde_json::json!({"status": {"volumeStatus": [
                {"name": "rootdisk", "persistentVolumeClaimInfo": {"capacity": {"storage": "20Gi"}}},
                {"name": "odd", "persistentVolumeClaimInfo": {"capacity": {"storage": "lots"}}}
            ]}}),
        )
        .unwrap();
        let sizes = volume_sizes(&vmi);
        assert_eq!(sizes.get("rootdisk"), Some(&(20u64 << 30)));
        assert!(!sizes.contains_key("odd"));
        assert_eq!(parse_bytes("1G"), Some(1_000_000_000));
    }

    #[test]
    fn boot_progress_and_running_firmware_from_the_vmi() {
        use crate::machine::{BootMode, BootProgress};
        let vmi = |value: serde_json::Value| -> super::super::types::VirtualMachineInstance {
            serde_json::from_value(value).unwrap()
        };
        assert_eq!(boot_progress_of(None), BootProgress::None);
        let scheduling = vmi(serde_json::json!({"status": {"phase": "Scheduling"}}));
        assert_eq!(
            boot_progress_of(Some(&scheduling)),
            BootProgress::OsBootStarted
        );
        let running = vmi(
            serde_json::json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True"}]}}),
        );
        assert_eq!(
            boot_progress_of(Some(&running)),
            BootProgress::OsBootStarted
        );
        let agent = vmi(
            serde_json::json!({"status": {"phase": "Running", "conditions": [
            {"type": "AgentConnected", "status": "True"}]}}),
        );
        assert_eq!(boot_progress_of(Some(&agent)), BootProgress::OsRunning);
        let done = vmi(serde_json::json!({"status": {"phase": "Succeeded"}}));
        assert_eq!(boot_progress_of(Some(&done)), BootProgress::None);

        let efi = vmi(serde_json::json!({"spec": {"domain": {"devices": {},
            "firmware": {"bootloader": {"efi": {}}}}}}));
        let settings = firmware_settings(&efi.spec.domain);
        assert_eq!(settings.mode, BootMode::Uefi);
        assert!(
            settings.secure_boot,
            "KubeVirt turns Secure Boot on for efi: {{}}"
        );
        let bios = vmi(serde_json::json!({"spec": {"domain": {"devices": {}}}}));
        assert_eq!(firmware_settings(&bios.spec.domain).mode, BootMode::Legacy);
    }
}
