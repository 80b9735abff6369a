//! IPMI command decisions as a pure function: (request, machine snapshot, memo) ->
//! (response, action to take, memo to keep). The caller runs the action on the machine and
//! sends the response only if the action succeeded.

use kubevirt_bmc_ipmi::IpmiRequest;
use kubevirt_bmc_ipmi::message::{cc, netfn};

use super::{boot, inventory};
use crate::machine::{
    BootOverride, BootTarget, Inventory, MachineError, PowerAction, PowerState, RestorePolicy,
};

/// What a command needs to know about the machine, read just before deciding.
#[derive(Debug, Clone)]
pub struct Snapshot<'a> {
    pub power: PowerState,
    pub boot: BootOverride,
    pub restore_policy: RestorePolicy,
    pub inventory: &'a Inventory,
    pub supported_actions: &'a [PowerAction],
    pub supported_targets: &'a [BootTarget],
    /// The BMC's user name (user ID 2).
    pub username: &'a [u8],
    /// Seconds since the Unix epoch (SEL time, identify timeout).
    pub unix_time: u32,
}

/// Boot option parameters that live only in the BMC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootParams {
    pub set_in_progress: u8,
    pub valid_bit_clearing: u8,
    pub acknowledge: u8,
    /// Boot flags exactly as last set, so they read back bit for bit.
    pub flags: Option<[u8; 5]>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Identify {
    #[default]
    Off,
    Until(u32),
    On,
}

/// State the IPMI front end keeps between commands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memo {
    pub boot: BootParams,
    /// Get Chassis Status byte 2 (last power event).
    pub last_power_event: u8,
    /// Get System Restart Cause (low nibble).
    pub restart_cause: u8,
    pub identify: Identify,
    /// Seconds the machine has been seen powered on (POH counter).
    pub powered_on_secs: u64,
}

/// A change to the machine that a command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Power(PowerAction),
    SetBoot(BootOverride),
    SetRestorePolicy(RestorePolicy),
}

/// A command's outcome: the response if `action` (when any) succeeds, and the memo to keep
/// then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub cc: u8,
    pub data: Vec<u8>,
    pub action: Option<Action>,
    pub memo: Option<Memo>,
}

impl Decision {
    pub fn ok(data: Vec<u8>) -> Self {
        Decision {
            cc: cc::OK,
            data,
            action: None,
            memo: None,
        }
    }

    pub fn error(code: u8) -> Self {
        Decision {
            cc: code,
            data: Vec::new(),
            action: None,
            memo: None,
        }
    }
}

/// The completion code a client gets when the machine refuses.
pub fn completion_code(error: &MachineError) -> u8 {
    match error {
        MachineError::Busy(_) => cc::NODE_BUSY,
        MachineError::NotAllowed(_) => cc::NOT_IN_PRESENT_STATE,
        MachineError::NotSupported(_) => cc::INVALID_DATA,
        MachineError::Invalid(_) => cc::INVALID_DATA,
        MachineError::Unavailable(_) => cc::UNSPECIFIED,
        MachineError::Forbidden(_) => cc::INSUFFICIENT_PRIVILEGE,
    }
}

/// The GUID as IPMI sends it: the RFC 4122 bytes, least significant byte first.
pub fn ipmi_guid(uuid: &str) -> [u8; 16] {
    let hex: Vec<u8> = uuid
        .bytes()
        .filter(u8::is_ascii_hexdigit)
        .map(|c| (c as char).to_digit(16).unwrap_or(0) as u8)
        .collect();
    let mut out = [0u8; 16];
    if hex.len() == 32 {
        for (i, pair) in hex.chunks(2).enumerate() {
            out[15 - i] = pair[0] << 4 | pair[1];
        }
    }
    out
}

pub fn decide(request: &IpmiRequest, snap: &Snapshot<'_>, memo: &Memo) -> Decision {
    let data = &request.data[..];
    match (request.netfn, request.cmd) {
        (netfn::APP, 0x01) => device_id(),
        (netfn::APP, 0x02 | 0x03) => Decision::ok(Vec::new()), // cold/warm reset: nothing to reset
        (netfn::APP, 0x04) => Decision::ok(vec![0x55, 0x00]),
        (netfn::APP, 0x07) => {
            let state = if snap.power.settled() == PowerState::On {
                0x00 // S0/G0 working
            } else {
                0x05 // S5/G2 soft off
            };
            Decision::ok(vec![state, 0x00])
        }
        (netfn::APP, 0x08 | 0x37) => Decision::ok(ipmi_guid(&snap.inventory.uuid).to_vec()),
        (netfn::APP, 0x41) => channel_access(data),
        (netfn::APP, 0x42) => channel_info(data),
        (netfn::APP, 0x44) => user_access(data),
        (netfn::APP, 0x46) => user_name(data, snap),
        (netfn::CHASSIS, 0x00) => {
            let nmi = snap.supported_actions.contains(&PowerAction::Nmi);
            Decision::ok(vec![if nmi { 0x04 } else { 0x00 }, 0x20, 0x20, 0x20, 0x20])
        }
        (netfn::CHASSIS, 0x01) => chassis_status(snap, memo),
        (netfn::CHASSIS, 0x02) => chassis_control(data, snap, memo),
        (netfn::CHASSIS, 0x04) => identify(data, snap, memo),
        (netfn::CHASSIS, 0x06) => set_restore_policy(data),
        (netfn::CHASSIS, 0x07) => Decision::ok(vec![memo.restart_cause, 0x01]),
        (netfn::CHASSIS, 0x08) => boot::set(data, snap, memo),
        (netfn::CHASSIS, 0x09) => boot::get(data, snap, memo),
        (netfn::CHASSIS, 0x0F) => {
            let hours = (memo.powered_on_secs / 3600) as u32;
            let mut out = vec![60];
            out.extend_from_slice(&hours.to_le_bytes());
            Decision::ok(out)
        }
        (netfn::SENSOR | netfn::STORAGE | netfn::GROUP, _) => inventory::decide(request, snap),
        _ => Decision::error(cc::INVALID_COMMAND),
    }
}

fn device_id() -> Decision {
    let major: u8 = env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap_or(0);
    let minor: u8 = env!("CARGO_PKG_VERSION_MINOR").parse().unwrap_or(0);
    let patch: u8 = env!("CARGO_PKG_VERSION_PATCH").parse().unwrap_or(0);
    let bcd = |n: u8| ((n / 10 % 10) << 4) | (n % 10);
    Decision::ok(vec![
        0x20,         // device ID
        0x01,         // device revision; no device SDRs (the SDR repository has them)
        major & 0x7F, // firmware major; bit 7 clear: normal operation
        bcd(minor),   // firmware minor, BCD
        0x02,         // IPMI version 2.0
        0x8F,         // chassis, FRU, SEL, SDR repository, sensor device
        0x00,
        0x00,
        0x00, // manufacturer: unspecified
        0x00,
        0x00, // product ID
        patch,
        0x00,
        0x00,
        0x00, // auxiliary firmware revision
    ])
}

fn lan_channel(byte: u8) -> bool {
    matches!(byte & 0x0F, 0x0E | 0x01)
}

fn channel_info(data: &[u8]) -> Decision {
    match data {
        [channel] if lan_channel(*channel) => Decision::ok(vec![
            0x01, // channel number
            0x04, // medium: 802.3 LAN
            0x01, // protocol: IPMB-1.0 (what LAN channels report)
            0x80, // multi-session
            0xF2, 0x1B, 0x00, // IPMI forum IANA
            0x00, 0x00,
        ]),
        [_] => Decision::error(cc::INVALID_DATA),
        _ => Decision::error(cc::REQUEST_LENGTH_INVALID),
    }
}

fn channel_access(data: &[u8]) -> Decision {
    match data {
        [channel, kind] if lan_channel(*channel) && matches!(kind >> 6, 1 | 2) => {
            // Always available, alerting off, per-message and user-level auth enabled;
            // privilege limit ADMINISTRATOR.
            Decision::ok(vec![0x22, 0x04])
        }
        [_, _] => Decision::error(cc::INVALID_DATA),
        _ => Decision::error(cc::REQUEST_LENGTH_INVALID),
    }
}

/// Users: ID 1 is the (disabled) null user, ID 2 the BMC's one user.
const MAX_USERS: u8 = 2;

fn user_access(data: &[u8]) -> Decision {
    let [channel, user] = data else {
        return Decision::error(cc::REQUEST_LENGTH_INVALID);
    };
    let user = user & 0x3F;
    // Channel 0, the primary IPMB, is answered as the LAN channel: bmclib's UserRead lists
    // users through go-ipmi's ListUser on channel 0 (providers/goipmi/goipmi.go) and would
    // otherwise fail on the first user, and this BMC's one set of users has the same access
    // whichever channel a caller names.
    if !(lan_channel(*channel) || channel & 0x0F == 0) || user == 0 || user > MAX_USERS {
        return Decision::error(cc::INVALID_DATA);
    }
    // Byte 2 bits 7:6 (IPMI 2.0 errata 4): the requested user's enable status, 01b enabled,
    // 10b disabled; bits 5:0 count the enabled users.
    let (enable, privilege) = if user == 2 {
        (0x40, 0x10 | 0x04) // IPMI messaging, ADMINISTRATOR
    } else {
        (0x80, 0x0F) // no access
    };
    Decision::ok(vec![MAX_USERS, enable | 1, 0x01, privilege])
}

fn user_name(data: &[u8], snap: &Snapshot<'_>) -> Decision {
    let mut name = vec![0u8; 16];
    match data {
        [1] => Decision::ok(name),
        [2] => {
            let n = snap.username.len().min(16);
            name[..n].copy_from_slice(&snap.username[..n]);
            Decision::ok(name)
        }
        [_] => Decision::error(cc::INVALID_DATA),
        _ => Decision::error(cc::REQUEST_LENGTH_INVALID),
    }
}

fn chassis_status(snap: &Snapshot<'_>, memo: &Memo) -> Decision {
    let on = snap.power.settled() == PowerState::On;
    // Bits 6:5, the power restore policy (IPMI 2.0 table 28-3).
    let byte1 = u8::from(on) | policy_bits(snap.restore_policy) << 5;
    let identify = match memo.identify {
        Identify::Off => 0,
        Identify::Until(t) if t > snap.unix_time => 1,
        Identify::Until(_) => 0,
        Identify::On => 2,
    };
    let byte3 = 0x40 | identify << 4;
    Decision::ok(vec![byte1, memo.last_power_event, byte3, 0x00])
}

/// The restore policy's code in Get Chassis Status and Set Power Restore Policy.
fn policy_bits(policy: RestorePolicy) -> u8 {
    match policy {
        RestorePolicy::AlwaysOff => 0b00,
        RestorePolicy::Previous => 0b01,
        RestorePolicy::AlwaysOn => 0b10,
    }
}

/// Set Power Restore Policy (IPMI 2.0 section 28.8): bits 2:0 of the one request byte pick
/// the policy, 011 only asks which are supported. The answer is the supported set: all three.
fn set_restore_policy(data: &[u8]) -> Decision {
    const ALL_SUPPORTED: u8 = 0b111;
    let [byte] = data else {
        return Decision::error(cc::REQUEST_LENGTH_INVALID);
    };
    let policy = match byte & 0x07 {
        0b000 => RestorePolicy::AlwaysOff,
        0b001 => RestorePolicy::Previous,
        0b010 => RestorePolicy::AlwaysOn,
        0b011 => return Decision::ok(vec![ALL_SUPPORTED]),
        _ => return Decision::error(cc::INVALID_DATA),
    };
    Decision {
        action: Some(Action::SetRestorePolicy(policy)),
        ..Decision::ok(vec![ALL_SUPPORTED])
    }
}

fn chassis_control(data: &[u8], snap: &Snapshot<'_>, memo: &Memo) -> Decision {
    let [control] = data else {
        return Decision::error(cc::REQUEST_LENGTH_INVALID);
    };
    let action = match control & 0x0F {
        0 => PowerAction::ForceOff,
        1 => PowerAction::On,
        2 => PowerAction::PowerCycle,
        3 => PowerAction::ForceRestart,
        4 => PowerAction::Nmi,
        5 => PowerAction::GracefulShutdown,
        _ => return Decision::error(cc::INVALID_DATA),
    };
    if !snap.supported_actions.contains(&action) {
        return Decision::error(cc::INVALID_DATA);
    }
    let mut next = memo.clone();
    if matches!(
        action,
        PowerAction::On | PowerAction::PowerCycle | PowerAction::ForceRestart
    ) {
        next.last_power_event = 0x10; // last power on via IPMI command
        next.restart_cause = 0x01; // chassis control command
    }
    Decision {
        cc: cc::OK,
        data: Vec::new(),
        action: Some(Action::Power(action)),
        memo: Some(next),
    }
}

fn identify(data: &[u8], snap: &Snapshot<'_>, memo: &Memo) -> Decision {
    let state = match data {
        [] => Identify::Until(snap.unix_time + 15),
        [0] | [0, 0] => Identify::Off,
        [_, force] if force & 1 == 1 => Identify::On,
        [seconds] | [seconds, _] => Identify::Until(snap.unix_time + u32::from(*seconds)),
        _ => return Decision::error(cc::REQUEST_LENGTH_INVALID),
    };
    let mut next = memo.clone();
    next.identify = state;
    Decision {
        memo: Some(next),
        ..Decision::ok(Vec::new())
    }
}
