//! The RMCP+ (IPMI v2.0) session header, integrity trailer and encrypted payloads.

use crate::crypto::{SessionKeys, auth_type};
use crate::error::{CodecError, Result};
use crate::rmcp;
use crate::wire::Reader;

/// Payload types. The session layer carries any of them; SOL is not served yet.
pub mod payload {
    pub const IPMI: u8 = 0x00;
    pub const SOL: u8 = 0x01;
    pub const OEM_EXPLICIT: u8 = 0x02;
    pub const OPEN_SESSION_REQUEST: u8 = 0x10;
    pub const OPEN_SESSION_RESPONSE: u8 = 0x11;
    pub const RAKP1: u8 = 0x12;
    pub const RAKP2: u8 = 0x13;
    pub const RAKP3: u8 = 0x14;
    pub const RAKP4: u8 = 0x15;
}

const ENCRYPTED: u8 = 0x80;
const AUTHENTICATED: u8 = 0x40;
const NEXT_HEADER: u8 = 0x07;
const HEADER_LEN: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub payload_type: u8,
    pub encrypted: bool,
    pub authenticated: bool,
    pub session_id: u32,
    pub seq: u32,
}

/// A received RMCP+ packet before integrity and decryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    pub header: Header,
    /// The body after the RMCP header (what the integrity code covers, plus the code).
    body: &'a [u8],
    payload: &'a [u8],
    trailer: &'a [u8],
}

/// Decodes the header of the body after the RMCP header.
pub fn decode(body: &[u8]) -> Result<Packet<'_>> {
    let mut r = Reader::new(body);
    if r.u8("RMCP+ header")? != auth_type::RMCP_PLUS {
        return Err(CodecError::invalid("RMCP+ auth format"));
    }
    let kind = r.u8("RMCP+ header")?;
    let payload_type = kind & 0x3F;
    if payload_type == payload::OEM_EXPLICIT {
        return Err(CodecError::Unsupported {
            what: "OEM payload",
        });
    }
    let session_id = r.u32("RMCP+ header")?;
    let seq = r.u32("RMCP+ header")?;
    let len = r.u16("RMCP+ header")? as usize;
    let payload = r.bytes(len, "RMCP+ payload")?;
    let trailer = r.rest();
    Ok(Packet {
        header: Header {
            payload_type,
            encrypted: kind & ENCRYPTED != 0,
            authenticated: kind & AUTHENTICATED != 0,
            session_id,
            seq,
        },
        body,
        payload,
        trailer,
    })
}

impl<'a> Packet<'a> {
    /// The payload of a packet outside any session (no integrity, no encryption allowed).
    pub fn plain_payload(&self) -> Result<&'a [u8]> {
        if self.header.encrypted || self.header.authenticated {
            return Err(CodecError::invalid("protected packet outside a session"));
        }
        Ok(self.payload)
    }

    /// Verifies integrity and decrypts as the session's suite demands. A session with an
    /// integrity algorithm accepts only authenticated packets, one with confidentiality only
    /// encrypted ones: a client cannot downgrade a packet by clearing the bits.
    pub fn open(&self, keys: &SessionKeys) -> Result<Vec<u8>> {
        let needs_auth = keys.suite.integrity_len() > 0;
        if self.header.authenticated != needs_auth || self.header.encrypted != keys.encrypts() {
            return Err(CodecError::invalid(
                "protection bits for the session's suite",
            ));
        }
        if needs_auth {
            let n = keys.suite.integrity_len();
            let t = self.trailer;
            if t.len() < n + 2 {
                return Err(CodecError::Truncated {
                    what: "RMCP+ integrity trailer",
                });
            }
            let (covered_trailer, code) = t.split_at(t.len() - n);
            let pad_len = covered_trailer[covered_trailer.len() - 2] as usize;
            let next = covered_trailer[covered_trailer.len() - 1];
            if next != NEXT_HEADER || pad_len + 2 != covered_trailer.len() {
                return Err(CodecError::invalid("RMCP+ integrity trailer"));
            }
            let covered = &self.body[..self.body.len() - n];
            if !keys.verify_integrity(covered, code) {
                return Err(CodecError::Integrity {
                    what: "RMCP+ integrity code",
                });
            }
        } else if !self.trailer.is_empty() {
            return Err(CodecError::invalid("RMCP+ trailer without integrity"));
        }
        if self.header.encrypted {
            keys.decrypt(self.payload)
        } else {
            Ok(self.payload.to_vec())
        }
    }
}

/// Encodes a whole datagram; with `keys`, encrypted and authenticated as its suite says.
pub fn encode(
    payload_type: u8,
    session_id: u32,
    seq: u32,
    payload: &[u8],
    keys: Option<&SessionKeys>,
    iv: [u8; 16],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + payload.len());
    rmcp::ipmi_header(&mut out);
    let start = out.len();
    let encrypted = keys.is_some_and(|k| k.encrypts());
    let authenticated = keys.is_some_and(|k| k.suite.integrity_len() > 0);
    let body = match keys {
        Some(k) if encrypted => k.encrypt(iv, payload),
        _ => payload.to_vec(),
    };
    let mut kind = payload_type;
    if encrypted {
        kind |= ENCRYPTED;
    }
    if authenticated {
        kind |= AUTHENTICATED;
    }
    out.push(auth_type::RMCP_PLUS);
    out.push(kind);
    out.extend_from_slice(&session_id.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend_from_slice(&body);
    if let (Some(k), true) = (keys, authenticated) {
        let covered = HEADER_LEN + body.len() + 2;
        let pad = (4 - covered % 4) % 4;
        out.extend(std::iter::repeat_n(0xFF, pad));
        out.push(pad as u8);
        out.push(NEXT_HEADER);
        let code = k.integrity_code(&out[start..]);
        out.extend_from_slice(&code);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::CipherSuite;

    #[test]
    fn sealed_packets_open_with_the_same_keys_only() {
        for id in [1, 2, 3, 17] {
            let keys = CipherSuite::by_id(id).unwrap().keys(&[5u8; 20]);
            let wire = encode(payload::IPMI, 9, 3, b"hello", Some(&keys), [1; 16]);
            let packet = decode(&wire[4..]).unwrap();
            assert_eq!(packet.header.session_id, 9);
            assert_eq!(packet.open(&keys).unwrap(), b"hello");
            if id != 1 {
                let other = CipherSuite::by_id(id).unwrap().keys(&[6u8; 20]);
                assert!(packet.open(&other).is_err(), "suite {id}");
            }
        }
    }

    #[test]
    fn any_flipped_bit_fails_integrity() {
        let keys = CipherSuite::by_id(17).unwrap().keys(&[5u8; 20]);
        let wire = encode(payload::IPMI, 9, 3, b"hello world", Some(&keys), [1; 16]);
        for i in 4..wire.len() {
            let mut bad = wire.clone();
            bad[i] ^= 0x10;
            let ok = decode(&bad[4..]).and_then(|p| p.open(&keys));
            assert!(ok.is_err(), "byte {i} flipped and accepted");
        }
    }

    #[test]
    fn clearing_protection_bits_is_refused() {
        let keys = CipherSuite::by_id(3).unwrap().keys(&[5u8; 20]);
        let wire = encode(payload::IPMI, 9, 3, b"x", None, [0; 16]);
        assert!(decode(&wire[4..]).unwrap().open(&keys).is_err());
    }
}
