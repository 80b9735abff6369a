//! The IPMI message inside a session packet: addresses, NetFn/LUN, sequence, command, data
//! and the two checksums.

use crate::error::{CodecError, Result};
use crate::wire::Reader;

pub const BMC_ADDR: u8 = 0x20;

/// Network functions (request codes; responses are request + 1).
pub mod netfn {
    pub const CHASSIS: u8 = 0x00;
    pub const SENSOR: u8 = 0x04;
    pub const APP: u8 = 0x06;
    pub const STORAGE: u8 = 0x0A;
    pub const TRANSPORT: u8 = 0x0C;
    pub const GROUP: u8 = 0x2C;
}

/// Completion codes this BMC answers with.
pub mod cc {
    pub const OK: u8 = 0x00;
    pub const NODE_BUSY: u8 = 0xC0;
    pub const INVALID_COMMAND: u8 = 0xC1;
    pub const REQUEST_LENGTH_INVALID: u8 = 0xC7;
    pub const PARAMETER_OUT_OF_RANGE: u8 = 0xC9;
    pub const NOT_PRESENT: u8 = 0xCB;
    pub const INVALID_DATA: u8 = 0xCC;
    pub const INSUFFICIENT_PRIVILEGE: u8 = 0xD4;
    pub const NOT_IN_PRESENT_STATE: u8 = 0xD5;
    pub const UNSPECIFIED: u8 = 0xFF;
}

/// The two's complement checksum: the covered bytes plus it sum to zero.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |acc, b| acc.wrapping_add(*b))
        .wrapping_neg()
}

/// A request as a BMC receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpmiRequest {
    pub rs_addr: u8,
    pub netfn: u8,
    pub rs_lun: u8,
    pub rq_addr: u8,
    pub rq_seq: u8,
    pub rq_lun: u8,
    pub cmd: u8,
    pub data: Vec<u8>,
}

impl IpmiRequest {
    /// A request from a remote console to the BMC.
    pub fn new(netfn: u8, cmd: u8, rq_seq: u8, data: &[u8]) -> Self {
        IpmiRequest {
            rs_addr: BMC_ADDR,
            netfn,
            rs_lun: 0,
            rq_addr: 0x81,
            rq_seq: rq_seq & 0x3F,
            rq_lun: 0,
            cmd,
            data: data.to_vec(),
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (head, covered) = checked_frame(bytes, "IPMI message", 3)?;
        if head[1] >> 2 & 1 == 1 {
            return Err(CodecError::invalid("IPMI request NetFn (a response)"));
        }
        Ok(IpmiRequest {
            rs_addr: head[0],
            netfn: head[1] >> 2,
            rs_lun: head[1] & 3,
            rq_addr: covered[0],
            rq_seq: covered[1] >> 2,
            rq_lun: covered[1] & 3,
            cmd: covered[2],
            data: covered[3..].to_vec(),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(7 + self.data.len());
        out.push(self.rs_addr);
        out.push(self.netfn << 2 | (self.rs_lun & 3));
        out.push(checksum(&out));
        out.push(self.rq_addr);
        out.push(self.rq_seq << 2 | (self.rq_lun & 3));
        out.push(self.cmd);
        out.extend_from_slice(&self.data);
        out.push(checksum(&out[3..]));
        out
    }

    /// The response to this request, with completion code `cc` and `data` after it.
    pub fn response(&self, cc: u8, data: &[u8]) -> IpmiResponse {
        IpmiResponse {
            rq_addr: self.rq_addr,
            netfn: self.netfn | 1,
            rq_lun: self.rq_lun,
            rs_addr: self.rs_addr,
            rq_seq: self.rq_seq,
            rs_lun: self.rs_lun,
            cmd: self.cmd,
            cc,
            data: data.to_vec(),
        }
    }
}

/// A response as a BMC sends it (and the client decodes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpmiResponse {
    pub rq_addr: u8,
    pub netfn: u8,
    pub rq_lun: u8,
    pub rs_addr: u8,
    pub rq_seq: u8,
    pub rs_lun: u8,
    pub cmd: u8,
    pub cc: u8,
    pub data: Vec<u8>,
}

impl IpmiResponse {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.data.len());
        out.push(self.rq_addr);
        out.push(self.netfn << 2 | (self.rq_lun & 3));
        out.push(checksum(&out));
        out.push(self.rs_addr);
        out.push(self.rq_seq << 2 | (self.rs_lun & 3));
        out.push(self.cmd);
        out.push(self.cc);
        out.extend_from_slice(&self.data);
        out.push(checksum(&out[3..]));
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (head, covered) = checked_frame(bytes, "IPMI response", 4)?;
        Ok(IpmiResponse {
            rq_addr: head[0],
            netfn: head[1] >> 2,
            rq_lun: head[1] & 3,
            rs_addr: covered[0],
            rq_seq: covered[1] >> 2,
            rs_lun: covered[1] & 3,
            cmd: covered[2],
            cc: covered[3],
            data: covered[4..].to_vec(),
        })
    }
}

/// Splits an IPMI message into its two-byte header and the checksummed body (without the
/// trailing checksum), checking both checksums and that the body holds at least
/// `min_body` bytes. Requests and responses share this framing.
fn checked_frame<'a>(
    bytes: &'a [u8],
    what: &'static str,
    min_body: usize,
) -> Result<(&'a [u8], &'a [u8])> {
    let mut r = Reader::new(bytes);
    let head = r.bytes(2, what)?;
    let header_checksum = r.u8(what)?;
    if checksum(head) != header_checksum {
        return Err(CodecError::Integrity {
            what: "IPMI header checksum",
        });
    }
    let Some((&data_checksum, covered)) = r.rest().split_last() else {
        return Err(CodecError::Truncated { what });
    };
    if covered.len() < min_body {
        return Err(CodecError::Truncated { what });
    }
    if checksum(covered) != data_checksum {
        return Err(CodecError::Integrity {
            what: "IPMI data checksum",
        });
    }
    Ok((head, covered))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_device_id_as_ipmitool_sends_it() {
        // rsAddr 0x20, NetFn App, chk, rqAddr 0x81, seq 1, cmd 0x01, chk
        let wire = [0x20, 0x18, 0xC8, 0x81, 0x04, 0x01, 0x7A];
        let req = IpmiRequest::decode(&wire).unwrap();
        assert_eq!((req.netfn, req.cmd, req.rq_seq), (netfn::APP, 0x01, 1));
        assert_eq!(req.encode(), wire);
        let rsp = req.response(cc::OK, &[1, 2]).encode();
        assert_eq!(IpmiResponse::decode(&rsp).unwrap().data, vec![1, 2]);
        assert_eq!(checksum(&rsp[3..rsp.len() - 1]), rsp[rsp.len() - 1]);
    }

    #[test]
    fn bad_checksums_and_short_messages_are_errors() {
        let mut wire = [0x20, 0x18, 0xC8, 0x81, 0x04, 0x01, 0x7A];
        wire[6] ^= 1;
        assert!(matches!(
            IpmiRequest::decode(&wire),
            Err(CodecError::Integrity { .. })
        ));
        wire[2] ^= 1;
        assert!(IpmiRequest::decode(&wire).is_err());
        for n in 0..6 {
            assert!(IpmiRequest::decode(&wire[..n]).is_err());
        }
    }
}
