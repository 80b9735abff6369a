//! RMCP+ session establishment: Open Session Request/Response and RAKP messages 1-4, and
//! the key exchange computations (IPMI v2.0 section 13.20-13.32).

use crate::crypto::CipherSuite;
use crate::error::{CodecError, Result};
use crate::wire::Reader;

/// RMCP+ status codes (IPMI v2.0 table 13-15).
pub mod status {
    pub const OK: u8 = 0x00;
    pub const NO_RESOURCES: u8 = 0x01;
    pub const INVALID_SESSION_ID: u8 = 0x02;
    pub const INVALID_ROLE: u8 = 0x09;
    pub const UNAUTHORIZED_ROLE: u8 = 0x0A;
    pub const INVALID_NAME_LENGTH: u8 = 0x0C;
    pub const UNAUTHORIZED_NAME: u8 = 0x0D;
    pub const INVALID_INTEGRITY_CHECK: u8 = 0x0F;
    pub const NO_CIPHER_SUITE_MATCH: u8 = 0x11;
    pub const ILLEGAL_PARAMETER: u8 = 0x12;
}

/// The name-only lookup bit of RAKP 1's role byte.
pub const NAME_ONLY_LOOKUP: u8 = 0x10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSessionRequest {
    pub tag: u8,
    /// Requested maximum privilege (low nibble); 0 asks for the highest the suite allows.
    pub max_privilege: u8,
    pub console_session_id: u32,
    pub auth: u8,
    pub integrity: u8,
    pub confidentiality: u8,
}

fn algorithm(r: &mut Reader<'_>, expected_type: u8) -> Result<u8> {
    let kind = r.u8("Open Session algorithm payload")?;
    let _reserved = r.bytes(2, "Open Session algorithm payload")?;
    let _len = r.u8("Open Session algorithm payload")?;
    let alg = r.u8("Open Session algorithm payload")? & 0x3F;
    let _reserved = r.bytes(3, "Open Session algorithm payload")?;
    if kind != expected_type {
        return Err(CodecError::invalid("Open Session algorithm payload type"));
    }
    Ok(alg)
}

fn put_algorithm(out: &mut Vec<u8>, kind: u8, alg: u8) {
    out.extend_from_slice(&[kind, 0, 0, 8, alg, 0, 0, 0]);
}

impl OpenSessionRequest {
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let tag = r.u8("Open Session Request")?;
        let max_privilege = r.u8("Open Session Request")? & 0x0F;
        let _reserved = r.bytes(2, "Open Session Request")?;
        let console_session_id = r.u32("Open Session Request")?;
        Ok(OpenSessionRequest {
            tag,
            max_privilege,
            console_session_id,
            auth: algorithm(&mut r, 0)?,
            integrity: algorithm(&mut r, 1)?,
            confidentiality: algorithm(&mut r, 2)?,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.tag, self.max_privilege, 0, 0];
        out.extend_from_slice(&self.console_session_id.to_le_bytes());
        put_algorithm(&mut out, 0, self.auth);
        put_algorithm(&mut out, 1, self.integrity);
        put_algorithm(&mut out, 2, self.confidentiality);
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSessionResponse {
    pub tag: u8,
    pub status: u8,
    pub max_privilege: u8,
    pub console_session_id: u32,
    /// Present when status is OK.
    pub accepted: Option<(u32, CipherSuite)>,
}

impl OpenSessionResponse {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.tag, self.status, self.max_privilege, 0];
        out.extend_from_slice(&self.console_session_id.to_le_bytes());
        if let Some((bmc_session_id, suite)) = self.accepted {
            out.extend_from_slice(&bmc_session_id.to_le_bytes());
            put_algorithm(&mut out, 0, suite.auth as u8);
            put_algorithm(&mut out, 1, suite.integrity as u8);
            put_algorithm(&mut out, 2, suite.confidentiality as u8);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let tag = r.u8("Open Session Response")?;
        let status = r.u8("Open Session Response")?;
        let max_privilege = r.u8("Open Session Response")?;
        let _reserved = r.u8("Open Session Response")?;
        let console_session_id = r.u32("Open Session Response")?;
        let accepted = if status == status::OK {
            let id = r.u32("Open Session Response")?;
            let (a, i, c) = (
                algorithm(&mut r, 0)?,
                algorithm(&mut r, 1)?,
                algorithm(&mut r, 2)?,
            );
            let suite = CipherSuite::from_algorithms(a, i, c)
                .ok_or(CodecError::invalid("cipher suite in Open Session Response"))?;
            Some((id, suite))
        } else {
            None
        };
        Ok(OpenSessionResponse {
            tag,
            status,
            max_privilege,
            console_session_id,
            accepted,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp1 {
    pub tag: u8,
    pub bmc_session_id: u32,
    pub console_random: [u8; 16],
    /// Requested role byte exactly as sent (privilege nibble plus the lookup bit).
    pub role: u8,
    pub username: Vec<u8>,
}

impl Rakp1 {
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let tag = r.u8("RAKP 1")?;
        let _reserved = r.bytes(3, "RAKP 1")?;
        let bmc_session_id = r.u32("RAKP 1")?;
        let console_random = r.array::<16>("RAKP 1")?;
        let role = r.u8("RAKP 1")?;
        let _reserved = r.bytes(2, "RAKP 1")?;
        let len = r.u8("RAKP 1")? as usize;
        if len > 16 {
            return Err(CodecError::invalid("RAKP 1 user name length"));
        }
        let username = r.bytes(len, "RAKP 1 user name")?.to_vec();
        Ok(Rakp1 {
            tag,
            bmc_session_id,
            console_random,
            role,
            username,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.tag, 0, 0, 0];
        out.extend_from_slice(&self.bmc_session_id.to_le_bytes());
        out.extend_from_slice(&self.console_random);
        out.extend_from_slice(&[self.role, 0, 0, self.username.len() as u8]);
        out.extend_from_slice(&self.username);
        out
    }
}

/// RAKP 2, 3 and 4 share one shape: tag, status, reserved, a session ID, then data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RakpReply {
    pub tag: u8,
    pub status: u8,
    pub session_id: u32,
    pub data: Vec<u8>,
}

impl RakpReply {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.tag, self.status, 0, 0];
        out.extend_from_slice(&self.session_id.to_le_bytes());
        if self.status == status::OK {
            out.extend_from_slice(&self.data);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let tag = r.u8("RAKP message")?;
        let status = r.u8("RAKP message")?;
        let _reserved = r.bytes(2, "RAKP message")?;
        let session_id = r.u32("RAKP message")?;
        Ok(RakpReply {
            tag,
            status,
            session_id,
            data: r.rest().to_vec(),
        })
    }
}

/// Everything both sides know once RAKP 2 is out; the inputs to every RAKP code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub suite: CipherSuite,
    pub console_session_id: u32,
    pub bmc_session_id: u32,
    pub console_random: [u8; 16],
    pub bmc_random: [u8; 16],
    pub bmc_guid: [u8; 16],
    pub role: u8,
    pub username: Vec<u8>,
}

impl Exchange {
    fn name(&self) -> [&[u8]; 2] {
        [std::slice::from_ref(&self.role), &self.username]
    }

    /// RAKP 2's key exchange authentication code, keyed with the user's password.
    pub fn rakp2_code(&self, user_key: &[u8]) -> Vec<u8> {
        let len = [self.username.len() as u8];
        let [role, name] = self.name();
        self.suite.hmac(
            user_key,
            &[
                &self.console_session_id.to_le_bytes(),
                &self.bmc_session_id.to_le_bytes(),
                &self.console_random,
                &self.bmc_random,
                &self.bmc_guid,
                role,
                &len,
                name,
            ],
        )
    }

    /// RAKP 3's code, proving the console knows the password.
    pub fn rakp3_code(&self, user_key: &[u8]) -> Vec<u8> {
        let len = [self.username.len() as u8];
        let [role, name] = self.name();
        self.suite.hmac(
            user_key,
            &[
                &self.bmc_random,
                &self.console_session_id.to_le_bytes(),
                role,
                &len,
                name,
            ],
        )
    }

    /// The session integrity key, keyed with Kg (which defaults to the user key).
    pub fn sik(&self, kg: &[u8]) -> Vec<u8> {
        let len = [self.username.len() as u8];
        let [role, name] = self.name();
        self.suite.hmac(
            kg,
            &[&self.console_random, &self.bmc_random, role, &len, name],
        )
    }

    /// RAKP 4's integrity check value.
    pub fn rakp4_icv(&self, sik: &[u8]) -> Vec<u8> {
        let mut full = self.suite.hmac(
            sik,
            &[
                &self.console_random,
                &self.bmc_session_id.to_le_bytes(),
                &self.bmc_guid,
            ],
        );
        full.truncate(self.suite.rakp4_icv_len());
        full
    }
}

/// A password as RMCP+ keys use it: zero-padded to 20 bytes.
pub fn user_key(password: &[u8]) -> [u8; 20] {
    let mut key = [0u8; 20];
    let n = password.len().min(20);
    key[..n].copy_from_slice(&password[..n]);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_session_request_round_trips() {
        let req = OpenSessionRequest {
            tag: 1,
            max_privilege: 4,
            console_session_id: 0xA0A2A3A4,
            auth: 3,
            integrity: 4,
            confidentiality: 1,
        };
        let wire = req.encode();
        assert_eq!(wire.len(), 32);
        assert_eq!(OpenSessionRequest::decode(&wire).unwrap(), req);
        for n in 0..wire.len() {
            assert!(OpenSessionRequest::decode(&wire[..n]).is_err());
        }
    }

    #[test]
    fn rakp1_rejects_long_names() {
        let mut wire = Rakp1 {
            tag: 0,
            bmc_session_id: 1,
            console_random: [0; 16],
            role: 0x14,
            username: b"admin".to_vec(),
        }
        .encode();
        assert_eq!(Rakp1::decode(&wire).unwrap().username, b"admin");
        wire[27] = 17;
        assert!(Rakp1::decode(&wire).is_err());
    }
}
