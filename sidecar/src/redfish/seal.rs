//! Secrets a client hands the BMC, kept in records that others may read.
//!
//! An event subscription's `HttpHeaders` may be credentials (Metal3 fills them from a
//! Secret), yet the subscription must outlive the sidecar, and its record is a VM annotation
//! that anyone who may read the VM reads. So the headers are stored sealed: AES-256-GCM
//! under a key derived from the Redfish session key (`Record::SessionKey`: in the cluster the
//! credentials Secret, which a VM reader need not be able to read), with the subscription's
//! id and destination as associated data, so a sealed value copied into another
//! subscription, or a destination edited in the record, no longer opens: headers are never
//! sent to a destination other than the one they were given for.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Versioned, and starting with a byte no session token payload holds, so this derivation
/// never meets a MAC the session signing key makes for a token.
const KEY_LABEL: &[u8] = b"\0kubevirt-bmc/sealed-secrets/v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the sealed value is not base64 or is too short")]
    Malformed,
    /// A different key (the session key was rotated, or lived only in the memory of an
    /// earlier process), a value edited in the record, or one moved from elsewhere.
    #[error("the sealed value does not open with this key for this context")]
    DoesNotOpen,
}

pub struct Seal {
    key: LessSafeKey,
}

impl Seal {
    /// `root` is the session signing key ([`super::auth::signing_key`]).
    pub fn derive(root: &[u8]) -> Self {
        let mut kdf = Hmac::<Sha256>::new_from_slice(root).expect("HMAC takes any key length");
        kdf.update(KEY_LABEL);
        let derived: Zeroizing<[u8; 32]> = Zeroizing::new(kdf.finalize().into_bytes().into());
        let key =
            UnboundKey::new(&AES_256_GCM, derived.as_slice()).expect("AES-256 takes 32 bytes");
        Seal {
            key: LessSafeKey::new(key),
        }
    }

    /// `nonce || ciphertext || tag`, base64. A random nonce: a key seals a handful of values
    /// (at most 16 subscriptions at a time), far from where 96 random bits could repeat.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> String {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let mut body = Zeroizing::new(plaintext.to_vec());
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(context),
                &mut *body,
            )
            .expect("a plaintext this small always seals");
        let mut sealed = nonce_bytes.to_vec();
        sealed.extend_from_slice(&body);
        STANDARD.encode(sealed)
    }

    pub fn open(&self, context: &[u8], sealed: &str) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let bytes = STANDARD.decode(sealed).map_err(|_| SealError::Malformed)?;
        if bytes.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(SealError::Malformed);
        }
        let (nonce, body) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Malformed)?;
        let mut body = Zeroizing::new(body.to_vec());
        let plaintext_len = self
            .key
            .open_in_place(nonce, Aad::from(context), &mut body)
            .map_err(|_| SealError::DoesNotOpen)?
            .len();
        body.truncate(plaintext_len);
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_with_its_key_and_context_only() {
        let seal = Seal::derive(b"root key");
        let sealed = seal.seal(b"sub-1\0http://receiver/events", b"Bearer t0ken");
        assert!(!sealed.contains("t0ken"));
        assert_eq!(
            &*seal
                .open(b"sub-1\0http://receiver/events", &sealed)
                .unwrap(),
            b"Bearer t0ken"
        );
        // Another destination, another subscription, another key.
        assert_eq!(
            seal.open(b"sub-1\0http://attacker/events", &sealed),
            Err(SealError::DoesNotOpen)
        );
        assert_eq!(
            seal.open(b"sub-2\0http://receiver/events", &sealed),
            Err(SealError::DoesNotOpen)
        );
        assert_eq!(
            Seal::derive(b"rotated key").open(b"sub-1\0http://receiver/events", &sealed),
            Err(SealError::DoesNotOpen)
        );
    }

    #[test]
    fn each_seal_is_fresh_and_a_flipped_bit_or_junk_is_refused() {
        let seal = Seal::derive(b"root key");
        let first = seal.seal(b"ctx", b"value");
        assert_ne!(first, seal.seal(b"ctx", b"value"), "nonce reused");
        let mut bytes = STANDARD.decode(&first).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(
            seal.open(b"ctx", &STANDARD.encode(&bytes)),
            Err(SealError::DoesNotOpen)
        );
        assert_eq!(seal.open(b"ctx", "not base64!"), Err(SealError::Malformed));
        assert_eq!(seal.open(b"ctx", "c2hvcnQ="), Err(SealError::Malformed));
        assert_eq!(&*seal.open(b"ctx", &seal.seal(b"ctx", b"")).unwrap(), b"");
    }
}
