//! The IPMI v1.5 session header (auth type, sequence, session ID, AuthCode, length).

use crate::crypto::{auth_type, v15_auth_code};
use crate::error::{CodecError, Result};
use crate::rmcp;
use crate::wire::Reader;

/// A decoded IPMI 1.5 session packet; `message` is the IPMI message it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    pub auth_type: u8,
    pub seq: u32,
    pub session_id: u32,
    pub auth_code: Option<[u8; 16]>,
    pub message: &'a [u8],
}

/// Decodes the body after the RMCP header. Trailing bytes past the message length (the
/// legacy pad byte some clients add) are ignored.
pub fn decode(body: &[u8]) -> Result<Packet<'_>> {
    let mut r = Reader::new(body);
    let auth = r.u8("IPMI 1.5 session header")?;
    let seq = r.u32("IPMI 1.5 session header")?;
    let session_id = r.u32("IPMI 1.5 session header")?;
    let auth_code = match auth {
        auth_type::NONE => None,
        auth_type::MD5 | auth_type::PASSWORD | 1 | 5 => Some(r.array::<16>("IPMI 1.5 AuthCode")?),
        _ => return Err(CodecError::invalid("IPMI 1.5 auth type")),
    };
    let len = r.u8("IPMI 1.5 message length")? as usize;
    let message = r.bytes(len, "IPMI 1.5 message")?;
    Ok(Packet {
        auth_type: auth,
        seq,
        session_id,
        auth_code,
        message,
    })
}

/// Encodes a whole datagram; with MD5 or password auth, the AuthCode is computed here.
pub fn encode(auth: u8, seq: u32, session_id: u32, password: &[u8; 16], message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 10 + 16 + message.len() + 1);
    rmcp::ipmi_header(&mut out);
    out.push(auth);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&session_id.to_le_bytes());
    if auth != auth_type::NONE {
        out.extend_from_slice(&v15_auth_code(auth, password, session_id, message, seq));
    }
    out.push(message.len() as u8);
    out.extend_from_slice(message);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_packets_round_trip_and_verify() {
        let password = *b"password\0\0\0\0\0\0\0\0";
        let wire = encode(auth_type::MD5, 7, 0x1234, &password, &[1, 2, 3]);
        let packet = decode(&wire[4..]).unwrap();
        assert_eq!(packet.seq, 7);
        assert_eq!(packet.session_id, 0x1234);
        assert_eq!(packet.message, &[1, 2, 3]);
        let expected = v15_auth_code(auth_type::MD5, &password, 0x1234, &[1, 2, 3], 7);
        assert_eq!(packet.auth_code, Some(expected));
        for n in 0..wire.len() - 4 {
            assert!(decode(&wire[4..4 + n]).is_err(), "{n} bytes accepted");
        }
    }
}
