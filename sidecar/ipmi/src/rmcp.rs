//! RMCP (the UDP framing of IPMI over LAN) and the ASF Presence Ping/Pong.

use crate::error::{CodecError, Result};
use crate::wire::Reader;

pub const RMCP_VERSION: u8 = 0x06;
/// RMCP sequence number meaning "do not acknowledge" (what IPMI messages use).
pub const NO_ACK_SEQ: u8 = 0xFF;
const CLASS_ASF: u8 = 0x06;
const CLASS_IPMI: u8 = 0x07;
const CLASS_ACK_BIT: u8 = 0x80;
const ASF_IANA: [u8; 4] = [0x00, 0x00, 0x11, 0xBE];
const ASF_PING: u8 = 0x80;
const ASF_PONG: u8 = 0x40;

/// An RMCP datagram, split into its class and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rmcp<'a> {
    /// An IPMI session packet (v1.5 or RMCP+); the body starts at the auth type byte.
    Ipmi(&'a [u8]),
    /// An ASF Presence Ping with its RMCP sequence number and ASF message tag.
    Ping { seq: u8, tag: u8 },
    /// An RMCP ACK, or an ASF message other than a ping: nothing to answer.
    Ignored,
}

/// Splits an RMCP datagram.
pub fn decode(datagram: &[u8]) -> Result<Rmcp<'_>> {
    let mut r = Reader::new(datagram);
    let version = r.u8("RMCP header")?;
    let _reserved = r.u8("RMCP header")?;
    let seq = r.u8("RMCP header")?;
    let class = r.u8("RMCP header")?;
    if version != RMCP_VERSION {
        return Err(CodecError::Unsupported {
            what: "RMCP version",
        });
    }
    if class & CLASS_ACK_BIT != 0 {
        return Ok(Rmcp::Ignored);
    }
    match class & 0x1F {
        CLASS_IPMI => Ok(Rmcp::Ipmi(r.rest())),
        CLASS_ASF => {
            let iana = r.array::<4>("ASF header")?;
            let kind = r.u8("ASF header")?;
            let tag = r.u8("ASF header")?;
            let _reserved = r.u8("ASF header")?;
            let _len = r.u8("ASF header")?;
            if iana != ASF_IANA {
                return Err(CodecError::invalid("ASF IANA number"));
            }
            Ok(if kind == ASF_PING {
                Rmcp::Ping { seq, tag }
            } else {
                Rmcp::Ignored
            })
        }
        _ => Err(CodecError::Unsupported { what: "RMCP class" }),
    }
}

/// The RMCP header of every IPMI datagram.
pub fn ipmi_header(out: &mut Vec<u8>) {
    out.extend_from_slice(&[RMCP_VERSION, 0x00, NO_ACK_SEQ, CLASS_IPMI]);
}

/// The ASF Presence Pong: IPMI supported, no other ASF interactions.
pub fn pong(seq: u8, tag: u8) -> Vec<u8> {
    let mut out = vec![RMCP_VERSION, 0x00, seq, CLASS_ASF];
    out.extend_from_slice(&ASF_IANA);
    out.extend_from_slice(&[ASF_PONG, tag, 0x00, 0x10]);
    out.extend_from_slice(&ASF_IANA); // enterprise number
    out.extend_from_slice(&[0, 0, 0, 0]); // OEM defined
    out.push(0x81); // supported entities: IPMI, ASF version 1.0
    out.push(0x00); // supported interactions: none
    out.extend_from_slice(&[0; 6]);
    out
}

/// RMCP ACK, owed for an ASF message sent with a sequence number other than 0xFF.
pub fn ack(seq: u8) -> Vec<u8> {
    vec![RMCP_VERSION, 0x00, seq, CLASS_ASF | CLASS_ACK_BIT]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_gets_a_pong_with_the_same_tag() {
        let ping = [6, 0, 0xFF, 6, 0, 0, 0x11, 0xBE, 0x80, 0x2A, 0, 0];
        assert_eq!(
            decode(&ping).unwrap(),
            Rmcp::Ping {
                seq: 0xFF,
                tag: 0x2A
            }
        );
        let pong = pong(0xFF, 0x2A);
        assert_eq!(pong.len(), 4 + 8 + 16);
        assert_eq!(pong[8], ASF_PONG);
        assert_eq!(pong[9], 0x2A);
        assert_eq!(pong[20] & 0x80, 0x80, "IPMI supported");
    }

    #[test]
    fn ipmi_body_and_bad_headers() {
        assert_eq!(decode(&[6, 0, 0xFF, 7, 9]).unwrap(), Rmcp::Ipmi(&[9]));
        assert_eq!(decode(&[6, 0, 0xFF, 0x87]).unwrap(), Rmcp::Ignored);
        assert!(decode(&[5, 0, 0xFF, 7]).is_err());
        assert!(decode(&[6, 0, 0xFF]).is_err());
        assert!(decode(&[6, 0, 0xFF, 6, 0, 0, 0x11]).is_err());
    }
}
