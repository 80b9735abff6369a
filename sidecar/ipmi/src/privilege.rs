//! IPMI privilege levels and the level each command needs.

use crate::message::netfn;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Privilege {
    Callback = 1,
    User = 2,
    Operator = 3,
    Administrator = 4,
}

impl Privilege {
    /// Decodes the low nibble of a privilege field; OEM (5) and reserved values are refused.
    pub fn from_nibble(value: u8) -> Option<Privilege> {
        match value & 0x0F {
            1 => Some(Privilege::Callback),
            2 => Some(Privilege::User),
            3 => Some(Privilege::Operator),
            4 => Some(Privilege::Administrator),
            _ => None,
        }
    }

    pub fn code(self) -> u8 {
        self as u8
    }
}

/// The least privilege a command needs. Reads need USER; changes to power, boot and the BMC
/// need OPERATOR or ADMINISTRATOR, as the IPMI spec's command table assigns them.
pub fn required(net_fn: u8, cmd: u8) -> Privilege {
    use Privilege::*;
    match (net_fn, cmd) {
        // Get Channel Auth Capabilities, Get Session Challenge, Activate Session, Set Session
        // Privilege, Close Session and Get Channel Cipher Suites run before or at any level.
        (netfn::APP, 0x38 | 0x39 | 0x3A | 0x3B | 0x3C | 0x54) => Callback,
        (netfn::APP, 0x02 | 0x03) => Administrator, // cold / warm reset
        (netfn::CHASSIS, 0x02) => Operator,         // chassis control
        (netfn::CHASSIS, 0x04) => Operator,         // chassis identify
        (netfn::CHASSIS, 0x08) => Operator,         // set system boot options
        (netfn::CHASSIS, 0x09) => Operator,         // get system boot options
        (netfn::STORAGE, 0x47) => Operator,         // clear SEL
        _ => User,
    }
}
