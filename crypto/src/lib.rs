//! Ordinal's cryptography: ed25519 identities, SHA3-256 digests, domain-separated signed
//! envelopes and weighted quorum certificates.
//!
//! ```
//! use ordinal_crypto::{Certificate, Committee, Digest, KeyPair, ReplicaId, Signable, Signed};
//! use serde::Serialize;
//!
//! #[derive(Clone, Serialize)]
//! struct Commit { seq: u64, digest: Digest }
//! impl Signable for Commit { const DOMAIN: &'static str = "example/commit/v1"; }
//!
//! let keys: Vec<KeyPair> = (1..=4u8).map(|i| KeyPair::from_seed([i; 32])).collect();
//! let publics: Vec<_> = keys.iter().map(|k| k.public()).collect();
//! let committee = Committee::equal_weights(Digest::of(b"my-cluster"), &publics).unwrap();
//! assert_eq!(committee.quorum_weight(), 3);
//!
//! let statement = Commit { seq: 1, digest: Digest::of(b"batch") };
//! let votes: Vec<_> = (0..3u16)
//!     .map(|i| Signed::sign(statement.clone(), ReplicaId(i), &keys[i as usize], &committee))
//!     .map(|s| s.verify(&committee).unwrap())
//!     .collect();
//! let certificate = Certificate::from_votes(statement, committee.epoch(), &votes);
//! certificate.verify(&committee).unwrap();
//! ```
#![warn(missing_docs)]

mod committee;
mod digest;
mod error;
mod keys;
mod signed;
#[cfg(feature = "tls")]
pub mod tls;
mod verify;

pub use committee::{aware_weights, Committee, Member, MembershipEdit, ReplicaId, Thresholds, WeightBounds};
pub use digest::{merkle_proof, merkle_root, Digest, MerkleProof, MerkleTree};
pub use error::CryptoError;
pub use keys::{KeyPair, PublicKey, Signature};
pub use signed::{
    signing_bytes, Certificate, GroupVerdicts, Pending, Signable, SignatureGroup, Signed, Threshold, Verified,
};
pub use verify::{verify_signatures, SignatureCheck};

pub use ed25519_dalek::VerifyingKey;
