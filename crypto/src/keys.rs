//! Ed25519 identities: key pairs, public keys, signatures and key files. The verification rule
//! is in [`crate::verify_signatures`].

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::CryptoError;

/// An ed25519 public key, kept as its 32-byte encoding. Decoding to a curve point happens once,
/// when a [`crate::Committee`] is built or a client key is first checked.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PublicKey(#[serde(with = "serde_bytes")] pub [u8; 32]);

impl PublicKey {
    /// Decodes the key, refusing encodings that are not curve points, non-canonical encodings
    /// (a second spelling of the same key) and weak (small-order) keys, for which signatures
    /// prove nothing: the key half of the verification rule.
    pub fn decode(&self) -> Result<VerifyingKey, CryptoError> {
        if !crate::verify::y_is_canonical(&self.0) {
            return Err(CryptoError::BadPublicKey);
        }
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| CryptoError::BadPublicKey)?;
        if key.is_weak() {
            return Err(CryptoError::BadPublicKey);
        }
        Ok(key)
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", &self.to_hex()[..8])
    }
}

impl FromStr for PublicKey {
    type Err = CryptoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| CryptoError::BadHex { expected_len: 32 })?;
        Ok(PublicKey(out))
    }
}

/// An ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Signature(#[serde(with = "serde_bytes")] pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(&self.0[..4]))
    }
}

/// A secret signing key with its public key.
pub struct KeyPair {
    signing: SigningKey,
}

impl KeyPair {
    /// A fresh key from a cryptographic RNG.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        KeyPair {
            signing: SigningKey::generate(rng),
        }
    }

    /// A key derived from a 32-byte seed. Tests and the simulator use it to get the same keys
    /// on every run.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        KeyPair {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    /// Signs raw bytes. Protocol code signs through [`crate::Signed`], which adds the domain tag.
    pub fn sign_raw(&self, message: &[u8]) -> Signature {
        Signature(self.signing.sign(message).to_bytes())
    }

    /// The 32-byte secret seed (for writing a key file).
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// Writes the secret key as hex to `path`, readable by the owner only (mode 0600).
    pub fn save(&self, path: &Path) -> Result<(), CryptoError> {
        use std::io::Write as _;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let io = |e: std::io::Error| CryptoError::KeyFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let mut file = options.open(path).map_err(io)?;
        // `mode` only applies when the file is created; tighten an existing file too.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io)?;
        }
        writeln!(file, "{}", hex::encode(self.secret_bytes())).map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// Reads a secret key file written by [`KeyPair::save`].
    pub fn load(path: &Path) -> Result<Self, CryptoError> {
        let text = std::fs::read_to_string(path).map_err(|e| CryptoError::KeyFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| CryptoError::KeyFile {
            path: path.display().to_string(),
            reason: "expected 64 hex characters".into(),
        })?;
        Ok(KeyPair::from_seed(seed))
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPair({:?})", self.public())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{verify_signatures, SignatureCheck};

    #[test]
    fn sign_and_verify_one_and_many() {
        let keys: Vec<KeyPair> = (0..5u8).map(|i| KeyPair::from_seed([i; 32])).collect();
        let decoded: Vec<VerifyingKey> = keys.iter().map(|k| k.public().decode().unwrap()).collect();
        let messages: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 10]).collect();
        let mut sigs: Vec<Signature> = keys.iter().zip(&messages).map(|(k, m)| k.sign_raw(m)).collect();
        let checks = |sigs: &[Signature]| -> Vec<usize> {
            let items: Vec<SignatureCheck> = (0..5)
                .map(|i| SignatureCheck {
                    key: &decoded[i],
                    message: &messages[i],
                    signature: &sigs[i],
                })
                .collect();
            verify_signatures(&items)
        };
        assert!(checks(&sigs).is_empty());
        sigs[1].0[0] ^= 1;
        sigs[3] = keys[0].sign_raw(&messages[3]);
        assert_eq!(checks(&sigs), vec![1, 3]);
    }

    #[test]
    fn key_file_round_trip_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let key = KeyPair::from_seed([7; 32]);
        key.save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(KeyPair::load(&path).unwrap().public(), key.public());
        std::fs::write(&path, "nothex").unwrap();
        assert!(KeyPair::load(&path).is_err());
    }

    #[test]
    fn weak_and_invalid_keys_are_refused() {
        // The identity point encodes as 1 followed by zeros: small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(PublicKey(identity).decode().is_err());
        // y = -1: the point of order 2.
        let mut order_two = [0xff; 32];
        order_two[0] = 0xec;
        order_two[31] = 0x7f;
        assert!(PublicKey(order_two).decode().is_err());
        // Some y has no x on the curve: at least one small y must fail to decode.
        let undecodable = (2u8..40).any(|y| {
            let mut bytes = [0u8; 32];
            bytes[0] = y;
            PublicKey(bytes).decode().is_err() && VerifyingKey::from_bytes(&bytes).is_err()
        });
        assert!(undecodable);
        // y + p for a small y is a second spelling of the point with that y.
        let mut respelled = 0;
        for y in 2u8..19 {
            let mut canonical = [0u8; 32];
            canonical[0] = y;
            if PublicKey(canonical).decode().is_err() {
                continue;
            }
            let mut plus_p = [0xffu8; 32];
            plus_p[0] = 0xed + y;
            plus_p[31] = 0x7f;
            assert!(PublicKey(plus_p).decode().is_err(), "y = {y} + p");
            respelled += usize::from(VerifyingKey::from_bytes(&plus_p).is_ok());
        }
        assert!(
            respelled > 0,
            "the curve crate alone accepts some second spellings"
        );
    }
}
