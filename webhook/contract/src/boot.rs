//! The boot override exactly as a client set it: the sidecar keeps it on the VM
//! (`bmc.kubevirt.io/boot-override`) as `Target/Enabled/Mode`, e.g. `Pxe/Once/UEFI`, and every
//! reader (a restarted sidecar, the controller, `kubectl`) parses that one form.

use serde::{Deserialize, Serialize};

/// The device the next boot starts from when an override is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BootTarget {
    None,
    Pxe,
    Hdd,
    Cd,
    BiosSetup,
    UefiHttp,
}

impl BootTarget {
    pub const ALL: [BootTarget; 6] = [
        BootTarget::None,
        BootTarget::Pxe,
        BootTarget::Hdd,
        BootTarget::Cd,
        BootTarget::BiosSetup,
        BootTarget::UefiHttp,
    ];

    fn as_str(self) -> &'static str {
        match self {
            BootTarget::None => "None",
            BootTarget::Pxe => "Pxe",
            BootTarget::Hdd => "Hdd",
            BootTarget::Cd => "Cd",
            BootTarget::BiosSetup => "BiosSetup",
            BootTarget::UefiHttp => "UefiHttp",
        }
    }
}

/// Redfish's BootSourceOverrideEnabled; IPMI encodes it as the valid and persistent bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BootOverrideEnabled {
    Disabled,
    Once,
    Continuous,
}

impl BootOverrideEnabled {
    pub const ALL: [BootOverrideEnabled; 3] = [
        BootOverrideEnabled::Disabled,
        BootOverrideEnabled::Once,
        BootOverrideEnabled::Continuous,
    ];

    fn as_str(self) -> &'static str {
        match self {
            BootOverrideEnabled::Disabled => "Disabled",
            BootOverrideEnabled::Once => "Once",
            BootOverrideEnabled::Continuous => "Continuous",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BootMode {
    Uefi,
    Legacy,
}

impl BootMode {
    pub const ALL: [BootMode; 2] = [BootMode::Uefi, BootMode::Legacy];

    fn as_str(self) -> &'static str {
        match self {
            BootMode::Uefi => "UEFI",
            BootMode::Legacy => "Legacy",
        }
    }
}

/// The boot override exactly as a client set it. Backends store and return it unchanged
/// (Ironic reads it back and compares) except that a `Once` override is consumed by the
/// boot it applied to and then reads back as `Disabled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootOverride {
    pub target: BootTarget,
    pub enabled: BootOverrideEnabled,
    pub mode: BootMode,
}

impl Default for BootOverride {
    fn default() -> Self {
        BootOverride {
            target: BootTarget::None,
            enabled: BootOverrideEnabled::Disabled,
            mode: BootMode::Uefi,
        }
    }
}

impl BootOverride {
    /// The annotation's text form, `Target/Enabled/Mode`.
    pub fn to_annotation(&self) -> String {
        format!(
            "{}/{}/{}",
            self.target.as_str(),
            self.enabled.as_str(),
            self.mode.as_str()
        )
    }

    /// `None` for anything but exactly three known parts.
    pub fn from_annotation(text: &str) -> Option<BootOverride> {
        let mut parts = text.split('/');
        let target = parts.next()?;
        let target = BootTarget::ALL.into_iter().find(|t| t.as_str() == target)?;
        let enabled = parts.next()?;
        let enabled = BootOverrideEnabled::ALL
            .into_iter()
            .find(|e| e.as_str() == enabled)?;
        let mode = parts.next()?;
        let mode = BootMode::ALL.into_iter().find(|m| m.as_str() == mode)?;
        parts.next().is_none().then_some(BootOverride {
            target,
            enabled,
            mode,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_override_text_round_trips_every_value() {
        for target in BootTarget::ALL {
            for enabled in BootOverrideEnabled::ALL {
                for mode in BootMode::ALL {
                    let boot = BootOverride {
                        target,
                        enabled,
                        mode,
                    };
                    assert_eq!(
                        BootOverride::from_annotation(&boot.to_annotation()),
                        Some(boot)
                    );
                }
            }
        }
        assert_eq!(
            BootOverride {
                target: BootTarget::Pxe,
                enabled: BootOverrideEnabled::Once,
                mode: BootMode::Uefi
            }
            .to_annotation(),
            "Pxe/Once/UEFI",
            "the form in the fixtures' watch capture"
        );
        for bad in ["", "Pxe", "Pxe/Once", "Floppy/Once/UEFI", "Pxe/Once/UEFI/x"] {
            assert_eq!(BootOverride::from_annotation(bad), None, "{bad}");
        }
    }
}
