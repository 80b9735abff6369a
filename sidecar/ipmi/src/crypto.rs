//! Cipher suites and the cryptography of RMCP+ (RAKP, integrity, AES-CBC-128) and of IPMI
//! 1.5 (MD5 and straight-password authentication codes).

use aes::Aes128;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit, generic_array::GenericArray};
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{CodecError, Result};

/// RAKP authentication algorithm (Open Session auth payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthAlg {
    None = 0,
    HmacSha1 = 1,
    HmacMd5 = 2,
    HmacSha256 = 3,
}

/// Integrity algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrityAlg {
    None = 0,
    HmacSha1_96 = 1,
    HmacMd5_128 = 2,
    Md5_128 = 3,
    HmacSha256_128 = 4,
}

/// Confidentiality algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfAlg {
    None = 0,
    AesCbc128 = 1,
    Xrc4_128 = 2,
    Xrc4_40 = 3,
}

/// One of the cipher suites this BMC offers. Suite 0 (no authentication at all) is not one
/// of them, on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CipherSuite {
    pub id: u8,
    pub auth: AuthAlg,
    pub integrity: IntegrityAlg,
    pub confidentiality: ConfAlg,
}

/// What we offer, strongest first (the order Get Channel Cipher Suites lists them in).
pub const SUPPORTED_SUITES: [CipherSuite; 4] = [
    CipherSuite {
        id: 17,
        auth: AuthAlg::HmacSha256,
        integrity: IntegrityAlg::HmacSha256_128,
        confidentiality: ConfAlg::AesCbc128,
    },
    CipherSuite {
        id: 3,
        auth: AuthAlg::HmacSha1,
        integrity: IntegrityAlg::HmacSha1_96,
        confidentiality: ConfAlg::AesCbc128,
    },
    CipherSuite {
        id: 2,
        auth: AuthAlg::HmacSha1,
        integrity: IntegrityAlg::HmacSha1_96,
        confidentiality: ConfAlg::None,
    },
    CipherSuite {
        id: 1,
        auth: AuthAlg::HmacSha1,
        integrity: IntegrityAlg::None,
        confidentiality: ConfAlg::None,
    },
];

impl CipherSuite {
    /// The supported suite made of exactly these algorithms, if any.
    pub fn from_algorithms(auth: u8, integrity: u8, confidentiality: u8) -> Option<CipherSuite> {
        SUPPORTED_SUITES.into_iter().find(|s| {
            s.auth as u8 == auth
                && s.integrity as u8 == integrity
                && s.confidentiality as u8 == confidentiality
        })
    }

    pub fn by_id(id: u8) -> Option<CipherSuite> {
        SUPPORTED_SUITES.into_iter().find(|s| s.id == id)
    }

    /// Length of the RAKP 2/3 key exchange authentication codes.
    pub fn auth_code_len(&self) -> usize {
        match self.auth {
            AuthAlg::HmacSha256 => 32,
            AuthAlg::HmacSha1 => 20,
            AuthAlg::HmacMd5 => 16,
            AuthAlg::None => 0,
        }
    }

    /// Length of the RAKP 4 integrity check value.
    pub fn rakp4_icv_len(&self) -> usize {
        match self.auth {
            AuthAlg::HmacSha256 | AuthAlg::HmacMd5 => 16,
            AuthAlg::HmacSha1 => 12,
            AuthAlg::None => 0,
        }
    }

    /// Length of the per-packet integrity AuthCode.
    pub fn integrity_len(&self) -> usize {
        match self.integrity {
            IntegrityAlg::HmacSha1_96 => 12,
            IntegrityAlg::HmacSha256_128 | IntegrityAlg::HmacMd5_128 | IntegrityAlg::Md5_128 => 16,
            IntegrityAlg::None => 0,
        }
    }

    /// HMAC with the suite's RAKP hash; `out` is the full digest.
    pub fn hmac(&self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        match self.auth {
            AuthAlg::HmacSha256 => hmac_sha256(key, parts).to_vec(),
            _ => hmac_sha1(key, parts).to_vec(),
        }
    }

    /// Session keys from the session integrity key (SIK).
    pub fn keys(&self, sik: &[u8]) -> SessionKeys {
        let k1 = Zeroizing::new(self.hmac(sik, &[&[0x01; 20]]));
        let k2 = Zeroizing::new(self.hmac(sik, &[&[0x02; 20]]));
        let mac = match self.integrity {
            IntegrityAlg::HmacSha256_128 => IntegrityMac::Sha256(
                <Hmac<Sha256> as Mac>::new_from_slice(&k1).expect("any key length"),
            ),
            _ => IntegrityMac::Sha1(
                <Hmac<Sha1> as Mac>::new_from_slice(&k1).expect("any key length"),
            ),
        };
        SessionKeys {
            suite: *self,
            mac,
            aes: Aes128::new(GenericArray::from_slice(&k2[..16])),
        }
    }
}

/// The keys of an established RMCP+ session.
#[derive(Clone)]
pub struct SessionKeys {
    pub suite: CipherSuite,
    /// Keyed once per session: the HMAC key schedule and the AES round keys are not
    /// recomputed for every packet.
    mac: IntegrityMac,
    aes: Aes128,
}

#[derive(Clone)]
enum IntegrityMac {
    Sha1(Hmac<Sha1>),
    Sha256(Hmac<Sha256>),
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys")
            .field("suite", &self.suite.id)
            .finish_non_exhaustive()
    }
}

impl SessionKeys {
    /// The truncated integrity code over `data`.
    pub fn integrity_code(&self, data: &[u8]) -> Vec<u8> {
        let len = self.suite.integrity_len();
        let full = match &self.mac {
            IntegrityMac::Sha256(mac) => {
                let mut mac = mac.clone();
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            IntegrityMac::Sha1(mac) => {
                let mut mac = mac.clone();
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
        };
        full[..len].to_vec()
    }

    pub fn verify_integrity(&self, data: &[u8], code: &[u8]) -> bool {
        let expected = self.integrity_code(data);
        expected.len() == code.len()
            && bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], code))
    }

    pub fn encrypts(&self) -> bool {
        self.suite.confidentiality == ConfAlg::AesCbc128
    }

    /// AES-CBC-128 as RMCP+ frames it: IV, then payload, pad 1..n, pad length, encrypted.
    pub fn encrypt(&self, iv: [u8; 16], payload: &[u8]) -> Vec<u8> {
        let pad = (16 - (payload.len() + 1) % 16) % 16;
        let mut plain = Vec::with_capacity(payload.len() + pad + 1);
        plain.extend_from_slice(payload);
        plain.extend((1..=pad).map(|i| i as u8));
        plain.push(pad as u8);
        let cipher = &self.aes;
        let mut out = Vec::with_capacity(16 + plain.len());
        out.extend_from_slice(&iv);
        let mut prev = iv;
        for chunk in plain.chunks(16) {
            let mut block = [0u8; 16];
            for (i, b) in block.iter_mut().enumerate() {
                *b = chunk[i] ^ prev[i];
            }
            let mut ga = GenericArray::from(block);
            cipher.encrypt_block(&mut ga);
            prev.copy_from_slice(&ga);
            out.extend_from_slice(&ga);
        }
        out
    }

    pub fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>> {
        if data.len() < 32 || !data.len().is_multiple_of(16) {
            return Err(CodecError::invalid("encrypted payload length"));
        }
        let cipher = &self.aes;
        let (iv, body) = data.split_at(16);
        let mut prev: [u8; 16] = iv.try_into().expect("16-byte IV");
        let mut plain = Vec::with_capacity(body.len());
        for chunk in body.chunks(16) {
            let mut ga = GenericArray::clone_from_slice(chunk);
            cipher.decrypt_block(&mut ga);
            for i in 0..16 {
                plain.push(ga[i] ^ prev[i]);
            }
            prev.copy_from_slice(chunk);
        }
        let pad = *plain.last().expect("non-empty") as usize;
        if pad > 15 || pad + 1 > plain.len() {
            return Err(CodecError::Integrity {
                what: "confidentiality padding",
            });
        }
        plain.truncate(plain.len() - pad - 1);
        Ok(plain)
    }
}

pub fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// IPMI 1.5 authentication types.
pub mod auth_type {
    pub const NONE: u8 = 0;
    pub const MD5: u8 = 2;
    pub const PASSWORD: u8 = 4;
    pub const RMCP_PLUS: u8 = 6;
}

/// The IPMI 1.5 AuthCode of a session packet (MD5 or straight password).
pub fn v15_auth_code(
    auth_type: u8,
    password: &[u8; 16],
    session_id: u32,
    message: &[u8],
    session_seq: u32,
) -> [u8; 16] {
    match auth_type {
        auth_type::MD5 => {
            let mut h = Md5::new();
            h.update(password);
            h.update(session_id.to_le_bytes());
            h.update(message);
            h.update(session_seq.to_le_bytes());
            h.update(password);
            h.finalize().into()
        }
        _ => *password,
    }
}

/// Constant-time equality of equal-length secrets.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(subtle::ConstantTimeEq::ct_eq(a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_zero_is_never_offered() {
        assert!(CipherSuite::from_algorithms(0, 0, 0).is_none());
        assert!(CipherSuite::by_id(0).is_none());
        assert_eq!(CipherSuite::from_algorithms(3, 4, 1).unwrap().id, 17);
        assert_eq!(CipherSuite::from_algorithms(1, 1, 1).unwrap().id, 3);
    }

    #[test]
    fn aes_cbc_round_trips_and_pads_to_blocks() {
        let keys = CipherSuite::by_id(3).unwrap().keys(&[7u8; 20]);
        for len in [0usize, 1, 14, 15, 16, 31, 40] {
            let payload: Vec<u8> = (0..len as u8).collect();
            let sealed = keys.encrypt([9; 16], &payload);
            assert_eq!(sealed.len() % 16, 0);
            assert_eq!(keys.decrypt(&sealed).unwrap(), payload);
        }
        assert!(keys.decrypt(&[0u8; 17]).is_err());
    }

    #[test]
    fn hmac_sha1_known_vector() {
        // RFC 2202 test case 2.
        let mac = hmac_sha1(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            mac,
            [
                0xef, 0xfc, 0xdf, 0x6a, 0xe5, 0xeb, 0x2f, 0xa2, 0xd2, 0x74, 0x16, 0xd5, 0xf1, 0x84,
                0xdf, 0x9c, 0x25, 0x9a, 0x7c, 0x79
            ]
        );
    }
}
