//! Set/Get System Boot Options: parameters 0 (set in progress), 3 (boot flag valid bit
//! clearing), 4 (boot info acknowledge) and 5 (boot flags), mapped to [`BootOverride`].

use kubevirt_bmc_ipmi::message::cc;

use super::commands::{Action, Decision, Memo, Snapshot};
use crate::machine::{BootMode, BootOverride, BootOverrideEnabled, BootTarget};

const VALID: u8 = 0x80;
const PERSISTENT: u8 = 0x40;
const EFI: u8 = 0x20;

/// IPMI device selectors (boot flags byte 2, bits 5:2) and the target each boots from.
/// Selectors without an exact equivalent map to the nearest target; their exact value is
/// read back from [`Memo`] as long as the machine's override still matches.
fn target_of(selector: u8) -> Option<BootTarget> {
    Some(match selector {
        0x0 => BootTarget::None,
        0x1 => BootTarget::Pxe,
        0x2 | 0x3 | 0xB => BootTarget::Hdd, // default HDD, safe mode, remote HDD
        0x5 | 0x8 | 0x9 | 0x7 | 0xF => BootTarget::Cd, // CD/DVD, remote CD, remote media, removable
        0x6 => BootTarget::BiosSetup,
        _ => return None, // 0x4 diagnostic partition, reserved values
    })
}

fn selector_of(target: BootTarget) -> u8 {
    match target {
        BootTarget::None => 0x0,
        BootTarget::Pxe | BootTarget::UefiHttp => 0x1,
        BootTarget::Hdd => 0x2,
        BootTarget::Cd => 0x5,
        BootTarget::BiosSetup => 0x6,
    }
}

/// The boot override a boot flags parameter asks for; None if its device has no target.
pub fn override_of(flags: &[u8; 5]) -> Option<BootOverride> {
    let target = target_of(flags[1] >> 2 & 0x0F)?;
    let enabled = match (flags[0] & VALID != 0, flags[0] & PERSISTENT != 0) {
        (false, _) => BootOverrideEnabled::Disabled,
        (true, false) => BootOverrideEnabled::Once,
        (true, true) => BootOverrideEnabled::Continuous,
    };
    let mode = if flags[0] & EFI != 0 {
        BootMode::Uefi
    } else {
        BootMode::Legacy
    };
    Some(BootOverride {
        target,
        enabled,
        mode,
    })
}

/// Boot flags for an override: exactly what a client set when it still describes the
/// machine's override, else derived from the override.
pub fn flags_of(boot: &BootOverride, remembered: Option<[u8; 5]>) -> [u8; 5] {
    if let Some(flags) = remembered
        && override_of(&flags).as_ref() == Some(boot)
    {
        return flags;
    }
    let mut byte1 = 0;
    match boot.enabled {
        BootOverrideEnabled::Disabled => {}
        BootOverrideEnabled::Once => byte1 |= VALID,
        BootOverrideEnabled::Continuous => byte1 |= VALID | PERSISTENT,
    }
    if boot.mode == BootMode::Uefi {
        byte1 |= EFI;
    }
    [byte1, selector_of(boot.target) << 2, 0, 0, 0]
}

pub fn set(data: &[u8], snap: &Snapshot<'_>, memo: &Memo) -> Decision {
    let Some((&selector, value)) = data.split_first() else {
        return Decision::error(cc::REQUEST_LENGTH_INVALID);
    };
    let mut next = memo.clone();
    let boot = &mut next.boot;
    // Bit 7 (mark parameter invalid) changes nothing here: every parameter stays valid.
    match (selector & 0x7F, value.len()) {
        (0, 1) => {
            if value[0] & 0x03 == 0x03 {
                return Decision::error(cc::INVALID_DATA);
            }
            // "Commit write" completes like "set complete": every write is applied at once.
            boot.set_in_progress = if value[0] & 0x03 == 1 { 1 } else { 0 };
        }
        (3, 1) => boot.valid_bit_clearing = value[0] & 0x1F,
        (4, 2) => boot.acknowledge = (boot.acknowledge & !value[0]) | (value[1] & value[0]),
        (5, 5) => {
            let flags: [u8; 5] = value.try_into().expect("5 bytes");
            let Some(wanted) = override_of(&flags) else {
                return Decision::error(cc::INVALID_DATA);
            };
            if !snap.supported_targets.contains(&wanted.target) {
                return Decision::error(cc::INVALID_DATA);
            }
            boot.flags = Some(flags);
            return Decision {
                cc: cc::OK,
                data: Vec::new(),
                action: Some(Action::SetBoot(wanted)),
                memo: Some(next),
            };
        }
        (0 | 3 | 4 | 5, _) => return Decision::error(cc::REQUEST_LENGTH_INVALID),
        _ => return Decision::error(0x80), // parameter not supported
    }
    Decision {
        cc: cc::OK,
        data: Vec::new(),
        action: None,
        memo: Some(next),
    }
}

pub fn get(data: &[u8], snap: &Snapshot<'_>, memo: &Memo) -> Decision {
    if data.len() != 3 {
        return Decision::error(cc::REQUEST_LENGTH_INVALID);
    }
    let selector = data[0] & 0x7F;
    let boot = &memo.boot;
    let value: Vec<u8> = match selector {
        0 => vec![boot.set_in_progress],
        3 => vec![boot.valid_bit_clearing],
        4 => vec![0x00, boot.acknowledge],
        5 => flags_of(&snap.boot, boot.flags).to_vec(),
        _ => return Decision::error(0x80),
    };
    let mut out = vec![0x01, selector];
    out.extend_from_slice(&value);
    Decision::ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ironic_pxe_efi_persistent_maps_and_reads_back() {
        let flags = [0xE0, 0x04, 0, 0, 0];
        let boot = override_of(&flags).unwrap();
        assert_eq!(
            boot,
            BootOverride {
                target: BootTarget::Pxe,
                enabled: BootOverrideEnabled::Continuous,
                mode: BootMode::Uefi
            }
        );
        assert_eq!(flags_of(&boot, None), flags);
        let once = override_of(&[0xA0, 0x04, 0, 0, 0]).unwrap();
        assert_eq!(once.enabled, BootOverrideEnabled::Once);
    }

    #[test]
    fn every_device_selector_reads_back_exactly() {
        for selector in 0..16u8 {
            let flags = [0xC0, selector << 2 | 0x01, 0x02, 0x00, 0x03];
            match override_of(&flags) {
                Some(boot) => assert_eq!(flags_of(&boot, Some(flags)), flags),
                None => assert!(matches!(selector, 0x4 | 0xA | 0xC | 0xD | 0xE)),
            }
        }
    }

    #[test]
    fn a_consumed_override_reads_as_disabled() {
        let set = [0xA0, 0x14, 0, 0, 0];
        let consumed = BootOverride {
            target: BootTarget::None,
            enabled: BootOverrideEnabled::Disabled,
            mode: BootMode::Uefi,
        };
        assert_eq!(flags_of(&consumed, Some(set)), [0x20, 0, 0, 0, 0]);
    }
}
