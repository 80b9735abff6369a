//! JSON builders for the machine's resources: pure functions of machine state, so they are
//! tested without a server and the ETag of a resource is the hash of what they return.

use serde_json::{Value, json};

use crate::machine::{
    BootMode, BootOverride, BootOverrideEnabled, BootProgress, BootTarget, DiskKind, Inventory,
    MediaState, MediaStatus, PowerAction, PowerState, RestorePolicy,
};

pub const MANAGER_ID: &str = "BMC";
pub const MEDIA_ID: &str = "Cd";

/// The second Id the System and the Chassis answer to, and the one their collections list.
/// bmclib's inventory, BIOS and Secure Boot calls skip every System and Chassis whose
/// `@odata.id` is not one it knows (`internal/redfishwrapper/inventory.go`
/// `knownSystemsOdataIDs`, `KnownChassisOdataIDs`: `1`, `Self`, `system`,
/// `System.Embedded.1`); sushy takes any single member (`sushy/main.py` `get_system`).
/// `Self` (MegaRAC's) is in both of bmclib's lists and can never be a VM's name (those are
/// lower-case DNS labels), so the alias never hides another machine.
pub const ALIAS: &str = "Self";

/// Names of the resources this service exposes, fixed at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    /// The System and Chassis Id: the VM name.
    pub system: String,
    pub uuid: String,
    pub service_uuid: String,
}

impl Ids {
    /// The same names as seen through the alias: resources read at `/Systems/Self` link to
    /// `/Systems/Self/...` and `/Chassis/Self`, so a client that follows links stays on the
    /// Id it chose (bmclib compares every `@odata.id` it reads).
    pub fn aliased(&self) -> Ids {
        Ids {
            system: ALIAS.to_owned(),
            ..self.clone()
        }
    }

    pub fn system_uri(&self) -> String {
        format!("/redfish/v1/Systems/{}", self.system)
    }
    pub fn chassis_uri(&self) -> String {
        format!("/redfish/v1/Chassis/{}", self.system)
    }
    pub fn manager_uri(&self) -> String {
        format!("/redfish/v1/Managers/{MANAGER_ID}")
    }
}

pub fn odata_id(uri: &str) -> Value {
    json!({ "@odata.id": uri })
}

pub fn collection(odata_type: &str, name: &str, uri: &str, members: &[String]) -> Value {
    json!({
        "@odata.type": format!("#{odata_type}.{odata_type}"),
        "@odata.id": uri,
        "Name": name,
        "Members@odata.count": members.len(),
        "Members": members.iter().map(|m| odata_id(m)).collect::<Vec<_>>(),
    })
}

pub fn status_enabled() -> Value {
    json!({"State": "Enabled", "Health": "OK"})
}

pub fn power_state_name(state: PowerState) -> &'static str {
    match state {
        PowerState::On => "On",
        PowerState::Off => "Off",
        PowerState::PoweringOn => "PoweringOn",
        PowerState::PoweringOff => "PoweringOff",
    }
}

/// Redfish `PowerRestorePolicy` (ComputerSystem v1.6+): `LastState` is IPMI's "previous".
pub fn restore_policy_name(policy: RestorePolicy) -> &'static str {
    match policy {
        RestorePolicy::AlwaysOn => "AlwaysOn",
        RestorePolicy::AlwaysOff => "AlwaysOff",
        RestorePolicy::Previous => "LastState",
    }
}

pub fn parse_restore_policy(name: &str) -> Option<RestorePolicy> {
    RestorePolicy::ALL
        .into_iter()
        .find(|p| restore_policy_name(*p) == name)
}

pub fn target_name(target: BootTarget) -> &'static str {
    match target {
        BootTarget::None => "None",
        BootTarget::Pxe => "Pxe",
        BootTarget::Hdd => "Hdd",
        BootTarget::Cd => "Cd",
        BootTarget::BiosSetup => "BiosSetup",
        BootTarget::UefiHttp => "UefiHttp",
    }
}

pub fn parse_target(name: &str, supported: &[BootTarget]) -> Option<BootTarget> {
    supported
        .iter()
        .copied()
        .find(|target| target_name(*target) == name)
}

pub fn enabled_name(enabled: BootOverrideEnabled) -> &'static str {
    match enabled {
        BootOverrideEnabled::Disabled => "Disabled",
        BootOverrideEnabled::Once => "Once",
        BootOverrideEnabled::Continuous => "Continuous",
    }
}

pub const ENABLED_NAMES: [&str; 3] = ["Disabled", "Once", "Continuous"];

pub fn parse_enabled(name: &str) -> Option<BootOverrideEnabled> {
    match name {
        "Disabled" => Some(BootOverrideEnabled::Disabled),
        "Once" => Some(BootOverrideEnabled::Once),
        "Continuous" => Some(BootOverrideEnabled::Continuous),
        _ => None,
    }
}

pub fn mode_name(mode: BootMode) -> &'static str {
    match mode {
        BootMode::Uefi => "UEFI",
        BootMode::Legacy => "Legacy",
    }
}

pub fn parse_mode(name: &str) -> Option<BootMode> {
    match name {
        "UEFI" => Some(BootMode::Uefi),
        "Legacy" => Some(BootMode::Legacy),
        _ => None,
    }
}

/// Redfish ResetType values and what each asks of the machine. PushPowerButton toggles.
pub fn reset_types(supported: &[PowerAction]) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = PowerAction::ALL
        .iter()
        .filter(|action| supported.contains(action))
        .map(|action| reset_name(*action))
        .collect();
    if supported.contains(&PowerAction::On) && supported.contains(&PowerAction::GracefulShutdown) {
        names.push("PushPowerButton");
    }
    names
}

pub fn reset_name(action: PowerAction) -> &'static str {
    match action {
        PowerAction::On => "On",
        PowerAction::ForceOff => "ForceOff",
        PowerAction::GracefulShutdown => "GracefulShutdown",
        PowerAction::GracefulRestart => "GracefulRestart",
        PowerAction::ForceRestart => "ForceRestart",
        PowerAction::PowerCycle => "PowerCycle",
        PowerAction::Nmi => "Nmi",
    }
}

pub fn system(
    ids: &Ids,
    inventory: &Inventory,
    power: PowerState,
    boot: &BootOverride,
    actions: &[PowerAction],
    targets: &[BootTarget],
) -> Value {
    let uri = ids.system_uri();
    let targets: Vec<&str> = targets.iter().map(|t| target_name(*t)).collect();
    json!({
        "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
        "@odata.id": uri,
        "Id": ids.system,
        "Name": inventory.name,
        "Description": "KubeVirt virtual machine",
        "SystemType": "Virtual",
        "Manufacturer": "KubeVirt",
        "Model": "KubeVirt VirtualMachine",
        "UUID": inventory.uuid,
        "PowerState": power_state_name(power),
        "Status": status_enabled(),
        "ProcessorSummary": {
            "Count": inventory.vcpus,
            "LogicalProcessorCount": inventory.vcpus,
        },
        "MemorySummary": {
            "TotalSystemMemoryGiB": inventory.memory_mib as f64 / 1024.0,
        },
        "Boot": {
            "BootSourceOverrideTarget": target_name(boot.target),
            "BootSourceOverrideTarget@Redfish.AllowableValues": targets,
            "BootSourceOverrideEnabled": enabled_name(boot.enabled),
            "BootSourceOverrideEnabled@Redfish.AllowableValues": ENABLED_NAMES,
            "BootSourceOverrideMode": mode_name(boot.mode),
            "BootSourceOverrideMode@Redfish.AllowableValues": ["UEFI", "Legacy"],
        },
        "EthernetInterfaces": odata_id(&format!("{uri}/EthernetInterfaces")),
        "Processors": odata_id(&format!("{uri}/Processors")),
        "Memory": odata_id(&format!("{uri}/Memory")),
        "Storage": odata_id(&format!("{uri}/Storage")),
        "SimpleStorage": odata_id(&format!("{uri}/SimpleStorage")),
        "SecureBoot": odata_id(&format!("{uri}/SecureBoot")),
        "Bios": odata_id(&format!("{uri}/Bios")),
        "VirtualMedia": odata_id(&format!("{uri}/VirtualMedia")),
        "Links": {
            "ManagedBy": [odata_id(&ids.manager_uri())],
            "Chassis": [odata_id(&ids.chassis_uri())],
        },
        "Actions": {
            "#ComputerSystem.Reset": {
                "target": format!("{uri}/Actions/ComputerSystem.Reset"),
                "ResetType@Redfish.AllowableValues": reset_types(actions),
            }
        },
    })
}

/// `BootProgress` (ComputerSystem v1.13+); Ironic waits for `OSBootStarted` or `OSRunning`
/// after a reboot that applies BIOS settings (`ironic/drivers/modules/redfish/bios.py`,
/// sushy `system.boot_progress`), bmclib reads it from every System
/// (`internal/redfishwrapper/client.go` `GetBootProgress`).
pub fn boot_progress(progress: BootProgress) -> Value {
    json!({
        "LastState": match progress {
            BootProgress::None => "None",
            BootProgress::OsBootStarted => "OSBootStarted",
            BootProgress::OsRunning => "OSRunning",
        },
    })
}

/// Redfish `ProcessorArchitecture` and `InstructionSet` for KubeVirt's architecture names
/// (`spec.architecture`: amd64, arm64, s390x, ppc64le); x86-64 when the backend does not say,
/// which is KubeVirt's default.
pub fn processor_architecture(architecture: Option<&str>) -> (&'static str, &'static str) {
    match architecture {
        Some("arm64" | "aarch64") => ("ARM", "ARM-A64"),
        Some("s390x") => ("OEM", "OEM"),
        Some("ppc64le" | "ppc64") => ("Power", "PowerISA"),
        _ => ("x86", "x86-64"),
    }
}

pub fn ethernet_interface(ids: &Ids, name: &str, mac: &str) -> Value {
    json!({
        "@odata.type": "#EthernetInterface.v1_6_0.EthernetInterface",
        "@odata.id": format!("{}/EthernetInterfaces/{name}", ids.system_uri()),
        "Id": name,
        "Name": format!("Interface {name}"),
        "MACAddress": mac,
        "PermanentMACAddress": mac,
        "InterfaceEnabled": true,
        "Status": status_enabled(),
    })
}

pub fn processor(ids: &Ids, inventory: &Inventory) -> Value {
    let (arch, instructions) = processor_architecture(inventory.architecture.as_deref());
    json!({
        "@odata.type": "#Processor.v1_10_0.Processor",
        "@odata.id": format!("{}/Processors/CPU0", ids.system_uri()),
        "Id": "CPU0",
        "Name": "Virtual CPUs",
        "ProcessorType": "CPU",
        "ProcessorArchitecture": arch,
        "InstructionSet": instructions,
        "TotalCores": inventory.vcpus,
        "TotalThreads": inventory.vcpus,
        "Status": status_enabled(),
    })
}

pub fn memory(ids: &Ids, inventory: &Inventory) -> Value {
    json!({
        "@odata.type": "#Memory.v1_10_0.Memory",
        "@odata.id": format!("{}/Memory/DIMM0", ids.system_uri()),
        "Id": "DIMM0",
        "Name": "Guest memory",
        "MemoryType": "DRAM",
        "CapacityMiB": inventory.memory_mib,
        "Status": status_enabled(),
    })
}

pub fn storage(ids: &Ids, inventory: &Inventory) -> Value {
    let uri = format!("{}/Storage/1", ids.system_uri());
    // CD-ROMs are the virtual media device, not storage drives.
    let drives: Vec<Value> = inventory
        .disks
        .iter()
        .filter(|disk| disk.kind == DiskKind::Disk)
        .map(|disk| odata_id(&format!("{uri}/Drives/{}", disk.name)))
        .collect();
    json!({
        "@odata.type": "#Storage.v1_9_0.Storage",
        "@odata.id": uri,
        "Id": "1",
        "Name": "Virtual disks",
        "Drives@odata.count": drives.len(),
        "Drives": drives,
        "Controllers": odata_id(&format!("{uri}/Controllers")),
        "Volumes": odata_id(&format!("{uri}/Volumes")),
        "Status": status_enabled(),
    })
}

pub fn storage_controller(ids: &Ids) -> Value {
    json!({
        "@odata.type": "#StorageController.v1_7_0.StorageController",
        "@odata.id": format!("{}/Storage/1/Controllers/0", ids.system_uri()),
        "Id": "0",
        "Name": "Virtual disk controller",
        "SupportedControllerProtocols": ["PCIe"],
        "SupportedDeviceProtocols": ["PCIe"],
        "Status": status_enabled(),
    })
}

pub fn drive(ids: &Ids, inventory: &Inventory, name: &str) -> Option<Value> {
    let disk = inventory
        .disks
        .iter()
        .find(|disk| disk.name == name && disk.kind == DiskKind::Disk)?;
    let mut value = json!({
        "@odata.type": "#Drive.v1_9_0.Drive",
        "@odata.id": format!("{}/Storage/1/Drives/{name}", ids.system_uri()),
        "Id": name,
        "Name": name,
        // A virtio disk: a PCIe device whose backing medium the guest cannot see; HDD is
        // what QEMU reports as its rotation rate.
        "MediaType": "HDD",
        "Protocol": "PCIe",
        "Status": status_enabled(),
    });
    if let Some(bytes) = disk.capacity_bytes {
        value["CapacityBytes"] = json!(bytes);
    }
    Some(value)
}

pub fn simple_storage(ids: &Ids, inventory: &Inventory) -> Value {
    let devices: Vec<Value> = inventory
        .disks
        .iter()
        .map(|disk| {
            let mut device = json!({"Name": disk.name, "Status": status_enabled()});
            if let Some(bytes) = disk.capacity_bytes {
                device["CapacityBytes"] = json!(bytes);
            }
            device
        })
        .collect();
    json!({
        "@odata.type": "#SimpleStorage.v1_3_0.SimpleStorage",
        "@odata.id": format!("{}/SimpleStorage/1", ids.system_uri()),
        "Id": "1",
        "Name": "Virtual disk controller",
        "Devices": devices,
        "Status": status_enabled(),
    })
}

/// `enabled` is the setting (what the next boot applies), `current_boot` what the running
/// boot started with.
pub fn secure_boot(ids: &Ids, enabled: bool, current_boot: bool) -> Value {
    json!({
        "@odata.type": "#SecureBoot.v1_1_0.SecureBoot",
        "@odata.id": format!("{}/SecureBoot", ids.system_uri()),
        "Id": "SecureBoot",
        "Name": "UEFI Secure Boot",
        "SecureBootEnable": enabled,
        "SecureBootCurrentBoot": if current_boot { "Enabled" } else { "Disabled" },
        "SecureBootMode": "DeployedMode",
    })
}

pub fn chassis(ids: &Ids, inventory: &Inventory, power: PowerState) -> Value {
    json!({
        "@odata.type": "#Chassis.v1_14_0.Chassis",
        "@odata.id": ids.chassis_uri(),
        "Id": ids.system,
        "Name": inventory.name,
        "ChassisType": "Component",
        "Manufacturer": "KubeVirt",
        // Ironic names a Chassis indicator by the Chassis UUID; without one it cannot list
        // the indicators at all (`redfish/management.py` `get_supported_indicators`).
        "UUID": inventory.uuid,
        "PowerState": power_state_name(power),
        "Status": status_enabled(),
        "Links": {
            "ComputerSystems": [odata_id(&ids.system_uri())],
            "ManagedBy": [odata_id(&ids.manager_uri())],
        },
    })
}

/// `serial_console`: the machine has a console and IPMI SOL is enabled; this BMC serves it
/// only as IPMI Serial over LAN (one session at a time), so that is all it claims.
pub fn manager(ids: &Ids, serial_console: bool) -> Value {
    let uri = ids.manager_uri();
    json!({
        "@odata.type": "#Manager.v1_10_0.Manager",
        "@odata.id": uri,
        "Id": MANAGER_ID,
        "Name": "kubevirt-bmc",
        "Description": "BMC sidecar of the KubeVirt virtual machine",
        "ManagerType": "BMC",
        "Model": "kubevirt-bmc",
        "FirmwareVersion": env!("CARGO_PKG_VERSION"),
        "UUID": ids.service_uuid,
        "ServiceEntryPointUUID": ids.service_uuid,
        "PowerState": "On",
        "Status": status_enabled(),
        "VirtualMedia": odata_id(&format!("{uri}/VirtualMedia")),
        "NetworkProtocol": odata_id(&format!("{uri}/NetworkProtocol")),
        "EthernetInterfaces": odata_id(&format!("{uri}/EthernetInterfaces")),
        "SerialConsole": {
            "ServiceEnabled": serial_console,
            "MaxConcurrentSessions": if serial_console { 1 } else { 0 },
            "ConnectTypesSupported": if serial_console { vec!["IPMI"] } else { vec![] },
        },
        "Links": {
            "ManagerForServers": [odata_id(&ids.system_uri())],
            "ManagerForChassis": [odata_id(&ids.chassis_uri())],
        },
        "Actions": {
            "#Manager.Reset": {
                "target": format!("{uri}/Actions/Manager.Reset"),
                // The BMC is a sidecar that restarts with its Pod; it offers no reset it
                // cannot really perform.
                "ResetType@Redfish.AllowableValues": [],
            }
        },
    })
}

/// The virtual CD at `base` (under the Manager or under the System, as sushy-tools has it).
pub fn virtual_media(base: &str, media: &MediaState) -> Value {
    let uri = format!("{base}/{MEDIA_ID}");
    let image = media.image.as_deref();
    let image_name = image
        .and_then(|url| url.split(['?', '#']).next())
        .and_then(|url| url.rsplit('/').next())
        .filter(|name| !name.is_empty());
    // A failed import left nothing to attach: the drive is empty, whatever was asked.
    let failed = matches!(media.status, MediaStatus::Failed { .. });
    let connected = media.inserted && image.is_some() && !failed;
    let (state, health) = match &media.status {
        MediaStatus::Ejected | MediaStatus::Ready => ("Enabled", "OK"),
        MediaStatus::Importing { .. } => ("Starting", "OK"),
        MediaStatus::Failed { .. } => ("Enabled", "Critical"),
    };
    json!({
        "@odata.type": "#VirtualMedia.v1_6_0.VirtualMedia",
        "@odata.id": uri,
        "Id": MEDIA_ID,
        "Name": "Virtual CD",
        "MediaTypes": ["CD", "DVD"],
        "Image": image,
        "ImageName": image_name,
        "Inserted": media.inserted,
        "WriteProtected": media.write_protected,
        "ConnectedVia": if connected { "URI" } else { "NotConnected" },
        "TransferMethod": "Stream",
        "TransferProtocolType": image.map(|url| if url.starts_with("https") { "HTTPS" } else { "HTTP" }),
        "Status": {"State": state, "Health": health},
        "Actions": {
            "#VirtualMedia.InsertMedia": {
                "target": format!("{uri}/Actions/VirtualMedia.InsertMedia"),
                "TransferProtocolType@Redfish.AllowableValues": ["HTTP", "HTTPS"],
            },
            "#VirtualMedia.EjectMedia": {
                "target": format!("{uri}/Actions/VirtualMedia.EjectMedia"),
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> Ids {
        Ids {
            system: "vm1".into(),
            uuid: "u".into(),
            service_uuid: "s".into(),
        }
    }

    fn inventory() -> Inventory {
        Inventory {
            name: "vm1".into(),
            uuid: "u".into(),
            vcpus: 2,
            memory_mib: 2048,
            interfaces: vec![],
            disks: vec![],
            secure_boot: false,
            architecture: None,
        }
    }

    #[test]
    fn system_advertises_only_what_the_machine_supports() {
        let value = system(
            &ids(),
            &inventory(),
            PowerState::Off,
            &BootOverride::default(),
            &[PowerAction::On, PowerAction::ForceOff],
            &[BootTarget::None, BootTarget::Pxe],
        );
        let reset = &value["Actions"]["#ComputerSystem.Reset"]["ResetType@Redfish.AllowableValues"];
        assert_eq!(reset, &json!(["On", "ForceOff"]));
        assert_eq!(
            value["Boot"]["BootSourceOverrideTarget@Redfish.AllowableValues"],
            json!(["None", "Pxe"])
        );
        assert_eq!(
            value["Links"]["ManagedBy"][0]["@odata.id"],
            "/redfish/v1/Managers/BMC"
        );
    }

    #[test]
    fn boot_names_round_trip() {
        for target in BootTarget::ALL {
            assert_eq!(
                parse_target(target_name(target), &BootTarget::ALL),
                Some(target)
            );
        }
        assert_eq!(parse_target("Floppy", &BootTarget::ALL), None);
        assert_eq!(parse_target("Pxe", &[BootTarget::Hdd]), None);
        for name in ENABLED_NAMES {
            assert_eq!(enabled_name(parse_enabled(name).unwrap()), name);
        }
        assert_eq!(mode_name(parse_mode("UEFI").unwrap()), "UEFI");
        assert_eq!(parse_mode("uefi"), None);
    }

    #[test]
    fn media_shows_image_name_and_connection() {
        let media = MediaState {
            image: Some("http://h/images/boot.iso?x=1".into()),
            inserted: true,
            write_protected: true,
            status: MediaStatus::Ready,
        };
        let value = virtual_media("/redfish/v1/Managers/BMC/VirtualMedia", &media);
        assert_eq!(value["ImageName"], "boot.iso");
        assert_eq!(value["ConnectedVia"], "URI");
        let ejected = virtual_media("/x", &MediaState::ejected());
        assert_eq!(ejected["Image"], Value::Null);
        assert_eq!(ejected["ConnectedVia"], "NotConnected");
        let failed = virtual_media(
            "/x",
            &MediaState {
                status: MediaStatus::Failed {
                    reason: "got 404".into(),
                },
                ..media
            },
        );
        assert_eq!(failed["Status"]["Health"], "Critical");
        assert_eq!(failed["ConnectedVia"], "NotConnected");
    }
}
