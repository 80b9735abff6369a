//! The System's `Bios` with pending settings, its attribute registry, and a read-only
//! `UpdateService`: what Metal3's HostFirmwareSettings and HostFirmwareComponents read
//! through Ironic, and what bmclib's BIOS calls use.
//!
//! A VM has two firmware settings (boot mode and Secure Boot). `Attributes` are the ones the
//! running boot started with; the settings object (`@Redfish.Settings`) holds the ones the
//! next boot applies, which is where a change goes: sushy PATCHes it with `{"Attributes":
//! {...}}` and optionally `@Redfish.SettingsApplyTime` (`sushy/resources/system/bios.py`
//! `set_attributes`, `sushy/utils.py` `process_apply_time_input`), bmclib with
//! `ApplyTime: OnReset` (`internal/redfishwrapper/bios.go` `SetBiosConfiguration`, gofish
//! `UpdateBiosAttributesApplyAt`). Ironic then reboots and compares `Attributes` with what
//! it asked (`ironic/drivers/modules/redfish/bios.py` `apply_configuration`,
//! `post_configuration`). The change is written to the machine at once (on the VM in
//! KubeVirt: its template's firmware, which only a new VMI takes), so it is really applied
//! at the next boot and survives a restart of the BMC.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::Context;
use super::errors::{ApiError, ApiResult};
use super::http::{JsonBody, check_if_match, resource};
use super::models::{Ids, collection, odata_id, status_enabled};
use crate::machine::{BootMode, FirmwareSettings};

pub const ATTRIBUTE_REGISTRY: &str = "BiosAttributeRegistry.v1_0_0";
/// The registry's entry in `/redfish/v1/Registries`.
pub const REGISTRY_FILE_ID: &str = "BiosAttributeRegistry";
const BOOT_MODE: &str = "BootMode";
const SECURE_BOOT: &str = "SecureBoot";
/// The only apply time there is: the VM takes firmware settings when it starts.
const ON_RESET: &str = "OnReset";

fn mode_value(mode: BootMode) -> &'static str {
    match mode {
        BootMode::Uefi => "Uefi",
        BootMode::Legacy => "Bios",
    }
}

fn on_off(enabled: bool) -> &'static str {
    if enabled { "Enabled" } else { "Disabled" }
}

pub fn attributes(settings: FirmwareSettings) -> Value {
    json!({
        BOOT_MODE: mode_value(settings.mode),
        SECURE_BOOT: on_off(settings.secure_boot),
    })
}

/// The settings a PATCH of the settings object asks for, over `configured`; pure, so every
/// refusal is tested alone. Nothing is half applied: any wrong part refuses the whole.
pub fn settings_from_patch(
    body: &Map<String, Value>,
    configured: FirmwareSettings,
) -> ApiResult<FirmwareSettings> {
    let mut wanted = configured;
    for (name, value) in body {
        match name.as_str() {
            "Attributes" => {
                let fields = value
                    .as_object()
                    .ok_or_else(|| ApiError::property_type(value, name))?;
                for (attribute, value) in fields {
                    let path = format!("Attributes/{attribute}");
                    let text = value
                        .as_str()
                        .ok_or_else(|| ApiError::property_type(value, &path))?;
                    match (attribute.as_str(), text) {
                        (BOOT_MODE, "Uefi") => wanted.mode = BootMode::Uefi,
                        (BOOT_MODE, "Bios") => wanted.mode = BootMode::Legacy,
                        (SECURE_BOOT, "Enabled") => wanted.secure_boot = true,
                        (SECURE_BOOT, "Disabled") => wanted.secure_boot = false,
                        (BOOT_MODE | SECURE_BOOT, _) => {
                            return Err(ApiError::property_not_in_list(value, &path));
                        }
                        _ => return Err(ApiError::property_unknown(&path)),
                    }
                }
            }
            "@Redfish.SettingsApplyTime" => {
                let apply = value.get("ApplyTime").unwrap_or(&Value::Null);
                if !apply.is_null() && apply.as_str() != Some(ON_RESET) {
                    return Err(ApiError::property_not_in_list(
                        apply,
                        "@Redfish.SettingsApplyTime/ApplyTime",
                    ));
                }
            }
            other => return Err(ApiError::property_unknown(other)),
        }
    }
    if wanted.secure_boot && wanted.mode == BootMode::Legacy {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "Secure Boot needs the Uefi boot mode",
            // Base 1.4.0 has no PropertyValueConflict: the value refused is Secure Boot's.
            vec![super::errors::message(
                "PropertyValueNotInList",
                &["Enabled", "Attributes/SecureBoot"],
            )],
        ));
    }
    Ok(wanted)
}

pub fn bios_json(ids: &Ids, current: FirmwareSettings) -> Value {
    let uri = format!("{}/Bios", ids.system_uri());
    json!({
        "@odata.type": "#Bios.v1_1_0.Bios",
        "@odata.id": uri,
        "Id": "Bios",
        "Name": "BIOS Configuration",
        "Description": "The firmware settings the running boot started with",
        "AttributeRegistry": ATTRIBUTE_REGISTRY,
        "Attributes": attributes(current),
        "@Redfish.Settings": {
            "@odata.type": "#Settings.v1_3_5.Settings",
            "SettingsObject": odata_id(&format!("{uri}/Settings")),
            "SupportedApplyTimes": [ON_RESET],
        },
    })
}

pub fn settings_json(ids: &Ids, next: FirmwareSettings) -> Value {
    json!({
        "@odata.type": "#Bios.v1_1_0.Bios",
        "@odata.id": format!("{}/Bios/Settings", ids.system_uri()),
        "Id": "Settings",
        "Name": "BIOS pending settings",
        "Description": "The firmware settings the next boot applies",
        "AttributeRegistry": ATTRIBUTE_REGISTRY,
        "Attributes": attributes(next),
    })
}

/// What the machine's firmware is called: KubeVirt boots OVMF for UEFI and SeaBIOS for
/// legacy BIOS (`pkg/virt-launcher/virtwrap/converter`); no version of either is visible
/// from the API, so the name is all this claims.
pub fn bios_version(mode: BootMode) -> &'static str {
    match mode {
        BootMode::Uefi => "OVMF (UEFI)",
        BootMode::Legacy => "SeaBIOS",
    }
}

impl Context {
    /// The settings the next boot applies, as the machine holds them.
    pub async fn configured_firmware(&self) -> ApiResult<FirmwareSettings> {
        let boot = self.machine.boot_override().await?;
        let inventory = self.machine.inventory().await?;
        Ok(FirmwareSettings {
            mode: boot.mode,
            secure_boot: inventory.secure_boot,
        })
    }

    /// The settings of the running boot; the configured ones while off.
    pub async fn current_firmware(&self) -> ApiResult<FirmwareSettings> {
        match self.machine.running_firmware().await? {
            Some(running) => Ok(running),
            None => self.configured_firmware().await,
        }
    }
}

pub async fn get(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let ids = context.require_system(&id, &format!("/redfish/v1/Systems/{id}/Bios"))?;
    Ok(resource(bios_json(&ids, context.current_firmware().await?)))
}

pub async fn get_settings(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let ids = context.require_system(&id, &format!("/redfish/v1/Systems/{id}/Bios/Settings"))?;
    Ok(resource(settings_json(
        &ids,
        context.configured_firmware().await?,
    )))
}

pub async fn patch_settings(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: JsonBody,
) -> ApiResult<Response> {
    let ids = context.require_system(&id, &format!("/redfish/v1/Systems/{id}/Bios/Settings"))?;
    let body = body.required()?;
    let configured = context.configured_firmware().await?;
    check_if_match(&headers, &settings_json(&ids, configured))?;
    let wanted = settings_from_patch(&body, configured)?;
    let machine = &context.machine;
    // Secure Boot off before leaving UEFI, on only after entering it: the machine refuses
    // Secure Boot in Legacy mode at every step.
    if configured.secure_boot && !wanted.secure_boot {
        machine.set_secure_boot(false).await?;
    }
    if wanted.mode != configured.mode {
        let mut boot = machine.boot_override().await?;
        boot.mode = wanted.mode;
        machine.set_boot_override(boot).await?;
    }
    if wanted.secure_boot && !configured.secure_boot {
        machine.set_secure_boot(true).await?;
    }
    if wanted != configured {
        tracing::info!(
            ?wanted,
            "Redfish: BIOS settings set, applied at the next boot"
        );
    }
    Ok(resource(settings_json(
        &ids,
        context.configured_firmware().await?,
    )))
}

pub fn registry_file() -> Value {
    json!({
        "@odata.type": "#MessageRegistryFile.v1_1_3.MessageRegistryFile",
        "@odata.id": format!("/redfish/v1/Registries/{REGISTRY_FILE_ID}"),
        "Id": REGISTRY_FILE_ID,
        "Name": "BIOS Attribute Registry File",
        "Registry": ATTRIBUTE_REGISTRY,
        "Languages": ["en"],
        "Location": [{
            "Language": "en",
            "Uri": format!("/redfish/v1/Registries/{REGISTRY_FILE_ID}/{ATTRIBUTE_REGISTRY}.json"),
        }],
    })
}

/// The registry Ironic reads for each attribute's type, allowed values and whether it may be
/// written (`ironic/drivers/modules/redfish/bios.py` `cache_bios_settings`, sushy
/// `get_attribute_registry`); Metal3's FirmwareSchema is made from it.
pub fn registry_document() -> Value {
    let enumeration = |name: &str, display: &str, help: &str, values: &[(&str, &str)]| {
        json!({
            "AttributeName": name,
            "DisplayName": display,
            "HelpText": help,
            "Type": "Enumeration",
            "Value": values.iter().map(|(value, display)| json!({"ValueName": value, "ValueDisplayName": display})).collect::<Vec<_>>(),
            "ReadOnly": false,
            "ResetRequired": true,
        })
    };
    json!({
        "@odata.type": "#AttributeRegistry.v1_3_6.AttributeRegistry",
        "Id": ATTRIBUTE_REGISTRY,
        "Name": "kubevirt-bmc BIOS Attribute Registry",
        "Language": "en",
        "Description": "The firmware settings of a KubeVirt VirtualMachine",
        "OwningEntity": "KubeVirt",
        "RegistryVersion": "1.0.0",
        "SupportedSystems": [{"ProductName": "KubeVirt VirtualMachine", "SystemId": "KubeVirt"}],
        "RegistryEntries": {
            "Attributes": [
                enumeration(BOOT_MODE, "Boot Mode", "UEFI (OVMF) or legacy BIOS (SeaBIOS)", &[("Uefi", "UEFI"), ("Bios", "Legacy BIOS")]),
                enumeration(SECURE_BOOT, "Secure Boot", "UEFI Secure Boot; needs the Uefi boot mode", &[("Enabled", "Enabled"), ("Disabled", "Disabled")]),
            ],
        },
    })
}

const FIRMWARE_BIOS: &str = "BIOS";
const FIRMWARE_BMC: &str = "BMC";

/// Read-only: Ironic's firmware interface and Metal3's HostFirmwareComponents read the
/// versions (`ironic/drivers/modules/redfish/firmware.py` `cache_firmware_components`
/// reads `System.BiosVersion` and the Manager's `FirmwareVersion`; bmclib's inventory reads
/// `FirmwareInventory`, `internal/redfishwrapper/inventory.go`). A VM's firmware comes with
/// KubeVirt and the BMC's with its image: there is nothing to upload, so `SimpleUpdate` is
/// refused when posted, with the reason.
pub fn update_service() -> Value {
    json!({
        "@odata.type": "#UpdateService.v1_11_0.UpdateService",
        "@odata.id": "/redfish/v1/UpdateService",
        "Id": "UpdateService",
        "Name": "Update Service",
        "Description": "Firmware comes with KubeVirt (the VM's) and with the sidecar image (the BMC's); nothing can be uploaded",
        "ServiceEnabled": false,
        "Status": {"State": "Disabled", "Health": "OK"},
        "FirmwareInventory": odata_id("/redfish/v1/UpdateService/FirmwareInventory"),
        // Offered so that clients get the reason from the BMC: with no action, sushy fails
        // building its own error (`sushy/resources/updateservice/updateservice.py`
        // `_get_simple_update_element` passes `action=` to MissingAttributeError, whose
        // message needs `attribute`: a KeyError reaches Ironic); posted, it is refused with
        // ActionNotSupported saying why.
        "Actions": {
            "#UpdateService.SimpleUpdate": {
                "target": "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate",
                "TransferProtocol@Redfish.AllowableValues": ["HTTP", "HTTPS"],
            },
        },
    })
}

pub fn firmware_inventory() -> Value {
    collection(
        "SoftwareInventoryCollection",
        "Firmware Inventory",
        "/redfish/v1/UpdateService/FirmwareInventory",
        &[FIRMWARE_BIOS, FIRMWARE_BMC]
            .map(|id| format!("/redfish/v1/UpdateService/FirmwareInventory/{id}")),
    )
}

pub fn firmware_item(ids: &Ids, id: &str, mode: BootMode) -> Option<Value> {
    let (name, version, related) = match id {
        FIRMWARE_BIOS => ("VM firmware", bios_version(mode), ids.system_uri()),
        FIRMWARE_BMC => ("BMC firmware", env!("CARGO_PKG_VERSION"), ids.manager_uri()),
        _ => return None,
    };
    Some(json!({
        "@odata.type": "#SoftwareInventory.v1_4_0.SoftwareInventory",
        "@odata.id": format!("/redfish/v1/UpdateService/FirmwareInventory/{id}"),
        "Id": id,
        "Name": name,
        "Version": version,
        "Updateable": false,
        "Status": status_enabled(),
        "RelatedItem": [odata_id(&related)],
    }))
}

pub async fn update_service_get() -> Response {
    resource(update_service())
}

pub async fn firmware_inventory_get() -> Response {
    resource(firmware_inventory())
}

pub async fn firmware_item_get(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let mode = context.current_firmware().await?.mode;
    firmware_item(&context.ids, &id, mode)
        .map(resource)
        .ok_or_else(|| {
            ApiError::not_found(&format!("/redfish/v1/UpdateService/FirmwareInventory/{id}"))
        })
}

/// bmclib's firmware install posts here (`internal/redfishwrapper/firmware.go`); the answer
/// says why nothing can be installed instead of pretending a task.
pub async fn simple_update() -> ApiError {
    ApiError::action_not_supported(
        "UpdateService.SimpleUpdate",
        "a VM's firmware comes with KubeVirt and the BMC's with its container image; neither can be updated through Redfish",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    const UEFI_OFF: FirmwareSettings = FirmwareSettings {
        mode: BootMode::Uefi,
        secure_boot: false,
    };

    #[test]
    fn settings_patch_merges_and_refuses_wholly() {
        let wanted = settings_from_patch(
            &body(json!({"Attributes": {"SecureBoot": "Enabled"}, "@Redfish.SettingsApplyTime": {"ApplyTime": "OnReset"}})),
            UEFI_OFF,
        )
        .unwrap();
        assert_eq!(
            wanted,
            FirmwareSettings {
                mode: BootMode::Uefi,
                secure_boot: true
            }
        );
        let legacy =
            settings_from_patch(&body(json!({"Attributes": {"BootMode": "Bios"}})), UEFI_OFF)
                .unwrap();
        assert_eq!(legacy.mode, BootMode::Legacy);
        for (bad, id) in [
            (
                json!({"Attributes": {"BootMode": "Efi"}}),
                "PropertyValueNotInList",
            ),
            (json!({"Attributes": {"Colour": "x"}}), "PropertyUnknown"),
            (
                json!({"Attributes": {"SecureBoot": true}}),
                "PropertyValueTypeError",
            ),
            (json!({"Attributes": "x"}), "PropertyValueTypeError"),
            (
                json!({"@Redfish.SettingsApplyTime": {"ApplyTime": "Immediate"}}),
                "PropertyValueNotInList",
            ),
            (
                json!({"Attributes": {"BootMode": "Bios", "SecureBoot": "Enabled"}}),
                "PropertyValueNotInList",
            ),
            (json!({"Id": "x"}), "PropertyUnknown"),
        ] {
            let error = settings_from_patch(&body(bad.clone()), UEFI_OFF).unwrap_err();
            let message = error.messages[0]["MessageId"].as_str().unwrap();
            assert!(message.ends_with(id), "{bad}: {message}");
        }
    }

    #[test]
    fn firmware_inventory_names_both_versions() {
        let ids = Ids {
            system: "vm".into(),
            uuid: "u".into(),
            service_uuid: "s".into(),
        };
        let bios = firmware_item(&ids, "BIOS", BootMode::Uefi).unwrap();
        assert_eq!(bios["Version"], "OVMF (UEFI)");
        assert_eq!(bios["Updateable"], false);
        let bmc = firmware_item(&ids, "BMC", BootMode::Uefi).unwrap();
        assert_eq!(bmc["Version"], env!("CARGO_PKG_VERSION"));
        assert!(firmware_item(&ids, "NIC", BootMode::Uefi).is_none());
        let registry = registry_document();
        assert_eq!(registry["Id"], ATTRIBUTE_REGISTRY);
        assert_eq!(
            registry["RegistryEntries"]["Attributes"][0]["AttributeName"],
            "BootMode"
        );
    }
}
