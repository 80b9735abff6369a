//! The System, its parts, its Chassis, and the two writes Ironic depends on: boot override
//! and reset.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::Context;
use super::errors::{ApiError, ApiResult};
use super::http::{JsonBody, check_if_match, resource};
use super::models::{self, collection};
use super::tasks;
use crate::machine::{BootOverride, PowerAction, PowerState};

impl Context {
    /// Resolves a System Id: the VM name, or its UUID.
    pub fn system_exists(&self, id: &str) -> bool {
        id == self.ids.system || id.eq_ignore_ascii_case(&self.ids.uuid)
    }

    fn require_system(&self, id: &str, uri: &str) -> ApiResult<()> {
        if self.system_exists(id) {
            Ok(())
        } else {
            Err(ApiError::not_found(uri))
        }
    }

    pub async fn system_json(&self) -> ApiResult<Value> {
        let machine = &self.machine;
        let inventory = machine.inventory().await?;
        let power = machine.power_state().await?;
        let boot = machine.boot_override().await?;
        let restore_policy = machine.restore_policy().await?;
        let mut system = models::system(
            &self.ids,
            &inventory,
            power,
            &boot,
            machine.supported_actions(),
            machine.supported_boot_targets(),
        );
        system["PowerRestorePolicy"] = models::restore_policy_name(restore_policy).into();
        Ok(system)
    }
}

pub async fn systems(State(context): State<Arc<Context>>) -> Response {
    resource(collection(
        "ComputerSystemCollection",
        "Computer Systems",
        "/redfish/v1/Systems",
        &[context.ids.system_uri()],
    ))
}

pub async fn system(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    context.require_system(&id, &format!("/redfish/v1/Systems/{id}"))?;
    Ok(resource(context.system_json().await?))
}

/// Applies a PATCH of the System: `Boot` and `PowerRestorePolicy` are writable, and the whole
/// request is refused (nothing changed) when any part of it is wrong.
pub async fn patch_system(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: JsonBody,
) -> ApiResult<Response> {
    context.require_system(&id, &format!("/redfish/v1/Systems/{id}"))?;
    let mut body = body.required()?;
    let current = context.system_json().await?;
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
    Ok(resource(context.system_json().await?))
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
            let uri = format!("{}/{}", context.ids.system_uri(), $segment);
            context.require_system(&id, &format!("/redfish/v1/Systems/{id}/{}", $segment))?;
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
    context.require_system(&id, &uri)?;
    let inventory = context.machine.inventory().await?;
    let ids = &context.ids;
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
    context.require_system(&id, &uri)?;
    let inventory = context.machine.inventory().await?;
    models::drive(&context.ids, &inventory, &drive)
        .map(resource)
        .ok_or_else(|| ApiError::not_found(&uri))
}

pub async fn controllers(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let uri = format!("{}/Storage/1/Controllers", context.ids.system_uri());
    context.require_system(
        &id,
        &format!("/redfish/v1/Systems/{id}/Storage/1/Controllers"),
    )?;
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
    context.require_system(&id, &uri)?;
    if controller != "0" {
        return Err(ApiError::not_found(&uri));
    }
    Ok(resource(models::storage_controller(&context.ids)))
}

/// The VM's disks are drives, not volumes carved from them: the collection is empty.
pub async fn volumes(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let uri = format!("{}/Storage/1/Volumes", context.ids.system_uri());
    context.require_system(&id, &format!("/redfish/v1/Systems/{id}/Storage/1/Volumes"))?;
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
    context.require_system(&id, &format!("/redfish/v1/Systems/{id}/SecureBoot"))?;
    let inventory = context.machine.inventory().await?;
    Ok(resource(models::secure_boot(
        &context.ids,
        inventory.secure_boot,
    )))
}

/// Secure boot follows the VM's firmware settings; asking for what already holds is
/// accepted, asking for a change is refused plainly.
pub async fn patch_secure_boot(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: JsonBody,
) -> ApiResult<Response> {
    context.require_system(&id, &format!("/redfish/v1/Systems/{id}/SecureBoot"))?;
    let body = body.required()?;
    let inventory = context.machine.inventory().await?;
    let current = models::secure_boot(&context.ids, inventory.secure_boot);
    check_if_match(&headers, &current)?;
    for (name, value) in &body {
        match name.as_str() {
            "SecureBootEnable" => {
                let wanted = value
                    .as_bool()
                    .ok_or_else(|| ApiError::property_type(value, name))?;
                if wanted != inventory.secure_boot {
                    return Err(ApiError::property_not_writable(name));
                }
            }
            other if current.get(other).is_some() => {
                return Err(ApiError::property_not_writable(other));
            }
            other => return Err(ApiError::property_unknown(other)),
        }
    }
    Ok(resource(current))
}

pub async fn chassis_list(State(context): State<Arc<Context>>) -> Response {
    resource(collection(
        "ChassisCollection",
        "Chassis",
        "/redfish/v1/Chassis",
        &[context.ids.chassis_uri()],
    ))
}

pub async fn chassis(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    if id != context.ids.system {
        return Err(ApiError::not_found(&format!("/redfish/v1/Chassis/{id}")));
    }
    let inventory = context.machine.inventory().await?;
    let power = context.machine.power_state().await?;
    Ok(resource(models::chassis(&context.ids, &inventory, power)))
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
