//! The System, its parts, its Chassis, and the two writes Ironic depends on: boot override
//! and reset.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::Context;
use super::auth::lock;
use super::errors::{ApiError, ApiResult};
use super::http::{JsonBody, check_if_match, resource};
use super::indicators::{self, Indicators};
use super::models::{self, collection};
use super::tasks;
use crate::machine::{
    BootMode, BootOverride, BootProgress, Inventory, PowerAction, PowerState, RestorePolicy,
};

impl Context {
    /// Resolves a System (or Chassis) Id: the VM name, its UUID, or [`models::ALIAS`]; the
    /// names its resources are shown with when read through that Id.
    pub fn system_ids(&self, id: &str) -> Option<models::Ids> {
        if id == models::ALIAS {
            Some(self.ids.aliased())
        } else if id == self.ids.system || id.eq_ignore_ascii_case(&self.ids.uuid) {
            Some(self.ids.clone())
        } else {
            None
        }
    }

    pub fn system_exists(&self, id: &str) -> bool {
        self.system_ids(id).is_some()
    }

    pub(super) fn require_system(&self, id: &str, uri: &str) -> ApiResult<models::Ids> {
        self.system_ids(id).ok_or_else(|| ApiError::not_found(uri))
    }

    /// Everything the System document is made of, read from the machine.
    async fn system_inputs(&self, ids: &models::Ids) -> ApiResult<SystemInputs> {
        let machine = self.machine.as_ref();
        Ok(SystemInputs {
            ids: ids.clone(),
            inventory: machine.inventory().await?,
            power: machine.power_state().await?,
            boot: machine.boot_override().await?,
            restore_policy: machine.restore_policy().await?,
            led: Indicators::load(machine).await?.system,
            firmware_mode: self.current_firmware().await?.mode,
            boot_progress: machine.boot_progress().await?,
        })
    }

    pub async fn system_json(&self, ids: &models::Ids) -> ApiResult<Value> {
        Ok(self.system_document(&self.system_inputs(ids).await?))
    }

    fn system_document(&self, inputs: &SystemInputs) -> Value {
        let machine = &self.machine;
        let mut system = models::system(
            &inputs.ids,
            &inputs.inventory,
            inputs.power,
            &inputs.boot,
            machine.supported_actions(),
            machine.supported_boot_targets(),
        );
        system["PowerRestorePolicy"] = models::restore_policy_name(inputs.restore_policy).into();
        system["BiosVersion"] = super::bios::bios_version(inputs.firmware_mode).into();
        system["BootProgress"] = models::boot_progress(inputs.boot_progress);
        if let Some(map) = system.as_object_mut() {
            indicators::properties(inputs.led, map);
        }
        system
    }

    /// The System document's JSON bytes, serialized again only when what it is made of has
    /// changed. Ironic, Metal3 and bmclib poll the System for its power state, and the state
    /// rarely moves between two polls: building and serializing the document was a fifth of
    /// a GET's CPU (perf, `e2e/bench.sh`'s one-connection cell).
    async fn system_body(&self, ids: &models::Ids) -> ApiResult<Bytes> {
        let inputs = self.system_inputs(ids).await?;
        if let Some((cached, body)) = lock(&self.system_body).as_ref()
            && *cached == inputs
        {
            return Ok(body.clone());
        }
        let body = Bytes::from(
            serde_json::to_vec(&self.system_document(&inputs)).expect("a Value always serializes"),
        );
        *lock(&self.system_body) = Some((inputs, body.clone()));
        Ok(body)
    }
}

/// What a System document is a pure function of (with the machine's supported actions and
/// boot targets, which are fixed for its life): equal inputs make equal bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemInputs {
    ids: models::Ids,
    inventory: Inventory,
    power: PowerState,
    boot: BootOverride,
    restore_policy: RestorePolicy,
    led: indicators::Led,
    firmware_mode: BootMode,
    boot_progress: BootProgress,
}

/// The last System body served and what it was made of.
pub type SystemBodyCache = Mutex<Option<(SystemInputs, Bytes)>>;

pub async fn systems(State(context): State<Arc<Context>>) -> Response {
    resource(collection(
        "ComputerSystemCollection",
        "Computer Systems",
        "/redfish/v1/Systems",
        &[context.ids.aliased().system_uri()],
    ))
}

pub async fn system(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let ids = context.require_system(&id, &format!("/redfish/v1/Systems/{id}"))?;
    let body = context.system_body(&ids).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Applies a PATCH of the System: `Boot`, `PowerRestorePolicy` and the indicator LED are
/// writable, and the whole
/// request is refused (nothing changed) when any part of it is wrong.
pub async fn patch_system(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: JsonBody,
) -> ApiResult<Response> {
    let ids = context.require_system(&id, &format!("/redfish/v1/Systems/{id}"))?;
    let mut body = body.required()?;
    let current = context.system_json(&ids).await?;
    check_if_match(&headers, &current)?;
    let machine = &context.machine;
    let restore_policy = body
        .remove("PowerRestorePolicy")
        .map(|value| {
            value
                .as_str()
                .ok_or_else(|| ApiError::property_type(&value, "PowerRestorePolicy"))
                .and_then(|name| {
                    models::parse_restore_policy(name)
                        .ok_or_else(|| ApiError::property_not_in_list(&value, "PowerRestorePolicy"))
                })
        })
        .transpose()?;
    let mut leds = Indicators::load(machine.as_ref()).await?;
    let led = indicators::from_patch(&mut body, leds.system)?;
    let old = machine.boot_override().await?;
    let boot = boot_from_patch(&body, &current, old, machine.supported_boot_targets())?;
    if let Some(policy) = restore_policy
        && machine.restore_policy().await? != policy
    {
        machine.set_restore_policy(policy).await?;
        tracing::info!(?policy, "Redfish: power restore policy set");
    }
    if boot != old {
        machine.set_boot_override(boot).await?;
        tracing::info!(?boot, "Redfish: boot override set");
    }
    if let Some(led) = led.filter(|led| *led != leds.system) {
        leds.system = led;
        leds.store(machine.as_ref()).await?;
        tracing::info!(?led, "Redfish: system indicator set");
    }
    Ok(resource(context.system_json(&ids).await?))
}

/// The boot override a PATCH body asks for, merged over `old`; pure so it is tested alone.
pub fn boot_from_patch(
    body: &Map<String, Value>,
    current: &Value,
    old: BootOverride,
    supported: &[crate::machine::BootTarget],
) -> ApiResult<BootOverride> {
    let mut boot = old;
    for (name, value) in body {
        if name != "Boot" {
            return Err(if current.get(name).is_some() {
                ApiError::property_not_writable(name)
            } else {
                ApiError::property_unknown(name)
            });
        }
        let fields = value
            .as_object()
            .ok_or_else(|| ApiError::property_type(value, "Boot"))?;
        for (field, value) in fields {
            let text = || {
                value
                    .as_str()
                    .ok_or_else(|| ApiError::property_type(value, field))
            };
            match field.as_str() {
                "BootSourceOverrideTarget" => {
                    boot.target = models::parse_target(text()?, supported)
                        .ok_or_else(|| ApiError::property_not_in_list(value, field))?;
                }
                "BootSourceOverrideEnabled" => {
                    boot.enabled = models::parse_enabled(text()?)
                        .ok_or_else(|| ApiError::property_not_in_list(value, field))?;
                }
                "BootSourceOverrideMode" => {
                    boot.mode = models::parse_mode(text()?)
                        .ok_or_else(|| ApiError::property_not_in_list(value, field))?;
                }
                other if current["Boot"].get(other).is_some() => {
                    return Err(ApiError::property_not_writable(&format!("Boot/{other}")));
                }
                other => return Err(ApiError::property_unknown(&format!("Boot/{other}"))),
            }
        }
    }
    Ok(boot)
}

/// The power action a Reset body asks for, given the current state (PushPowerButton
/// toggles) and what the machine supports.
pub fn reset_action(
    body: Option<&Map<String, Value>>,
    state: PowerState,
    supported: &[PowerAction],
) -> ApiResult<PowerAction> {
    const ACTION: &str = "ComputerSystem.Reset";
    let empty = Map::new();
    let body = body.unwrap_or(&empty);
    if let Some(unknown) = body.keys().find(|k| *k != "ResetType") {
        return Err(ApiError::parameter_unknown(ACTION, unknown));
    }
    let value = body
        .get("ResetType")
        .ok_or_else(|| ApiError::parameter_missing(ACTION, "ResetType"))?;
    let name = value
        .as_str()
        .ok_or_else(|| ApiError::parameter_type(value, "ResetType", ACTION))?;
    if !models::reset_types(supported).contains(&name) {
        return Err(ApiError::property_not_in_list(value, "ResetType"));
    }
    if name == "PushPowerButton" {
        return Ok(match state.settled() {
            PowerState::Off => PowerAction::On,
            _ => PowerAction::GracefulShutdown,
        });
    }
    supported
        .iter()
        .copied()
        .find(|action| models::reset_name(*action) == name)
        .ok_or_else(|| ApiError::property_not_in_list(value, "ResetType"))
}

pub async fn reset(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
    body: JsonBody,
) -> ApiResult<Response> {
    context.require_system(
        &id,
        &format!("/redfish/v1/Systems/{id}/Actions/ComputerSystem.Reset"),
    )?;
    let machine = context.machine.clone();
    let state = machine.power_state().await?;
    let action = reset_action(body.0.as_ref(), state, machine.supported_actions())?;
    machine.power(action).await?;
    tracing::info!(?action, "Redfish: reset");
    if machine.power_state().await?.is_transition() {
        let task = context
            .tasks
            .create(&format!("Reset {}", models::reset_name(action)));
        tasks::watch_power(context.clone(), machine, task.clone());
        return Ok(tasks::accepted(&task));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

macro_rules! sub_collection {
    ($name:ident, $kind:literal, $title:literal, $segment:literal, $members:expr) => {
        pub async fn $name(
            State(context): State<Arc<Context>>,
            Path(id): Path<String>,
        ) -> ApiResult<Response> {
            let ids =
                context.require_system(&id, &format!("/redfish/v1/Systems/{id}/{}", $segment))?;
            let uri = format!("{}/{}", ids.system_uri(), $segment);
            let inventory = context.machine.inventory().await?;
            let members: Vec<String> = ($members)(&inventory)
                .into_iter()
                .map(|m: String| format!("{uri}/{m}"))
                .collect();
            Ok(resource(collection($kind, $title, &uri, &members)))
        }
    };
}

sub_collection!(
    interfaces,
    "EthernetInterfaceCollection",
    "Ethernet Interfaces",
    "EthernetInterfaces",
    |i: &crate::machine::Inventory| i
        .interfaces
        .iter()
        .map(|n| n.name.clone())
        .collect::<Vec<_>>()
);
sub_collection!(
    processors,
    "ProcessorCollection",
    "Processors",
    "Processors",
    |_: &crate::machine::Inventory| vec!["CPU0".to_owned()]
);
sub_collection!(
    memories,
    "MemoryCollection",
    "Memory",
    "Memory",
    |_: &crate::machine::Inventory| vec!["DIMM0".to_owned()]
);
sub_collection!(
    storages,
    "StorageCollection",
    "Storage",
    "Storage",
    |_: &crate::machine::Inventory| vec!["1".to_owned()]
);
sub_collection!(
    simple_storages,
    "SimpleStorageCollection",
    "Simple Storage",
    "SimpleStorage",
    |_: &crate::machine::Inventory| vec!["1".to_owned()]
);

/// One member of a System sub-collection: `kind` picks the builder.
pub async fn member(
    State(context): State<Arc<Context>>,
    uri: axum::http::Uri,
    Path((id, member)): Path<(String, String)>,
) -> ApiResult<Response> {
    let kind = uri.path().split('/').nth(5).unwrap_or_default().to_owned();
    let uri = format!("/redfish/v1/Systems/{id}/{kind}/{member}");
    let ids = &context.require_system(&id, &uri)?;
    let inventory = context.machine.inventory().await?;
    let value = match (kind.as_str(), member.as_str()) {
        ("EthernetInterfaces", name) => inventory
            .interfaces
            .iter()
            .find(|n| n.name == name)
            .map(|n| models::ethernet_interface(ids, &n.name, &n.mac)),
        ("Processors", "CPU0") => Some(models::processor(ids, &inventory)),
        ("Memory", "DIMM0") => Some(models::memory(ids, &inventory)),
        ("Storage", "1") => Some(models::storage(ids, &inventory)),
        ("SimpleStorage", "1") => Some(models::simple_storage(ids, &inventory)),
        _ => None,
    };
    value.map(resource).ok_or_else(|| ApiError::not_found(&uri))
}

pub async fn drive(
    State(context): State<Arc<Context>>,
    Path((id, drive)): Path<(String, String)>,
) -> ApiResult<Response> {
    let uri = format!("/redfish/v1/Systems/{id}/Storage/1/Drives/{drive}");
    let ids = context.require_system(&id, &uri)?;
    let inventory = context.machine.inventory().await?;
    models::drive(&ids, &inventory, &drive)
        .map(resource)
        .ok_or_else(|| ApiError::not_found(&uri))
}

pub async fn controllers(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let ids = context.require_system(
        &id,
        &format!("/redfish/v1/Systems/{id}/Storage/1/Controllers"),
    )?;
    let uri = format!("{}/Storage/1/Controllers", ids.system_uri());
    Ok(resource(collection(
        "StorageControllerCollection",
        "Storage Controllers",
        &uri,
        &[format!("{uri}/0")],
    )))
}

pub async fn controller(
    State(context): State<Arc<Context>>,
    Path((id, controller)): Path<(String, String)>,
) -> ApiResult<Response> {
    let uri = format!("/redfish/v1/Systems/{id}/Storage/1/Controllers/{controller}");
    let ids = context.require_system(&id, &uri)?;
    if controller != "0" {
        return Err(ApiError::not_found(&uri));
    }
    Ok(resource(models::storage_controller(&ids)))
}

/// The VM's disks are drives, not volumes carved from them: the collection is empty.
pub async fn volumes(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let ids =
        context.require_system(&id, &format!("/redfish/v1/Systems/{id}/Storage/1/Volumes"))?;
    let uri = format!("{}/Storage/1/Volumes", ids.system_uri());
    Ok(resource(collection(
        "VolumeCollection",
        "Volumes",
        &uri,
        &[],
    )))
}

pub async fn secure_boot(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let ids = context.require_system(&id, &format!("/redfish/v1/Systems/{id}/SecureBoot"))?;
    let inventory = context.machine.inventory().await?;
    let current_boot = context.current_firmware().await?.secure_boot;
    Ok(resource(models::secure_boot(
        &ids,
        inventory.secure_boot,
        current_boot,
    )))
}

/// `SecureBootEnable` is the firmware setting: written to the machine (on the VM in KubeVirt,
/// `firmware.bootloader.efi.secureBoot`), applied by the next boot, read back at once.
/// Ironic sets it, reads it back, and reboots only when it did not take
/// (`ironic/drivers/modules/redfish/management.py` `set_secure_boot_state`,
/// `_wait_for_secure_boot`); sushy sends `{"SecureBootEnable": bool}`
/// (`sushy/resources/system/secure_boot.py` `set_enabled`).
pub async fn patch_secure_boot(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: JsonBody,
) -> ApiResult<Response> {
    let ids = context.require_system(&id, &format!("/redfish/v1/Systems/{id}/SecureBoot"))?;
    let body = body.required()?;
    let inventory = context.machine.inventory().await?;
    let current_boot = context.current_firmware().await?.secure_boot;
    let current = models::secure_boot(&ids, inventory.secure_boot, current_boot);
    check_if_match(&headers, &current)?;
    let mut wanted = None;
    for (name, value) in &body {
        match name.as_str() {
            "SecureBootEnable" => {
                wanted = Some(
                    value
                        .as_bool()
                        .ok_or_else(|| ApiError::property_type(value, name))?,
                );
            }
            other if current.get(other).is_some() => {
                return Err(ApiError::property_not_writable(other));
            }
            other => return Err(ApiError::property_unknown(other)),
        }
    }
    if let Some(enabled) = wanted.filter(|w| *w != inventory.secure_boot) {
        context.machine.set_secure_boot(enabled).await?;
        tracing::info!(
            enabled,
            "Redfish: Secure Boot set, applied at the next boot"
        );
    }
    let inventory = context.machine.inventory().await?;
    let current_boot = context.current_firmware().await?.secure_boot;
    Ok(resource(models::secure_boot(
        &ids,
        inventory.secure_boot,
        current_boot,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{BootMode, BootOverrideEnabled, BootTarget};
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn boot_patch_merges_and_validates() {
        let current = json!({"Boot": {"BootSourceOverrideTarget": "None"}, "PowerState": "On"});
        let old = BootOverride::default();
        let boot = boot_from_patch(
            &body(json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}})),
            &current,
            old,
            &BootTarget::ALL,
        )
        .unwrap();
        assert_eq!(boot.target, BootTarget::Pxe);
        assert_eq!(boot.enabled, BootOverrideEnabled::Once);
        assert_eq!(boot.mode, BootMode::Uefi);
        for (bad, message) in [
            (
                json!({"Boot": {"BootSourceOverrideTarget": "Floppy"}}),
                "PropertyValueNotInList",
            ),
            (
                json!({"Boot": {"BootSourceOverrideTarget": 3}}),
                "PropertyValueTypeError",
            ),
            (json!({"Boot": {"Colour": "x"}}), "PropertyUnknown"),
            (json!({"PowerState": "Off"}), "PropertyNotWritable"),
            (json!({"Boot": "Pxe"}), "PropertyValueTypeError"),
        ] {
            let error =
                boot_from_patch(&body(bad.clone()), &current, old, &BootTarget::ALL).unwrap_err();
            let id = error.messages[0]["MessageId"].as_str().unwrap();
            assert!(id.ends_with(message), "{bad}: {id}");
        }
    }

    #[test]
    fn reset_types_map_to_actions() {
        let all = PowerAction::ALL;
        let ask = |v: Value, state| reset_action(Some(&body(v)), state, &all);
        assert_eq!(
            ask(json!({"ResetType": "On"}), PowerState::Off).unwrap(),
            PowerAction::On
        );
        assert_eq!(
            ask(json!({"ResetType": "PushPowerButton"}), PowerState::On).unwrap(),
            PowerAction::GracefulShutdown
        );
        assert!(ask(json!({"ResetType": "Explode"}), PowerState::On).is_err());
        assert!(ask(json!({"ResetType": 1}), PowerState::On).is_err());
        assert!(ask(json!({"Other": 1}), PowerState::On).is_err());
        assert!(reset_action(None, PowerState::On, &all).is_err());
        let only_on = [PowerAction::On];
        assert!(
            reset_action(
                Some(&body(json!({"ResetType": "ForceOff"}))),
                PowerState::On,
                &only_on
            )
            .is_err()
        );
    }
}
