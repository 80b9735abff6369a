//! The BMC's state on the VM: annotations under `bmc.kubevirt.io/`. A new sidecar reads them
//! at start and continues; nothing the BMC must remember lives only in its memory. The keys and
//! the values both binaries read are the contract crate's (`kubevirt_bmc_contract::annotations`,
//! with the table of who writes what); here they become the machine's types.

use std::collections::BTreeMap;

pub use kubevirt_bmc_contract::annotations::{
    BOOT_OVERRIDE, BOOT_STATE, BOOTED_VMI, EVENT_SUBSCRIPTIONS, INDICATORS, IPMI_AUTH, MEDIA,
    MEDIA_BOOT_WAIT, MEDIA_STATUS, POWER, POWER_RESTORE_POLICY, POWER_SETTLED_VMI,
    REBOOT_POLICY_UNSUPPORTED, RESTART_OF, SESSION_SETTINGS,
};
use kubevirt_bmc_contract::annotations::{
    Media, MediaBootWait, MediaPhase, MediaStatus as ImportStatus, PowerState, RestorePolicy,
};
use serde::{Deserialize, Serialize};

use super::boot::SavedOrder;
use super::power::Desired;
use super::types::VirtualMachine;
use crate::machine::{BootOverride, MediaInsert, MediaState, MediaStatus};

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
    /// Set when the override put `rebootPolicy: Terminate` into the template: the user's own
    /// value, put back with the persistent order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_policy: Option<SavedRebootPolicy>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedRebootPolicy {
    /// `None`: the template had no rebootPolicy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
}

pub fn desired(vm: &VirtualMachine) -> Desired {
    Desired {
        power: vm
            .annotation(POWER)
            .and_then(PowerState::parse)
            .map(PowerState::is_on),
        booted_vmi: vm.annotation(BOOTED_VMI).map(str::to_owned),
        restart_of: vm.annotation(RESTART_OF).map(str::to_owned),
        settled_vmi: vm.annotation(POWER_SETTLED_VMI).map(str::to_owned),
        restore_policy: restore_policy(vm),
        media_wait: vm
            .annotation(MEDIA_BOOT_WAIT)
            .and_then(MediaBootWait::parse),
    }
}

/// The medium as the power model needs it: whether a boot now would see it.
pub fn medium(vm: &VirtualMachine) -> super::power::Medium {
    use super::power::Medium;
    let state = media_state(vm);
    if state.image.is_none() || !state.inserted {
        return Medium::None;
    }
    match state.status {
        MediaStatus::Ready => Medium::Ready,
        MediaStatus::Ejected => Medium::None,
        MediaStatus::Importing { .. } => Medium::Importing,
        MediaStatus::Failed { reason } => Medium::Failed(reason),
    }
}

/// The restore policy as last set; one that does not parse (edited by hand) is `previous`,
/// what the VM behaved as before it was set, and is logged.
pub fn restore_policy(vm: &VirtualMachine) -> RestorePolicy {
    match vm
        .annotation(POWER_RESTORE_POLICY)
        .map(RestorePolicy::parse)
    {
        None => RestorePolicy::Previous,
        Some(Ok(policy)) => policy,
        Some(Err(error)) => {
            tracing::warn!(%error, "using the restore policy previous");
            RestorePolicy::Previous
        }
    }
}

pub fn power_value(on: bool) -> &'static str {
    PowerState::from_on(on).as_str()
}

pub fn boot_override(vm: &VirtualMachine) -> Option<BootOverride> {
    vm.annotation(BOOT_OVERRIDE)
        .and_then(BootOverride::from_annotation)
}

pub fn boot_state(vm: &VirtualMachine) -> Option<BootState> {
    serde_json::from_str(vm.annotation(BOOT_STATE)?).ok()
}

/// `size_bytes`: what the image server announced, for the controller to size the import.
pub fn media_annotation(media: &MediaInsert, size_bytes: Option<u64>) -> String {
    Media {
        image: media.image.clone(),
        inserted: media.inserted,
        write_protected: media.write_protected,
        size_bytes,
    }
    .to_annotation()
}

/// What a client reads about the virtual CD: the wish from `media`, the import's progress
/// from the controller's `media-status`.
pub fn media_state(vm: &VirtualMachine) -> MediaState {
    let Some(media) = vm.annotation(MEDIA).and_then(|m| Media::parse(m).ok()) else {
        return MediaState::ejected();
    };
    let status = ImportStatus::parse_or_default(vm.annotation(MEDIA_STATUS));
    let status = match status.phase {
        MediaPhase::Ready => MediaStatus::Ready,
        MediaPhase::Failed => MediaStatus::Failed {
            reason: status
                .reason
                .unwrap_or_else(|| "the image import failed".to_owned()),
        },
        MediaPhase::Importing => MediaStatus::Importing {
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
