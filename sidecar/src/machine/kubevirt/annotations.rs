//! The BMC's state on the VM: annotations under `bmc.kubevirt.io/`. A new sidecar reads them
//! at start and continues; nothing the BMC must remember lives only in its memory.
//!
//! | annotation | value | written by |
//! |---|---|---|
//! | `power-state` | `On` / `Off`: the power a client last asked for | sidecar |
//! | `booted-vmi` | UID of the VMI the BMC last booted or found running (it has run) | sidecar |
//! | `restart-of` | UID of the VMI the BMC restarted for a fresh boot: boot its successor | sidecar |
//! | `boot-override` | `Target/Enabled/Mode` exactly as a client set it, e.g. `Pxe/Once/UEFI` | sidecar |
//! | `boot-override-state` | JSON: generation the override was written in, VMI then running, the persistent boot order to restore | sidecar |
//! | `media` | JSON `{"image","inserted","writeProtected"}` (absent: ejected) | sidecar |
//! | `media-status` | JSON `{"phase","progress","reason"}` | controller |
//! | `event-subscriptions` | Redfish subscriptions document | sidecar |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::boot::SavedOrder;
use super::power::Desired;
use super::types::VirtualMachine;
use crate::machine::{
    BootMode, BootOverride, BootOverrideEnabled, BootTarget, MediaInsert, MediaState, MediaStatus,
};

pub const PREFIX: &str = "bmc.kubevirt.io/";
pub const POWER: &str = "bmc.kubevirt.io/power-state";
pub const BOOTED_VMI: &str = "bmc.kubevirt.io/booted-vmi";
pub const RESTART_OF: &str = "bmc.kubevirt.io/restart-of";
pub const BOOT_OVERRIDE: &str = "bmc.kubevirt.io/boot-override";
pub const BOOT_STATE: &str = "bmc.kubevirt.io/boot-override-state";
pub const MEDIA: &str = "bmc.kubevirt.io/media";
pub const MEDIA_STATUS: &str = "bmc.kubevirt.io/media-status";
pub const EVENT_SUBSCRIPTIONS: &str = "bmc.kubevirt.io/event-subscriptions";
pub const SESSION_SETTINGS: &str = "bmc.kubevirt.io/session-settings";

/// Bookkeeping of an active boot override.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootState {
    /// The VM generation whose template carries the override: a VMI created from it (or
    /// later) boots with it.
    pub applied_generation: i64,
    /// The VMI running when the override was set; it did not boot with the override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_on_vmi: Option<String>,
    /// The persistent order to restore once a one-time override is used up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved: Option<SavedOrder>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaAnnotation {
    pub image: String,
    pub inserted: bool,
    pub write_protected: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaStatusAnnotation {
    #[serde(default)]
    pub phase: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

pub fn desired(vm: &VirtualMachine) -> Desired {
    Desired {
        power: match vm.annotation(POWER) {
            Some("On") => Some(true),
            Some("Off") => Some(false),
            _ => None,
        },
        booted_vmi: vm.annotation(BOOTED_VMI).map(str::to_owned),
        restart_of: vm.annotation(RESTART_OF).map(str::to_owned),
    }
}

pub fn power_value(on: bool) -> &'static str {
    if on { "On" } else { "Off" }
}

pub fn format_boot_override(boot: &BootOverride) -> String {
    let mode = match boot.mode {
        BootMode::Uefi => "UEFI",
        BootMode::Legacy => "Legacy",
    };
    format!("{:?}/{:?}/{mode}", boot.target, boot.enabled)
}

pub fn parse_boot_override(text: &str) -> Option<BootOverride> {
    let mut parts = text.split('/');
    let target = parts.next()?;
    let target = BootTarget::ALL
        .into_iter()
        .find(|t| format!("{t:?}") == target)?;
    let enabled = match parts.next()? {
        "Disabled" => BootOverrideEnabled::Disabled,
        "Once" => BootOverrideEnabled::Once,
        "Continuous" => BootOverrideEnabled::Continuous,
        _ => return None,
    };
    let mode = match parts.next()? {
        "UEFI" => BootMode::Uefi,
        "Legacy" => BootMode::Legacy,
        _ => return None,
    };
    parts.next().is_none().then_some(BootOverride {
        target,
        enabled,
        mode,
    })
}

pub fn boot_state(vm: &VirtualMachine) -> Option<BootState> {
    serde_json::from_str(vm.annotation(BOOT_STATE)?).ok()
}

pub fn media_annotation(media: &MediaInsert) -> String {
    serde_json::to_string(&MediaAnnotation {
        image: media.image.clone(),
        inserted: media.inserted,
        write_protected: media.write_protected,
    })
    .unwrap_or_default()
}

/// What a client reads about the virtual CD: the wish from `media`, the import's progress
/// from the controller's `media-status`.
pub fn media_state(vm: &VirtualMachine) -> MediaState {
    let Some(media) = vm
        .annotation(MEDIA)
        .and_then(|m| serde_json::from_str::<MediaAnnotation>(m).ok())
    else {
        return MediaState::ejected();
    };
    let status = vm
        .annotation(MEDIA_STATUS)
        .and_then(|s| serde_json::from_str::<MediaStatusAnnotation>(s).ok())
        .unwrap_or_default();
    let status = match status.phase.as_str() {
        "Ready" => MediaStatus::Ready,
        "Failed" => MediaStatus::Failed {
            reason: status
                .reason
                .unwrap_or_else(|| "the image import failed".to_owned()),
        },
        _ => MediaStatus::Importing {
            progress: status.progress,
        },
    };
    MediaState {
        image: Some(media.image),
        inserted: media.inserted,
        write_protected: media.write_protected,
        status,
    }
}

/// A merge patch of annotations only; `None` removes one.
pub fn merge_patch(changes: &BTreeMap<&str, Option<String>>) -> serde_json::Value {
    serde_json::json!({"metadata": {"annotations": changes}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_override_text_round_trips_every_value() {
        for target in BootTarget::ALL {
            for enabled in [
                BootOverrideEnabled::Disabled,
                BootOverrideEnabled::Once,
                BootOverrideEnabled::Continuous,
            ] {
                for mode in [BootMode::Uefi, BootMode::Legacy] {
                    let boot = BootOverride {
                        target,
                        enabled,
                        mode,
                    };
                    assert_eq!(
                        parse_boot_override(&format_boot_override(&boot)),
                        Some(boot)
                    );
                }
            }
        }
        assert_eq!(
            format_boot_override(&BootOverride {
                target: BootTarget::Pxe,
                enabled: BootOverrideEnabled::Once,
                mode: BootMode::Uefi
            }),
            "Pxe/Once/UEFI",
            "the form in the fixtures' watch capture"
        );
        for bad in ["", "Pxe", "Pxe/Once", "Floppy/Once/UEFI", "Pxe/Once/UEFI/x"] {
            assert_eq!(parse_boot_override(bad), None, "{bad}");
        }
    }

    #[test]
    fn media_reads_the_wish_and_the_controllers_progress() {
        let mut vm = VirtualMachine::default();
        assert_eq!(media_state(&vm), MediaState::ejected());
        let annotations = vm.metadata.annotations.get_or_insert_default();
        annotations.insert(
            MEDIA.into(),
            r#"{"image":"http://x/a.iso","inserted":true,"writeProtected":true}"#.into(),
        );
        assert_eq!(
            media_state(&vm).status,
            MediaStatus::Importing { progress: None }
        );
        vm.metadata.annotations.as_mut().unwrap().insert(
            MEDIA_STATUS.into(),
            r#"{"phase":"Failed","reason":"404 from http://x/a.iso"}"#.into(),
        );
        let state = media_state(&vm);
        assert_eq!(state.image.as_deref(), Some("http://x/a.iso"));
        assert_eq!(
            state.status,
            MediaStatus::Failed {
                reason: "404 from http://x/a.iso".into()
            }
        );
    }
}
